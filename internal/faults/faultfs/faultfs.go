//go:build linux

// Package faultfs is a fault-injecting FUSE filesystem for tests: a loopback
// (passthrough) view of a real directory whose write paths can be made to fail
// at run time with one errno (EROFS for a filesystem gone read-only, ENOSPC,
// EIO), and healed again, while the program under test keeps its files open.
// A second fault fails fsync alone, as a disk whose writes succeed but whose
// writeback fails.
//
// A real filesystem cannot be remounted read-only under a process that holds
// files open for writing (the kernel answers EBUSY), which is exactly the case
// a server's data directory is in; faultfs stands between the two instead.
//
// Write paths are write, fsync, fallocate, copy_file_range, setattr
// (truncate, chmod, utimes), create, open for writing, mkdir, mknod, symlink,
// link, rename, unlink, rmdir and the xattr setters. Reads, lookups and opens
// for reading always pass through.
//
// Mounting needs root and /dev/fuse; Available says whether this machine
// can.
package faultfs

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// FS is a mounted fault-injecting loopback filesystem, served by a child
// process of the test's own.
//
// The server must not live in the process under test: a Go program that
// touches a mapped file of its own FUSE mount (SQLite's -shm) can take a
// page fault that waits for the FUSE server while the garbage collector
// waits for that faulting thread to stop, and the FUSE server's goroutines
// cannot run until it does: the process hangs for good.
type FS struct {
	// Dir is the mount point: the directory the program under test uses.
	Dir string
	// Backing is the real directory behind it.
	Backing string

	mu     sync.Mutex
	cmd    *exec.Cmd
	ctl    io.WriteCloser // commands to the child, one per line
	answer *bufio.Scanner // its answers, one per line
	closed bool
	failed int64 // Failed at Close
}

// Available reports why FUSE filesystems cannot be mounted here, or nil.
func Available() error {
	if os.Geteuid() != 0 {
		return errors.New("faultfs: mounting a FUSE filesystem needs root")
	}
	f, err := os.OpenFile("/dev/fuse", os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("faultfs: %w", err)
	}
	f.Close()
	return nil
}

// MountForTest mounts a faultfs over a fresh directory for the test and
// unmounts it when the test ends. Where FUSE cannot be mounted it skips the
// test, saying why, or fails it when ARX_TEST_REQUIRE_SERVERS is set (CI).
func MountForTest(t testing.TB) *FS {
	t.Helper()
	backing, mnt := t.TempDir(), t.TempDir()
	err := Available()
	var ff *FS
	if err == nil {
		ff, err = Mount(mnt, backing)
	}
	if err != nil {
		if os.Getenv("ARX_TEST_REQUIRE_SERVERS") != "" {
			t.Fatalf("%v (ARX_TEST_REQUIRE_SERVERS is set)", err)
		}
		t.Skipf("%v: run as root on a machine with /dev/fuse (CI does)", err)
	}
	// Registered after the directories, so it runs before their removal.
	t.Cleanup(func() {
		if err := ff.Close(); err != nil {
			t.Error(err)
		}
	})
	return ff
}

// childEnv (the mount point) and backingEnv tell a test binary started by
// Mount to serve a mount and exit.
const (
	childEnv   = "ARX_FAULTFS_SERVE"
	backingEnv = "ARX_FAULTFS_BACKING"
)

func init() {
	if mnt := os.Getenv(childEnv); mnt != "" {
		os.Exit(serveChild(mnt, os.Getenv(backingEnv)))
	}
}

