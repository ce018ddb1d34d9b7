//go:build !(linux || darwin || freebsd)

package segment

// freeBytes cannot tell here: the log zero-fills ahead, and a full disk
// says so when it is.
func freeBytes(dir string) (free int64, ok bool) { return 0, false }
