package worker

import (
	"bytes"
	"os"
	"strconv"
)

// groupAlive reports whether any process of p's group is still running.
// It reads /proc so that zombies do not count: where PID 1 does not reap
// orphans (containers without an init), a dead job's processes stay
// zombies forever and kill(-pgid, 0) would report them alive.
func groupAlive(p *os.Process) bool {
	d, err := os.Open("/proc")
	if err != nil {
		return groupSignalable(p)
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil {
		return groupSignalable(p)
	}
	want := []byte(strconv.Itoa(p.Pid))
	for _, name := range names {
		if name[0] < '0' || name[0] > '9' {
			continue
		}
		stat, err := os.ReadFile("/proc/" + name + "/stat")
		if err != nil {
			continue // exited meanwhile
		}
		// "pid (comm) state ppid pgrp ...": comm may hold anything, so
		// parse from its closing parenthesis.
		i := bytes.LastIndexByte(stat, ')')
		if i < 0 {
			continue
		}
		f := bytes.Fields(stat[i+1:])
		if len(f) >= 4 && bytes.Equal(f[2], want) && f[0][0] != 'Z' && f[0][0] != 'X' {
			return true
		}
	}
	return false
}
