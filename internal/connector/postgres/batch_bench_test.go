package postgres

import (
	"testing"
	"time"

	"github.com/arxsec/arx/internal/connector"
	"github.com/google/uuid"
)

// BenchmarkProvisionRevoke: one role made and dropped per iteration, by
// concurrent callers (-cpu sets how many).
func BenchmarkProvisionRevoke(b *testing.B) {
	_, c := setupTB(b)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			call := connector.Call{ID: uuid.NewString(), Action: "orders.query", Expiry: time.Now().Add(time.Minute), Password: password()}
			if _, err := c.Provision(b.Context(), call); err != nil {
				b.Error(err)
				return
			}
			if _, err := c.Revoke(b.Context(), call.ID); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
