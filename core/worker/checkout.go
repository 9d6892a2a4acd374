package worker

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/tollgate-ci/tollgate/core/fleet"
	"github.com/tollgate-ci/tollgate/core/model"
)

// The checkout: a bare mirror per project under WorkDir/.git-cache, shared
// by the worker's jobs and updated with fetch, so a job moves only new
// objects; each job's work tree is a clone that borrows the mirror's
// objects (git clone --shared), with the change merged onto the branch
// head. The mirror is the worker's: jobs see it read-only.

// gitTimeout bounds one git command of the checkout.
const gitTimeout = 10 * time.Minute

var (
	revisionRE = regexp.MustCompile(`^[0-9a-f]{40}([0-9a-f]{24})?$`)
	// refRE is a conservative git ref: what Gerrit's refs/changes and
	// branch names look like, never an option or a revision expression.
	refRE = regexp.MustCompile(`^refs/[A-Za-z0-9._/+-]+$`)
)

// checkoutResult is what the job's env tells about its checkout.
type checkoutResult struct {
	base, revision string
}

// checkoutError is a checkout that failed: state says whose fault it is.
type checkoutError struct {
	state  model.State // FAILED: the change's (a merge conflict); INTERRUPTED: ours
	reason string
}

func (e *checkoutError) Error() string { return e.reason }

func infraErr(format string, a ...any) *checkoutError {
	return &checkoutError{state: model.Interrupted, reason: "checkout: " + fmt.Sprintf(format, a...)}
}

