package main

// go run ./bench gateway: the connector layer's figures, in one run.
//
//   - Gateway overhead: the same upstream (a bare net/http server in a
//     process of its own) called directly and through the ARX gateway
//     (GET /v1/gateway/upstream/ping with a call's credential: signature,
//     call and agent read from the database, a gateway.request entry made
//     durable before forwarding, the real secret injected), closed loops of
//     -gw-workers callers, and one caller alone for the added latency
//     without queueing. Requests/s, p50 and p99 of each, with the ratios.
//   - Dynamic PostgreSQL credentials: -pg-workers agents each, in a loop,
//     ask for a call on a postgres connector (ARX creates a role with the
//     action's grants and answers with its DSN), log in with the DSN and run
//     one query, and complete the call (ARX drops the role through its
//     outbox). Cycles per second, and the rate counting until the last role
//     is dropped. Against -postgres URL (a user with CREATEROLE), or a
//     throwaway cluster from Debian's packages with fsync on.
//
// Loopback only; every loop is bounded by -duration and the runs by -runs.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/arxsec/arx/internal/connector/postgres/pgtest"
	"github.com/jackc/pgx/v5"
)

const (
	gatewayArg        = "gateway"
	upstreamServerArg = "-internal-gateway-upstream"
	upstreamKeyEnv    = "ARX_BENCH_UPSTREAM_KEY"
	pgPasswordEnv     = "ARX_BENCH_PG_PASSWORD"
)

type gwConfig struct {
	arxPath    string
	workers    int
	pgWorkers  int
	duration   time.Duration
	warmup     time.Duration
	runs       int
	postgres   string
	noPG       bool
	termRounds int
}

func gatewayMain(args []string) int {
	var c gwConfig
	fs := flag.NewFlagSet("bench gateway", flag.ContinueOnError)
	fs.StringVar(&c.arxPath, "arx", "", "arx binary (default: build ./cmd/arx)")
	fs.IntVar(&c.workers, "gw-workers", 16, "concurrent callers in the closed loops")
	fs.IntVar(&c.pgWorkers, "pg-workers", 4, "concurrent agents making dynamic PostgreSQL credentials")
	fs.DurationVar(&c.duration, "duration", 5*time.Second, "measured time of each phase")
	fs.DurationVar(&c.warmup, "warmup", time.Second, "unmeasured load before each phase")
	fs.IntVar(&c.runs, "runs", 3, "runs of the gateway phases; medians are reported")
	fs.StringVar(&c.postgres, "pg", "", "PostgreSQL URL with a CREATEROLE user and its password (default: a throwaway cluster)")
	fs.BoolVar(&c.noPG, "no-pg", false, "skip the PostgreSQL phase")
	fs.IntVar(&c.termRounds, "term-rounds", 20, "rounds of the termination phase (1000 outstanding credentials each)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	c.workers, c.pgWorkers = min(max(c.workers, 1), 256), min(max(c.pgWorkers, 1), 64)
	c.termRounds = min(max(c.termRounds, 1), 200)
	c.duration, c.warmup, c.runs = min(c.duration, maxDuration), min(c.warmup, maxDuration), min(max(c.runs, 1), maxRuns)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := runGateway(ctx, c); err != nil {
		fmt.Fprintf(os.Stderr, "bench gateway: error: %v\n", err)
		return 1
	}
	return 0
}

// upstreamMain is the upstream: GET /ping answers 64 bytes of JSON to the
// connector's key only. It stops at SIGTERM or when stdin closes.
func upstreamMain() int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	want := "Bearer " + os.Getenv(upstreamKeyEnv)
	body := []byte(`{"account":"0017","name":"Nordwind Logistik GmbH","ok":true}` + "\n")
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != want {
			http.Error(w, "no", http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(body)
	})}
	go srv.Serve(ln)
	fmt.Printf("listening %s\n", ln.Addr())
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, os.Interrupt)
	done := make(chan struct{})
	go func() { io.Copy(io.Discard, os.Stdin); close(done) }()
	select {
	case <-sig:
	case <-done:
	}
	srv.Close()
	return 0
}

