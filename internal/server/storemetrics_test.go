package server

import (
	"testing"

	"github.com/arxsec/arx/internal/store"
	"github.com/arxsec/arx/internal/store/sequencer"
	"github.com/prometheus/client_golang/prometheus"
)

// statsStore is a store with the sequencer's counters and nothing else.
type statsStore struct {
	store.Store
	stats sequencer.Stats
}

func (s *statsStore) Stats() *sequencer.Stats { return &s.stats }

// TestStoreMetrics: the write path's counters reach /metrics under their
// names, times in seconds.
func TestStoreMetrics(t *testing.T) {
	st := &statsStore{}
	st.stats.Batches.Add(3)
	st.stats.Updates.Add(5)
	st.stats.Entries.Add(10)
	st.stats.RunNanos.Add(250e6)
	st.stats.CommitNanos.Add(1500e6)
	st.stats.BeginNanos.Add(750e6)
	reg := prometheus.NewRegistry()
	registerStoreMetrics(reg, st)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		got[mf.GetName()] = mf.GetMetric()[0].GetCounter().GetValue()
	}
	want := map[string]float64{
		"arx_store_batches_total":        3,
		"arx_store_updates_total":        5,
		"arx_store_entries_total":        10,
		"arx_store_run_seconds_total":    0.25,
		"arx_store_commit_seconds_total": 1.5,
		"arx_store_begin_seconds_total":  0.75,
	}
	for name, v := range want {
		if g, ok := got[name]; !ok || g != v {
			t.Errorf("%s = %v (exported: %v), want %v", name, g, ok, v)
		}
	}
	if len(got) != len(want) {
		t.Errorf("exported %v, want exactly %v", got, want)
	}
}
