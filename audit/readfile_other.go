//go:build !(linux || darwin || freebsd || netbsd || openbsd)

package audit

import (
	"io"
	"os"
)

// readFileAppend appends the file at path to dst.
func readFileAppend(path string, dst []byte) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return dst, err
	}
	defer f.Close()
	start := len(dst)
	for {
		dst = growForRead(dst)
		n, err := f.Read(dst[len(dst):cap(dst)])
		dst = dst[:len(dst)+n]
		if err == io.EOF {
			return dst, nil
		}
		if err != nil {
			return dst[:start], err
		}
	}
}
