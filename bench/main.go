// Command bench measures arx serve end to end and prints figures: governed
// calls per second in a closed loop, latency at a fixed offered rate (open
// loop, measured from each call's intended start so a slow answer cannot
// hide the calls queued behind it), the ceiling a bare net/http echo server
// gives the same client on the same machine, and how the server's record
// appends compare with one raw write+fsync per entry.
//
// It is a program, not a test: the figures depend on the machine, which may
// be shared and noisy, so every figure is measured -runs times and the
// median is reported beside each run's figure. See bench/README.md.
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
	"syscall"
	"time"
)

// config is what the flags say.
type config struct {
	arxPath       string
	dataDir       string
	callers       []int // closed loops, one per count: workers, one hired agent each
	agents        int   // agents to hire (the most callers)
	duration      time.Duration
	warmup        time.Duration
	rate          float64
	runs          int
	fsyncDuration time.Duration
	timeout       time.Duration
	approvals     int
	profile       string // CPU profile of the in-process phases, written here
}

// Limits keep every loop bounded in time and count whatever the flags say.
const (
	maxAgents   = 1024
	maxRuns     = 50
	maxDuration = 10 * time.Minute
	maxRate     = 100_000
)

func main() {
	// The echo server is this same binary started again with a hidden
	// first argument: see echo.go.
	if len(os.Args) > 1 && os.Args[1] == echoServerArg {
		os.Exit(echoServerMain())
	}
	if len(os.Args) > 1 && os.Args[1] == upstreamServerArg { // gateway.go
		os.Exit(upstreamMain())
	}
	if len(os.Args) > 1 && os.Args[1] == gatewayArg { // go run ./bench gateway: see gateway.go
		os.Exit(gatewayMain(os.Args[2:]))
	}
	if len(os.Args) > 1 && os.Args[1] == historyArg { // go run ./bench history: see history.go
		os.Exit(historyMain(os.Args[2:]))
	}
	if replicasRequested(os.Args[1:]) { // -postgres URL: see replicas.go
		os.Exit(replicasMain(os.Args[1:]))
	}
	cfg, err := parseFlags(os.Args[1:])
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench: error: %v\nbench: hint: go run ./bench -h\n", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, cfg)
	stop()
	os.Exit(code)
}

func parseFlags(args []string) (config, error) {
	var cfg config
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.StringVar(&cfg.arxPath, "arx", "", "arx binary to run (default: build ./cmd/arx into a temporary directory)")
	fs.StringVar(&cfg.dataDir, "data", "", "data directory for arx serve, kept afterwards (default: a temporary one, removed)")
	callers := fs.String("callers", "16,64", "closed loops to run, by number of concurrent callers (one hired agent each), comma-separated")
	fs.DurationVar(&cfg.duration, "duration", 10*time.Second, "measured time of each load phase")
	fs.DurationVar(&cfg.warmup, "warmup", 2*time.Second, "unmeasured load before each load phase")
	fs.Float64Var(&cfg.rate, "rate", 1000, "offered governed calls per second in the open loop")
	fs.IntVar(&cfg.runs, "runs", 3, "how many times every figure is measured; medians are reported")
	fs.DurationVar(&cfg.fsyncDuration, "fsync-duration", 3*time.Second, "time of the raw write+fsync measurement in each run")
	fs.DurationVar(&cfg.timeout, "timeout", 10*time.Second, "timeout of one HTTP request")
	fs.IntVar(&cfg.approvals, "approvals", 200, "approvals in the approval wake-up phase (0: skip it)")
	fs.StringVar(&cfg.profile, "inprocess-profile", "", "write a CPU profile (go tool pprof) of the first in-process phase at the most callers to this file: where the runtime's own time goes, without HTTP")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: go run ./bench [flags]\n\nBuilds and starts arx serve on 127.0.0.1, loads it, and prints figures.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	for _, f := range strings.Split(*callers, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 || n > maxAgents {
			return cfg, fmt.Errorf("-callers: %q is not a number of callers between 1 and %d", f, maxAgents)
		}
		cfg.callers = append(cfg.callers, n)
		cfg.agents = max(cfg.agents, n)
	}
	switch {
	case cfg.runs < 1 || cfg.runs > maxRuns:
		return cfg, fmt.Errorf("-runs %d is not between 1 and %d", cfg.runs, maxRuns)
	case cfg.duration < 100*time.Millisecond || cfg.duration > maxDuration:
		return cfg, fmt.Errorf("-duration %s is not between 100ms and %s", cfg.duration, maxDuration)
	case cfg.warmup < 0 || cfg.warmup > maxDuration:
		return cfg, fmt.Errorf("-warmup %s is not between 0 and %s", cfg.warmup, maxDuration)
	case cfg.fsyncDuration < 100*time.Millisecond || cfg.fsyncDuration > maxDuration:
		return cfg, fmt.Errorf("-fsync-duration %s is not between 100ms and %s", cfg.fsyncDuration, maxDuration)
	case cfg.rate < 1 || cfg.rate > maxRate:
		return cfg, fmt.Errorf("-rate %g is not between 1 and %d", cfg.rate, maxRate)
	case cfg.approvals < 0 || cfg.approvals > 10000:
		return cfg, fmt.Errorf("-approvals %d is not between 0 and 10000", cfg.approvals)
	case cfg.timeout < 100*time.Millisecond || cfg.timeout > time.Minute:
		return cfg, fmt.Errorf("-timeout %s is not between 100ms and 1m", cfg.timeout)
	}
	return cfg, nil
}

