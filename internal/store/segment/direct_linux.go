package segment

import (
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// openDirect opens the segment at path a second time, for direct writes
// (O_DIRECT: from the process's memory to the device, past the page cache),
// and returns the alignment their offsets, lengths and buffers need. It
// returns nil when the filesystem does not take direct writes, or does not
// say what they need (statx's STATX_DIOALIGN, Linux 6.1): frames then go
// through the page cache.
func openDirect(path string) (*os.File, int) {
	var st unix.Statx_t
	if err := unix.Statx(unix.AT_FDCWD, path, 0, unix.STATX_DIOALIGN, &st); err != nil {
		return nil, 0
	}
	align := int(st.Dio_offset_align)
	if st.Mask&unix.STATX_DIOALIGN == 0 || align == 0 || align&(align-1) != 0 || align > maxAlign ||
		int(st.Dio_mem_align) > maxAlign {
		return nil, 0
	}
	f, err := os.OpenFile(path, os.O_WRONLY|unix.O_DIRECT, 0)
	if err != nil {
		return nil, 0
	}
	return f, align
}

// maxAlign is the largest alignment openDirect takes, and the alignment of
// the buffers frames are written from.
const maxAlign = 4096

// alignedBytes returns n bytes whose first is at an address that is a
// multiple of maxAlign (Go's collector does not move heap memory).
func alignedBytes(n int) []byte {
	b := make([]byte, n+maxAlign)
	off := -int(uintptr(unsafe.Pointer(unsafe.SliceData(b)))) & (maxAlign - 1)
	return b[off : off+n : off+n]
}
