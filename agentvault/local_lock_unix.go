//go:build unix

package agentvault

import (
	"os"
	"syscall"
)

// lockFile takes an exclusive flock(2) on f, waiting for other holders. The
// Python SDK takes the same lock (fcntl.flock), so Go and Python processes
// can share one record file.
func lockFile(f *os.File) error {
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX)
		if err != syscall.EINTR {
			return err
		}
	}
}

func unlockFile(f *os.File) error {
	return syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
}
