package sqlite

import (
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/arxsec/arx/internal/faults/faultfs"
)

// TestReadOnlyConnection: SQLite opens a database read-only, without a word,
// when opening it for writing fails. A connection (re)opened while the data
// directory is read-only must not stay read-only once the directory is
// writable again: the writer and the checkpointer open fresh ones.
func TestReadOnlyConnection(t *testing.T) {
	ctx := t.Context()
	ff := faultfs.MountForTest(t)
	s := open(t, filepath.Join(ff.Dir, "arx.db"), Config{})
	insertAgents(t, s, "a")
	if err := s.Update(ctx, callAndEntry("a", "before")); err != nil {
		t.Fatal(err)
	}

	ff.Fail(syscall.EROFS)
	// database/sql replaces a connection it finds broken (an interrupted
	// one, say) on its next use: here, while the directory is read-only.
	for _, db := range []interface{ SetMaxIdleConns(int) }{s.write, s.ckpt} {
		db.SetMaxIdleConns(0)
		db.SetMaxIdleConns(1)
	}
	if err := s.Update(ctx, callAndEntry("a", "refused")); err == nil {
		t.Fatal("an Update committed with the data directory read-only")
	}
	time.Sleep(2 * CheckpointInterval) // the checkpointer reopens too
	ff.Heal()

	if err := s.Update(ctx, callAndEntry("a", "after")); err != nil {
		t.Fatalf("Update after the data directory is writable again: %v", err)
	}
	deadline := time.Now().Add(5 * CheckpointInterval)
	for {
		var busy, logFrames, done int
		err := s.ckpt.QueryRowContext(ctx, "PRAGMA wal_checkpoint(PASSIVE)").Scan(&busy, &logFrames, &done)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("checkpoint after the data directory is writable again: %v", err)
		}
		time.Sleep(CheckpointInterval / 5)
	}
	if es := verifyLog(t, s); len(es) != 2 {
		t.Errorf("the log has %d entries, want 2", len(es))
	}
}
