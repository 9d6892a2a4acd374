package worker

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/tollgate-ci/tollgate/core/blob"
	"github.com/tollgate-ci/tollgate/core/errs"
)

// maxArtifactAttempts bounds the tries of one upload: an artifact that keeps
// failing is skipped rather than holding the job's end back forever.
const maxArtifactAttempts = 5

// uploadArtifacts uploads every regular file under the job's artifacts
// directory, named by its slash-separated path relative to it. Every open
// goes through an os.Root on the directory, so a symlink pointing out of it
// (to the worker's credentials, say) fails to open and is skipped, with a
// "[tollgate] artifact X skipped: ..." line in the log, like names the
// fleet would refuse (blob.ValidName) and files that are not regular.
func (w *Worker) uploadArtifacts(ctx context.Context, j *job) {
	root, err := os.OpenRoot(j.artDir)
	if err != nil {
		j.logs.linef("artifacts not uploaded: %v", err)
		return
	}
	defer root.Close()
	_ = fs.WalkDir(root.FS(), ".", func(name string, d fs.DirEntry, err error) error {
		if err != nil {
			j.logs.linef("artifact %s skipped: %v", display(name), err)
			return nil
		}
		if d.IsDir() {
			return nil
		}
		if err := blob.ValidName(name); err != nil {
			j.logs.linef("artifact %s skipped: not a valid artifact name", display(name))
			return nil
		}
		err = w.putArtifact(ctx, j, root, name)
		switch {
		case err == nil:
			return nil
		case gone(err):
			w.log.WarnContext(ctx, "artifacts refused: the job is no longer this worker's", "job", j.id, "err", err)
			return fs.SkipAll
		case ctx.Err() != nil:
			j.logs.linef("artifact %s and the rest skipped: out of time", display(name))
			return fs.SkipAll
		}
		j.logs.linef("artifact %s skipped: %v", display(name), err)
		return nil
	})
}

// putArtifact uploads one file, retrying transient errors a few times. The
// file is opened without blocking and checked to be regular after the open,
// so a FIFO or a symlink swapped in meanwhile cannot stall or fool the worker.
func (w *Worker) putArtifact(ctx context.Context, j *job, root *os.Root, name string) error {
	bo := backoff{min: backoffMin, max: 5 * time.Second}
	for attempt := 1; ; attempt++ {
		f, err := root.OpenFile(name, openFlags, 0)
		if err != nil {
			return err
		}
		fi, err := f.Stat()
		if err != nil {
			f.Close()
			return err
		}
		if !fi.Mode().IsRegular() {
			f.Close()
			return fmt.Errorf("not a regular file (mode %v)", fi.Mode())
		}
		// Allow large files about 1 MiB/s on top of the usual call timeout.
		cctx, cancel := context.WithTimeout(ctx, callTimeout+time.Duration(fi.Size()>>20)*time.Second)
		err = w.b.PutArtifact(cctx, w.o.ID, j.id, name, f)
		cancel()
		f.Close()
		if err == nil || gone(err) || ctx.Err() != nil || attempt == maxArtifactAttempts ||
			!errs.Transient(err) || errs.Is(err, errs.ResourceExhausted) {
			return err
		}
		w.log.WarnContext(ctx, "artifact upload failed; retrying", "job", j.id, "artifact", name, "err", err)
		if !sleep(ctx, bo.next()) {
			return err
		}
	}
}

// display shows a file name in a log line as it is, or quoted if it has
// spaces or unprintable characters.
func display(name string) string {
	if name == "" || strings.IndexFunc(name, func(r rune) bool { return r == ' ' || !unicode.IsPrint(r) }) >= 0 {
		return strconv.Quote(name)
	}
	return name
}