const gwManifest = `apiVersion: arx.dev/v1
kind: JobDescription
agent:
  name: %s
  owner: bench@example.com
scope:
  connectors:
    upstream:
      actions:
        read: {risk: low}
    warehouse:
      actions:
        query: {risk: low}
budget:
  calls_per_day: 100000000
  max_call_duration: 1h
approval:
  approvers: [boss@example.com]
termination:
  notify: [bench@example.com]
`

func runGateway(ctx context.Context, c gwConfig) error {
	tmp, err := os.MkdirTemp("", "arx-bench-gw-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	bin := c.arxPath
	if bin == "" {
		bin = filepath.Join(tmp, "arx")
		fmt.Fprintln(os.Stderr, "building arx from ./cmd/arx ...")
		if err := buildArx(ctx, bin); err != nil {
			return err
		}
	}
	key := randHex(24)
	os.Setenv(upstreamKeyEnv, key) // inherited by the upstream and arx serve: the connector's secret
	up, err := startUpstream(ctx)
	if err != nil {
		return fmt.Errorf("upstream: %w", err)
	}
	defer up.stop()

	conf := fmt.Sprintf(`connectors:
  upstream:
    kind: http
    upstream: %s
    secret: env:%s
    actions:
      read: {allow: ["GET /ping"]}
`, up.url, upstreamKeyEnv)
	var pgAdmin string // with the password, for the bench's own checks
	if !c.noPG {
		var stopPG func()
		pgAdmin, stopPG, err = benchPostgres(ctx, c)
		defer stopPG()
		if err != nil {
			return fmt.Errorf("postgres: %w", err)
		}
		u, _ := url.Parse(pgAdmin)
		pw, _ := u.User.Password()
		os.Setenv(pgPasswordEnv, pw)
		u.User = url.User(u.User.Username())
		conf += fmt.Sprintf(`  warehouse:
    kind: postgres
    upstream: %s
    secret: env:%s
    actions:
      query: {grants: ["SELECT ON bench_orders"]}
`, u, pgPasswordEnv)
	}
	confFile := filepath.Join(tmp, "connectors.yaml")
	if err := os.WriteFile(confFile, []byte(conf), 0o600); err != nil {
		return err
	}
	dataDir := filepath.Join(tmp, "data")
	arx, err := startArx(ctx, bin, dataDir, "--connectors", confFile)
	if err != nil {
		return err
	}
	defer arx.stop()
	admin, err := readAdminToken(dataDir)
	if err != nil {
		return err
	}
	fmt.Printf("arx serve %s, upstream %s; %d CPUs shared by the client, arx serve, the upstream and PostgreSQL\n\n", arx.url, up.url, nproc())

	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{Proxy: nil, MaxIdleConns: 1024, MaxIdleConnsPerHost: 1024,
		IdleConnTimeout: 90 * time.Second, DisableCompression: true}}
	n := max(c.workers, c.pgWorkers)
	agents := make([]gwAgent, n)
	prefix := "gw-" + randHex(3)
	for i := range agents {
		a := &agents[i]
		var out struct {
			Agent struct {
				ID string `json:"id"`
			} `json:"agent"`
			Token string `json:"token"`
		}
		if err := postJSON(ctx, client, arx.url+"/v1/agents", admin, map[string]string{"manifest": fmt.Sprintf(gwManifest, fmt.Sprintf("%s-%03d", prefix, i))}, 201, &out); err != nil {
			return fmt.Errorf("hire: %w", err)
		}
		a.token = out.Token
		var call struct {
			Credential struct {
				Token string `json:"token"`
			} `json:"credential"`
		}
		if err := postJSON(ctx, client, arx.url+"/v1/calls", a.token, map[string]string{"connector": "upstream", "action": "read", "idempotency_key": randHex(8)}, 201, &call); err != nil {
			return fmt.Errorf("call: %w", err)
		}
		a.cred = call.Credential.Token
	}

	direct := func(a *gwAgent) *http.Request {
		r, _ := http.NewRequest("GET", up.url+"/ping", nil)
		r.Header.Set("Authorization", "Bearer "+key) // what the gateway sends upstream
		return r
	}
	through := func(a *gwAgent) *http.Request {
		r, _ := http.NewRequest("GET", arx.url+"/v1/gateway/upstream/ping", nil)
		r.Header.Set("Authorization", "Bearer "+a.cred)
		return r
	}
	type runFig struct{ d, g, d1, g1 loopResult }
	var runs []runFig
	for i := range c.runs {
		var f runFig
		for _, p := range []struct {
			res  *loopResult
			mk   func(*gwAgent) *http.Request
			nwrk int
		}{{&f.d, direct, c.workers}, {&f.g, through, c.workers}, {&f.d1, direct, 1}, {&f.g1, through, 1}} {
			*p.res = closedHTTP(ctx, client, agents[:p.nwrk], p.mk, c.warmup, c.duration)
			if p.res.failed > 0 {
				return fmt.Errorf("%d requests failed (first: %v)", p.res.failed, p.res.firstErr)
			}
		}
		runs = append(runs, f)
		fmt.Printf("run %d/%d  direct %8.0f req/s p50 %-8s p99 %-8s | gateway %8.0f req/s p50 %-8s p99 %-8s | 1 caller: direct p50 %s, gateway p50 %s\n",
			i+1, c.runs, f.d.perSec, f.d.lat.p50, f.d.lat.p99, f.g.perSec, f.g.lat.p50, f.g.lat.p99, f.d1.lat.p50, f.g1.lat.p50)
	}
	med := func(get func(runFig) float64) float64 {
		v := make([]float64, len(runs))
		for i, r := range runs {
			v[i] = get(r)
		}
		slices.Sort(v)
		return v[len(v)/2]
	}
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	dRate, gRate := med(func(r runFig) float64 { return r.d.perSec }), med(func(r runFig) float64 { return r.g.perSec })
	dP50, gP50 := med(func(r runFig) float64 { return ms(r.d.lat.p50) }), med(func(r runFig) float64 { return ms(r.g.lat.p50) })
	dP99, gP99 := med(func(r runFig) float64 { return ms(r.d.lat.p99) }), med(func(r runFig) float64 { return ms(r.g.lat.p99) })
	d1, g1 := med(func(r runFig) float64 { return ms(r.d1.lat.p50) }), med(func(r runFig) float64 { return ms(r.g1.lat.p50) })
	d199, g199 := med(func(r runFig) float64 { return ms(r.d1.lat.p99) }), med(func(r runFig) float64 { return ms(r.g1.lat.p99) })
	fmt.Printf("\nsummary: medians of %d runs of %s (after %s warm-up)\n", c.runs, c.duration, c.warmup)
	fmt.Printf("direct,  %3d callers        %9.0f req/s   p50 %.3f ms  p99 %.3f ms\n", c.workers, dRate, dP50, dP99)
	fmt.Printf("gateway, %3d callers        %9.0f req/s   p50 %.3f ms  p99 %.3f ms\n", c.workers, gRate, gP50, gP99)
	fmt.Printf("gateway/direct throughput   %.2f   (target >= 0.50)\n", gRate/dRate)
	fmt.Printf("added latency, %3d callers  p50 %+.3f ms  p99 %+.3f ms\n", c.workers, gP50-dP50, gP99-dP99)
	fmt.Printf("added latency, 1 caller     p50 %+.3f ms  p99 %+.3f ms  (direct p50 %.3f ms, gateway p50 %.3f ms; target < 0.300 ms at p50)\n",
		g1-d1, g199-d199, d1, g1)
	fmt.Println("each gateway request: credential check, call and agent read in the transaction that appends its gateway.request entry,")
	fmt.Println("  durable (a frame of the log, fdatasync, group commit) before the request is forwarded; its gateway.response entry after.")

	if err := terminatePhase(ctx, client, arx.url, admin, c.termRounds, 1000); err != nil {
		arx.reportLog(os.Stdout)
		return err
	}
	if !c.noPG {
		if err := pgPhase(ctx, c, client, arx.url, agents[:c.pgWorkers], pgAdmin); err != nil {
			arx.reportLog(os.Stdout)
			return err
		}
	}
	if arx.reportLog(os.Stdout) {
		return errors.New("arx serve logged warnings or errors")
	}
	return nil
}

