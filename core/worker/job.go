package worker

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/tollgate-ci/tollgate/core/cache"
	"github.com/tollgate-ci/tollgate/core/errs"
	"github.com/tollgate-ci/tollgate/core/fleet"
	"github.com/tollgate-ci/tollgate/core/model"
	"github.com/tollgate-ci/tollgate/core/sandbox"
)

// pipeDrainTimeout is how long the output pipe may stay open once the job's
// process group is gone: only a process that left the group (setsid) can
// hold it, and the worker must not wait for such a process forever.
const pipeDrainTimeout = 2 * time.Second

// maxDrain bounds the wait for a backed-up log to take the rest of the
// output, in case an escaped process keeps writing forever.
const maxDrain = 10 * time.Minute

// job is one run of an assignment.
type job struct {
	a      *fleet.Assignment
	id     string
	dir    string // the work directory, WorkDir/{id}-a{attempt}
	artDir string // dir/artifacts
	logs   *logShipper
	// cacheURL is the job's TOLLGATE_CACHE_URL ("" without a cache).
	cacheURL string

	stopOnce   sync.Once
	stopped    chan struct{} // closed by the first stop
	stopState  model.State
	stopReason string
}

// stop asks for the job's processes to be stopped and the job to end as
// state. The first call wins: a cancel arriving after a timeout changes nothing.
func (j *job) stop(state model.State, reason string) {
	j.stopOnce.Do(func() {
		j.stopState, j.stopReason = state, reason
		close(j.stopped)
	})
}

// outcome is how a job ended, as reported to Finish.
type outcome struct {
	state    model.State
	exitCode *int
	reason   string
}

// runJob runs one claimed job to its end and reports it. The job's own
// Backend calls use a context that survives ctx, so a shutdown still stops
// the processes and reports INTERRUPTED, within KillGrace + shutdownBudget.
func (w *Worker) runJob(ctx context.Context, a *fleet.Assignment) {
	if a == nil || a.Job == nil {
		w.log.ErrorContext(ctx, "claim returned no job")
		return
	}
	id := a.Job.ID
	if _, err := model.ParseJobID(id); err != nil {
		// The id names the work directory: never trust it blindly.
		w.log.ErrorContext(ctx, "claim returned a bad job id; not running it", "job", id, "err", err)
		return
	}
	dir := filepath.Join(w.workDir, fmt.Sprintf("%s-a%d", id, a.Job.Attempt))
	j := &job{a: a, id: id, dir: dir, artDir: filepath.Join(dir, "artifacts"), stopped: make(chan struct{})}
	log := w.log.With("job", id, "attempt", a.Job.Attempt)

	jctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	stopOnShutdown := context.AfterFunc(ctx, func() {
		j.stop(model.Interrupted, "the worker is shutting down")
		time.AfterFunc(w.o.KillGrace+shutdownBudget, cancel)
	})
	defer stopOnShutdown()

	j.logs = newLogShipper(w.b, w.o.ID, id, w.o.LogFlushEvery, log, func(err error) {
		j.stop(model.Cancelled, fmt.Sprintf("the job is no longer this worker's (%v)", err))
	})
	go j.logs.run(jctx)

	w.mu.Lock()
	w.cur = j
	w.mu.Unlock()
	start := time.Now()
	log.InfoContext(ctx, "job started", "command", a.Command, "dir", dir)

	out := w.execute(jctx, j, log)
	switch out.state {
	case model.Completed, model.Failed, model.TimedOut:
		// Interrupted jobs run again and cancelled ones are not wanted:
		// their artifacts would only cost time.
		w.uploadArtifacts(jctx, j)
	}
	j.logs.close()
	<-j.logs.done
	w.finish(jctx, log, j, out)

	if !w.o.KeepWorkDirs {
		if err := removeAll(dir); err != nil {
			log.WarnContext(ctx, "cannot remove the work directory", "err", err)
		}
	}
	w.mu.Lock()
	w.cur = nil
	w.mu.Unlock()
	attrs := []any{"state", out.state, "duration", time.Since(start).Round(time.Millisecond)}
	if out.exitCode != nil {
		attrs = append(attrs, "exit_code", *out.exitCode)
	}
	if out.reason != "" {
		attrs = append(attrs, "reason", out.reason)
	}
	log.InfoContext(ctx, "job ended", attrs...)
}

