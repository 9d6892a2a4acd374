package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/tollgate-ci/tollgate/emulators/proctree"
)

// proc is a child process the suite started, its output in a log file.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  *os.File
	done chan struct{} // closed when it exited
}

// startProc starts argv with env, its output appended to logDir/name.log,
// in its own process group (a terminal's Ctrl-C reaches only the test).
func startProc(name string, argv, env []string, logDir string) (*proc, error) {
	f, err := os.OpenFile(filepath.Join(logDir, name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("e2e: start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: f, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// kill sends SIGKILL to the process, its group and its descendants (a
// worker's jobs run in groups of their own), as when the machine dies, and
// waits for it.
func (p *proc) kill() {
	pids := append(proctree.Descendants(p.pid()), p.pid())
	for _, pid := range pids {
		_ = syscall.Kill(-pid, syscall.SIGKILL) // the jobs' groups
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	<-p.done
}

// stop sends SIGTERM and waits up to grace, then kills what is left, its
// descendants included.
func (p *proc) stop(grace time.Duration) {
	if p.exited() {
		return
	}
	desc := proctree.Descendants(p.pid())
	_ = syscall.Kill(p.pid(), syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
	}
	for _, pid := range append(desc, p.pid()) {
		if proctree.Alive(pid) {
			_ = syscall.Kill(-pid, syscall.SIGKILL)
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	<-p.done
}

// workerSet is the worker processes of a topology.
type workerSet struct {
	prefix string                        // of the ids: e2e-emb-, e2e-emu-
	argv   func(id, dir string) []string // the command of worker id, work directory dir
	env    []string
	dir    string // logs/ and work/ are below

	mu    sync.Mutex
	n     int
	procs map[string]*proc
}

func (w *workerSet) add() (string, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.n++
	id := w.prefix + strconv.Itoa(w.n)
	if w.procs == nil {
		w.procs = map[string]*proc{}
	}
	work := filepath.Join(w.dir, "work", id)
	if err := os.MkdirAll(work, 0o755); err != nil {
		return "", err
	}
	p, err := startProc(id, w.argv(id, work), w.env, filepath.Join(w.dir, "logs"))
	if err != nil {
		return "", err
	}
	w.procs[id] = p
	return id, nil
}

func (w *workerSet) ids() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []string
	for id, p := range w.procs {
		if !p.exited() {
			out = append(out, id)
		}
	}
	slices.Sort(out)
	return out
}

func (w *workerSet) kill(id string) error {
	w.mu.Lock()
	p, ok := w.procs[id]
	if ok {
		delete(w.procs, id)
	}
	w.mu.Unlock()
	if !ok {
		return fmt.Errorf("%w: %s", errNoWorker, id)
	}
	p.kill()
	return nil
}

// stop stops every worker at once (SIGTERM, SIGKILL after grace).
func (w *workerSet) stop(grace time.Duration) {
	w.mu.Lock()
	procs := w.procs
	w.procs = nil
	w.mu.Unlock()
	var wg sync.WaitGroup
	for _, p := range procs {
		wg.Go(func() { p.stop(grace) })
	}
	wg.Wait()
}
