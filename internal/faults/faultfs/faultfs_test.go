//go:build linux

package faultfs

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestFaults switches each errno on and off under a file held open for
// writing, the way a server holds its database, and checks every write path
// fails with it while reads go on.
func TestFaults(t *testing.T) {
	ff := MountForTest(t)
	path := filepath.Join(ff.Dir, "db")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt([]byte("hello"), 0); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	for _, errno := range []syscall.Errno{syscall.EROFS, syscall.ENOSPC, syscall.EIO} {
		t.Run(errno.Error(), func(t *testing.T) {
			before := ff.Failed()
			ff.Fail(errno)
			for _, tc := range []struct {
				op string
				fn func() error
			}{
				{"write", func() error { _, err := f.WriteAt([]byte("x"), 5); return err }},
				{"fsync", f.Sync},
				{"truncate", func() error { return f.Truncate(1) }},
				{"fallocate", func() error { return syscall.Fallocate(int(f.Fd()), 0, 0, 1<<20) }},
				{"create", func() error { _, err := os.Create(filepath.Join(ff.Dir, "new")); return err }},
				{"open for writing", func() error { _, err := os.OpenFile(path, os.O_WRONLY, 0); return err }},
				{"mkdir", func() error { return os.Mkdir(filepath.Join(ff.Dir, "d"), 0o700) }},
				{"rename", func() error { return os.Rename(path, path+".old") }},
				{"unlink", func() error { return os.Remove(path) }},
				{"chmod", func() error { return os.Chmod(path, 0o644) }},
			} {
				if err := tc.fn(); !errors.Is(err, errno) {
					t.Errorf("%s with the fault set: %v, want %v", tc.op, err, errno)
				}
			}
			// Reads go on.
			b := make([]byte, 5)
			if _, err := f.ReadAt(b, 0); err != nil || string(b) != "hello" {
				t.Errorf("read with the fault set: %q %v", b, err)
			}
			if got, err := os.ReadFile(path); err != nil || string(got) != "hello" {
				t.Errorf("open for reading with the fault set: %q %v", got, err)
			}
			if ff.Failed() == before {
				t.Error("the fault counted no refusal")
			}
			// Healed, the same open file writes again.
			ff.Heal()
			if _, err := f.WriteAt([]byte(" world"), 5); err != nil {
				t.Fatal(err)
			}
			if err := f.Sync(); err != nil {
				t.Fatal(err)
			}
			if err := f.Truncate(5); err != nil {
				t.Fatal(err)
			}
		})
	}
	// Healed, the namespace changes too.
	dir := filepath.Join(ff.Dir, "d")
	for _, fn := range []func() error{
		func() error { return os.Mkdir(dir, 0o700) },
		func() error { return os.WriteFile(filepath.Join(dir, "a"), []byte("a"), 0o600) },
		func() error { return os.Rename(filepath.Join(dir, "a"), filepath.Join(ff.Dir, "b")) },
		func() error { return os.Link(filepath.Join(ff.Dir, "b"), filepath.Join(dir, "c")) },
		func() error { return os.Remove(filepath.Join(ff.Dir, "b")) },
	} {
		if err := fn(); err != nil {
			t.Fatal(err)
		}
	}
	if got, err := os.ReadFile(filepath.Join(ff.Backing, "d", "c")); err != nil || string(got) != "a" {
		t.Fatalf("backing file after rename and link: %q %v", got, err)
	}
	// Everything the healed writes did reached the backing directory, and
	// nothing a refused one tried did.
	if got, err := os.ReadFile(filepath.Join(ff.Backing, "db")); err != nil || string(got) != "hello" {
		t.Fatalf("backing file: %q %v", got, err)
	}
	for _, name := range []string{"new", "db.old", "b"} {
		if _, err := os.Stat(filepath.Join(ff.Backing, name)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s exists in the backing directory: %v", name, err)
		}
	}
}

// TestFailSync fails fsync alone: writes reach the backing file, fsync
// fails with the errno until healed.
func TestFailSync(t *testing.T) {
	ff := MountForTest(t)
	f, err := os.OpenFile(filepath.Join(ff.Dir, "db"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ff.FailSync(syscall.EIO)
	if _, err := f.WriteAt([]byte("hello"), 0); err != nil {
		t.Fatalf("write with fsync failing: %v", err)
	}
	if err := f.Truncate(5); err != nil {
		t.Fatalf("truncate with fsync failing: %v", err)
	}
	if err := f.Sync(); !errors.Is(err, syscall.EIO) {
		t.Fatalf("fsync with fsync failing: %v, want EIO", err)
	}
	if ff.Failed() == 0 {
		t.Error("the fault counted no refusal")
	}
	if got, err := os.ReadFile(filepath.Join(ff.Backing, "db")); err != nil || string(got) != "hello" {
		t.Errorf("backing file: %q %v", got, err)
	}
	ff.Heal()
	if err := f.Sync(); err != nil {
		t.Fatalf("fsync healed: %v", err)
	}
}

// TestSharedMmap checks what SQLite's WAL index (the -shm file, mapped
// shared) needs: what is written through the mapping stays there, even when
// its writeback failed under a fault and the kernel is later given every
// reason FUSE has to drop its cached pages (the file reopened, its mtime
// changed by a write). A page dropped then would be read back stale from the
// backing file: for SQLite, an old wal-index.
func TestSharedMmap(t *testing.T) {
	ff := MountForTest(t)
	path := filepath.Join(ff.Dir, "db-shm")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(32 << 10); err != nil {
		t.Fatal(err)
	}
	m, err := syscall.Mmap(int(f.Fd()), 0, 32<<10, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
	if err != nil {
		t.Fatalf("shared mapping through the mount: %v", err)
	}
	defer syscall.Munmap(m)
	copy(m, "AAAA")
	if err := unix.Msync(m, unix.MS_SYNC); err != nil {
		t.Fatal(err)
	}
	ff.Fail(syscall.EROFS)
	copy(m, "BBBB")
	if err := unix.Msync(m, unix.MS_SYNC); !errors.Is(err, syscall.EROFS) {
		t.Fatalf("writeback of the mapping with the fault set: %v, want EROFS", err)
	}
	ff.Heal()
	if _, err := f.WriteAt([]byte("CCCC"), 8<<10); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1100 * time.Millisecond) // the attribute timeout: the next stat asks the filesystem
	if _, err := f.Stat(); err != nil {
		t.Fatal(err)
	}
	g, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	g.Close()
	b := make([]byte, 4)
	if _, err := f.ReadAt(b, 0); err != nil {
		t.Fatal(err)
	}
	if string(m[:4]) != "BBBB" || string(b) != "BBBB" {
		t.Fatalf("after the fault the mapping holds %q and a read gives %q, want what was written, BBBB", m[:4], b)
	}
}
