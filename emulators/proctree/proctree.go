// Package proctree finds and checks the processes below a process, from
// /proc (Linux), so launchers can stop a whole tree: children that leave
// their process group (the gcloud emulators' java) included.
package proctree

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// Alive reports whether process pid exists and is not a zombie.
func Alive(pid int) bool {
	if pid <= 0 || syscall.Kill(pid, 0) != nil {
		return false
	}
	state, ok := stat(pid)
	return !ok || state[0] != "Z" // no /proc: trust kill(0)
}

// AnyAlive reports whether any of pids is Alive.
func AnyAlive(pids []int) bool {
	for _, p := range pids {
		if Alive(p) {
			return true
		}
	}
	return false
}

// Descendants lists the processes below pid (none where /proc is missing).
func Descendants(pid int) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	children := map[int][]int{}
	for _, ent := range entries {
		p, err := strconv.Atoi(ent.Name())
		if err != nil {
			continue
		}
		f, ok := stat(p)
		if !ok || len(f) < 2 {
			continue
		}
		if pp, err := strconv.Atoi(f[1]); err == nil {
			children[pp] = append(children[pp], p)
		}
	}
	var out []int
	var walk func(int)
	walk = func(p int) {
		for _, c := range children[p] {
			out = append(out, c)
			walk(c)
		}
	}
	walk(pid)
	return out
}

// stat returns the fields of /proc/pid/stat after the command name (state,
// ppid, ...).
func stat(pid int) ([]string, bool) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return nil, false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return nil, false
	}
	f := strings.Fields(s[i+1:])
	return f, len(f) > 0
}
