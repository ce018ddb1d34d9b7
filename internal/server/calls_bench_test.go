package server_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/arxsec/arx/internal/arxtest"
)

// BenchmarkGovernedCall makes governed calls through the runtime of an
// opened data directory, with no HTTP, from 16 callers (one agent each):
// per call, the agent's token authenticated twice, the call asked for and
// completed (two entries, each durable before its answer) and its
// credential signed (arxtest.InProcess, which go run ./bench also drives).
// It reports calls/s, the process's CPU per call and allocations per
// call: the runtime's own cost, which go run ./bench sets beside arx
// serve's over HTTP.
func BenchmarkGovernedCall(b *testing.B) {
	ctx := b.Context()
	const callers = 16
	p, hired, err := arxtest.OpenInProcess(ctx, b.TempDir(), "bench", callers)
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	per := b.N/callers + 1
	b.ReportAllocs()
	b.ResetTimer()
	start, cpu0 := time.Now(), arxtest.ProcessCPU()
	var wg sync.WaitGroup
	for _, h := range hired {
		wg.Go(func() {
			for n := range per {
				if err := p.Call(ctx, h.Token, fmt.Sprint("k-", n)); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	calls := float64(per * callers)
	b.ReportMetric(calls/time.Since(start).Seconds(), "calls/s")
	b.ReportMetric(float64((arxtest.ProcessCPU()-cpu0).Microseconds())/calls, "cpu-µs/call")
}
