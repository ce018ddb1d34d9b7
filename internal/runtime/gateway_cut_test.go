package runtime

import (
	"testing"

	"github.com/arxsec/arx/internal/store"
)

// TestCutReason: a request in flight is cut with the same words whichever
// noticed its call closed first (the sweep that expired it, or the check
// of requests in flight); the sweep once named the status the call had
// before it expired it ("the call was approved").
func TestCutReason(t *testing.T) {
	for _, tc := range []struct{ status, want string }{
		{store.CallExpired, "the call's credential expired"},
		{store.CallCompleted, "the call was completed"},
		{store.CallFailed, "the call ended as failed"},
		{store.CallRevoked, "the call was revoked"},
		{store.CallDenied, "the call was denied"},
		{store.CallRefused, "the call was refused"},
		{store.CallPending, "the call is waiting for approval"},
		{"archived", "the call is archived"}, // a status added later reads as one
	} {
		if got := cutReason(tc.status); got != tc.want {
			t.Errorf("cutReason(%q) = %q, want %q", tc.status, got, tc.want)
		}
	}
}
