package launcher

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/tollgate-ci/tollgate/emulators/proctree"
)

// Restart backoff of a child that exited.
const (
	minBackoff = 500 * time.Millisecond
	maxBackoff = 30 * time.Second
	// stableRun is how long a process must have run for the backoff to
	// start again from minBackoff.
	stableRun = time.Minute
)

var errStopping = errors.New("launcher: stopping")

// child is one supervised child process: started again after it exits,
// until stop.
type child struct {
	name    string
	kind    string // kindFunction, kindInstance or kindWorker
	argv    []string
	env     []string
	addr    string // host:port it listens on; "" for workers
	logPath string
	ready   time.Duration // bound on accepting connections after a start
	log     *slog.Logger
	onUp    func(up bool) // told when the process serves, and when it exits

	mu       sync.Mutex
	pid      int
	exited   chan struct{} // of the current process
	restarts int
	stopping bool

	stopc chan struct{} // closed by stop: no more restarts
	done  chan struct{} // closed when the supervisor returned
}

// start starts the first process and the supervisor that restarts it.
func (c *child) start() error {
	c.stopc, c.done = make(chan struct{}), make(chan struct{})
	exited, err := c.spawn()
	if err != nil {
		close(c.done)
		return err
	}
	go c.supervise(exited)
	return nil
}

// spawn starts one process, its output appended to the log file, in its
// own process group (so a terminal's Ctrl-C reaches only the launcher,
// which stops the children in order).
func (c *child) spawn() (chan struct{}, error) {
	f, err := os.OpenFile(c.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("launcher: %s: log: %w", c.name, err)
	}
	fmt.Fprintf(f, "--- %s: %s started (%s)\n", time.Now().Format(time.RFC3339), c.name, strings.Join(c.argv, " "))
	cmd := exec.Command(c.argv[0], c.argv[1:]...)
	cmd.Env = c.env
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = sysProcAttr()
	// Under the lock, so that stop either sees the new pid or keeps the
	// process from starting.
	c.mu.Lock()
	if c.stopping {
		c.mu.Unlock()
		f.Close()
		return nil, errStopping
	}
	if err := cmd.Start(); err != nil {
		c.mu.Unlock()
		f.Close()
		return nil, fmt.Errorf("launcher: start %s: %w", c.name, err)
	}
	exited := make(chan struct{})
	c.pid, c.exited = cmd.Process.Pid, exited
	c.mu.Unlock()
	go func() {
		err := cmd.Wait()
		status := "exit 0"
		if err != nil {
			status = err.Error()
		}
		fmt.Fprintf(f, "--- %s: %s exited: %s\n", time.Now().Format(time.RFC3339), c.name, status)
		f.Close()
		// The balancer first: once Pid changes, no request goes to it.
		if c.onUp != nil {
			c.onUp(false)
		}
		c.mu.Lock()
		c.pid = 0
		c.mu.Unlock()
		close(exited)
	}()
	return exited, nil
}

// supervise restarts the process each time it exits, with exponential
// backoff, until stop.
func (c *child) supervise(exited chan struct{}) {
	defer close(c.done)
	backoff := minBackoff
	for {
		started := time.Now()
		if c.addr != "" && c.onUp != nil {
			go c.markUpWhenReady(exited)
		}
		select {
		case <-exited:
		case <-c.stopc:
			<-exited // stop signals it
			return
		}
		if c.isStopping() {
			return
		}
		if time.Since(started) >= stableRun {
			backoff = minBackoff
		}
		c.log.Warn("launcher: child exited; restarting", "child", c.name, "ran", time.Since(started).Round(time.Millisecond).String(),
			"in", backoff.String(), "log", c.logPath, "tail", tail(c.logPath, 3))
		select {
		case <-time.After(backoff):
		case <-c.stopc:
			return
		}
		backoff = min(2*backoff, maxBackoff)
		var err error
		for {
			if exited, err = c.spawn(); err == nil {
				break
			}
			if errors.Is(err, errStopping) {
				return
			}
			c.log.Error("launcher: restart failed", "child", c.name, "err", err.Error(), "retry_in", backoff.String())
			select {
			case <-time.After(backoff):
			case <-c.stopc:
				return
			}
			backoff = min(2*backoff, maxBackoff)
		}
		c.mu.Lock()
		c.restarts++
		n := c.restarts
		c.mu.Unlock()
		c.log.Info("launcher: child restarted", "child", c.name, "pid", c.Pid(), "restarts", n)
	}
}

