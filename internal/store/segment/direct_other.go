//go:build !linux

package segment

import "os"

// openDirect is for Linux only: elsewhere frames go through the page cache.
func openDirect(path string) (*os.File, int) { return nil, 0 }

const maxAlign = 1

func alignedBytes(n int) []byte { return make([]byte, n) }
