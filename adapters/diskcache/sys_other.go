//go:build !linux && !darwin

package diskcache

import (
	"errors"
	"os"
)

func statSpace(string) (Space, int64, error) {
	return Space{}, 0, errors.New("free space is unknown on this system: set Options.FreeSpace")
}

func fallocate(*os.File, int64) error { return errNoFallocate }

func lockDir(*os.File) error { return nil }
