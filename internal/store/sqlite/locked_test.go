package sqlite

import (
	"context"
	"sync"
	"testing"
	"time"
)

// TestLockedElsewhere: while another process holds the write lock on the
// database, every Update fails with SQLITE_BUSY within about the busy
// timeout, those queued behind one already waiting included; reads go on;
// and Updates commit again once the lock is released.
func TestLockedElsewhere(t *testing.T) {
	ctx := t.Context()
	path := dbPath(t)
	const busy = time.Second
	s := open(t, path, Config{BusyTimeout: busy})
	insertAgents(t, s, "a")
	conn, err := sideHandle(t, path).Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		t.Fatal(err)
	}

	// The first Update waits for the lock; the others queue behind it.
	var wg sync.WaitGroup
	update := func(id string) {
		defer wg.Done()
		start := time.Now()
		err := s.Update(ctx, callAndEntry("a", id))
		if !isBusy(err) {
			t.Errorf("Update %s with the database locked elsewhere: %v, want SQLITE_BUSY", id, err)
		}
		if d := time.Since(start); d > busy+busy/2 {
			t.Errorf("Update %s was refused after %v, want about the busy timeout (%v) at most", id, d, busy)
		}
	}
	wg.Add(1)
	go update("first")
	time.Sleep(busy / 4) // behind it, one more busy timeout would take 1.75 of them
	for _, id := range []string{"q1", "q2", "q3"} {
		wg.Add(1)
		go update(id)
	}
	if n, err := s.TreeSize(ctx); err != nil || n != 0 {
		t.Errorf("reading with the database locked elsewhere: %d, %v", n, err)
	}
	wg.Wait()

	if _, err := conn.ExecContext(context.Background(), "ROLLBACK"); err != nil {
		t.Fatal(err)
	}
	if err := s.Update(ctx, callAndEntry("a", "after")); err != nil {
		t.Fatalf("Update after the lock is released: %v", err)
	}
	if es := verifyLog(t, s); len(es) != 1 {
		t.Errorf("the log has %d entries, want 1", len(es))
	}
}
