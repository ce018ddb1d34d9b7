package main

// The replicas benchmark (-postgres URL): governed calls per second with one
// arx serve on SQLite, then one, two and three replicas sharing a fresh
// PostgreSQL database (-replicas), in one run, and the approval wake-up
// across replicas: the agent's SDK waits on one replica, the manager
// approves on another. Loopback only; every loop is bounded in time.
//
//	go run ./bench -postgres postgres://arx:arx@127.0.0.1:5432/arx -replicas 1,2,3

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"net/url"
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

	"github.com/arxsec/arx/agentvault"
	"github.com/jackc/pgx/v5"
)

// replicasRequested says whether the arguments ask for the replicas
// benchmark.
func replicasRequested(args []string) bool {
	for _, a := range args {
		if a == "-postgres" || a == "--postgres" || strings.HasPrefix(a, "-postgres=") || strings.HasPrefix(a, "--postgres=") {
			return true
		}
	}
	return false
}

type replicasConfig struct {
	config
	postgres string
	replicas []int
	pin      bool // each replica held to a CPU of its own (taskset)
}

func replicasMain(args []string) int {
	var cfg replicasConfig
	var list string
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.StringVar(&cfg.postgres, "postgres", "", "PostgreSQL URL of a role that may create databases (each configuration gets a fresh one)")
	fs.StringVar(&list, "replicas", "1,2,3", "replica counts to measure on PostgreSQL, comma-separated (1 to 5)")
	fs.StringVar(&cfg.arxPath, "arx", "", "arx binary to run (default: build ./cmd/arx into a temporary directory)")
	fs.IntVar(&cfg.agents, "agents", 32, "simulated agents, spread over the replicas")
	fs.BoolVar(&cfg.pin, "pin", false, "hold replica i to CPU i (taskset), so that each replica has a core of its own")
	fs.DurationVar(&cfg.duration, "duration", 10*time.Second, "measured time of each closed loop")
	fs.DurationVar(&cfg.warmup, "warmup", 2*time.Second, "unmeasured load before each closed loop")
	fs.IntVar(&cfg.approvals, "approvals", 100, "approvals per configuration in the wake-up phase (0: skip it)")
	fs.DurationVar(&cfg.timeout, "timeout", 10*time.Second, "timeout of one HTTP request")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	for _, f := range strings.Split(list, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 || n > 5 {
			fmt.Fprintf(os.Stderr, "bench: error: -replicas %q: each count is 1 to 5\n", list)
			return 2
		}
		cfg.replicas = append(cfg.replicas, n)
	}
	switch {
	case cfg.postgres == "":
		fmt.Fprintf(os.Stderr, "bench: error: -postgres is empty\n")
		return 2
	case cfg.agents < 1 || cfg.agents > maxAgents:
		fmt.Fprintf(os.Stderr, "bench: error: -agents %d is not between 1 and %d\n", cfg.agents, maxAgents)
		return 2
	case cfg.duration < 100*time.Millisecond || cfg.duration > maxDuration || cfg.warmup < 0 || cfg.warmup > maxDuration:
		fmt.Fprintf(os.Stderr, "bench: error: -duration or -warmup out of range\n")
		return 2
	case cfg.approvals < 0 || cfg.approvals > 10000:
		fmt.Fprintf(os.Stderr, "bench: error: -approvals %d is not between 0 and 10000\n", cfg.approvals)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return runReplicas(ctx, cfg)
}

// replicaRow is one line of the table.
type replicaRow struct {
	store    string
	replicas int
	loop     closedResult
	cpu      serverCPU
	wake     *approvalResult
	cross    bool
}

func runReplicas(ctx context.Context, cfg replicasConfig) (code int) {
	fail := func(format string, args ...any) int {
		fmt.Fprintf(os.Stderr, "bench: error: "+format+"\n", args...)
		return 1
	}
	work, err := os.MkdirTemp("", "arx-bench-replicas-")
	if err != nil {
		return fail("temporary directory: %v", err)
	}
	defer os.RemoveAll(work)
	bin := cfg.arxPath
	if bin == "" {
		bin = filepath.Join(work, "arx")
		fmt.Printf("building arx from ./cmd/arx ...\n")
		if err := buildArx(ctx, bin); err != nil {
			return fail("%v", err)
		}
	}
	fmt.Printf("machine: %d CPUs, %s/%s, %s; the client, every arx serve and PostgreSQL share it\n",
		runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, runtime.Version())
	fmt.Printf("%d agents spread over the replicas, closed loop of %s after %s warm-up; request + complete per call\n\n",
		cfg.agents, cfg.duration, cfg.warmup)

	fails := newFailureLog()
	defer func() {
		if fails.report(os.Stdout) {
			code = 1
		}
	}()
	configs := []struct {
		store string
		n     int
	}{{"SQLite", 1}}
	for _, n := range cfg.replicas {
		configs = append(configs, struct {
			store string
			n     int
		}{"PostgreSQL", n})
	}
	var rows []replicaRow
	for i, c := range configs {
		if ctx.Err() != nil {
			break
		}
		db := ""
		if c.store == "PostgreSQL" {
			db, err = createDatabase(ctx, cfg.postgres)
			if err != nil {
				return fail("%v", err)
			}
		}
		row, err := measureDeployment(ctx, cfg, bin, filepath.Join(work, fmt.Sprint("d", i)), db, c.n, fails)
		if db != "" {
			if derr := dropDatabase(cfg.postgres, db); derr != nil {
				fmt.Fprintf(os.Stderr, "bench: warning: %v\n", derr)
			}
		}
		if err != nil {
			return fail("%s, %d replica(s): %v", c.store, c.n, err)
		}
		row.store = c.store
		rows = append(rows, row)
		printReplicaRow(os.Stdout, row)
	}
	fmt.Println()
	printReplicaTable(os.Stdout, cfg, rows)
	return code
}

// measureDeployment starts n replicas (on SQLite when db is ""), measures
// them and stops them.
func measureDeployment(ctx context.Context, cfg replicasConfig, bin, dir, db string, n int, fails *failureLog) (row replicaRow, err error) {
	row.replicas = n
	var procs []*arxProc
	defer func() {
		for _, p := range procs {
			if serr := p.stop(); serr != nil && err == nil {
				err = fmt.Errorf("stop arx serve: %v", serr)
			}
			if p.reportLog(os.Stdout) && err == nil {
				err = fmt.Errorf("a replica logged warnings or errors")
			}
		}
	}()
	for i := range n {
		d := filepath.Join(dir, fmt.Sprint("r", i))
		if err := os.MkdirAll(d, 0o700); err != nil {
			return row, err
		}
		if i > 0 { // the deployment's keys, as the README says
			for _, f := range []string{"log.key", "log.pub", "credential.key"} {
				b, err := os.ReadFile(filepath.Join(dir, "r0", f))
				if err != nil {
					return row, err
				}
				if err := os.WriteFile(filepath.Join(d, f), b, 0o600); err != nil {
					return row, err
				}
			}
		}
		// startArx passes its environment on: ARX_DATABASE picks the store.
		if db != "" {
			os.Setenv("ARX_DATABASE", db)
		}
		cpu := -1
		if cfg.pin {
			cpu = i % runtime.NumCPU()
		}
		p, err := startArxOn(ctx, cpu, bin, d)
		os.Unsetenv("ARX_DATABASE")
		if err != nil {
			return row, fmt.Errorf("start replica %d: %v", i, err)
		}
		procs = append(procs, p)
	}
	targets := make([]*target, n)
	for i, p := range procs {
		targets[i] = newTarget(fmt.Sprintf("replica %d", i), p.url, cfg.config, true)
	}
	admin, err := readAdminToken(filepath.Join(dir, "r0"))
	if err != nil {
		return row, err
	}
	agents, err := hireAgents(ctx, targets[0], admin, cfg.agents)
	if err != nil {
		return row, fmt.Errorf("hire agents: %v", err)
	}
	var pids []int
	for _, p := range procs {
		pids = append(pids, p.cmd.Process.Pid)
	}
	postmaster := 0
	if db != "" {
		postmaster = postmasterPID(ctx, db)
	}
	cpu := measureServers(ctx, pids, postmaster, cfg.warmup, cfg.duration)
	row.loop = spreadLoop(ctx, targets, agents, cfg.warmup, cfg.duration, fails)
	row.cpu = cpu()
	if cfg.approvals > 0 && ctx.Err() == nil {
		// The agent waits on the last replica, the manager approves on the
		// first (the same one when there is one).
		wake, err := crossApprovals(ctx, targets[0], targets[n-1], admin, cfg.approvals)
		if err != nil {
			return row, fmt.Errorf("approvals: %v", err)
		}
		row.wake, row.cross = &wake, n > 1
	}
	return row, nil
}

// spreadLoop is closedLoop with agent i's calls going to replica i mod n,
// as a load balancer would spread agents.
func spreadLoop(ctx context.Context, targets []*target, agents []agent, warmup, dur time.Duration, fails *failureLog) closedResult {
	start := time.Now()
	from, end := start.Add(warmup), start.Add(warmup+dur)
	lats := make([][]time.Duration, len(agents))
	var failed atomic.Int64
	var wg sync.WaitGroup
	for i, a := range agents {
		t := targets[i%len(targets)]
		wg.Go(func() {
			for n := range maxCallsPerWorker {
				s := time.Now()
				if !s.Before(end) || ctx.Err() != nil {
					return
				}
				err := t.call(ctx, a.token, fmt.Sprintf("spread-%d", n))
				e := time.Now()
				if err != nil {
					if ctx.Err() != nil {
						return
					}
					failed.Add(1)
					fails.add(fmt.Sprintf("%d replica(s) closed loop", len(targets)), err)
					sleepCtx(ctx, failureBackoff)
					continue
				}
				if !e.Before(from) && !e.After(end) {
					lats[i] = append(lats[i], e.Sub(s))
				}
			}
		})
	}
	wg.Wait()
	all := slices.Concat(lats...)
	return closedResult{calls: len(all), perSec: float64(len(all)) / dur.Seconds(), lat: summarize(all), failed: int(failed.Load())}
}

// crossApprovals is the approval phase with the agent on one replica (wait)
// and the manager on another (events, approve): the time from sending the
// approval on a to the SDK's function starting on b.
func crossApprovals(ctx context.Context, a, b *target, adminToken string, n int) (approvalResult, error) {
	var res approvalResult
	var rb [3]byte
	rand.Read(rb[:])
	suffix := hex.EncodeToString(rb[:])
	email := "approver-" + suffix + "@bench.example"
	password := "bench-password-" + suffix
	var added struct {
		SetupToken string `json:"setup_token"`
	}
	body, _ := json.Marshal(map[string]any{"email": email, "role": "manager", "show_link": true})
	if err := a.do(ctx, "POST", "/v1/users", adminToken, body, http.StatusCreated, &added); err != nil {
		return res, err
	}
	body, _ = json.Marshal(map[string]string{"token": added.SetupToken, "password": password})
	if err := a.do(ctx, "POST", "/v1/auth/setup", "", body, http.StatusOK, nil); err != nil {
		return res, err
	}
	var login struct {
		Token string `json:"token"`
	}
	body, _ = json.Marshal(map[string]string{"email": email, "password": password})
	if err := a.do(ctx, "POST", "/v1/auth/tokens", "", body, http.StatusCreated, &login); err != nil {
		return res, err
	}
	var hired struct {
		Token string `json:"token"`
	}
	body, _ = json.Marshal(map[string]string{"manifest": fmt.Sprintf(approvalManifest, "bench-approvals-"+suffix, email, email)})
	if err := a.do(ctx, "POST", "/v1/agents", adminToken, body, http.StatusCreated, &hired); err != nil {
		return res, err
	}
	sdk, err := agentvault.New(agentvault.Config{Token: hired.Token, BaseURL: b.base + "/v1"})
	if err != nil {
		return res, err
	}
	evCtx, stopEvents := context.WithCancel(ctx)
	defer stopEvents()
	requested, err := watchRequests(evCtx, a.base, login.Token) // requests made on b, seen on a
	if err != nil {
		return res, err
	}
	var toStart, roundTrip, afterReply []time.Duration
	for i := 0; i < n && ctx.Err() == nil; i++ {
		started := make(chan time.Time, 1)
		done := make(chan error, 1)
		go func() {
			_, err := agentvault.Do(ctx, sdk, agentvault.Action{Connector: "crm", Action: "account.delete", Risk: agentvault.RiskHigh,
				Summary: fmt.Sprintf("bench approval %d", i)}, func(ctx context.Context, cred agentvault.Credential) (struct{}, error) {
				started <- time.Now()
				return struct{}{}, nil
			})
			done <- err
		}()
		var call string
		select {
		case call = <-requested:
		case err := <-done:
			return res, fmt.Errorf("approval %d: the SDK call ended before it was pending: %v", i, err)
		case <-time.After(10 * time.Second):
			return res, fmt.Errorf("approval %d: no approval.requested event within 10s", i)
		}
		// The agent's long poll is parked on b by now or very soon; the
		// figure counts from the approval either way.
		sent := time.Now()
		if err := a.do(ctx, "POST", "/v1/approvals/"+call+"/approve", login.Token, []byte(`{"reason":"bench"}`), http.StatusOK, nil); err != nil {
			return res, fmt.Errorf("approval %d: %w", i, err)
		}
		replied := time.Now()
		// The function may have run, and the call completed, before the
		// approve answer was read: done and started can both be ready.
		var err error
		select {
		case err = <-done:
		case <-time.After(10 * time.Second):
			return res, fmt.Errorf("approval %d: the SDK did not resume within 10s", i)
		}
		var start time.Time
		select {
		case start = <-started:
		default:
			return res, fmt.Errorf("approval %d: the SDK call ended without running: %v", i, err)
		}
		if err != nil {
			return res, fmt.Errorf("approval %d: %w", i, err)
		}
		toStart = append(toStart, start.Sub(sent))
		roundTrip = append(roundTrip, replied.Sub(sent))
		d := start.Sub(replied)
		if d < 0 {
			res.negative++
			d = 0
		}
		afterReply = append(afterReply, d)
	}
	res.n = len(toStart)
	res.toStart, res.roundTrip, res.afterReply = summarize(toStart), summarize(roundTrip), summarize(afterReply)
	return res, nil
}

func printReplicaRow(w *os.File, r replicaRow) {
	fmt.Fprintf(w, "%s, %d replica(s): %.0f governed calls/s (p50 %s, p99 %s, %d failed; %s)", r.store, r.replicas,
		r.loop.perSec, fmtMs(r.loop.lat.p50), fmtMs(r.loop.lat.p99), r.loop.failed, r.cpu)
	if r.wake != nil {
		fmt.Fprintf(w, "; approval wake-up p50 %s p99 %s", fmtMs(r.wake.toStart.p50), fmtMs(r.wake.toStart.p99))
	}
	fmt.Fprintln(w)
}

func printReplicaTable(w *os.File, cfg replicasConfig, rows []replicaRow) {
	fmt.Fprintf(w, "governed calls/s, %d agents, closed loop %s (request + complete, each entry durable before the answer)\n", cfg.agents, cfg.duration)
	fmt.Fprintf(w, "| store | replicas | calls/s | call p50 | call p99 | approval wake-up p50 | p99 | approve on / wait on | cores: arx + PostgreSQL / other processes | calls per server core-second |\n")
	fmt.Fprintf(w, "|---|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range rows {
		wake50, wake99, where := "-", "-", "-"
		if r.wake != nil {
			wake50, wake99 = fmtMs(r.wake.toStart.p50), fmtMs(r.wake.toStart.p99)
			where = "same replica"
			if r.cross {
				where = fmt.Sprintf("replica 1 / replica %d", r.replicas)
			}
		}
		cores, perCore := "-", "-"
		if r.cpu.ok {
			cores = fmt.Sprintf("%.2f + %.2f / %.2f", r.cpu.arx, r.cpu.postgres, r.cpu.other)
			if c := r.cpu.arx + r.cpu.postgres; c > 0 {
				perCore = fmt.Sprintf("%.0f", r.loop.perSec/c)
			}
		}
		fmt.Fprintf(w, "| %s | %d | %.0f | %s | %s | %s | %s | %s | %s | %s |\n", r.store, r.replicas, r.loop.perSec,
			fmtMs(r.loop.lat.p50), fmtMs(r.loop.lat.p99), wake50, wake99, where, cores, perCore)
	}
	fmt.Fprintf(w, "cores are averages over the measured window (/proc); the client is not counted as a server; other processes share the machine\n")
	if cfg.pin {
		fmt.Fprintf(w, "each replica was held to a CPU of its own (taskset -c i); PostgreSQL and the client were not\n")
	}
	var one, two float64
	for _, r := range rows {
		if r.store == "PostgreSQL" && r.replicas == 1 {
			one = r.loop.perSec
		}
		if r.store == "PostgreSQL" && r.replicas == 2 {
			two = r.loop.perSec
		}
	}
	if one > 0 {
		met := "met"
		if one < 2000 {
			met = "NOT met"
		}
		fmt.Fprintf(w, "PostgreSQL, one replica: %.0f calls/s   target >= 2,000: %s\n", one, met)
	}
	if one > 0 && two > 0 {
		met := "met"
		if two < 1.5*one {
			met = "NOT met"
		}
		fmt.Fprintf(w, "PostgreSQL, two replicas / one: %.2f   target >= 1.5 (each replica on a core of its own): %s\n", two/one, met)
	}
	if len(rows) > 0 && rows[0].wake != nil {
		fmt.Fprintf(w, "approval wake-up: approve sent -> the waiting SDK's function starts, %d approvals per row\n", rows[0].wake.n)
	}
}

// createDatabase makes a fresh database for one configuration and returns
// its URL.
func createDatabase(ctx context.Context, base string) (string, error) {
	conn, err := pgx.Connect(ctx, base)
	if err != nil {
		return "", fmt.Errorf("connect to -postgres: %v", err)
	}
	defer conn.Close(context.Background())
	var b [4]byte
	rand.Read(b[:])
	name := "arx_bench_" + hex.EncodeToString(b[:])
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		return "", fmt.Errorf("create database (the -postgres role needs CREATEDB): %v", err)
	}
	u, err := url.Parse(base)
	if err != nil {
		return "", err
	}
	u.Path = "/" + name
	return u.String(), nil
}

