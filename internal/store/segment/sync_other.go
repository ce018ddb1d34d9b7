//go:build !linux

package segment

import "os"

// fdatasync makes f durable where there is no fdatasync: on macOS Sync is
// fcntl F_FULLFSYNC (a plain fsync there may leave the data in the drive's
// cache), on Windows FlushFileBuffers.
func fdatasync(f *os.File) error { return f.Sync() }
