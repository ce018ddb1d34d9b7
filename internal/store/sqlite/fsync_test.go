package sqlite

import (
	"bytes"
	"errors"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/arxsec/arx/internal/faults/faultfs"
	"github.com/arxsec/arx/internal/store"
)

// TestFsyncFailed: once a commit's fsync fails, the store refuses every
// Update for good, with store.ErrStorageFailed, even after the disk heals;
// it says so once in its log. Opened again, the database serves and its
// log verifies.
func TestFsyncFailed(t *testing.T) {
	ctx := t.Context()
	ff := faultfs.MountForTest(t)
	path := filepath.Join(ff.Dir, "arx.db")
	var logBuf syncBuffer
	s := open(t, path, Config{Logger: slog.New(slog.NewTextHandler(&logBuf, nil))})
	insertAgents(t, s, "a")
	if err := s.Update(ctx, callAndEntry("a", "before")); err != nil {
		t.Fatal(err)
	}

	ff.FailSync(syscall.EIO)
	err := s.Update(ctx, callAndEntry("a", "refused"))
	if !errors.Is(err, store.ErrStorageFailed) {
		t.Fatalf("Update with fsync failing: %v, want store.ErrStorageFailed", err)
	}
	ff.Heal()
	for i := range 3 {
		start := time.Now()
		err := s.Update(ctx, callAndEntry("a", "healed"))
		if !errors.Is(err, store.ErrStorageFailed) {
			t.Fatalf("Update %d after the disk healed: %v, want store.ErrStorageFailed", i, err)
		}
		if d := time.Since(start); d > time.Second {
			t.Errorf("a refusal took %v, want at once", d)
		}
	}
	if n := strings.Count(logBuf.String(), "refusing every write until restart"); n != 1 {
		t.Errorf("the failure was logged %d times, want once:\n%s", n, logBuf.String())
	}
	if err := s.Close(); err != nil {
		t.Logf("Close: %v", err)
	}

	// Opened again, recovery decides what the failed commit left.
	s = open(t, path, Config{})
	if err := s.Update(ctx, callAndEntry("a", "after")); err != nil {
		t.Fatalf("Update after reopening: %v", err)
	}
	es := verifyLog(t, s)
	if len(es) != 2 && len(es) != 3 { // "refused" may have reached the disk
		t.Errorf("the log has %d entries, want 2 or 3", len(es))
	}
}

// TestFsyncRefused: an fsync refused because the filesystem refuses writes
// (read-only, full) is the ordinary case of such a disk, as when it turned
// read-only between a commit's writes and its fsync: the Update fails, and
// the store takes writes again once the disk does, without a restart.
func TestFsyncRefused(t *testing.T) {
	for _, errno := range []syscall.Errno{syscall.EROFS, syscall.ENOSPC} {
		t.Run(errno.Error(), func(t *testing.T) {
			ctx := t.Context()
			ff := faultfs.MountForTest(t)
			s := open(t, filepath.Join(ff.Dir, "arx.db"), Config{})
			insertAgents(t, s, "a")
			ff.FailSync(errno)
			err := s.Update(ctx, callAndEntry("a", "refused"))
			if err == nil || errors.Is(err, store.ErrStorageFailed) {
				t.Fatalf("Update with fsync refused (%v): %v, want a failure that clears", errno, err)
			}
			ff.Heal()
			if err := s.Update(ctx, callAndEntry("a", "after")); err != nil {
				t.Fatalf("Update after the disk healed: %v", err)
			}
			if es := verifyLog(t, s); len(es) != 1 {
				t.Errorf("the log has %d entries, want 1", len(es))
			}
		})
	}
}

// syncBuffer is a bytes.Buffer safe for a logger's concurrent writes.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