func dropDatabase(base, dbURL string) error {
	u, err := url.Parse(dbURL)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, base)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, "DROP DATABASE IF EXISTS "+strings.TrimPrefix(u.Path, "/")+" WITH (FORCE)")
	return err
}

// serverCPU is how busy the servers were during a closed loop, in cores:
// every arx serve replica, PostgreSQL (its postmaster and the processes it
// started), and whatever else ran on the machine besides this client.
type serverCPU struct {
	arx, postgres, other float64
	ok                   bool
}

func (c serverCPU) String() string {
	if !c.ok {
		return "cpu not measured"
	}
	return fmt.Sprintf("cores: arx %.2f, PostgreSQL %.2f, other processes %.2f", c.arx, c.postgres, c.other)
}

// postmasterPID is the parent of the backend serving a connection to db,
// when that server runs on this machine; 0 when it cannot be told.
func postmasterPID(ctx context.Context, db string) int {
	conn, err := pgx.Connect(ctx, db)
	if err != nil {
		return 0
	}
	defer conn.Close(context.Background())
	var pid int
	if err := conn.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid); err != nil {
		return 0
	}
	ppid, _, err := procParent(strconv.Itoa(pid))
	if err != nil {
		return 0
	}
	return ppid
}

// procParent reads a process's parent and CPU ticks from /proc/PID/stat.
func procParent(pid string) (ppid int, ticks int64, err error) {
	b, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return 0, 0, err
	}
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("/proc/%s/stat: no command name", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, 0, fmt.Errorf("/proc/%s/stat: %d fields", pid, len(f))
	}
	ppid, err = strconv.Atoi(f[1])
	if err != nil {
		return 0, 0, err
	}
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, 0, fmt.Errorf("/proc/%s/stat: bad utime or stime", pid)
	}
	return ppid, u + st, nil
}

