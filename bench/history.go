package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/arxsec/arx/internal/arxtest"
	arxrt "github.com/arxsec/arx/internal/runtime"
	"github.com/arxsec/arx/internal/server"
)

// go run ./bench history: governed calls/s as the log grows, for agents
// whose job description sets max_concurrent, calls_per_day and
// active_hours (the rules that once read an agent's whole history).
//
// The history is written in process: the bench opens the data directory
// with the server's own code (internal/server) and makes governed calls
// through the runtime without HTTP, 64 at a time, until the log holds the
// next size; then it closes it, starts the arx serve binary on the
// directory and measures a closed loop over HTTP, as the main bench does.
// Between the fills it watches the transient files (the database's WAL, the
// redo log), and once the log holds a million entries it measures an idle
// server's CPU.
const historyArg = "history"

// historyManifest is arxtest.BenchManifest with the budget rules on: a budget no
// run reaches, every minute but one of the day active.
var historyManifest = withBudgetRules(arxtest.BenchManifest)

const benchBudget = "  max_call_duration: 2m\n"

func withBudgetRules(m string) string {
	if strings.Count(m, benchBudget) != 1 {
		panic("bench: arxtest.BenchManifest no longer ends its budget with " + strings.TrimSpace(benchBudget))
	}
	return strings.Replace(m, benchBudget, benchBudget+`  max_concurrent: 8
  active_hours:
    timezone: Europe/Berlin
    start: "00:00"
    end: "23:59"
`, 1)
}

type historyConfig struct {
	sizes    []int64
	agents   int
	fillers  int
	duration time.Duration
	warmup   time.Duration
	idle     time.Duration
	arxPath  string
	dataDir  string
	timeout  time.Duration
}

