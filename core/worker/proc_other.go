//go:build !unix

package worker

import (
	"os"
	"syscall"
)

// Without process groups only the job's main process is stopped.

const openFlags = os.O_RDONLY

func sysProcAttr() *syscall.SysProcAttr            { return nil }
func terminateGroup(p *os.Process) error           { return p.Kill() }
func killGroup(p *os.Process) error                { return p.Kill() }
func groupAlive(p *os.Process) bool                { return false }
func exitStatus(ps *os.ProcessState) (int, string) { return ps.ExitCode(), "" }
