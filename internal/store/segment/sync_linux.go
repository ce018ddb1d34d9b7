package segment

import (
	"os"
	"syscall"
)

// fdatasync makes f's data, and the metadata needed to read it back (its
// size), durable; unlike fsync it leaves the modification time alone.
func fdatasync(f *os.File) error {
	for {
		err := syscall.Fdatasync(int(f.Fd()))
		if err != syscall.EINTR {
			if err != nil {
				return &os.PathError{Op: "fdatasync", Path: f.Name(), Err: err}
			}
			return nil
		}
	}
}