// Mount mounts a loopback view of backing on mountpoint, with no fault set,
// served by a child process (this program, started again). Close unmounts
// it. Nothing may change backing behind the mount's back while it is
// mounted: the kernel keeps what it cached.
func Mount(mountpoint, backing string) (*FS, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("faultfs: %w", err)
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), childEnv+"="+mountpoint, backingEnv+"="+backing)
	cmd.Stderr = os.Stderr
	// The child dies with this process; its /dev/fuse closes, the kernel
	// aborts the mount, and nothing waits on it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	ctl, err := cmd.StdinPipe()
	if err != nil {
		return nil, fmt.Errorf("faultfs: %w", err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("faultfs: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("faultfs: %w", err)
	}
	ff := &FS{Dir: mountpoint, Backing: backing, cmd: cmd, ctl: ctl, answer: bufio.NewScanner(out)}
	if a, err := ff.read(); err != nil || a != "mounted" {
		ctl.Close()
		cmd.Process.Kill()
		cmd.Wait()
		if err == nil {
			err = errors.New(a)
		}
		return nil, fmt.Errorf("faultfs: mount %s on %s: %v", backing, mountpoint, err)
	}
	return ff, nil
}

// do sends one command to the child and returns its answer.
func (ff *FS) do(cmd string) (string, error) {
	ff.mu.Lock()
	defer ff.mu.Unlock()
	if _, err := io.WriteString(ff.ctl, cmd+"\n"); err != nil {
		return "", fmt.Errorf("faultfs: %s: %w", cmd, err)
	}
	return ff.read()
}

func (ff *FS) read() (string, error) {
	if !ff.answer.Scan() {
		err := ff.answer.Err()
		if err == nil {
			err = io.ErrUnexpectedEOF
		}
		return "", fmt.Errorf("faultfs: the server process: %w", err)
	}
	return ff.answer.Text(), nil
}

func (ff *FS) must(cmd string) string {
	a, err := ff.do(cmd)
	if err != nil {
		panic(err) // the child is gone: the test cannot go on meaningfully
	}
	return a
}

// Fail makes every write path fail with errno from now on; Fail(0) heals.
func (ff *FS) Fail(errno syscall.Errno) { ff.must("fail " + strconv.Itoa(int(errno))) }

// FailSync makes fsync alone fail with errno from now on, while every
// other write path passes; FailSync(0) heals it. Fail and FailSync are
// independent faults: a write path fails when either applies to it.
func (ff *FS) FailSync(errno syscall.Errno) { ff.must("failsync " + strconv.Itoa(int(errno))) }

// Heal lets writes and fsyncs through again.
func (ff *FS) Heal() {
	ff.Fail(0)
	ff.FailSync(0)
}

// Failed returns how many write operations the fault has refused so far
// (until Close, after it).
func (ff *FS) Failed() int64 {
	ff.mu.Lock()
	closed, n := ff.closed, ff.failed
	ff.mu.Unlock()
	if closed {
		return n
	}
	n, _ = strconv.ParseInt(ff.must("failed"), 10, 64)
	return n
}

// Close unmounts the filesystem and ends its server; closing again does
// nothing. When a process still holds files in it, the mount is detached
// lazily so that it cannot outlive the test.
func (ff *FS) Close() error {
	ff.mu.Lock()
	if ff.closed {
		ff.mu.Unlock()
		return nil
	}
	ff.mu.Unlock()
	failed := ff.Failed()
	a, err := ff.do("unmount")
	ff.mu.Lock()
	ff.closed, ff.failed = true, failed
	ff.mu.Unlock()
	ff.ctl.Close()
	werr := ff.cmd.Wait()
	switch {
	case err != nil:
		return err
	case a != "unmounted":
		return fmt.Errorf("faultfs: unmount %s: %s", ff.Dir, a)
	case werr != nil:
		return fmt.Errorf("faultfs: the server process: %w", werr)
	}
	return nil
}

// serveChild is the child process: it mounts, answers commands on stdin
// ("fail ERRNO", "failsync ERRNO", "failed", "unmount") on stdout, and
// unmounts when told or when stdin ends (the test process is gone).
func serveChild(mountpoint, backing string) int {
	m, err := mountHere(mountpoint, backing)
	if err != nil {
		fmt.Println(strings.ReplaceAll(err.Error(), "\n", " "))
		return 1
	}
	fmt.Println("mounted")
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		verb, arg, _ := strings.Cut(in.Text(), " ")
		switch verb {
		case "fail":
			n, _ := strconv.Atoi(arg)
			m.fault.Store(uint32(n))
			fmt.Println("ok")
		case "failsync":
			n, _ := strconv.Atoi(arg)
			m.syncFault.Store(uint32(n))
			fmt.Println("ok")
		case "failed":
			fmt.Println(m.failed.Load())
		case "unmount":
			if err := m.unmount(); err != nil {
				fmt.Println(strings.ReplaceAll(err.Error(), "\n", " "))
				return 1
			}
			fmt.Println("unmounted")
			return 0
		default:
			fmt.Printf("unknown command %q\n", verb)
		}
	}
	if err := m.unmount(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// mount is the FUSE server's side.
type mount struct {
	dir       string
	server    *fuse.Server
	fault     atomic.Uint32 // a syscall.Errno; 0 lets writes through
	syncFault atomic.Uint32 // a syscall.Errno for fsync alone; 0 lets it through
	failed    atomic.Int64  // write operations refused so far
}

func mountHere(mountpoint, backing string) (*mount, error) {
	m := &mount{dir: mountpoint}
	rootOps, err := fs.NewLoopbackRoot(backing)
	if err != nil {
		return nil, fmt.Errorf("faultfs: %w", err)
	}
	root := &node{LoopbackNode: rootOps.(*fs.LoopbackNode), fs: m}
	second := time.Second
	m.server, err = fs.Mount(mountpoint, root, &fs.Options{
		EntryTimeout: &second,
		AttrTimeout:  &second,
		MountOptions: fuse.MountOptions{
			FsName:      backing,
			Name:        "faultfs",
			DirectMount: true, // mount(2) as root; fusermount when that fails
			// Locks stay in the kernel: SQLite's fcntl locks on the
			// database and its -shm file work as on a local disk.
			EnableLocks: false,
			// The page cache behaves as a local filesystem's: FUSE drops a
			// file's cached pages when it is opened (unless FOPEN_KEEP_CACHE)
			// and, with AUTO_INVAL_DATA, when its mtime changes, in case
			// someone changed the file elsewhere. Nobody does here: every
			// access goes through this mount. And a page whose writeback the
			// fault refused is clean but newer than the backing file, so
			// dropping it would turn a shared mapping (SQLite's wal-index in
			// -shm) back into stale data. See TestSharedMmap.
			ExplicitDataCacheControl: true,
		},
	})
	if err != nil {
		return nil, fmt.Errorf("faultfs: mount %s on %s: %w", backing, mountpoint, err)
	}
	return m, nil
}

func (m *mount) unmount() error {
	if err := m.server.Unmount(); err != nil {
		if derr := syscall.Unmount(m.dir, syscall.MNT_DETACH); derr != nil {
			return fmt.Errorf("faultfs: unmount %s: %w (lazy: %v)", m.dir, err, derr)
		}
	}
	return nil
}

// check returns the errno a write path fails with now, counting the refusal.
func (m *mount) check() syscall.Errno {
	e := syscall.Errno(m.fault.Load())
	if e != 0 {
		m.failed.Add(1)
	}
	return e
}

// node is a loopback node whose write paths consult the fault.
type node struct {
	*fs.LoopbackNode
	fs *mount
}

var (
	_ fs.NodeWrapChilder    = (*node)(nil)
	_ fs.NodeCreater        = (*node)(nil)
	_ fs.NodeOpener         = (*node)(nil)
	_ fs.NodeSetattrer      = (*node)(nil)
	_ fs.NodeMkdirer        = (*node)(nil)
	_ fs.NodeMknoder        = (*node)(nil)
	_ fs.NodeRenamer        = (*node)(nil)
	_ fs.NodeUnlinker       = (*node)(nil)
	_ fs.NodeRmdirer        = (*node)(nil)
	_ fs.NodeSymlinker      = (*node)(nil)
	_ fs.NodeLinker         = (*node)(nil)
	_ fs.NodeSetxattrer     = (*node)(nil)
	_ fs.NodeRemovexattrer  = (*node)(nil)
	_ fs.NodeCopyFileRanger = (*node)(nil)
	_ fs.NodeTmpfiler       = (*node)(nil)
)

// WrapChild makes every node the loopback creates a faulty one.
func (n *node) WrapChild(ctx context.Context, ops fs.InodeEmbedder) fs.InodeEmbedder {
	return &node{LoopbackNode: ops.(*fs.LoopbackNode), fs: n.fs}
}

func writes(flags uint32) bool {
	return flags&(syscall.O_WRONLY|syscall.O_RDWR|syscall.O_TRUNC|syscall.O_CREAT) != 0
}

// Open, Create and Tmpfile keep the kernel's cached pages (FOPEN_KEEP_CACHE):
// see Mount.
func (n *node) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if writes(flags) {
		if e := n.fs.check(); e != 0 {
			return nil, 0, e
		}
	}
	fh, fuseFlags, errno := n.LoopbackNode.Open(ctx, flags)
	return n.fs.wrap(fh), fuseFlags | fuse.FOPEN_KEEP_CACHE, errno
}

func (n *node) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	if e := n.fs.check(); e != 0 {
		return nil, nil, 0, e
	}
	in, fh, fuseFlags, errno := n.LoopbackNode.Create(ctx, name, flags, mode, out)
	return in, n.fs.wrap(fh), fuseFlags | fuse.FOPEN_KEEP_CACHE, errno
}