// execute runs the job's command and returns how it ended. Whichever way
// it ends, no process of its group is left running.
func (w *Worker) execute(ctx context.Context, j *job, log *slog.Logger) outcome {
	if len(j.a.Command) == 0 {
		j.logs.linef("the job has no command")
		return outcome{state: model.Failed, reason: "the job has no command"}
	}
	if err := prepareDir(j); err != nil {
		// The worker's fault, not the job's: run it again elsewhere.
		j.logs.linef("cannot prepare the work directory: %v", err)
		return outcome{state: model.Interrupted, reason: "worker error: " + err.Error()}
	}
	// The checkout stops when the job is stopped (cancelled, timed out).
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-j.stopped:
			cancel()
		case <-cctx.Done():
		}
	}()
	if d := j.a.Timeout; d > 0 {
		// The checkout counts against the job's timeout.
		t := time.AfterFunc(d, func() { j.stop(model.TimedOut, fmt.Sprintf("timed out after %v", d)) })
		defer t.Stop()
	}
	co, cerr := w.checkout(cctx, j)
	if cerr == nil {
		cerr = w.giveToJob(j)
	}
	if cerr != nil {
		select {
		case <-j.stopped:
			return outcome{state: j.stopState, reason: j.stopReason}
		default:
		}
		j.logs.linef("%s", cerr.reason)
		return outcome{state: cerr.state, reason: cerr.reason}
	}

	sbj, err := w.sb.NewJob(w.sandboxSpec(j))
	if err != nil {
		j.logs.linef("cannot set up the sandbox: %v", err)
		return outcome{state: model.Interrupted, reason: "worker error: " + err.Error()}
	}
	defer sbj.Close()
	svcEnv, stopServices, err := w.startServices(ctx, j, sbj, log)
	if err != nil {
		j.logs.linef("%v", err)
		return outcome{state: model.Interrupted, reason: "worker error: " + err.Error()}
	}
	defer stopServices()
	env := append(append(w.env(j), gitEnv(j.a.Checkout, co)...), svcEnv...)
	cmd := sbj.Command(j.a.Command, env, j.srcDir())
	if w.sb.Mode() != sandbox.ModeBwrap {
		// Under bwrap the sandbox's init looks the command up, inside.
		if cmd.Path, err = lookPath(j.a.Command[0], lastValue(env, "PATH")); err != nil {
			j.logs.linef("cannot start the command: %v", err)
			code := 127 // the shell's "command not found"
			return outcome{state: model.Failed, exitCode: &code, reason: "cannot start the command"}
		}
	}
	cmd.SysProcAttr = sysProcAttr()
	pr, pw, err := os.Pipe()
	if err != nil {
		j.logs.linef("cannot create the output pipe: %v", err)
		return outcome{state: model.Interrupted, reason: "worker error: " + err.Error()}
	}
	cmd.Stdout, cmd.Stderr = pw, pw // one pipe keeps stdout and stderr interleaved
	err = cmd.Start()
	pw.Close()
	if err != nil {
		pr.Close()
		j.logs.linef("cannot start the command: %v", err)
		code := 127 // the shell's "command not found"
		if errors.Is(err, fs.ErrPermission) {
			code = 126 // the shell's "not executable"
		}
		return outcome{state: model.Failed, exitCode: &code, reason: "cannot start the command"}
	}

	rd := newPipeReader(pr, j.logs)
	go rd.run()
	waitDone := make(chan struct{})
	go func() {
		defer close(waitDone)
		_ = cmd.Wait() // the status is in cmd.ProcessState
	}()
	var stopped model.State
	select {
	case <-waitDone:
	case <-j.stopped:
		stopped = j.stopState
		rd.fence(func() {
			j.logs.linef("%s: stopping the job (SIGTERM, then SIGKILL after %v)", j.stopReason, w.o.KillGrace)
		})
	}
	switch {
	case stopped != "":
		if w.killGroup(cmd.Process, waitDone) {
			j.logs.linef("processes still running after %v: sent SIGKILL", w.o.KillGrace)
		}
	case groupAlive(cmd.Process) && !w.sandboxEnds(cmd.Process):
		rd.fence(func() {
			j.logs.linef("the command exited but left processes running: stopping them (SIGTERM, then SIGKILL after %v)", w.o.KillGrace)
		})
		if w.killGroup(cmd.Process, waitDone) {
			j.logs.linef("processes still running after %v: sent SIGKILL", w.o.KillGrace)
		}
	}
	<-waitDone

	w.drain(j, rd, pr)
	rd.fences.Wait() // their lines belong before the artifacts' and the end

	if stopped != "" {
		return outcome{state: stopped, reason: j.stopReason}
	}
	code, sig := exitStatus(cmd.ProcessState)
	switch {
	case sig != "":
		return outcome{state: model.Failed, exitCode: &code, reason: "killed by signal " + sig}
	case code == 0:
		return outcome{state: model.Completed, exitCode: &code}
	}
	return outcome{state: model.Failed, exitCode: &code}
}