// run does everything and returns the exit code: 0 only when every call
// succeeded and the server started and stopped cleanly.
func run(ctx context.Context, cfg config) (code int) {
	fail := func(format string, args ...any) int {
		fmt.Fprintf(os.Stderr, "bench: error: "+format+"\n", args...)
		return 1
	}
	work, err := os.MkdirTemp("", "arx-bench-")
	if err != nil {
		return fail("temporary directory: %v", err)
	}
	defer os.RemoveAll(work)

	arxBin := cfg.arxPath
	if arxBin == "" {
		arxBin = filepath.Join(work, "arx")
		fmt.Printf("building arx from ./cmd/arx ...\n")
		if err := buildArx(ctx, arxBin); err != nil {
			return fail("%v", err)
		}
	}
	dataDir := cfg.dataDir
	if dataDir == "" {
		dataDir = filepath.Join(work, "data")
	}

	// failedTo reports what failed at the end and fails the run.
	failedTo := func(what string, err error) {
		if err != nil {
			fmt.Fprintf(os.Stderr, "bench: error: %s: %v\n", what, err)
			code = 1
		}
	}
	srv, err := startArx(ctx, arxBin, dataDir)
	if err != nil {
		return fail("start arx serve: %v", err)
	}
	defer func() {
		failedTo("stop arx serve", srv.stop())
		if srv.reportLog(os.Stdout) {
			code = 1
		}
	}()
	echo, err := startEcho(ctx)
	if err != nil {
		return fail("start echo server: %v", err)
	}
	defer func() { failedTo("stop echo server", echo.stop()) }()

	fails := newFailureLog()
	defer func() {
		if fails.report(os.Stdout) {
			code = 1
		}
	}()
	governed := newTarget("governed", srv.url, cfg, true)
	echoT := newTarget("echo", echo.url, cfg, false)
	findDevice(dataDir)
	adminToken, err := readAdminToken(dataDir)
	if err != nil {
		return fail("%v", err)
	}
	agents, err := hireAgents(ctx, governed, adminToken, slices.Max(cfg.callers))
	if err != nil {
		return fail("hire agents: %v", err)
	}

	prof, err := newProfile(cfg.profile)
	if err != nil {
		return fail("-inprocess-profile: %v", err)
	}
	defer func() { failedTo("-inprocess-profile", prof.close()) }()

	fmt.Printf("arx serve %s (data %s), echo server %s\n", srv.url, dataDir, echo.url)
	fmt.Printf("machine: %d CPUs, GOMAXPROCS %d, %s/%s, %s; client, arx serve and echo server share it\n",
		runtime.NumCPU(), runtime.GOMAXPROCS(0), runtime.GOOS, runtime.GOARCH, runtime.Version())
	fmt.Printf("%d agents hired; %d runs of: closed loops of %v callers, governed, echo, then in process, %s each, open loop %g/s for %s (each after %s warm-up), raw fsync %s\n\n",
		len(agents), cfg.runs, cfg.callers, cfg.duration, cfg.rate, cfg.duration, cfg.warmup, cfg.fsyncDuration)

	var results []runResult
	var entries [][]byte
	for r := 1; r <= cfg.runs && ctx.Err() == nil; r++ {
		var res runResult
		tag := fmt.Sprintf("r%d", r)
		arxPID, echoPID := srv.cmd.Process.Pid, echo.cmd.Process.Pid
		for _, n := range cfg.callers {
			c := closedPair{callers: n}
			cpu := measureCPU(ctx, arxPID, echoPID, cfg.warmup, cfg.duration)
			st := measureStore(ctx, srv.url, cfg.warmup, cfg.duration)
			c.governed = closedLoop(ctx, governed, agents[:n], cfg.warmup, cfg.duration, fmt.Sprintf("%s-%d", tag, n), fails)
			c.governedCPU, c.store = cpu(), st()
			cpu = measureCPU(ctx, arxPID, echoPID, cfg.warmup, cfg.duration)
			c.echo = closedLoop(ctx, echoT, agents[:n], cfg.warmup, cfg.duration, tag, fails)
			c.echoCPU = cpu()
			if c.inproc, c.inprocCPU, err = inProcessLoop(ctx, filepath.Dir(dataDir), n, cfg, prof, fmt.Sprintf("%s-%d", tag, n), fails); err != nil {
				return fail("in process: %v", err)
			}
			res.closed = append(res.closed, c)
		}
		if entries == nil && ctx.Err() == nil {
			// The entries the load just wrote: their bytes are what the raw
			// fsync measurement appends.
			entries, err = callEntries(ctx, governed, adminToken)
			if err != nil {
				return fail("read record entries: %v", err)
			}
		}
		cpu := measureCPU(ctx, arxPID, echoPID, cfg.warmup+openLoopLead, cfg.duration)
		st := measureStore(ctx, srv.url, cfg.warmup+openLoopLead, cfg.duration)
		res.open = openLoop(ctx, governed, agents, cfg.rate, cfg.warmup, cfg.duration, tag, fails)
		res.openCPU, res.openStore = cpu(), st()
		res.openEcho = openLoop(ctx, echoT, agents, cfg.rate, cfg.warmup, cfg.duration, tag, fails)
		if ctx.Err() == nil {
			if res.openInproc, err = inProcessOpenLoop(ctx, filepath.Dir(dataDir), len(agents), cfg, tag+"-open", fails); err != nil {
				return fail("in-process open loop: %v", err)
			}
		}
		if ctx.Err() == nil {
			res.fsync, err = rawFsync(ctx, dataDir, entries, cfg.fsyncDuration)
			if err != nil {
				return fail("raw fsync: %v", err)
			}
			if res.fsync.paced, err = rawFsyncPaced(ctx, dataDir, entries, cfg.rate, cfg.fsyncDuration); err != nil {
				return fail("raw fsync at %g/s: %v", cfg.rate, err)
			}
		}
		if ctx.Err() != nil {
			break
		}
		results = append(results, res)
		printRun(os.Stdout, r, cfg.runs, res)
	}
	if ctx.Err() != nil {
		fmt.Fprintf(os.Stderr, "bench: interrupted; %d of %d runs complete\n", len(results), cfg.runs)
		code = 1
	}
	if len(results) > 0 {
		fmt.Println()
		printSummary(os.Stdout, cfg, entries, results)
	}
	if cfg.approvals > 0 && ctx.Err() == nil {
		fmt.Println()
		ar, err := approvalPhase(ctx, governed, adminToken, cfg.approvals)
		if err != nil {
			return fail("approval phase: %v", err)
		}
		printApprovals(os.Stdout, ar)
	}
	return code
}

// readAdminToken reads the token arx serve writes on the first start of a
// data directory.
func readAdminToken(dataDir string) (string, error) {
	b, err := os.ReadFile(filepath.Join(dataDir, "admin.token"))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return "", fmt.Errorf("no admin.token in %s: arx serve writes it on the first start of a data directory; it was removed", dataDir)
		}
		return "", err
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", fmt.Errorf("%s/admin.token is empty", dataDir)
	}
	return tok, nil
}