func (n *node) Tmpfile(ctx context.Context, flags uint32, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	if e := n.fs.check(); e != 0 {
		return nil, nil, 0, e
	}
	in, fh, fuseFlags, errno := n.LoopbackNode.Tmpfile(ctx, flags, mode, out)
	return in, n.fs.wrap(fh), fuseFlags | fuse.FOPEN_KEEP_CACHE, errno
}

func (n *node) Setattr(ctx context.Context, f fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if e := n.fs.check(); e != 0 {
		return e
	}
	if w, ok := f.(*file); ok {
		f = w.loopbackFile
	}
	return n.LoopbackNode.Setattr(ctx, f, in, out)
}

func (n *node) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if e := n.fs.check(); e != 0 {
		return nil, e
	}
	return n.LoopbackNode.Mkdir(ctx, name, mode, out)
}

func (n *node) Mknod(ctx context.Context, name string, mode, rdev uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if e := n.fs.check(); e != 0 {
		return nil, e
	}
	return n.LoopbackNode.Mknod(ctx, name, mode, rdev, out)
}

func (n *node) Rename(ctx context.Context, name string, newParent fs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	if e := n.fs.check(); e != 0 {
		return e
	}
	return n.LoopbackNode.Rename(ctx, name, newParent, newName, flags)
}