// markUpWhenReady tells onUp once the process accepts connections.
func (c *child) markUpWhenReady(exited chan struct{}) {
	if waitListening(context.Background(), c.addr, c.ready, exited) != nil {
		return
	}
	select {
	case <-exited: // exited meanwhile: stays down
	default:
		c.onUp(true)
	}
}

func (c *child) isStopping() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stopping
}

// Pid is the running process's id, 0 while none runs.
func (c *child) Pid() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.pid
}

// Restarts counts the restarts so far.
func (c *child) Restarts() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.restarts
}

// waitReady waits until the first process accepts connections; on
// failure the error names the child and shows the tail of its log.
func (c *child) waitReady(ctx context.Context) error {
	c.mu.Lock()
	exited := c.exited
	c.mu.Unlock()
	err := waitListening(ctx, c.addr, c.ready, exited)
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		return fmt.Errorf("launcher: waiting for %s: %w", c.name, ctx.Err())
	}
	return fmt.Errorf("launcher: %s (%s) %v; log %s ends:\n%s", c.name, c.addr, err, c.logPath, tail(c.logPath, 20))
}

// waitListening dials addr until it answers, the process exits, ctx ends
// or the bound passes.
func waitListening(ctx context.Context, addr string, bound time.Duration, exited <-chan struct{}) error {
	deadline := time.Now().Add(bound)
	for {
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			conn.Close()
			return nil
		}
		select {
		case <-exited:
			return errors.New("exited before it accepted connections")
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("did not accept connections within %s", bound)
		}
	}
}

// signalStop marks the child stopping and sends sig to its process group and
// to the descendants it had when stop began (a worker's jobs run in their
// own groups). It returns the pids signalled.
func (c *child) signalStop() []int {
	c.mu.Lock()
	if !c.stopping {
		c.stopping = true
		close(c.stopc)
	}
	pid := c.pid
	c.mu.Unlock()
	if pid == 0 {
		return nil
	}
	pids := append(proctree.Descendants(pid), pid)
	_ = syscall.Kill(-pid, syscall.SIGTERM)
	for _, p := range pids {
		_ = syscall.Kill(p, syscall.SIGTERM)
	}
	return pids
}

// stopChildren stops children together: SIGTERM, then SIGKILL to what is
// left after grace. It returns once every supervisor returned, with an
// error naming any process still alive.
func stopChildren(children []*child, grace time.Duration) error {
	type sig struct {
		c    *child
		pids []int
	}
	var sent []sig
	for _, c := range children {
		sent = append(sent, sig{c, c.signalStop()})
	}
	deadline := time.After(grace)
	for _, s := range sent {
		select {
		case <-s.c.done:
		case <-deadline:
		}
	}
	for _, s := range sent {
		if len(s.pids) > 0 && proctree.AnyAlive(s.pids) {
			pid := s.pids[len(s.pids)-1]
			s.c.log.Warn("launcher: child ignored SIGTERM; killing", "child", s.c.name, "pid", pid)
			_ = syscall.Kill(-pid, syscall.SIGKILL)
			for _, p := range s.pids {
				_ = syscall.Kill(p, syscall.SIGKILL)
			}
		}
	}
	var alive []string
	for _, s := range sent {
		<-s.c.done
		for i := 0; i < 100 && proctree.AnyAlive(s.pids); i++ {
			time.Sleep(20 * time.Millisecond)
		}
		if proctree.AnyAlive(s.pids) {
			alive = append(alive, fmt.Sprintf("%s %v", s.c.name, s.pids))
		}
	}
	if len(alive) > 0 {
		return fmt.Errorf("launcher: still alive after SIGKILL: %s", strings.Join(alive, ", "))
	}
	return nil
}

// Alive reports whether process pid exists and is not a zombie.
func Alive(pid int) bool { return proctree.Alive(pid) }

// tail returns the last n lines of the file at path.
func tail(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	defer f.Close()
	const limit = 64 << 10
	if st, err := f.Stat(); err == nil && st.Size() > limit {
		_, _ = f.Seek(st.Size()-limit, io.SeekStart)
	}
	b, _ := io.ReadAll(f)
	lines := bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}