// sandboxSpec is the job's isolation: its own directory, its type's
// network mode, and the git mirror its checkout borrows objects from.
func (w *Worker) sandboxSpec(j *job) sandbox.JobSpec {
	spec := sandbox.JobSpec{Dir: j.dir, Network: j.a.Network}
	if j.a.Checkout != nil {
		spec.ReadOnly = []string{filepath.Join(w.workDir, ".git-cache")}
	}
	return spec
}

// startServices offers the job what it may reach from its sandbox: the
// cache (if the worker has one; a failure only costs the job its cache)
// and, under bwrap unless its type says network: none, the egress proxy.
// It returns the env naming them and the func that stops them.
func (w *Worker) startServices(ctx context.Context, j *job, sbj *sandbox.Job, log *slog.Logger) (env []string, stop func(), err error) {
	var stops []func()
	stop = func() {
		for _, f := range stops {
			f()
		}
	}
	if w.o.Cache != nil {
		if proxy, err := startCacheProxy(sbj, w.o.Cache, log); err != nil {
			log.WarnContext(ctx, "cannot serve the cache to the job; it runs without one", "err", err)
		} else {
			stops = append(stops, proxy.close)
			j.cacheURL = proxy.url
		}
	}
	if w.sb.Mode() == sandbox.ModeBwrap && j.a.Network == sandbox.NetworkProxy {
		ln, addr, err := sbj.Listen(sandbox.ProxyPort)
		if err != nil {
			stop()
			return nil, nil, fmt.Errorf("cannot start the egress proxy: %w", err)
		}
		p := &sandbox.EgressProxy{Allow: w.o.EgressAllow, Refused: func(dest, why string) {
			j.logs.linef("sandbox: refused a connection to %s: %s", dest, why)
		}}
		srv := &http.Server{Handler: p, ReadHeaderTimeout: time.Minute, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug)}
		go srv.Serve(ln)
		stops = append(stops, func() { srv.Close() })
		env = sandbox.ProxyEnv(addr)
	}
	return env, stop, nil
}

// sandboxEnds waits for a bwrap sandbox's last processes to go, as they
// do by themselves once its init exits: the kernel kills what is left of
// its pid namespace. It reports false (leftovers to stop) without bwrap.
func (w *Worker) sandboxEnds(p *os.Process) bool {
	if w.sb.Mode() != sandbox.ModeBwrap {
		return false
	}
	for range 100 {
		if !groupAlive(p) {
			return true
		}
		time.Sleep(10 * time.Millisecond)
	}
	return false
}

// drain waits for the end of the output. Once the group is gone only a
// process that left it (setsid) can hold the pipe open: after
// pipeDrainTimeout the rest is dropped. A log backed up behind the Backend
// is waited for (up to maxDrain): that output is the job's and is kept.
func (w *Worker) drain(j *job, rd *pipeReader, pr *os.File) {
	defer pr.Close()
	t := time.NewTimer(pipeDrainTimeout)
	defer t.Stop()
	giveUp := time.Now().Add(maxDrain)
	for {
		select {
		case <-rd.done:
			return
		case <-t.C:
			if rd.backedUp.Load() && time.Now().Before(giveUp) {
				t.Reset(pipeDrainTimeout)
				continue
			}
			j.logs.dropInput()
			pr.Close()
			<-rd.done
			j.logs.linef("the output is still held open by a process outside the job's process group: stopped reading it")
			return
		}
	}
}

// killGroup sends SIGTERM to the job's process group and SIGKILL after
// KillGrace unless the whole group (the main process included) is gone by
// then. It reports whether SIGKILL was needed.
func (w *Worker) killGroup(p *os.Process, mainDone <-chan struct{}) bool {
	_ = terminateGroup(p)
	deadline := time.NewTimer(w.o.KillGrace)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-deadline.C:
			_ = killGroup(p)
			// SIGKILL is sent, not yet done: let the group finish dying
			// so nothing of the job outlives its end.
			for i := 0; i < 50 && groupAlive(p); i++ {
				time.Sleep(20 * time.Millisecond)
			}
			return true
		case <-tick.C:
			select {
			case <-mainDone:
				if !groupAlive(p) {
					return false
				}
			default:
			}
		}
	}
}

