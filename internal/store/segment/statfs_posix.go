//go:build linux || darwin || freebsd

package segment

import "golang.org/x/sys/unix"

// freeBytes is the space left to unprivileged writers on dir's filesystem;
// ok is false when the system cannot tell.
func freeBytes(dir string) (free int64, ok bool) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, false
	}
	return int64(st.Bavail) * int64(st.Bsize), true
}
