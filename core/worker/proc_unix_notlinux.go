//go:build unix && !linux

package worker

import "os"

// groupAlive reports whether p's process group still has a member. Without
// /proc zombies count as members; stopping a job then waits out KillGrace.
func groupAlive(p *os.Process) bool { return groupSignalable(p) }
