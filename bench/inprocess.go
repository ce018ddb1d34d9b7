package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	goruntime "runtime"
	"runtime/pprof"
	"slices"
	"syscall"
	"time"

	arxrt "github.com/arxsec/arx/internal/runtime"
	"github.com/arxsec/arx/internal/server"
	"github.com/arxsec/arx/internal/store"
)

// inProcess makes governed calls through ARX's runtime in this process,
// with no HTTP: each of the two round trips authenticates the token,
// decides and appends its entry durably (the same store, sequencer and
// fdatasync as arx serve, in a data directory of its own beside arx
// serve's), and the request signs the credential. Set beside the same calls
// over HTTP, it shows what serving HTTP (and the client beside it) costs,
// and what is left for the write path. It runs no background work (arx
// serve's checkpoints, sweeps and outbox), and its CPU includes the load
// generator's own.
type inProcess struct {
	srv *server.Server
}

func openInProcess(ctx context.Context, dir string, n int) (*inProcess, []agent, error) {
	s, err := server.Open(ctx, server.Config{DataDir: dir, Listen: "127.0.0.1:0"})
	if err != nil {
		return nil, nil, err
	}
	admin, err := s.Runtime.Authenticate(ctx, s.AdminToken)
	if err != nil {
		s.Close()
		return nil, nil, err
	}
	agents := make([]agent, n)
	for i := range agents {
		name := fmt.Sprintf("inproc-%03d", i)
		a, tok, err := s.Runtime.Hire(ctx, admin, fmt.Appendf(nil, benchManifest, name))
		if err != nil {
			s.Close()
			return nil, nil, fmt.Errorf("hire %s in process: %w", name, err)
		}
		agents[i] = agent{name: name, id: a.ID, token: tok}
	}
	return &inProcess{srv: s}, agents, nil
}

func (p *inProcess) close() error { return p.srv.Close() }

// inProcessLoop runs one in-process closed loop of n callers on a fresh
// data directory, and removes it after: the state the calls leave (their
// idempotency keys, for a day) would otherwise stay in this process's heap
// and make the client's garbage collection, and so its latencies in the
// phases after, worse than the client's alone.
// The data directory is made next to arx serve's (parent), so that both
// write to the same disk.
func inProcessLoop(ctx context.Context, parent string, n int, cfg config, prof *profile, tag string, fails *failureLog) (closedResult, float64, error) {
	dir, err := os.MkdirTemp(parent, "arx-bench-in-process-")
	if err != nil {
		return closedResult{}, 0, err
	}
	defer func() {
		os.RemoveAll(dir)
		goruntime.GC()
	}()
	p, agents, err := openInProcess(ctx, filepath.Join(dir, "data"), n)
	if err != nil {
		return closedResult{}, 0, err
	}
	selfCPU := measureSelfCPU(ctx, cfg.warmup, cfg.duration)
	stopProfile := prof.start(n == slices.Max(cfg.callers))
	res := closedLoop(ctx, p, agents, cfg.warmup, cfg.duration, tag, fails)
	cpu := selfCPU() // before the profile is written, which is not the runtime's work
	stopProfile()
	return res, cpu, p.close()
}

func (p *inProcess) label() string { return "in-process" }

// call is target.call without HTTP: the same request, the same checks of
// the answers.
func (p *inProcess) call(ctx context.Context, token, key string) error {
	rt := p.srv.Runtime
	a, err := rt.Authenticate(ctx, token)
	if err != nil {
		return err
	}
	res, err := rt.RequestCall(ctx, a, arxrt.CallRequest{Connector: "salesforce", Action: "account.read", Risk: "low", IdempotencyKey: key})
	if err != nil {
		return err
	}
	if res.Call.Status != store.CallApproved || res.Credential == "" {
		return &callError{kind: "RequestCall: no approved call and its credential", detail: fmt.Sprintf("status %q", res.Call.Status)}
	}
	if a, err = rt.Authenticate(ctx, token); err != nil {
		return err
	}
	c, err := rt.CompleteCall(ctx, a, res.Call.ID, arxrt.Outcome{Outcome: "success"})
	if err != nil {
		return err
	}
	if c.Status != store.CallCompleted {
		return &callError{kind: "CompleteCall: the call is not completed", detail: fmt.Sprintf("status %q", c.Status)}
	}
	return nil
}

// selfCPU is this process's CPU time (user + system) so far.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return -1
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// measureSelfCPU returns a function that gives the cores this process used
// from warmup after now until the window's end (or until it is called).
func measureSelfCPU(ctx context.Context, warmup, dur time.Duration) func() float64 {
	type sample struct {
		at  time.Time
		cpu time.Duration
	}
	first := make(chan sample, 1)
	go func() {
		if sleepCtx(ctx, warmup) {
			first <- sample{time.Now(), selfCPU()}
		}
		close(first)
	}()
	return func() float64 {
		s, ok := <-first
		if !ok || s.cpu < 0 {
			return -1
		}
		end := selfCPU()
		return float64(end-s.cpu) / float64(time.Since(s.at))
	}
}

// profile is a CPU profile of one in-process phase: the first run's, at
// the most callers.
type profile struct {
	path     string
	f        *os.File
	done     bool
	profiled bool
}

func newProfile(path string) (*profile, error) {
	if path == "" {
		return &profile{done: true}, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	return &profile{path: path, f: f}, nil
}

// start profiles until the returned function is called, when want says so
// and nothing was profiled yet.
func (p *profile) start(want bool) func() {
	if p.done || !want {
		return func() {}
	}
	p.done = true
	if err := pprof.StartCPUProfile(p.f); err != nil {
		fmt.Fprintf(os.Stderr, "bench: -inprocess-profile: %v\n", err)
		return func() {}
	}
	return func() {
		pprof.StopCPUProfile()
		p.profiled = true
	}
}

func (p *profile) close() error {
	if p.f == nil {
		return nil
	}
	if err := p.f.Close(); err != nil {
		return err
	}
	if !p.profiled {
		return fmt.Errorf("no in-process phase was profiled: %s is empty", p.path)
	}
	fmt.Printf("CPU profile of the in-process phase: go tool pprof -top %s\n", p.path)
	return nil
}
