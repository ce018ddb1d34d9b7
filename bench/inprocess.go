package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	goruntime "runtime"
	"runtime/pprof"
	"slices"
	"time"

	"github.com/arxsec/arx/internal/arxtest"
)

// inProcess is arxtest.InProcess as a caller of the load loops: the
// governed calls of the HTTP phases, made through ARX's runtime in this
// process, in a data directory of its own beside arx serve's. Set beside
// the same calls over HTTP, it shows what serving HTTP (and the client
// beside it) costs, and what is left for the write path. Its CPU includes
// the load generator's own.
type inProcess struct {
	*arxtest.InProcess
}

func (p inProcess) label() string { return "in-process" }

func (p inProcess) call(ctx context.Context, token, key string) error { return p.Call(ctx, token, key) }

// inProcessRun opens ARX's runtime in this process on a fresh data
// directory with n hired agents, runs f, and removes the directory after:
// the state the calls leave (their idempotency keys, for a day) would
// otherwise stay in this process's heap and make the client's garbage
// collection, and so its latencies in the phases after, worse than the
// client's alone. The data directory is made next to arx serve's
// (parent), so that both write to the same disk.
func inProcessRun(ctx context.Context, parent string, n int, f func(p inProcess, agents []agent)) error {
	dir, err := os.MkdirTemp(parent, "arx-bench-in-process-")
	if err != nil {
		return err
	}
	defer func() {
		os.RemoveAll(dir)
		goruntime.GC()
	}()
	ip, hired, err := arxtest.OpenInProcess(ctx, filepath.Join(dir, "data"), "inproc", n)
	if err != nil {
		return err
	}
	agents := make([]agent, len(hired))
	for i, h := range hired {
		agents[i] = agent{name: h.Name, id: h.ID, token: h.Token}
	}
	f(inProcess{ip}, agents)
	return ip.Close()
}

// inProcessLoop runs one in-process closed loop of n callers
// (inProcessRun), and gives the cores this process used.
func inProcessLoop(ctx context.Context, parent string, n int, cfg config, prof *profile, tag string, fails *failureLog) (res closedResult, cpu float64, err error) {
	err = inProcessRun(ctx, parent, n, func(p inProcess, agents []agent) {
		selfCPU := measureSelfCPU(ctx, cfg.warmup, cfg.duration)
		stopProfile := prof.start(n == slices.Max(cfg.callers))
		res = closedLoop(ctx, p, agents, cfg.warmup, cfg.duration, tag, fails)
		cpu = selfCPU() // before the profile is written, which is not the runtime's work
		stopProfile()
	})
	return res, cpu, err
}

// inProcessOpenLoop runs the open loop in process (inProcessRun), with as
// many agents as the one over HTTP: the latency a governed call has
// without HTTP and without the client's process beside it.
func inProcessOpenLoop(ctx context.Context, parent string, n int, cfg config, tag string, fails *failureLog) (res openResult, err error) {
	err = inProcessRun(ctx, parent, n, func(p inProcess, agents []agent) {
		res = openLoop(ctx, p, agents, cfg.rate, cfg.warmup, cfg.duration, tag, fails)
	})
	return res, err
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
			first <- sample{time.Now(), arxtest.ProcessCPU()}
		}
		close(first)
	}()
	return func() float64 {
		s, ok := <-first
		if !ok || s.cpu < 0 {
			return -1
		}
		end := arxtest.ProcessCPU()
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