func (n *node) Unlink(ctx context.Context, name string) syscall.Errno {
	if e := n.fs.check(); e != 0 {
		return e
	}
	return n.LoopbackNode.Unlink(ctx, name)
}

func (n *node) Rmdir(ctx context.Context, name string) syscall.Errno {
	if e := n.fs.check(); e != 0 {
		return e
	}
	return n.LoopbackNode.Rmdir(ctx, name)
}

func (n *node) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if e := n.fs.check(); e != 0 {
		return nil, e
	}
	return n.LoopbackNode.Symlink(ctx, target, name, out)
}

func (n *node) Link(ctx context.Context, target fs.InodeEmbedder, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if e := n.fs.check(); e != 0 {
		return nil, e
	}
	return n.LoopbackNode.Link(ctx, target, name, out)
}

func (n *node) Setxattr(ctx context.Context, attr string, data []byte, flags uint32) syscall.Errno {
	if e := n.fs.check(); e != 0 {
		return e
	}
	return n.LoopbackNode.Setxattr(ctx, attr, data, flags)
}

func (n *node) Removexattr(ctx context.Context, attr string) syscall.Errno {
	if e := n.fs.check(); e != 0 {
		return e
	}
	return n.LoopbackNode.Removexattr(ctx, attr)
}

func (n *node) CopyFileRange(ctx context.Context, fhIn fs.FileHandle, offIn uint64, out *fs.Inode, fhOut fs.FileHandle, offOut uint64, length uint64, flags uint64) (uint32, syscall.Errno) {
	if e := n.fs.check(); e != 0 {
		return 0, e
	}
	if w, ok := fhIn.(*file); ok {
		fhIn = w.loopbackFile
	}
	if w, ok := fhOut.(*file); ok {
		fhOut = w.loopbackFile
	}
	return n.LoopbackNode.CopyFileRange(ctx, fhIn, offIn, out, fhOut, offOut, length, flags)
}

// loopbackFile is what file lets through of a loopback file handle.
// PassthroughFd is deliberately left out: with FUSE passthrough (Linux 6.9+,
// as root) the kernel would send reads and writes straight to the backing
// file, past the fault.
type loopbackFile interface {
	fs.FileReader
	fs.FileWriter
	fs.FileWritever
	fs.FileFlusher
	fs.FileFsyncer
	fs.FileReleaser
	fs.FileGetattrer
	fs.FileSetattrer
	fs.FileAllocater
	fs.FileLseeker
	fs.FileGetlker
	fs.FileSetlker
	fs.FileSetlkwer
}

// file is an open loopback file whose writes consult the fault.
type file struct {
	loopbackFile
	fs *mount
}

func (m *mount) wrap(fh fs.FileHandle) fs.FileHandle {
	if lf, ok := fh.(loopbackFile); ok {
		return &file{loopbackFile: lf, fs: m}
	}
	return fh
}

func (f *file) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	if e := f.fs.check(); e != 0 {
		return 0, e
	}
	return f.loopbackFile.Write(ctx, data, off)
}

func (f *file) Writev(ctx context.Context, data [][]byte, off int64) (uint32, syscall.Errno) {
	if e := f.fs.check(); e != 0 {
		return 0, e
	}
	return f.loopbackFile.Writev(ctx, data, off)
}

func (f *file) Fsync(ctx context.Context, flags uint32) syscall.Errno {
	if e := f.fs.check(); e != 0 {
		return e
	}
	if e := syscall.Errno(f.fs.syncFault.Load()); e != 0 {
		f.fs.failed.Add(1)
		return e
	}
	return f.loopbackFile.Fsync(ctx, flags)
}

func (f *file) Setattr(ctx context.Context, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if e := f.fs.check(); e != 0 {
		return e
	}
	return f.loopbackFile.Setattr(ctx, in, out)
}

func (f *file) Allocate(ctx context.Context, off uint64, size uint64, mode uint32) syscall.Errno {
	if e := f.fs.check(); e != 0 {
		return e
	}
	return f.loopbackFile.Allocate(ctx, off, size, mode)
}
