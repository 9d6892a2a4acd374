package launcher

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
)

// BuildTollgate builds the tollgate command into dir with the go tool, for
// tests: a test binary cannot serve as the children's `tollgate`. It must
// run inside the module (as tests do).
func BuildTollgate(ctx context.Context, dir string) (string, error) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		return "", fmt.Errorf("launcher: building tollgate: %w", err)
	}
	out := filepath.Join(dir, "tollgate")
	cmd := exec.CommandContext(ctx, goBin, "build", "-o", out, "github.com/tollgate-ci/tollgate/cmd/tollgate")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("launcher: go build tollgate: %w\n%s", err, b)
	}
	return out, nil
}