type gwAgent struct{ token, cred string }

type loopResult struct {
	n        int
	perSec   float64
	lat      latency
	failed   int
	firstErr error
}

// closedHTTP runs one caller per agent, each sending requests back to back.
func closedHTTP(ctx context.Context, client *http.Client, agents []gwAgent, mk func(*gwAgent) *http.Request, warmup, dur time.Duration) loopResult {
	start := time.Now().Add(warmup)
	end := start.Add(dur)
	var mu sync.Mutex
	var res loopResult
	var lats []time.Duration
	var wg sync.WaitGroup
	for i := range agents {
		wg.Go(func() {
			var mine []time.Duration
			for ctx.Err() == nil {
				t0 := time.Now()
				if t0.After(end) {
					break
				}
				resp, err := client.Do(mk(&agents[i]).WithContext(ctx))
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 {
						err = fmt.Errorf("HTTP %d", resp.StatusCode)
					}
				}
				t1 := time.Now()
				if err != nil {
					mu.Lock()
					if res.failed == 0 {
						res.firstErr = err
					}
					res.failed++
					mu.Unlock()
					continue
				}
				if t0.After(start) && !t1.After(end) {
					mine = append(mine, t1.Sub(t0))
				}
			}
			mu.Lock()
			lats = append(lats, mine...)
			mu.Unlock()
		})
	}
	wg.Wait()
	res.n = len(lats)
	res.perSec = float64(res.n) / dur.Seconds()
	res.lat = summarize(lats)
	return res
}

