package arxtest

import (
	"context"
	"fmt"
	"syscall"
	"time"

	"github.com/arxsec/arx/internal/runtime"
	"github.com/arxsec/arx/internal/server"
	"github.com/arxsec/arx/internal/store"
)

// BenchManifest is the job description the benchmarks hire their agents
// with (a format: the agent's name): the reference agent's shape
// (reference-agents/sales-research), cut to the one action the load uses,
// with a budget no benchmark reaches and neither max_concurrent nor
// active_hours, so that budget enforcement does not turn a benchmark into a
// drift test.
const BenchManifest = `apiVersion: arx.dev/v1
kind: JobDescription

agent:
  name: %s
  description: Benchmark agent (bench/); reads accounts in a loop.
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

// InProcess is a data directory opened with the server's own code (the
// store, sequencer and runtime arx serve runs), for governed calls made
// through the runtime with no HTTP: what a call costs ARX itself. No
// background work runs (checkpoints, sweeps, the outbox).
type InProcess struct {
	*server.Server
}

// Hired is an agent OpenInProcess hired.
type Hired struct {
	Name, ID, Token string
}

// OpenInProcess opens (or creates) the data directory dir and hires n
// agents with BenchManifest, named prefix-000, prefix-001, ...
func OpenInProcess(ctx context.Context, dir, prefix string, n int) (*InProcess, []Hired, error) {
	s, err := server.Open(ctx, server.Config{DataDir: dir, Listen: "127.0.0.1:0"})
	if err != nil {
		return nil, nil, err
	}
	admin, err := s.Runtime.Authenticate(ctx, s.AdminToken)
	if err != nil {
		s.Close()
		return nil, nil, err
	}
	hired := make([]Hired, n)
	for i := range hired {
		name := fmt.Sprintf("%s-%03d", prefix, i)
		a, token, err := s.Runtime.Hire(ctx, admin, fmt.Appendf(nil, BenchManifest, name))
		if err != nil {
			s.Close()
			return nil, nil, fmt.Errorf("hire %s: %w", name, err)
		}
		hired[i] = Hired{Name: name, ID: a.ID, Token: token}
	}
	return &InProcess{s}, hired, nil
}

// Call makes one governed call as an agent does over HTTP, without it:
// the token authenticated for each of the two round trips as arx serve
// does it (runtime.AuthenticateAgent: from memory once the store vouched
// for it), the call asked for (its entry durable, its credential signed)
// and completed (its entry durable), each answer checked.
func (p *InProcess) Call(ctx context.Context, token, key string) error {
	rt := p.Runtime
	a, err := rt.AuthenticateAgent(ctx, token, "")
	if err != nil {
		return err
	}
	res, err := rt.RequestCall(ctx, a, runtime.CallRequest{Connector: "salesforce", Action: "account.read", Risk: "low", IdempotencyKey: key})
	if err != nil {
		return err
	}
	if res.Call.Status != store.CallApproved || res.Credential == "" {
		return fmt.Errorf("RequestCall: no approved call and its credential (status %q)", res.Call.Status)
	}
	if a, err = rt.AuthenticateAgent(ctx, token, ""); err != nil {
		return err
	}
	c, err := rt.CompleteCall(ctx, a, res.Call.ID, runtime.Outcome{Outcome: "success"})
	if err != nil {
		return err
	}
	if c.Status != store.CallCompleted {
		return fmt.Errorf("CompleteCall: the call is not completed (status %q)", c.Status)
	}
	return nil
}

// ProcessCPU is this process's CPU time so far, user and system; -1 when
// the system cannot tell.
func ProcessCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return -1
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
