package storetest

import (
	"crypto/sha256"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/arxsec/arx/internal/store"
)

// testCallMinutes: CountMinute counts an agent's calls per minute, returns
// the earlier minutes of the window, undoes a failed Update's counts, and
// gives concurrent Updates distinct counts (the rate-spike rule fires once).
func testCallMinutes(t *testing.T, s store.Store) {
	insertAgents(t, s, "a", "b")
	count := func(agent string, minute, since int64) (n, earlier int64) {
		t.Helper()
		update(t, s, func(tx store.Tx) error {
			var err error
			n, earlier, err = tx.CountMinute(agent, minute, since)
			return err
		})
		return n, earlier
	}
	check := func(what string, gotN, gotEarlier, wantN, wantEarlier int64) {
		t.Helper()
		if gotN != wantN || gotEarlier != wantEarlier {
			t.Errorf("%s: CountMinute = %d, %d; want %d, %d", what, gotN, gotEarlier, wantN, wantEarlier)
		}
	}
	n, e := count("a", 1000, 941)
	check("first call", n, e, 1, 0)
	n, e = count("a", 1000, 941)
	check("second call in the minute", n, e, 2, 0)
	n, e = count("a", 1001, 942)
	check("next minute", n, e, 1, 2)
	n, e = count("b", 1001, 942)
	check("another agent", n, e, 1, 0)
	n, e = count("a", 1060, 1001)
	check("an hour on: minute 1000 is out of the window", n, e, 1, 1)

	// Several in one Update, then a failed Update: its counts are undone.
	update(t, s, func(tx store.Tx) error {
		for i := range int64(3) {
			n, e, err := tx.CountMinute("b", 1002, 943)
			if err != nil {
				return err
			}
			check("in one Update", n, e, i+1, 1)
		}
		return nil
	})
	if err := s.Update(t.Context(), func(tx store.Tx) error {
		if _, _, err := tx.CountMinute("b", 1002, 943); err != nil {
			return err
		}
		return errBoom
	}); err == nil {
		t.Fatal("a failing Update succeeded")
	}
	n, e = count("b", 1002, 943)
	check("after a failed Update", n, e, 4, 1)

	// Concurrent Updates see each other: every count is given once.
	const ops = 40
	got := make([]int64, ops)
	var wg sync.WaitGroup
	for i := range ops {
		wg.Go(func() {
			if err := s.Update(t.Context(), func(tx store.Tx) error {
				var err error
				got[i], _, err = tx.CountMinute("b", 1003, 944)
				return err
			}); err != nil {
				t.Errorf("Update: %v", err)
			}
		})
	}
	wg.Wait()
	slices.Sort(got)
	for i, n := range got {
		if n != int64(i+1) {
			t.Fatalf("concurrent counts = %v, want 1 to %d once each", got, ops)
		}
	}
}

// testFailures: failures are counted per key from a time on, in and out of
// a transaction; one can be taken back, old ones pruned; a failed Update's
// are undone; a check-then-add in one Update is atomic.
func testFailures(t *testing.T, s store.Store) {
	ctx := t.Context()
	key := func(s string) []byte { h := sha256.Sum256([]byte(s)); return h[:] }
	k1, k2, k3 := key("one"), key("two"), key("three")
	counts := func(what string, since time.Time, want map[string]int) {
		t.Helper()
		keys := map[string][]byte{"one": k1, "two": k2, "three": k3}
		for name, n := range want {
			got, err := s.Failures(ctx, keys[name], since)
			if err != nil || got != n {
				t.Errorf("%s: Failures(%s) = %d, %v; want %d", what, name, got, err, n)
			}
		}
		update(t, s, func(tx store.Tx) error {
			for name, n := range want {
				got, err := tx.Failures(keys[name], since)
				if err != nil || got != n {
					t.Errorf("%s: Tx.Failures(%s) = %d, %v; want %d", what, name, got, err, n)
				}
			}
			return nil
		})
	}
	counts("empty", t0.Add(-time.Hour), map[string]int{"one": 0, "two": 0})

	var ids []int64
	update(t, s, func(tx store.Tx) error {
		ids = nil
		for _, f := range []struct {
			key []byte
			at  time.Time
		}{{k1, t0.In(zone)}, {k1, t0.Add(time.Minute)}, {k2, t0}, {k1, t0.Add(2 * time.Minute)}} {
			id, err := tx.AddFailure(f.key, f.at)
			if err != nil {
				return err
			}
			ids = append(ids, id)
		}
		if n, err := tx.Failures(k1, t0); err != nil || n != 3 {
			t.Errorf("Failures inside the Update that added them = %d, %v; want 3", n, err)
		}
		return nil
	})
	if u := slices.Compact(slices.Sorted(slices.Values(ids))); len(u) != len(ids) {
		t.Fatalf("AddFailure ids are not distinct: %v", ids)
	}
	counts("added", t0.Add(-time.Hour), map[string]int{"one": 3, "two": 1, "three": 0})
	counts("since is inclusive, to the nanosecond", t0.Add(time.Minute), map[string]int{"one": 2, "two": 0})

	update(t, s, func(tx store.Tx) error {
		if err := tx.DeleteFailure(ids[1]); err != nil {
			return err
		}
		return tx.DeleteFailure(-1) // unknown: not an error
	})
	counts("one taken back", t0.Add(-time.Hour), map[string]int{"one": 2, "two": 1})

	update(t, s, func(tx store.Tx) error { return tx.PruneFailures(t0.Add(time.Second)) })
	counts("pruned", t0.Add(-time.Hour), map[string]int{"one": 1, "two": 0})

	if err := s.Update(ctx, func(tx store.Tx) error {
		if _, err := tx.AddFailure(k2, t0); err != nil {
			return err
		}
		return errBoom
	}); err == nil {
		t.Fatal("a failing Update succeeded")
	}
	counts("after a failed Update", t0.Add(-time.Hour), map[string]int{"two": 0})

	// A limit of 5 checked and taken in one Update holds under concurrency.
	const ops, limit = 30, 5
	var wg sync.WaitGroup
	for range ops {
		wg.Go(func() {
			if err := s.Update(ctx, func(tx store.Tx) error {
				n, err := tx.Failures(k3, t0)
				if err != nil || n >= limit {
					return err
				}
				_, err = tx.AddFailure(k3, t0.Add(time.Duration(n)))
				return err
			}); err != nil {
				t.Errorf("Update: %v", err)
			}
		})
	}
	wg.Wait()
	counts("a limit under concurrency", t0, map[string]int{"three": limit})
}
