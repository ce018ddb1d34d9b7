package server

import (
	"fmt"
	"sync"
	"syscall"
	"testing"
	"time"

	arxrt "github.com/arxsec/arx/internal/runtime"
	"github.com/arxsec/arx/internal/store"
)

// benchJob is the bench's job description (bench/arx.go): one low-risk
// action, a budget no run reaches.
const benchJob = `apiVersion: arx.dev/v1
kind: JobDescription

agent:
  name: %s
  description: Benchmark agent.
  owner: bench@example.com

scope:
  connectors:
    salesforce:
      description: Sales CRM
      actions:
        account.read:
          risk: low
          description: Read an account and its contacts.

approval:
  approvers: [bench@example.com]
  timeout: 15m
  on_timeout: deny

budget:
  calls_per_day: 100000000
  max_call_duration: 2m

termination:
  notify: [bench@example.com]
  revoke: all

on_drift: record
`

// BenchmarkGovernedCall makes governed calls through the runtime of an
// opened data directory, with no HTTP, from 16 callers (one agent each):
// per call, the agent's token authenticated twice, the call asked for and
// completed (two entries, each durable before its answer) and its
// credential signed. It reports calls/s, the process's CPU per call and
// allocations per call: the runtime's own cost, which go run ./bench sets
// beside arx serve's over HTTP.
func BenchmarkGovernedCall(b *testing.B) {
	ctx := b.Context()
	s, err := Open(ctx, Config{DataDir: b.TempDir(), Listen: "127.0.0.1:0"})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	admin, err := s.Runtime.Authenticate(ctx, s.AdminToken)
	if err != nil {
		b.Fatal(err)
	}
	const callers = 16
	tokens := make([]string, callers)
	for i := range tokens {
		if _, tokens[i], err = s.Runtime.Hire(ctx, admin, fmt.Appendf(nil, benchJob, fmt.Sprint("bench-", i))); err != nil {
			b.Fatal(err)
		}
	}
	rt := s.Runtime
	per := b.N/callers + 1
	b.ReportAllocs()
	b.ResetTimer()
	start, cpu0 := time.Now(), processCPU()
	var wg sync.WaitGroup
	for w := range callers {
		wg.Go(func() {
			for n := range per {
				a, err := rt.Authenticate(ctx, tokens[w])
				if err != nil {
					b.Error(err)
					return
				}
				res, err := rt.RequestCall(ctx, a, arxrt.CallRequest{Connector: "salesforce", Action: "account.read", Risk: "low",
					IdempotencyKey: fmt.Sprint("k-", w, "-", n)})
				if err != nil || res.Call.Status != store.CallApproved || res.Credential == "" {
					b.Errorf("RequestCall: %v (%+v)", err, res)
					return
				}
				if a, err = rt.Authenticate(ctx, tokens[w]); err != nil {
					b.Error(err)
					return
				}
				if c, err := rt.CompleteCall(ctx, a, res.Call.ID, arxrt.Outcome{Outcome: "success"}); err != nil || c.Status != store.CallCompleted {
					b.Errorf("CompleteCall: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	calls := float64(per * callers)
	b.ReportMetric(calls/time.Since(start).Seconds(), "calls/s")
	b.ReportMetric(float64((processCPU()-cpu0).Microseconds())/calls, "cpu-µs/call")
}

// processCPU is this process's CPU time, user and system.
func processCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
