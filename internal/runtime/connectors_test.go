package runtime

import (
	"testing"
	"time"

	"github.com/arxsec/arx/internal/store"
)

// TestLeftover: which roles the look for leftovers drops itself. A call
// that ended a moment before the look began, with its drop still in the
// outbox, is the outbox's: the look once dropped it first, and the record
// said "leftover" where the call had failed (TestLeftoverRolesDroppedAtStart
// in internal/connector/postgres, under load).
func TestLeftover(t *testing.T) {
	start := time.Date(2026, 12, 5, 9, 0, 0, 0, time.UTC)
	now := start.Add(time.Second)
	before, after := start.Add(-time.Second), start.Add(time.Millisecond)
	call := func(status string, completed *time.Time, expires time.Time) *store.Call {
		return &store.Call{Connector: "warehouse", Status: status, CompletedAt: completed, ExpiresAt: expires}
	}
	for _, tc := range []struct {
		name      string
		c         *store.Call
		connector string
		queued    bool
		want      bool
	}{
		{"failed before the look", call(store.CallFailed, &before, now.Add(time.Hour)), "warehouse", false, true},
		{"failed before the look, its drop in the outbox", call(store.CallFailed, &before, now.Add(time.Hour)), "warehouse", true, false},
		{"completed after the look began", call(store.CallCompleted, &after, now.Add(time.Hour)), "warehouse", false, false},
		{"approved and live", call(store.CallApproved, nil, now.Add(time.Hour)), "warehouse", false, false},
		{"approved, expired before the look", call(store.CallApproved, nil, before), "warehouse", false, true},
		{"approved, expired after the look began", call(store.CallApproved, nil, after), "warehouse", false, false},
		{"another connector's call", call(store.CallFailed, &before, now.Add(time.Hour)), "crm", false, false},
	} {
		if got := leftover(tc.c, tc.connector, start, now, tc.queued); got != tc.want {
			t.Errorf("%s: leftover = %v, want %v", tc.name, got, tc.want)
		}
	}
}
