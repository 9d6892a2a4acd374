package worker

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/tollgate-ci/tollgate/core/errs"
	"github.com/tollgate-ci/tollgate/core/fleet"
)

const (
	// flushAt sends the pending output at once, without waiting for the
	// next LogFlushEvery tick.
	flushAt = 64 << 10
	// maxChunk bounds one AppendLog, well under the fleet's 1 MiB limit.
	maxChunk = 512 << 10
	// maxPending bounds the output held while the Backend is unreachable:
	// past it the job blocks on its writes instead of the worker growing.
	maxPending = 16 << 20
	// logLinePrefix starts every line the worker itself adds to a job's log.
	logLinePrefix = "[tollgate] "
)

// logShipper sends a job's output to AppendLog in order and without gaps:
// one goroutine (run) owns the sending, and a chunk leaves the pending
// buffer only once the Backend acknowledged it, so a failed append is
// retried with the very same bytes at the very same offset.
type logShipper struct {
	b                fleet.Backend
	workerID, jobID  string
	every            time.Duration
	log              *slog.Logger
	onGone           func(error) // the Backend says the job is not ours anymore
	kick             chan struct{}
	done             chan struct{} // closed when run returns
	mu               sync.Mutex
	space            *sync.Cond // signalled when pend shrinks or writers must stop waiting
	pend             []byte     // output not acknowledged yet; pend[0] is at offset off
	off              int64
	midLine          bool // the last byte so far is not a newline
	closed, dropping bool // no more output; process output is discarded
	dead             bool // sending stopped for good
}

func newLogShipper(b fleet.Backend, workerID, jobID string, every time.Duration, log *slog.Logger, onGone func(error)) *logShipper {
	s := &logShipper{b: b, workerID: workerID, jobID: jobID, every: every, log: log, onGone: onGone,
		kick: make(chan struct{}, 1), done: make(chan struct{})}
	s.space = sync.NewCond(&s.mu)
	return s
}

// Write takes the process's output. It never fails, so a dead Backend never
// breaks the job's pipe; it blocks while maxPending bytes wait to be sent.
func (s *logShipper) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for len(s.pend) >= maxPending && !s.dead && !s.closed && !s.dropping {
		s.space.Wait()
	}
	if !s.dead && !s.closed && !s.dropping {
		s.add(p)
	}
	return len(p), nil
}

// linef adds a worker message as its own "[tollgate] " line.
func (s *logShipper) linef(format string, args ...any) {
	line := logLinePrefix + fmt.Sprintf(format, args...) + "\n"
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.dead || s.closed {
		return
	}
	if s.midLine {
		s.add([]byte("\n"))
	}
	s.add([]byte(line))
}

// lines adds output of the worker's own tools (git) as it is, ending
// with a newline; only its last 64 KiB are kept.
func (s *logShipper) lines(out []byte) {
	const max = 64 << 10
	if len(out) > max {
		out = out[len(out)-max:]
	}
	if len(out) == 0 {
		return
	}
	if out[len(out)-1] != '\n' {
		out = append(out[:len(out):len(out)], '\n')
	}
	_, _ = s.Write(out)
}

// add appends p to pend; s.mu is held.
func (s *logShipper) add(p []byte) {
	if len(p) == 0 {
		return
	}
	s.pend = append(s.pend, p...)
	s.midLine = p[len(p)-1] != '\n'
	if len(s.pend) >= flushAt {
		s.poke()
	}
}

func (s *logShipper) poke() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// dropInput discards further process output, and unblocks a Write waiting
// for space; worker lines are still taken.
func (s *logShipper) dropInput() {
	s.mu.Lock()
	s.dropping = true
	s.space.Broadcast()
	s.mu.Unlock()
}

// close ends the log: run sends what is pending, then returns.
func (s *logShipper) close() {
	s.mu.Lock()
	s.closed = true
	s.space.Broadcast()
	s.mu.Unlock()
	s.poke()
}

// run sends pending output every interval, or at once when flushAt bytes
// wait or the log is closed, until the log is closed and fully sent, sending
// fails for good, or ctx ends.
func (s *logShipper) run(ctx context.Context) {
	defer close(s.done)
	t := time.NewTicker(s.every)
	defer t.Stop()
	for {
		if !s.ship(ctx) {
			return
		}
		s.mu.Lock()
		finished := s.closed && len(s.pend) == 0
		s.mu.Unlock()
		if finished {
			return
		}
		select {
		case <-ctx.Done():
			s.die()
			s.log.ErrorContext(ctx, "log not sent: out of time")
			return
		case <-s.kick:
		case <-t.C:
		}
	}
}

// ship sends everything pending; false if sending stopped for good.
func (s *logShipper) ship(ctx context.Context) bool {
	for {
		s.mu.Lock()
		if s.dead {
			s.mu.Unlock()
			return false
		}
		n := min(len(s.pend), maxChunk)
		if n == 0 {
			s.mu.Unlock()
			return true
		}
		chunk, off := bytes.Clone(s.pend[:n]), s.off
		s.mu.Unlock()

		if err := s.send(ctx, off, chunk); err != nil {
			s.die()
			return false
		}
		s.mu.Lock()
		s.pend, s.off = s.pend[n:], s.off+int64(n)
		if len(s.pend) == 0 {
			s.pend = nil // let the big buffer of a burst go
		}
		s.space.Broadcast()
		s.mu.Unlock()
	}
}

// send appends one chunk, retrying transient errors with backoff. Retrying
// is safe: AppendLog of the same chunk at the same offset is a no-op.
func (s *logShipper) send(ctx context.Context, off int64, chunk []byte) error {
	bo := backoff{min: backoffMin, max: 5 * time.Second}
	for {
		cctx, cancel := context.WithTimeout(ctx, callTimeout)
		err := s.b.AppendLog(cctx, s.workerID, s.jobID, off, chunk)
		cancel()
		switch {
		case err == nil:
			return nil
		case ctx.Err() != nil:
			s.log.ErrorContext(ctx, "log not sent: out of time", "offset", off, "err", err)
			return err
		case gone(err):
			s.log.WarnContext(ctx, "log refused: the job is no longer this worker's", "err", err)
			s.onGone(err)
			return err
		case !errs.Transient(err):
			s.log.ErrorContext(ctx, "log refused; the rest is dropped", "offset", off, "err", err)
			return err
		}
		s.log.WarnContext(ctx, "log append failed; retrying", "offset", off, "err", err)
		if !sleep(ctx, bo.next()) {
			return ctx.Err()
		}
	}
}

// die stops sending and unblocks writers; output from now on is dropped.
func (s *logShipper) die() {
	s.mu.Lock()
	s.dead = true
	s.pend = nil
	s.space.Broadcast()
	s.mu.Unlock()
}