// benchPostgres returns an administrator URL (with password) of a database
// with the table the bench queries.
func benchPostgres(ctx context.Context, c gwConfig) (admin string, stop func(), err error) {
	admin, stop = c.postgres, func() {}
	if admin == "" {
		cl, err := pgtest.Start(pgtest.Options{Durable: true})
		if err != nil {
			return "", stop, err
		}
		stop = cl.Stop
		db, err := cl.NewDB(ctx)
		if err != nil {
			return "", stop, err
		}
		admin = db.AdminConnURL()
	}
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		return "", stop, err
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS bench_orders (id int PRIMARY KEY, amount int);
		INSERT INTO bench_orders VALUES (1, 100) ON CONFLICT DO NOTHING`)
	return admin, stop, err
}

func pgPhase(ctx context.Context, c gwConfig, client *http.Client, arxURL string, agents []gwAgent, admin string) error {
	fmt.Printf("\ndynamic PostgreSQL credentials, %d agents, %s: POST /v1/calls (role created, DSN answered), log in with the DSN, SELECT, complete (role dropped by the outbox)\n",
		len(agents), c.duration)
	end := time.Now().Add(c.duration)
	var mu sync.Mutex
	var cycles int
	var lats []time.Duration
	var steps [3][]time.Duration // call (role made), use (log in, SELECT), complete
	var firstErr error
	var wg sync.WaitGroup
	start := time.Now()
	for i := range agents {
		wg.Go(func() {
			a := agents[i]
			for ctx.Err() == nil && time.Now().Before(end) {
				t0 := time.Now()
				st, err := pgCycle(ctx, client, arxURL, a.token)
				mu.Lock()
				if err != nil {
					if firstErr == nil {
						firstErr = err
					}
				} else {
					cycles++
					lats = append(lats, time.Since(t0))
					for i := range steps {
						steps[i] = append(steps[i], st[i])
					}
				}
				mu.Unlock()
				if err != nil {
					return
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	if firstErr != nil {
		return fmt.Errorf("postgres cycle: %w", firstErr)
	}
	// Until the last role is dropped.
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	deadline := time.Now().Add(2 * time.Minute)
	var left int
	for {
		if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_roles WHERE rolname ~ '^arx_[0-9a-f]{32}$'`).Scan(&left); err != nil {
			return err
		}
		if left == 0 || time.Now().After(deadline) || ctx.Err() != nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	all := time.Since(start)
	l := summarize(lats)
	fmt.Printf("  %d cycles in %.2fs: %.0f/s (p50 %s, p99 %s per cycle)\n", cycles, elapsed.Seconds(), float64(cycles)/elapsed.Seconds(), l.p50, l.p99)
	fmt.Printf("  per cycle, p50: call (role made) %s, log in and SELECT %s, complete %s\n",
		summarize(steps[0]).p50, summarize(steps[1]).p50, summarize(steps[2]).p50)
	fmt.Printf("  every role dropped %.0f ms after the last cycle (%d left): %.0f/s created, used and dropped\n",
		float64(all-elapsed)/float64(time.Millisecond), left, float64(cycles)/all.Seconds())
	if left > 0 {
		return fmt.Errorf("%d roles were not dropped within 2 minutes", left)
	}
	return nil
}

