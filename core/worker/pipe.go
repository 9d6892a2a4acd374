package worker

import (
	"errors"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

const (
	// readSlice bounds one blocking read, so that fence gets its turn.
	readSlice = 50 * time.Millisecond
	// fenceMax bounds what fence drains from a job that keeps writing.
	fenceMax = 1 << 20
	// fenceWait bounds how long fence holds up its caller.
	fenceWait = 200 * time.Millisecond
)

// pipeReader copies the job's output pipe to its log. Its fence lets the
// worker add a line after everything the job wrote before it: the bytes a
// process wrote just before it exited may still sit unread in the pipe
// when the worker notices the exit.
type pipeReader struct {
	f        *os.File
	dst      io.Writer
	mu       sync.Mutex // held while a read and its write to dst are under way
	buf      []byte
	deadline bool // f supports read deadlines (pollable pipes do)
	done     chan struct{}
	// backedUp is set while a write to dst blocks or is under way: the log
	// is behind, which is not the pipe's fault.
	backedUp atomic.Bool
	fences   sync.WaitGroup // fences still running, see fence
}

func newPipeReader(f *os.File, dst io.Writer) *pipeReader {
	r := &pipeReader{f: f, dst: dst, buf: make([]byte, 32<<10), done: make(chan struct{})}
	r.deadline = f.SetReadDeadline(time.Time{}) == nil
	return r
}

// run copies until EOF or a read error (the pipe closed).
func (r *pipeReader) run() {
	defer close(r.done)
	for {
		var n int
		var err error
		if r.deadline {
			r.mu.Lock()
			n, err = r.read(readSlice)
			r.mu.Unlock()
		} else {
			if n, err = r.f.Read(r.buf); n > 0 {
				r.write(r.buf[:n])
			}
		}
		if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			return
		}
	}
}

// read reads once, waiting at most d, and writes what it got; r.mu is held.
func (r *pipeReader) read(d time.Duration) (int, error) {
	_ = r.f.SetReadDeadline(time.Now().Add(d))
	n, err := r.f.Read(r.buf)
	if n > 0 {
		r.write(r.buf[:n])
	}
	return n, err
}

func (r *pipeReader) write(p []byte) {
	r.backedUp.Store(true)
	_, _ = r.dst.Write(p)
	r.backedUp.Store(false)
}

// fence copies what is in the pipe now (up to fenceMax), then calls then
// before any later output is copied. It waits at most fenceWait: a log
// backed up behind an unreachable Backend blocks the copy, and stopping a
// job must not wait for that; then still runs once the copy moves again
// (wait for r.fences before ending the log).
func (r *pipeReader) fence(then func()) {
	done := make(chan struct{})
	r.fences.Go(func() {
		defer close(done)
		r.fenceNow(then)
	})
	select {
	case <-done:
	case <-time.After(fenceWait):
	}
}

func (r *pipeReader) fenceNow(then func()) {
	if r.deadline {
		r.mu.Lock()
		defer r.mu.Unlock()
		for total := 0; total < fenceMax; {
			n, err := r.read(time.Millisecond)
			total += n
			if err != nil {
				break
			}
		}
	}
	then()
}
