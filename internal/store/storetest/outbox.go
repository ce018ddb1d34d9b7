package storetest

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/arxsec/arx/internal/store"
)

// testOutbox asks DueOutbox for an item again only after FinishOutbox
// rescheduled it, or at a time OutboxLease past the last time it was
// handed out: a backend shared by replicas may lease the items it returns,
// so that only one replica delivers each. PendingOutbox lists the undone
// items of a kind, due, leased or scheduled later alike.
func testOutbox(t *testing.T, s store.Store) {
	ctx := t.Context()
	if got, err := s.DueOutbox(ctx, t0.Add(100*time.Hour), 10); err != nil || len(got) != 0 {
		t.Fatalf("DueOutbox on an empty store = %v, %v", got, err)
	}
	update(t, s, func(tx store.Tx) error {
		if err := tx.Enqueue("webhook", []byte(`{"n":1}`), t0.In(zone)); err != nil {
			return err
		}
		return tx.Enqueue("webhook", []byte(`{"n":2}`), t0.Add(time.Second))
	})
	update(t, s, func(tx store.Tx) error { return tx.Enqueue("other", []byte(`{"n":3}`), t0.Add(2*time.Second)) })
	if err := s.Update(ctx, func(tx store.Tx) error {
		if err := tx.Enqueue("webhook", []byte(`{"n":"rolled back"}`), t0); err != nil {
			return err
		}
		return errBoom
	}); !errors.Is(err, errBoom) {
		t.Fatalf("Update = %v, want %v", err, errBoom)
	}

	// Due at t: next attempt at or before t, oldest first.
	got, err := s.DueOutbox(ctx, t0.Add(time.Second).In(zone), 10)
	if err != nil {
		t.Fatalf("DueOutbox: %v", err)
	}
	if len(got) != 2 {
		t.Fatalf("DueOutbox(t0+1s) returned %d items, want 2: %+v", len(got), got)
	}
	for i, want := range []store.OutboxItem{
		{Kind: "webhook", Payload: []byte(`{"n":1}`), CreatedAt: t0, NextAt: t0},
		{Kind: "webhook", Payload: []byte(`{"n":2}`), CreatedAt: t0.Add(time.Second), NextAt: t0.Add(time.Second)},
	} {
		want.ID = got[i].ID
		checkSame(t, fmt.Sprintf("DueOutbox(t0+1s)[%d]", i), got[i], want)
	}
	if got[0].ID >= got[1].ID {
		t.Errorf("DueOutbox returned ids %d, %d; want ascending", got[0].ID, got[1].ID)
	}
	first, second := got[0], got[1]
	pending := func(kind string, limit int, want ...string) {
		t.Helper()
		got, err := s.PendingOutbox(ctx, kind, limit)
		if err != nil {
			t.Fatalf("PendingOutbox(%s): %v", kind, err)
		}
		var payloads []string
		for _, it := range got {
			if it.Kind != kind {
				t.Errorf("PendingOutbox(%s) listed an item of kind %s", kind, it.Kind)
			}
			payloads = append(payloads, string(it.Payload))
		}
		if fmt.Sprint(payloads) != fmt.Sprint(want) {
			t.Errorf("PendingOutbox(%s, %d) = %v, want %v", kind, limit, payloads, want)
		}
	}
	// Handed out (leased, on a shared backend) and not yet due: pending.
	pending("webhook", 10, `{"n":1}`, `{"n":2}`)
	pending("webhook", 1, `{"n":1}`)
	pending("other", 10, `{"n":3}`)
	pending("none", 10)

	// Done, and retried later with the error kept.
	done := t0.Add(3 * time.Second)
	next := t0.Add(time.Hour + 1)
	update(t, s, func(tx store.Tx) error {
		if err := tx.FinishOutbox(first.ID, done, "", time.Time{}); err != nil {
			return err
		}
		return tx.FinishOutbox(second.ID, done, "webhook answered HTTP 503", next)
	})
	mustNotFound(t, "FinishOutbox(unknown)", s.Update(ctx, func(tx store.Tx) error {
		return tx.FinishOutbox(first.ID+second.ID+1000, done, "", done)
	}))
	pending("webhook", 10, `{"n":2}`) // done is not pending; retried later is
	got, err = s.DueOutbox(ctx, next.Add(-1), 10)
	if err != nil {
		t.Fatalf("DueOutbox: %v", err)
	}
	if len(got) != 1 || string(got[0].Payload) != `{"n":3}` || got[0].Kind != "other" || got[0].Attempts != 0 {
		t.Fatalf("DueOutbox(before the retry) = %+v; want only the third item", got)
	}
	third := got[0]
	later := next.Add(store.OutboxLease)
	got, err = s.DueOutbox(ctx, later, 10)
	if err != nil {
		t.Fatalf("DueOutbox: %v", err)
	}
	if len(got) != 2 || got[0].ID != second.ID || got[1].ID != third.ID {
		t.Fatalf("DueOutbox(after the retry time) = %+v; want the second and third items", got)
	}
	want := second
	want.Attempts, want.NextAt, want.LastError = 1, next, "webhook answered HTTP 503"
	checkSame(t, "a rescheduled item", got[0], want)

	// Done after a retry; the error is cleared.
	update(t, s, func(tx store.Tx) error { return tx.FinishOutbox(second.ID, later, "", time.Time{}) })
	update(t, s, func(tx store.Tx) error { return tx.FinishOutbox(third.ID, later, "", time.Time{}) })
	if got, err := s.DueOutbox(ctx, later.Add(100*time.Hour), 10); err != nil || len(got) != 0 {
		t.Errorf("DueOutbox after every item is done = %+v, %v; want none", got, err)
	}

	// The limit holds.
	update(t, s, func(tx store.Tx) error {
		for i := range 5 {
			if err := tx.Enqueue("webhook", fmt.Appendf(nil, `{"batch":%d}`, i), later); err != nil {
				return err
			}
		}
		return nil
	})
	if got, err := s.DueOutbox(ctx, later, 3); err != nil || len(got) != 3 || string(got[0].Payload) != `{"batch":0}` {
		t.Errorf("DueOutbox(limit 3) = %+v, %v; want the three oldest", got, err)
	}
}
