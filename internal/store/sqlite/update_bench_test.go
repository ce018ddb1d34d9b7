package sqlite_test

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/arxsec/arx/internal/store"
	"github.com/arxsec/arx/internal/store/sqlite"
	"github.com/arxsec/arx/record"
)

// BenchmarkUpdate measures the embedded store alone: concurrent callers,
// one agent each, each Update appending one token.issued entry (about 200
// bytes), durable before Update returns. It reports Updates/s and entries
// per fdatasync, and, in the same run and directory, one write+fdatasync
// per entry of the same bytes: the limit a log that made each entry
// durable on its own would have (x-raw is the ratio).
func BenchmarkUpdate(b *testing.B) {
	for _, callers := range []int{16, 64} {
		b.Run(fmt.Sprint("callers=", callers), func(b *testing.B) {
			dir := b.TempDir()
			s, err := sqlite.Open(b.Context(), sqlite.Config{Path: filepath.Join(dir, "arx.db")})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			ctx := b.Context()
			for a := range callers {
				id := fmt.Sprint("agent-", a)
				if err := s.Update(ctx, func(tx store.Tx) error {
					if err := tx.InsertAgent(&store.Agent{ID: id, Name: id, Owner: "o@example.com", Status: store.AgentActive,
						Manifest: []byte("name: " + id + "\n"), ManifestHash: "sha256:" + id, CreatedAt: time.Now()}); err != nil {
						return err
					}
					return tx.Append(record.AgentHired(id, "admin:root", time.Time{}, record.Hire{Name: id}))
				}); err != nil {
					b.Fatal(err)
				}
			}
			entry := func(a, i int) *record.Entry {
				return record.TokenIssued(fmt.Sprint("agent-", a), "admin:root", time.Time{}, fmt.Sprint("tok-", a, "-", i), "", "benchmark")
			}
			per := b.N/callers + 1
			st := s.Stats()
			batches0, entries0 := st.Batches.Load(), st.Entries.Load()
			b.ResetTimer()
			start := time.Now()
			var wg sync.WaitGroup
			for a := range callers {
				wg.Go(func() {
					for i := range per {
						if err := s.Update(ctx, func(tx store.Tx) error { return tx.Append(entry(a, i)) }); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			elapsed := time.Since(start)
			b.StopTimer()
			updates := float64(per * callers)
			b.ReportMetric(updates/elapsed.Seconds(), "updates/s")
			if batches := st.Batches.Load() - batches0; batches > 0 {
				b.ReportMetric(float64(st.Entries.Load()-entries0)/float64(batches), "entries/fsync")
			}
			body, err := entry(0, 0).Marshal()
			if err != nil {
				b.Fatal(err)
			}
			raw := rawAppends(b, dir, body, min(per*callers, 2000))
			b.ReportMetric(raw, "raw-fsync/s")
			b.ReportMetric(updates/elapsed.Seconds()/raw, "x-raw")
		})
	}
}

// rawAppends appends body n times to a file in dir, each write followed
// by fdatasync, and returns appends per second.
func rawAppends(b *testing.B, dir string, body []byte, n int) float64 {
	f, err := os.Create(filepath.Join(dir, "raw"))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	start := time.Now()
	for range n {
		if _, err := f.Write(body); err != nil {
			b.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			b.Fatal(err)
		}
	}
	return float64(n) / time.Since(start).Seconds()
}
