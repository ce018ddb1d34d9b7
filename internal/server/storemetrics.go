package server

import (
	"github.com/arxsec/arx/internal/store"
	"github.com/arxsec/arx/internal/store/sequencer"
	"github.com/prometheus/client_golang/prometheus"
)

// registerStoreMetrics exports the write path's counters, when the store
// has them: how many batches (one durable write each), Updates and entries
// were committed. Entries per batch is entries over batches.
func registerStoreMetrics(reg prometheus.Registerer, st store.Store) {
	s, ok := st.(interface{ Stats() *sequencer.Stats })
	if !ok {
		return
	}
	stats := s.Stats()
	for _, c := range []struct {
		name, help string
		v          func() int64
	}{
		{"arx_store_batches_total", "Batches committed, each with one durable write.", stats.Batches.Load},
		{"arx_store_updates_total", "Updates committed.", stats.Updates.Load},
		{"arx_store_entries_total", "Record entries committed.", stats.Entries.Load},
	} {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: c.name, Help: c.help},
			func() float64 { return float64(c.v()) }))
	}
	for _, c := range []struct {
		name, help string
		v          func() int64
	}{
		{"arx_store_begin_seconds_total", "Time the sequencer spent beginning batches (PostgreSQL: taking the log lock and reading what other replicas appended).", stats.BeginNanos.Load},
		{"arx_store_run_seconds_total", "Time the sequencer spent running Updates.", stats.RunNanos.Load},
		{"arx_store_commit_seconds_total", "Time the sequencer spent making batches durable.", stats.CommitNanos.Load},
	} {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: c.name, Help: c.help},
			func() float64 { return float64(c.v()) / 1e9 }))
	}
}
