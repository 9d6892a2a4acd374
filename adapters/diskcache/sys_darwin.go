package diskcache

import (
	"os"

	"golang.org/x/sys/unix"
)

func statSpace(dir string) (Space, int64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return Space{}, 0, err
	}
	bs := int64(st.Bsize)
	return Space{Free: int64(st.Bavail) * bs, Total: int64(st.Blocks) * bs}, bs, nil
}

// fallocate is not available: uploads are written without a reservation.
func fallocate(*os.File, int64) error { return errNoFallocate }

func lockDir(f *os.File) error { return unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB) }
