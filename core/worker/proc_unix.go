//go:build unix

package worker

import (
	"errors"
	"os"
	"syscall"
)

// openFlags opens artifacts without blocking, so a FIFO cannot stall the worker.
const openFlags = os.O_RDONLY | syscall.O_NONBLOCK

// sysProcAttr puts the job in its own process group, so stopping it reaches
// every process it started, not just the first.
func sysProcAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setpgid: true} }

// terminateGroup sends SIGTERM to p's process group.
func terminateGroup(p *os.Process) error { return signalGroup(p, syscall.SIGTERM) }

// killGroup sends SIGKILL to p's process group.
func killGroup(p *os.Process) error { return signalGroup(p, syscall.SIGKILL) }

// signalGroup signals the group whose id is p's pid; a group that is
// already gone is not an error. The id cannot be reused while any member
// lives, so this never reaches another job's processes.
func signalGroup(p *os.Process, sig syscall.Signal) error {
	err := syscall.Kill(-p.Pid, sig)
	if errors.Is(err, syscall.ESRCH) {
		return nil
	}
	return err
}

// exitStatus returns the exit code, or 128+n and the signal's name if the
// process was killed by signal n (the shell's convention).
func exitStatus(ps *os.ProcessState) (code int, signal string) {
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal()), ws.Signal().String()
	}
	return ps.ExitCode(), ""
}

// groupSignalable reports whether p's process group still has a member
// (zombies included).
func groupSignalable(p *os.Process) bool {
	return !errors.Is(syscall.Kill(-p.Pid, 0), syscall.ESRCH)
}