// checkout fills j's src directory with what the job tests.
func (w *Worker) checkout(ctx context.Context, j *job) (*checkoutResult, *checkoutError) {
	co := j.a.Checkout
	if co == nil {
		return nil, nil
	}
	branchRef := "refs/heads/" + co.Branch
	switch {
	case !revisionRE.MatchString(co.Revision):
		return nil, &checkoutError{state: model.Failed, reason: fmt.Sprintf("checkout: %q is not a commit id", co.Revision)}
	case !refRE.MatchString(co.Ref) || strings.Contains(co.Ref, ".."):
		return nil, &checkoutError{state: model.Failed, reason: fmt.Sprintf("checkout: %q is not a ref", co.Ref)}
	case !refRE.MatchString(branchRef) || strings.Contains(branchRef, ".."):
		return nil, &checkoutError{state: model.Failed, reason: fmt.Sprintf("checkout: %q is not a branch", co.Branch)}
	case co.URL == "":
		return nil, &checkoutError{state: model.Failed, reason: "checkout: no git URL"}
	}
	if w.gitPath == "" {
		return nil, infraErr("git is not installed on this worker")
	}
	start := time.Now()
	mirror, err := w.mirror(ctx, j, co.Project)
	if err != nil {
		return nil, infraErr("%v", err)
	}
	w.gitMu.Lock()
	defer w.gitMu.Unlock()

	url, auth := co.URL, ""
	if w.o.GitUser != "" {
		url = co.AuthURL
		auth = "Authorization: Basic " + base64.StdEncoding.EncodeToString([]byte(w.o.GitUser+":"+w.o.GitPassword))
	}
	specs := []string{"+" + branchRef + ":" + branchRef}
	if co.Merge {
		specs = append(specs, "+"+co.Ref+":refs/tollgate/change")
	}
	j.logs.linef("$ git fetch %s %s", co.URL, strings.Join(specs, " "))
	// Gerrit being down or restarting is common and passes: the fetch is
	// retried with backoff for up to fetchPatience (the job's timeout and
	// a cancel still stop it), so a short outage costs the job time, not
	// one of its two attempts.
	bo := backoff{min: time.Second, max: 10 * time.Second}
	giveUp := time.Now().Add(w.fetchPatience())
	for {
		out, err := w.git(ctx, j, mirror, auth, append([]string{"fetch", "--no-tags", "--quiet", "--", url}, specs...)...)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return nil, infraErr("stopped")
		}
		if bytes.Contains(out, []byte("couldn't find remote ref")) {
			j.logs.lines(out)
			return nil, &checkoutError{state: model.Failed, reason: "checkout: Gerrit has no " + co.Ref + " (deleted?)"}
		}
		if refusedAuth(out) || time.Now().After(giveUp) {
			j.logs.lines(out)
			return nil, infraErr("cannot fetch from %s: %v", co.URL, err)
		}
		d := bo.next()
		j.logs.linef("git fetch failed (%s); retrying in %v", lastLine(out), d.Round(100*time.Millisecond))
		if !sleep(ctx, d) {
			return nil, infraErr("stopped")
		}
	}
	base := co.Revision
	if co.Merge {
		out, err := w.git(ctx, j, mirror, "", "rev-parse", "--verify", "--quiet", branchRef+"^{commit}")
		if err != nil {
			return nil, infraErr("the fetched branch %s has no commit: %v", co.Branch, err)
		}
		base = strings.TrimSpace(string(out))
		if tip, err := w.git(ctx, j, mirror, "", "rev-parse", "--verify", "--quiet", "refs/tollgate/change^{commit}"); err == nil && strings.TrimSpace(string(tip)) != co.Revision {
			j.logs.linef("note: %s now points at %s, not %s; testing %s", co.Ref, strings.TrimSpace(string(tip)), co.Revision, co.Revision)
		}
	}
	if _, err := w.git(ctx, j, mirror, "", "cat-file", "-e", co.Revision+"^{commit}"); err != nil {
		return nil, &checkoutError{state: model.Failed, reason: fmt.Sprintf("checkout: commit %s is not in %s of %s", co.Revision, co.Ref, co.Project)}
	}

	src := j.srcDir()
	if err := os.RemoveAll(src); err != nil {
		return nil, infraErr("%v", err)
	}
	if out, err := w.git(ctx, j, "", "", "clone", "--quiet", "--shared", "--no-checkout", "--", mirror, src); err != nil {
		j.logs.lines(out)
		return nil, infraErr("cannot clone the mirror: %v", err)
	}
	steps := [][]string{
		{"remote", "set-url", "origin", co.URL},
		{"checkout", "--quiet", "--detach", base},
	}
	for _, s := range steps {
		if out, err := w.git(ctx, j, src, "", s...); err != nil {
			j.logs.lines(out)
			return nil, infraErr("git %s: %v", s[0], err)
		}
	}
	if co.Merge {
		j.logs.linef("$ git merge %s  # patchset %s onto %s at %s", short(co.Revision), co.Ref, co.Branch, short(base))
		msg := fmt.Sprintf("Tollgate: merge %s onto %s", co.Ref, co.Branch)
		out, err := w.git(ctx, j, src, "", "-c", "user.name=Tollgate", "-c", "user.email=tollgate@localhost",
			"merge", "--no-edit", "--no-verify", "--quiet", "-m", msg, co.Revision)
		if err != nil {
			if ctx.Err() != nil {
				return nil, infraErr("stopped")
			}
			j.logs.lines(out)
			files, _ := w.git(ctx, j, src, "", "diff", "--name-only", "--diff-filter=U")
			if list := strings.Fields(string(files)); len(list) > 0 {
				j.logs.linef("merge conflict: patchset %s does not merge onto %s at %s; conflicting files:", co.Ref, co.Branch, short(base))
				for _, f := range list {
					j.logs.linef("  %s", f)
				}
				return nil, &checkoutError{state: model.Failed, reason: fmt.Sprintf("merge conflict with %s in %s", co.Branch, strings.Join(list, ", "))}
			}
			return nil, &checkoutError{state: model.Failed, reason: fmt.Sprintf("the patchset does not merge onto %s: %v", co.Branch, err)}
		}
	}
	head, _ := w.git(ctx, j, src, "", "rev-parse", "HEAD")
	j.logs.linef("checked out %s (%s) in %v", short(strings.TrimSpace(string(head))), co.Branch, time.Since(start).Round(time.Millisecond))
	return &checkoutResult{base: base, revision: co.Revision}, nil
}