// postgresTicks sums the CPU ticks of the postmaster and its children, by
// pid, so that backends that come and go are counted while they live.
func postgresTicks(postmaster int) map[int]int64 {
	out := map[int]int64{}
	if postmaster == 0 {
		return out
	}
	if _, t, err := procParent(strconv.Itoa(postmaster)); err == nil {
		out[postmaster] = t
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return out
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if ppid, t, err := procParent(e.Name()); err == nil && ppid == postmaster {
			out[pid] = t
		}
	}
	return out
}

// measureServers samples after warmup and again after dur, alongside a
// load phase of the same timing; wait returns the use.
func measureServers(ctx context.Context, arxPIDs []int, postmaster int, warmup, dur time.Duration) (wait func() serverCPU) {
	type sample struct {
		at        time.Time
		arx, self int64
		pg        map[int]int64
		total     int64
		ok        bool
	}
	take := func() sample {
		s := sample{at: time.Now(), ok: true, pg: postgresTicks(postmaster)}
		var err error
		if s.total, err = busyTicks(); err != nil {
			return sample{}
		}
		for _, pid := range arxPIDs {
			t, err := procTicks(strconv.Itoa(pid))
			if err != nil {
				return sample{}
			}
			s.arx += t
		}
		if s.self, err = procTicks("self"); err != nil {
			return sample{}
		}
		return s
	}
	done := make(chan serverCPU, 1)
	go func() {
		if !sleepCtx(ctx, warmup) {
			done <- serverCPU{}
			return
		}
		a := take()
		if !sleepCtx(ctx, dur) {
			done <- serverCPU{}
			return
		}
		b := take()
		sec := b.at.Sub(a.at).Seconds()
		if !a.ok || !b.ok || sec <= 0 {
			done <- serverCPU{}
			return
		}
		cores := func(t int64) float64 { return float64(t) / userHZ / sec }
		var pg int64
		for pid, t := range b.pg {
			pg += t - a.pg[pid] // a backend started in the window counts from zero
		}
		c := serverCPU{arx: cores(b.arx - a.arx), postgres: cores(pg), ok: true}
		c.other = max(0, cores(b.total-a.total)-c.arx-c.postgres-cores(b.self-a.self))
		done <- c
	}()
	return func() serverCPU { return <-done }
}
