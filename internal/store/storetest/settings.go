package storetest

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/arxsec/arx/internal/store"
)

func testCheckpoints(t *testing.T, s store.Store) {
	ctx := t.Context()
	_, err := s.LatestCheckpoint(ctx)
	mustNotFound(t, "LatestCheckpoint on an empty store", err)
	cp := func(size int64) *store.Checkpoint {
		return &store.Checkpoint{Size: size, Signed: fmt.Appendf(nil, "storetest\n%d\nroot\n\n— sig\n", size),
			CreatedAt: t0.Add(-time.Duration(size) * time.Second).In(zone)} // the larger, the older
	}
	for _, tc := range []struct {
		put  []int64
		want int64
	}{
		{[]int64{3}, 3},
		{[]int64{10, 7}, 10}, // the highest size, not the latest put
		{[]int64{2}, 10},
		{[]int64{12}, 12},
	} {
		update(t, s, func(tx store.Tx) error {
			for _, size := range tc.put {
				if err := tx.PutCheckpoint(cp(size)); err != nil {
					return err
				}
			}
			return nil
		})
		got, err := s.LatestCheckpoint(ctx)
		if err != nil {
			t.Fatalf("LatestCheckpoint after putting %v: %v", tc.put, err)
		}
		checkSame(t, fmt.Sprintf("LatestCheckpoint after putting %v", tc.put), *got, *cp(tc.want))
	}
}

func testMeta(t *testing.T, s store.Store) {
	ctx := t.Context()
	_, err := s.Meta(ctx, "log.origin")
	mustNotFound(t, "Meta of an unset key", err)
	for _, step := range []struct{ key, value string }{
		{"log.origin", "arx.example.com/log"},
		{"other", "x"},
		{"log.origin", "arx.example.com/log2"}, // overwrites
		{"empty", ""},                          // set but empty is not unset
	} {
		update(t, s, func(tx store.Tx) error { return tx.SetMeta(step.key, step.value) })
		got, err := s.Meta(ctx, step.key)
		if err != nil || got != step.value {
			t.Errorf("Meta(%q) after SetMeta(%q) = %q, %v", step.key, step.value, got, err)
		}
	}
	if got, err := s.Meta(ctx, "other"); err != nil || got != "x" {
		t.Errorf("Meta(other) = %q, %v; want x", got, err)
	}
	// In a transaction: what was committed, what this one set, and unset keys.
	update(t, s, func(tx store.Tx) error {
		if got, err := tx.Meta("other"); err != nil || got != "x" {
			t.Errorf("Tx.Meta(other) = %q, %v; want x", got, err)
		}
		if _, err := tx.Meta("never set"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("Tx.Meta of an unset key: %v, want ErrNotFound", err)
		}
		if err := tx.SetMeta("in-tx", "y"); err != nil {
			return err
		}
		if got, err := tx.Meta("in-tx"); err != nil || got != "y" {
			t.Errorf("Tx.Meta after SetMeta in the same transaction = %q, %v; want y", got, err)
		}
		return nil
	})
	if err := s.Ping(ctx); err != nil {
		t.Errorf("Ping: %v", err)
	}
}
