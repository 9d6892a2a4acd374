package diskcache

import (
	"os"

	"golang.org/x/sys/unix"
)

// statSpace returns the free space an unprivileged writer may use
// (f_bavail, not f_bfree: the root reserve is not ours) and the size of
// the file system holding dir, and its fragment size.
func statSpace(dir string) (Space, int64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return Space{}, 0, err
	}
	bs := st.Frsize
	if bs <= 0 {
		bs = st.Bsize
	}
	return Space{Free: int64(st.Bavail) * bs, Total: int64(st.Blocks) * bs}, bs, nil
}

// fallocate reserves size bytes for f, so an upload that started can
// finish and a full disk is found before the content is received.
func fallocate(f *os.File, size int64) error {
	if size == 0 {
		return nil
	}
	return unix.Fallocate(int(f.Fd()), 0, 0, size)
}

// lockDir takes an exclusive lock on f, which the process keeps while the
// cache is open: two processes sharing a directory would each evict
// behind the other's index.
func lockDir(f *os.File) error { return unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB) }