// env is the job's whole environment: BaseEnv, then the assignment's env
// (sorted, so runs are reproducible), then the worker's TOLLGATE_*
// variables; for a repeated name the last one counts.
func (w *Worker) env(j *job) []string {
	env := slices.Clone(w.o.BaseEnv)
	if env == nil {
		env = []string{
			"PATH=/usr/local/bin:/usr/bin:/bin",
			"HOME=" + filepath.Join(j.dir, ".home"),
			"TMPDIR=" + filepath.Join(j.dir, ".tmp"),
			"LANG=C.UTF-8",
		}
	}
	for _, k := range slices.Sorted(maps.Keys(j.a.Env)) {
		v := j.a.Env[k]
		if k == "" || strings.ContainsAny(k, "=\x00") || strings.ContainsRune(v, 0) {
			j.logs.linef("environment variable %q skipped: invalid name or value", k)
			continue
		}
		env = append(env, k+"="+v)
	}
	env = append(env, "TOLLGATE_ARTIFACTS_DIR="+j.artDir, "TOLLGATE_WORK_DIR="+j.dir, "TOLLGATE_SRC_DIR="+j.srcDir())
	if j.cacheURL != "" {
		env = append(env, cache.EnvURL+"="+j.cacheURL)
	}
	return env
}

// lastValue returns the value of the last name=... entry of env.
func lastValue(env []string, name string) string {
	for i := len(env) - 1; i >= 0; i-- {
		if v, ok := strings.CutPrefix(env[i], name+"="); ok {
			return v
		}
	}
	return ""
}

// lookPath finds file in the job's PATH, not the worker's (exec.LookPath
// only reads the worker's). Names with a slash are used as they are,
// relative to the work directory; relative PATH entries are ignored, like
// exec.LookPath refuses them, so a job's own files never shadow a command.
func lookPath(file, path string) (string, error) {
	if strings.Contains(file, "/") {
		return file, nil
	}
	for _, dir := range filepath.SplitList(path) {
		if !filepath.IsAbs(dir) {
			continue
		}
		p := filepath.Join(dir, file)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%q not found in PATH %q: %w", file, path, exec.ErrNotFound)
}

// srcDir is the job's work tree: its checkout, and where its command runs.
func (j *job) srcDir() string { return filepath.Join(j.dir, "src") }

// giveToJob hands the work directory, checkout included, to the sandbox
// user (when jobs run as another user than the worker).
func (w *Worker) giveToJob(j *job) *checkoutError {
	if err := os.MkdirAll(j.srcDir(), 0o755); err != nil {
		return infraErr("%v", err)
	}
	if err := w.sb.Chown(j.dir); err != nil {
		return infraErr("cannot give the work directory to the sandbox user: %v", err)
	}
	return nil
}

// prepareDir makes a fresh work directory: a leftover of an earlier run
// of the same attempt (a crashed worker) is removed first.
func prepareDir(j *job) error {
	if err := removeAll(j.dir); err != nil {
		return err
	}
	for _, d := range []string{j.artDir, filepath.Join(j.dir, ".home"), filepath.Join(j.dir, ".tmp")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	return nil
}

// removeAll is os.RemoveAll that also removes read-only directories, which
// jobs leave behind routinely (the Go module cache makes its files read-only).
func removeAll(dir string) error {
	if os.RemoveAll(dir) == nil {
		return nil
	}
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if d != nil && d.IsDir() {
			_ = os.Chmod(p, 0o700)
		}
		return nil
	})
	return os.RemoveAll(dir)
}

// finish reports the job's end, retrying transient errors until ctx ends.
func (w *Worker) finish(ctx context.Context, log *slog.Logger, j *job, out outcome) {
	r := fleet.Result{WorkerID: w.o.ID, JobID: j.id, State: out.state, ExitCode: out.exitCode, Reason: out.reason}
	bo := backoff{min: backoffMin, max: 5 * time.Second}
	for {
		cctx, cancel := context.WithTimeout(ctx, callTimeout)
		err := w.b.Finish(cctx, r)
		cancel()
		switch {
		case err == nil:
			return
		case gone(err):
			log.WarnContext(ctx, "the job is no longer this worker's; its end was not recorded", "state", out.state, "err", err)
			return
		case !errs.Transient(err) || ctx.Err() != nil:
			log.ErrorContext(ctx, "cannot report the job's end", "state", out.state, "err", err)
			return
		}
		log.WarnContext(ctx, "finish failed; retrying", "err", err)
		if !sleep(ctx, bo.next()) {
			log.ErrorContext(ctx, "cannot report the job's end", "state", out.state, "err", err)
			return
		}
	}
}

// gone reports whether err says the job is no longer this worker's.
func gone(err error) bool {
	return errs.Is(err, errs.FailedPrecondition) || errs.Is(err, errs.NotFound)
}