func historyMain(args []string) int {
	var cfg historyConfig
	fs := flag.NewFlagSet("bench history", flag.ContinueOnError)
	sizes := fs.String("sizes", "10000,100000,1000000,10000000", "log sizes (entries) to measure at, in order")
	fs.IntVar(&cfg.agents, "agents", 16, "agents, each with one caller in the measured closed loop")
	fs.IntVar(&cfg.fillers, "fillers", 64, "concurrent in-process callers writing the history")
	fs.DurationVar(&cfg.duration, "duration", 5*time.Second, "measured time of each closed loop")
	fs.DurationVar(&cfg.warmup, "warmup", 2*time.Second, "unmeasured load before each closed loop")
	fs.DurationVar(&cfg.idle, "idle", 10*time.Second, "how long the idle server's CPU is measured (0: not)")
	fs.StringVar(&cfg.arxPath, "arx", "", "arx binary to run (default: build ./cmd/arx)")
	fs.StringVar(&cfg.dataDir, "data", "", "data directory, kept afterwards, and reused by a later run (default: a temporary one, removed)")
	fs.DurationVar(&cfg.timeout, "timeout", 10*time.Second, "timeout of one HTTP request")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	for _, f := range strings.Split(*sizes, ",") {
		n, err := parseCount(f)
		if err != nil || n < 1 || n > 100_000_000 || len(cfg.sizes) > 0 && n <= cfg.sizes[len(cfg.sizes)-1] {
			fmt.Fprintf(os.Stderr, "bench: error: -sizes: %q is not a size above the one before, up to 100M\n", f)
			return 2
		}
		cfg.sizes = append(cfg.sizes, n)
	}
	if cfg.agents < 1 || cfg.agents > maxAgents || cfg.fillers < 1 || cfg.fillers > 1024 {
		fmt.Fprintf(os.Stderr, "bench: error: -agents or -fillers out of range\n")
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := runHistory(ctx, cfg); err != nil {
		fmt.Fprintf(os.Stderr, "bench: error: %v\n", err)
		return 1
	}
	return 0
}

// parseCount reads 10000, 10k, 1M or 10m.
func parseCount(s string) (int64, error) {
	s = strings.TrimSpace(strings.ToLower(s))
	mult := int64(1)
	switch {
	case strings.HasSuffix(s, "k"):
		mult, s = 1000, strings.TrimSuffix(s, "k")
	case strings.HasSuffix(s, "m"):
		mult, s = 1_000_000, strings.TrimSuffix(s, "m")
	}
	n, err := strconv.ParseInt(s, 10, 64)
	return n * mult, err
}

type historyPoint struct {
	size      int64
	perSec    float64
	p99       time.Duration
	fillRate  float64 // calls/s written in process to get here
	fillCalls int64   // how many (two entries each): few when the loops at the size before nearly got here
	maxWAL    int64   // largest transient files seen while filling
	logBytes  int64
	// checkTook is how long the store's check of the log at rest took
	// after the restart; duringCheck the calls/s measured while it ran
	// (0: it had ended before the loop began).
	checkTook   string
	duringCheck float64
	// use is what arx serve used over the measured loop (its CPU, the
	// bytes it wrote), and calls the calls that loop counted.
	use   cpuUse
	calls int
}

// perCall prints what a call of the measured loop cost the server, with
// the main report's figures (bytesPerCall, usPerCall); ? when unknown.
func (p historyPoint) perCall() string {
	known := func(v float64) string {
		if v < 0 {
			return "?"
		}
		return fmtInt(v)
	}
	us := -1.0
	if p.use.ok {
		us = usPerCall(p.use.arx, p.perSec)
	}
	return fmt.Sprintf("%s B written and %s µs of CPU per call", known(bytesPerCall(p.use, p.calls)), known(us))
}

func runHistory(ctx context.Context, cfg historyConfig) error {
	work, err := os.MkdirTemp("", "arx-bench-history-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	bin := cfg.arxPath
	if bin == "" {
		bin = filepath.Join(work, "arx")
		fmt.Printf("building arx from ./cmd/arx ...\n")
		if err := buildArx(ctx, bin); err != nil {
			return err
		}
	}
	dir := cfg.dataDir
	if dir == "" {
		dir = filepath.Join(work, "data")
	}
	fmt.Printf("bench history: %d agents with max_concurrent, calls_per_day and active_hours; the log filled in process by %d callers\n",
		cfg.agents, cfg.fillers)
	fmt.Printf("machine: %d CPUs, %s/%s, %s; data %s\n\n", runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, runtime.Version(), dir)

	// A directory an earlier run kept is filled on from where it is, by
	// the agents hired then: a log of 10M entries takes a quarter of an
	// hour to write, and comparing two builds at that size should not
	// write it twice.
	var f *filler
	if _, err := os.Stat(filepath.Join(dir, historyAgentsFile)); err == nil {
		fmt.Printf("reusing %s: its log grows from where an earlier run left it\n", dir)
		f, err = reopenFiller(ctx, dir, cfg)
		if err != nil {
			return err
		}
	} else if f, err = openFiller(ctx, dir, cfg); err != nil {
		return err
	}
	// The closed loops' idempotency keys start with the run's own prefix:
	// in a reused directory, a key of an earlier run would answer with
	// that run's call.
	run := strconv.FormatInt(time.Now().UnixNano(), 36)
	var points []historyPoint
	var idleCPU float64 = -1
	for _, size := range cfg.sizes {
		if f == nil {
			if f, err = reopenFiller(ctx, dir, cfg); err != nil {
				return err
			}
		}
		p, err := f.fill(ctx, size)
		if err != nil {
			f.close()
			return err
		}
		if err := f.close(); err != nil {
			return err
		}
		f = nil
		srv, err := startArx(ctx, bin, dir)
		if err != nil {
			return fmt.Errorf("start arx serve at %d entries: %w", size, err)
		}
		t := newTarget("governed", srv.url, config{agents: cfg.agents, timeout: cfg.timeout}, true)
		fails := newFailureLog()
		started := time.Now()
		pid := srv.cmd.Process.Pid // no echo server here: arx's pid stands in for its (unused) figure
		cpu := measureCPU(ctx, pid, pid, cfg.warmup, cfg.duration)
		res := closedLoop(ctx, t, f0agents(dir), cfg.warmup, cfg.duration, fmt.Sprintf("h%d-%s", size, run), fails)
		use := cpu()
		// At start the store checks the whole log at rest in the
		// background (at most an eighth of a core while calls come in):
		// a restart's cost, once, not a cost of each call. When the loop
		// above ran beside it, it is reported apart, and the steady figure
		// is measured once the check has ended.
		if !srv.waitChecked(ctx, 30*time.Minute) {
			return fmt.Errorf("the check of the log at %d entries did not end within 30 minutes", size)
		}
		srv.mu.Lock()
		checkedAt, took := srv.checkedAt, srv.checkTook
		srv.mu.Unlock()
		p.checkTook = took
		if checkedAt.After(started) {
			p.duringCheck = res.perSec
			cpu = measureCPU(ctx, pid, pid, cfg.warmup, cfg.duration)
			res = closedLoop(ctx, t, f0agents(dir), cfg.warmup, cfg.duration, fmt.Sprintf("h%ds-%s", size, run), fails)
			use = cpu()
		}
		p.perSec, p.p99, p.calls, p.use = res.perSec, res.lat.p99, res.calls, use
		if idleCPU < 0 && size >= 1_000_000 && cfg.idle > 0 {
			idleCPU = measureIdle(ctx, srv.cmd.Process.Pid, cfg.idle)
		}
		_, p.logBytes = dirSize(filepath.Join(dir, "log"))
		if err := srv.stop(); err != nil {
			return err
		}
		if fails.report(os.Stdout) {
			return errors.New("calls failed")
		}
		points = append(points, p)
		filled := fmt.Sprintf("filled at %s calls/s", fmtInt(p.fillRate))
		if 2*p.fillCalls < size/10 { // the fill wrote under a tenth of the log: its rate says nothing
			filled = fmt.Sprintf("the loops at the size before wrote most of it (calls made in process: %s)", fmtInt(float64(p.fillCalls)))
		}
		fmt.Printf("  %12s entries: %8s calls/s (p99 %s) over HTTP, %s; %s; WAL + redo at most %s; log %s\n",
			fmtInt(float64(p.size)), fmtInt(p.perSec), fmtMs(p.p99), p.perCall(), filled, fmtBytes(p.maxWAL), fmtBytes(p.logBytes))
		if p.duringCheck > 0 {
			fmt.Printf("  %12s  after a restart, while the store checked the log at rest (took %s): %s calls/s\n", "", p.checkTook, fmtInt(p.duringCheck))
		}
	}
	fmt.Println()
	first, last := points[0], points[len(points)-1]
	r := ratio(last.perSec, first.perSec)
	met := "met"
	if r < 0.9 {
		met = "NOT met"
	}
	fmt.Printf("throughput at %s entries / at %s entries: %.2f   target >= 0.90: %s\n", fmtInt(float64(last.size)), fmtInt(float64(first.size)), r, met)
	maxWAL := slices.MaxFunc(points, func(a, b historyPoint) int { return int(a.maxWAL - b.maxWAL) }).maxWAL
	met = "met"
	if maxWAL > 256<<20 {
		met = "NOT met"
	}
	fmt.Printf("transient files (database WAL + redo log) at most %s while writing %s entries   target <= 256 MB: %s\n",
		fmtBytes(maxWAL), fmtInt(float64(last.size)), met)
	if idleCPU >= 0 {
		met = "met"
		if idleCPU >= 0.01 {
			met = "NOT met"
		}
		fmt.Printf("idle arx serve with >= 1M entries: %.2f%% of a core over %s   target < 1%%: %s\n", 100*idleCPU, cfg.idle, met)
	}
	return nil
}

// filler writes history through the runtime, in process.
type filler struct {
	cfg    historyConfig
	dir    string
	srv    *server.Server
	agents []*arxrt.Principal
	calls  atomic.Int64
}

const historyAgentsFile = "bench-history-agents"

// openFiller opens a new data directory and hires the agents; their
// tokens are kept in the directory for the HTTP loop.
func openFiller(ctx context.Context, dir string, cfg historyConfig) (*filler, error) {
	s, err := server.Open(ctx, server.Config{DataDir: dir, Listen: "127.0.0.1:0"})
	if err != nil {
		return nil, err
	}
	f := &filler{cfg: cfg, dir: dir, srv: s}
	admin, err := s.Runtime.Authenticate(ctx, s.AdminToken)
	if err != nil {
		s.Close()
		return nil, err
	}
	var lines []string
	for i := range cfg.agents {
		name := fmt.Sprintf("history-%03d", i)
		a, tok, err := s.Runtime.Hire(ctx, admin, fmt.Appendf(nil, historyManifest, name))
		if err != nil {
			s.Close()
			return nil, err
		}
		lines = append(lines, a.ID+" "+tok)
	}
	if err := os.WriteFile(filepath.Join(dir, historyAgentsFile), []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		s.Close()
		return nil, err
	}
	return f, f.principals(ctx)
}

func reopenFiller(ctx context.Context, dir string, cfg historyConfig) (*filler, error) {
	s, err := server.Open(ctx, server.Config{DataDir: dir, Listen: "127.0.0.1:0"})
	if err != nil {
		return nil, err
	}
	f := &filler{cfg: cfg, dir: dir, srv: s}
	return f, f.principals(ctx)
}

func (f *filler) principals(ctx context.Context) error {
	f.agents = nil
	for _, a := range f0agents(f.dir) {
		p, err := f.srv.Runtime.Authenticate(ctx, a.token)
		if err != nil {
			return err
		}
		f.agents = append(f.agents, p)
	}
	return nil
}

// f0agents reads the hired agents back from the data directory.
func f0agents(dir string) []agent {
	b, _ := os.ReadFile(filepath.Join(dir, historyAgentsFile))
	var out []agent
	for line := range strings.Lines(string(b)) {
		id, tok, ok := strings.Cut(strings.TrimSpace(line), " ")
		if ok {
			out = append(out, agent{name: id, id: id, token: tok})
		}
	}
	return out
}

// fill makes governed calls until the log holds size entries.
func (f *filler) fill(ctx context.Context, size int64) (historyPoint, error) {
	p := historyPoint{size: size}
	rt := f.srv.Runtime
	st := rt.Store()
	start := time.Now()
	before := f.calls.Load()
	var failed atomic.Pointer[error]
	var done atomic.Bool
	var wg sync.WaitGroup
	stopWatch := make(chan struct{})
	watched := make(chan int64, 1)
	go func() { // the transient files, every half second
		var most int64
		t := time.NewTicker(500 * time.Millisecond)
		defer t.Stop()
		for {
			most = max(most, transientBytes(f.dir))
			select {
			case <-stopWatch:
				watched <- most
				return
			case <-t.C:
			}
		}
	}()
	for w := range f.cfg.fillers {
		wg.Go(func() {
			a := f.agents[w%len(f.agents)]
			for n := 0; !done.Load() && ctx.Err() == nil; n++ {
				res, err := rt.RequestCall(ctx, a, arxrt.CallRequest{Connector: "salesforce", Action: "account.read",
					IdempotencyKey: fmt.Sprintf("fill-%d-%d-%d", w, time.Now().UnixNano(), n), Summary: "history"})
				if err == nil {
					_, err = rt.CompleteCall(ctx, a, res.Call.ID, arxrt.Outcome{Outcome: "success", DurationMS: 1})
				}
				if err != nil {
					failed.CompareAndSwap(nil, &err)
					done.Store(true)
					return
				}
				f.calls.Add(1)
				if n%64 == 0 {
					if size, _ := st.TreeSize(ctx); size >= p.size {
						done.Store(true)
					}
				}
			}
		})
	}
	last := time.Now()
	for !done.Load() && ctx.Err() == nil {
		time.Sleep(200 * time.Millisecond)
		if time.Since(last) > 10*time.Second {
			n, _ := st.TreeSize(ctx)
			fmt.Printf("    ... %s of %s entries\n", fmtInt(float64(n)), fmtInt(float64(size)))
			last = time.Now()
		}
	}
	wg.Wait()
	close(stopWatch)
	p.maxWAL = <-watched
	if err := failed.Load(); err != nil {
		return p, *err
	}
	if ctx.Err() != nil {
		return p, ctx.Err()
	}
	// The log can hold more than asked: the loops at the size before, or an
	// earlier run in a reused directory, wrote past it. The point is at
	// the size the log has.
	if n, err := st.TreeSize(ctx); err == nil {
		p.size = n
	}
	p.fillCalls = f.calls.Load() - before
	p.fillRate = float64(p.fillCalls) / time.Since(start).Seconds()
	return p, nil
}

func (f *filler) close() error { return f.srv.Close() }

// transientBytes is the size of the files that only grow until reclaimed:
// the database's WAL and the redo log.
func transientBytes(dir string) int64 {
	var n int64
	for _, name := range []string{server.DatabaseFile + "-wal", server.DatabaseFile + ".redo"} {
		if fi, err := os.Stat(filepath.Join(dir, name)); err == nil {
			n += fi.Size()
		}
	}
	return n
}

func dirSize(dir string) (files int, bytes int64) {
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if fi, err := e.Info(); err == nil {
			files++
			bytes += fi.Size()
		}
	}
	return files, bytes
}

// measureIdle is the share of a core pid uses over d with no load.
func measureIdle(ctx context.Context, pid int, d time.Duration) float64 {
	sleepCtx(ctx, 2*time.Second) // what the load left settles
	p := strconv.Itoa(pid)
	a, err := procTicks(p)
	if err != nil {
		return -1
	}
	start := time.Now()
	if !sleepCtx(ctx, d) {
		return -1
	}
	b, err := procTicks(p)
	if err != nil {
		return -1
	}
	return float64(b-a) / userHZ / time.Since(start).Seconds()
}

func fmtBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.2f GB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
