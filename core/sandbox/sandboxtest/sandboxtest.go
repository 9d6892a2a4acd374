// Package sandboxtest helps tests that run jobs in the bwrap sandbox.
package sandboxtest

import (
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// NeedBwrap skips the test when bubblewrap is not installed, unless CI is
// set: CI installs it (.ci/run), so there a missing bwrap is a failure.
func NeedBwrap(t testing.TB) {
	t.Helper()
	if _, err := exec.LookPath("bwrap"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("bwrap is not installed; .ci/run installs bubblewrap")
		}
		t.Skip("bwrap is not installed (apt-get install bubblewrap); set CI=true to make this a failure")
	}
}

// Dir returns a new directory the sandbox user (nobody, when the tests
// run as root) can reach: t.TempDir is private to the test's user. It is
// removed when the test ends.
func Dir(t testing.TB) string {
	t.Helper()
	d, err := os.MkdirTemp("", "tollgate-sandbox-test-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(d, 0o711); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Jobs leave read-only directories behind.
		_ = filepath.WalkDir(d, func(p string, e fs.DirEntry, err error) error {
			if e != nil && e.IsDir() {
				_ = os.Chmod(p, 0o700)
			}
			return nil
		})
		_ = os.RemoveAll(d)
	})
	return d
}
