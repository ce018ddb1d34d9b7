package postgres

import (
	"context"
	"errors"
	"net/url"
	"testing"
	"time"

	"github.com/arxsec/arx/internal/arxtest/tcpfault"
	"github.com/arxsec/arx/internal/store"
	"github.com/arxsec/arx/internal/store/postgres/pgtest"
)

// lead tries until it leads or within passes; it returns the lease and
// when it was taken.
func lead(t *testing.T, s *Store, within time.Duration) (store.Lease, time.Time) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		l, err := s.TryLead(t.Context(), "job")
		if err == nil {
			t.Cleanup(l.Release)
			return l, time.Now()
		}
		if !errors.Is(err, store.ErrLedElsewhere) {
			t.Fatalf("TryLead: %v", err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("no lead within %v", within)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func mustNotLead(t *testing.T, s *Store) {
	t.Helper()
	l, err := s.TryLead(t.Context(), "job")
	if err == nil {
		l.Release()
		t.Fatal("a second store leads too")
	}
	if !errors.Is(err, store.ErrLedElsewhere) {
		t.Fatalf("TryLead: %v, want ErrLedElsewhere", err)
	}
}

func waitDone(t *testing.T, l store.Lease, within time.Duration, what string) time.Time {
	t.Helper()
	select {
	case <-l.Done():
		return time.Now()
	case <-time.After(within):
		t.Fatalf("%s: the lease is still held after %v", what, within)
		return time.Time{}
	}
}

// TestLeader: of two stores (two replicas) on one database one leads a
// name; the other takes over when the leader releases, when the leader's
// session is ended, and when the leader's path to the database stalls (it
// gives the lead up before the other gets it).
func TestLeader(t *testing.T) {
	db := pgtest.Database(t)
	a, b := open(t, db), open(t, db)

	la, _ := lead(t, a, 5*time.Second)
	mustNotLead(t, b)
	mustNotLead(t, a) // one lease per name, in one process too
	if other, err := b.TryLead(t.Context(), "another job"); err != nil {
		t.Fatalf("another name: %v", err)
	} else {
		other.Release()
	}
	if err := la.Check(t.Context()); err != nil {
		t.Fatalf("Check: %v", err)
	}

	// Released: the other leads at its next try.
	la.Release()
	waitDone(t, la, time.Second, "released")
	if err := la.Check(t.Context()); err == nil {
		t.Fatal("Check after Release: nil")
	}
	lb, _ := lead(t, b, 5*time.Second)
	mustNotLead(t, a)

	// The leader's session is ended (a server restart, an operator's
	// pg_terminate_backend, a dead process): its watcher notices, and the
	// other store leads.
	side := side(t, db)
	ended := time.Now()
	var n int
	if err := side.QueryRow(t.Context(), `SELECT count(pg_terminate_backend(pid)) FROM pg_locks
		WHERE locktype = 'advisory' AND objsubid = 2 AND classid::int8 = $1
		AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`, int64(LeaderLockSpace)).Scan(&n); err != nil || n != 1 {
		t.Fatalf("terminate the leader's session: %d, %v", n, err)
	}
	lost := waitDone(t, lb, 10*time.Second, "session ended")
	la, took := lead(t, a, 10*time.Second)
	t.Logf("session ended: lost after %v, the other led after %v", lost.Sub(ended).Round(time.Millisecond), took.Sub(ended).Round(time.Millisecond))

	// Closing the store ends its lease.
	c := open(t, db)
	a.Close()
	waitDone(t, la, 5*time.Second, "store closed")
	lc, _ := lead(t, c, 5*time.Second)
	lc.Release()
}

// TestLeaderStalled: the leader's path to the database stops carrying
// anything, with its connection open. Its lease ends within
// LeaderCheckInterval+LeaderCheckTimeout; the server ends its session after
// LeaderSessionTimeout, and only then does the other store lead.
func TestLeaderStalled(t *testing.T) {
	db := pgtest.Database(t)
	u, err := url.Parse(db)
	if err != nil {
		t.Fatal(err)
	}
	p := tcpfault.New(t, u.Host)
	a, b := open(t, p.Via(t, db)), open(t, db)
	la, _ := lead(t, a, 5*time.Second)
	mustNotLead(t, b)

	p.Set(tcpfault.Stall)
	frozen := time.Now()
	var took time.Time
	tookc := make(chan time.Time, 1)
	go func() {
		for {
			l, err := b.TryLead(context.Background(), "job")
			if err == nil {
				t.Cleanup(l.Release)
				tookc <- time.Now()
				return
			}
			if !errors.Is(err, store.ErrLedElsewhere) || time.Since(frozen) > 30*time.Second {
				tookc <- time.Time{}
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	}()
	lost := waitDone(t, la, LeaderCheckInterval+LeaderCheckTimeout+5*time.Second, "stalled")
	select {
	case took = <-tookc:
	case <-time.After(30 * time.Second):
	}
	if took.IsZero() {
		t.Fatal("the other store never led")
	}
	t.Logf("stalled: the leader gave up after %v, the other led after %v", lost.Sub(frozen).Round(time.Millisecond), took.Sub(frozen).Round(time.Millisecond))
	if !lost.Before(took) {
		t.Errorf("the other store led (%v) before the stalled leader gave up (%v)", took.Sub(frozen), lost.Sub(frozen))
	}
	if d := took.Sub(frozen); d < LeaderSessionTimeout-time.Second {
		t.Errorf("the other store led %v after the stall, before the server could have ended the session (%v)", d, LeaderSessionTimeout)
	}
}

// TestCommitStalled: the path to the database stops carrying anything
// while a batch's COMMIT is on its way. The Update fails within the batch
// timeout (the README's bound for a write already in flight), nothing it
// wrote is in the log, and once the path is back the store appends again.
func TestCommitStalled(t *testing.T) {
	db := pgtest.Database(t)
	u, err := url.Parse(db)
	if err != nil {
		t.Fatal(err)
	}
	p := tcpfault.New(t, u.Host)
	s, err := Open(t.Context(), Config{URL: p.Via(t, db), BatchTimeout: 2 * time.Second, IdleInTransactionTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	insertAgents(t, s, "x")
	done := make(chan error, 1)
	start := time.Now()
	go func() {
		done <- s.Update(context.Background(), func(tx store.Tx) error {
			if err := callAndEntry("x", "stalled")(tx); err != nil {
				return err
			}
			p.Set(tcpfault.Stall) // the batch holds the lock; its COMMIT goes next
			return nil
		})
	}()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("an Update committed over a stalled path")
		}
		if d := time.Since(start); d > 8*time.Second {
			t.Errorf("the Update took %v to fail (batch timeout 2s)", d)
		}
	case <-time.After(30 * time.Second):
		p.Set(tcpfault.Pass)
		t.Fatal("an Update whose COMMIT stalled did not return within 30s (batch timeout 2s)")
	}
	p.Set(tcpfault.Pass)
	deadline := time.Now().Add(20 * time.Second)
	for {
		err := s.Update(t.Context(), callAndEntry("x", "after"))
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the path came back: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	es := verifyLog(t, s)
	if len(es) != 2 || es[1].Call != "after" {
		t.Fatalf("log = %v, want the hire and the call after the stall", es)
	}
}
