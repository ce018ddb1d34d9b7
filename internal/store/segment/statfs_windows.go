package segment

import "golang.org/x/sys/windows"

// freeBytes is the space left to this user on dir's volume; ok is false
// when the system cannot tell.
func freeBytes(dir string) (free int64, ok bool) {
	p, err := windows.UTF16PtrFromString(dir)
	if err != nil {
		return 0, false
	}
	var avail uint64
	if err := windows.GetDiskFreeSpaceEx(p, &avail, nil, nil); err != nil {
		return 0, false
	}
	return int64(avail), true
}