// mirror returns the project's bare mirror, created on first use.
func (w *Worker) mirror(ctx context.Context, j *job, project string) (string, error) {
	if project == "" || strings.Contains(project, "..") || strings.HasPrefix(project, "-") {
		return "", fmt.Errorf("bad project name %q", project)
	}
	name := strings.NewReplacer("/", "%2F", "\\", "%5C").Replace(project) + ".git"
	dir := filepath.Join(w.workDir, ".git-cache", name)
	if _, err := os.Stat(filepath.Join(dir, "HEAD")); err == nil {
		return dir, nil
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return "", err
	}
	tmp, err := os.MkdirTemp(filepath.Dir(dir), ".new-")
	if err != nil {
		return "", err
	}
	if out, err := w.git(ctx, j, "", "", "init", "--quiet", "--bare", tmp); err != nil {
		os.RemoveAll(tmp)
		return "", fmt.Errorf("git init: %v: %s", err, out)
	}
	// Jobs read it (as another user, when the worker is root).
	if err := os.Chmod(tmp, 0o755); err != nil {
		return "", err
	}
	if err := os.Rename(tmp, dir); err != nil {
		os.RemoveAll(tmp)
		if _, serr := os.Stat(filepath.Join(dir, "HEAD")); serr == nil {
			return dir, nil // made meanwhile by another job of this worker
		}
		return "", err
	}
	return dir, nil
}

// git runs git in dir ("" for the work directory) with an environment of
// its own: never the worker's, no prompts, no user or system config. auth,
// if set, is an HTTP header for the fetch, passed in the environment, not
// the command line, and never written to any config. It returns the
// combined output.
func (w *Worker) git(ctx context.Context, j *job, dir, auth string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, gitTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, w.gitPath, args...)
	if dir == "" {
		dir = j.dir
	}
	cmd.Dir = dir
	cmd.Env = []string{"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=" + filepath.Join(j.dir, ".home"), "LANG=C",
		"GIT_TERMINAL_PROMPT=0", "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null", "GIT_ASKPASS=/bin/false"}
	if auth != "" {
		cmd.Env = append(cmd.Env, "GIT_CONFIG_COUNT=1", "GIT_CONFIG_KEY_0=http.extraHeader", "GIT_CONFIG_VALUE_0="+auth)
	}
	// git starts helpers (git-remote-http, index-pack): a stopped job's
	// fetch ends them all at once, not only git itself.
	cmd.SysProcAttr = sysProcAttr()
	cmd.Cancel = func() error { return killGroup(cmd.Process) }
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if err != nil && ctx.Err() != nil && errors.Is(ctx.Err(), context.DeadlineExceeded) {
		err = fmt.Errorf("git %s timed out after %v", args[0], gitTimeout)
	}
	return out, err
}

// fetchPatience is how long a failing fetch is retried.
func (w *Worker) fetchPatience() time.Duration {
	if w.o.FetchPatience > 0 {
		return w.o.FetchPatience
	}
	return 5 * time.Minute
}

// refusedAuth reports whether git's output says Gerrit refused the
// credentials: waiting does not mend that.
func refusedAuth(out []byte) bool {
	for _, m := range []string{"Authentication failed", "error: 401", "error: 403", "could not read Username", "could not read Password"} {
		if bytes.Contains(out, []byte(m)) {
			return true
		}
	}
	return false
}

// lastLine is the last non-empty line of out, for a one-line log.
func lastLine(out []byte) string {
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}

// gitEnv is what the job's environment says about its checkout.
func gitEnv(co *fleet.Checkout, r *checkoutResult) []string {
	if co == nil || r == nil {
		return nil
	}
	return []string{"TOLLGATE_GIT_URL=" + co.URL, "TOLLGATE_GIT_REF=" + co.Ref,
		"TOLLGATE_BASE_REVISION=" + r.base, "TOLLGATE_REVISION=" + r.revision}
}

func short(rev string) string {
	if len(rev) > 12 {
		return rev[:12]
	}
	return rev
}