// pgCycle is one cycle; it returns how long each of its three steps took.
func pgCycle(ctx context.Context, client *http.Client, arxURL, token string) (steps [3]time.Duration, err error) {
	var call struct {
		ID         string `json:"id"`
		Credential struct {
			DSN string `json:"dsn"`
		} `json:"credential"`
	}
	t0 := time.Now()
	if err := postJSON(ctx, client, arxURL+"/v1/calls", token, map[string]string{"connector": "warehouse", "action": "query", "idempotency_key": randHex(8)}, 201, &call); err != nil {
		return steps, err
	}
	t1 := time.Now()
	conn, err := pgx.Connect(ctx, call.Credential.DSN)
	if err != nil {
		return steps, fmt.Errorf("log in with the DSN: %w", err)
	}
	var n int
	err = conn.QueryRow(ctx, `SELECT count(*) FROM bench_orders`).Scan(&n)
	conn.Close(ctx)
	if err != nil {
		return steps, err
	}
	t2 := time.Now()
	err = postJSON(ctx, client, arxURL+"/v1/calls/"+call.ID+"/complete", token, map[string]string{"outcome": "success"}, 200, nil)
	t3 := time.Now()
	return [3]time.Duration{t1.Sub(t0), t2.Sub(t1), t3.Sub(t2)}, err
}

func postJSON(ctx context.Context, client *http.Client, u, token string, in any, want int, out any) error {
	b, _ := json.Marshal(in)
	req, err := http.NewRequestWithContext(ctx, "POST", u, bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != want {
		return fmt.Errorf("POST %s: HTTP %d: %s", strings.TrimPrefix(u, "http://"), resp.StatusCode, truncate(string(body), 200))
	}
	if out != nil {
		return json.Unmarshal(body, out)
	}
	return nil
}

// startUpstream starts this binary again as the upstream, as startEcho
// starts the echo server.
func startUpstream(ctx context.Context) (*echoProc, error) {
	return startSelf(ctx, upstreamServerArg, "the upstream")
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func nproc() int {
	n, _ := os.ReadFile("/proc/cpuinfo")
	if c := strings.Count(string(n), "processor\t:"); c > 0 {
		return c
	}
	return 0
}
