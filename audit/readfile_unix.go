//go:build linux || darwin || freebsd || netbsd || openbsd

package audit

import (
	"io/fs"
	"syscall"
)

// readFileAppend appends the file at path to dst with open, read and close
// alone: os.Open also tries to register each file with the poller and then
// sets it blocking again, four more system calls for each of the thousands
// of small files a bucket holds.
func readFileAppend(path string, dst []byte) ([]byte, error) {
	var fd int
	var err error
	for {
		if fd, err = syscall.Open(path, syscall.O_RDONLY|syscall.O_CLOEXEC, 0); err != syscall.EINTR {
			break
		}
	}
	if err != nil {
		return dst, &fs.PathError{Op: "open", Path: path, Err: err}
	}
	defer syscall.Close(fd)
	start := len(dst)
	for {
		dst = growForRead(dst)
		n, err := syscall.Read(fd, dst[len(dst):cap(dst)])
		switch {
		case err == syscall.EINTR:
			continue
		case err != nil:
			return dst[:start], &fs.PathError{Op: "read", Path: path, Err: err}
		case n == 0:
			return dst, nil
		}
		dst = dst[:len(dst)+n]
	}
}
