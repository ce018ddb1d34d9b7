package replicas

// Network faults between replicas and PostgreSQL (issue 9). Each replica
// reaches the database through a loopback proxy of its own (internal/arxtest/tcpfault)
// that can pass, reset every connection (a firewall rejecting) or stall
// them (a black hole). The tests drive the replicas over HTTP as in
// replicas_test.go and print their figures as
//
//	CAMPAIGN partition scenario=... key=value ...
//
// for the campaign script. The bounds they hold the replicas to are the
// store's documented timeouts (internal/store/postgres: Config).

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/arxsec/arx/arxerr"
	"github.com/arxsec/arx/internal/arxtest/tcpfault"
	"github.com/arxsec/arx/internal/store/postgres"
	"github.com/arxsec/arx/record"
	"github.com/jackc/pgx/v5"
)

// Bounds, from the store's defaults (arx serve does not change them; see
// internal/store/postgres: Defaults), each with two seconds of slack for a
// loaded machine.
const (
	// refuseBound: a request that reaches a replica cut off from the
	// database is refused within one bounded read (ReadTimeout 5s), or,
	// when it goes to an idle sequencer first (the gateway), within the
	// sequencer's bounded wait for a connection (5s).
	refuseBound = postgres.DefaultReadTimeout + 2*time.Second
	// inFlightBound: a request already in a batch when the path stalls is
	// answered within BatchTimeout, or that and one more connection wait
	// when it was queued behind that batch.
	inFlightBound = postgres.DefaultBatchTimeout + 5*time.Second + 2*time.Second
	// resumeBound: the others append again once PostgreSQL has ended the
	// stalled lock holder's session (IdleInTransactionTimeout 5s).
	resumeBound = postgres.DefaultIdleInTransactionTimeout + 5*time.Second
	// recoverBound: a healed replica serves again by itself: its pool dials
	// afresh (ConnectTimeout 5s) and its listener reconnects (backoff at
	// most 5s).
	recoverBound = 10 * time.Second
)

// proxied starts n replicas, each reaching PostgreSQL through a proxy of
// its own.
func proxied(t *testing.T, n int) (*deployment, []*tcpfault.Proxy) {
	t.Helper()
	var px []*tcpfault.Proxy
	d := startVia(t, n, func(i int, db string) string {
		u, err := url.Parse(db)
		if err != nil {
			t.Fatal(err)
		}
		p := tcpfault.New(t, u.Host)
		px = append(px, p)
		return p.Via(t, db)
	})
	return d, px
}

type agentKey struct{ id, token string }

// attempt is one governed call as a client saw it.
type attempt struct {
	on         *replica
	sent, done time.Time
	status     int    // 0: no answer
	code       string // a refusal's error code
	call       string // set when the answer carried a credential
	completed  bool   // its completion was acknowledged
}

func (a attempt) latency() time.Duration { return a.done.Sub(a.sent) }

func errCode(body []byte) string {
	var e struct {
		Error struct {
			Code string `json:"code"`
		} `json:"error"`
	}
	json.Unmarshal(body, &e)
	return e.Error.Code
}

// govern makes one low-risk call on a replica and completes it when it got
// a credential.
func govern(on *replica, a agentKey, key string) attempt {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	at := attempt{on: on, sent: time.Now()}
	r, err := do(ctx, "POST", on.url+"/v1/calls", a.token, map[string]string{"connector": "crm", "action": "account.read",
		"risk": "low", "idempotency_key": key})
	at.done = time.Now()
	if err != nil {
		return at
	}
	at.status, at.code = r.status, errCode(r.body)
	var c callView
	if r.status == http.StatusCreated && json.Unmarshal(r.body, &c) == nil && c.Credential != nil {
		at.call = c.ID
		r, err := do(ctx, "POST", on.url+"/v1/calls/"+c.ID+"/complete", a.token, map[string]any{"outcome": "success", "duration_ms": 1})
		at.completed = err == nil && r.status == http.StatusOK
	}
	return at
}

// load runs workers making governed calls, each on the replica pick
// names, until halted.
type load struct {
	mu       sync.Mutex
	attempts []attempt
	stop     chan struct{}
	wg       sync.WaitGroup
}

var keySeq atomic.Int64

func startLoad(agents []agentKey, workers int, pick func(w, i int) *replica) *load {
	l := &load{stop: make(chan struct{})}
	for w := range workers {
		l.wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-l.stop:
					return
				default:
				}
				at := govern(pick(w, i), agents[w%len(agents)], fmt.Sprint("load-", keySeq.Add(1)))
				l.mu.Lock()
				l.attempts = append(l.attempts, at)
				l.mu.Unlock()
			}
		})
	}
	return l
}

func (l *load) snapshot() []attempt {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.attempts)
}

func (l *load) halt() []attempt {
	close(l.stop)
	l.wg.Wait()
	return l.snapshot()
}

// firstAttempt waits until an attempt satisfies ok and returns it.
func (l *load) firstAttempt(ok func(attempt) bool, within time.Duration) (attempt, bool) {
	deadline := time.Now().Add(within)
	for {
		for _, a := range l.snapshot() {
			if ok(a) {
				return a, true
			}
		}
		if time.Now().After(deadline) {
			return attempt{}, false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// recoverOn makes calls on a replica until one gets a credential and
// returns how long that took.
func recoverOn(t *testing.T, on *replica, a agentKey, within time.Duration) (time.Duration, attempt) {
	t.Helper()
	start := time.Now()
	for i := 0; ; i++ {
		at := govern(on, a, fmt.Sprint("recover-", keySeq.Add(1)))
		if at.call != "" {
			return time.Since(start), at
		}
		if time.Since(start) > within {
			t.Fatalf("replica %s did not serve again within %v of the heal (last: HTTP %d %s)", on.name, within, at.status, at.code)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitReady waits for a replica's /readyz (database and wake-ups).
func waitReady(t *testing.T, on *replica, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		r, err := do(ctx, "GET", on.url+"/readyz", "", nil)
		cancel()
		if err == nil && r.status == http.StatusOK {
			return time.Since(start)
		}
		if time.Since(start) > within {
			t.Fatalf("replica %s not ready within %v: %v %v", on.name, within, err, r)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestPartitionReplica: agents make governed calls through all three
// replicas while B is cut off from PostgreSQL, first by resets, then by a
// stall. B refuses with 503 record.unavailable within the bound and
// issues no credential; A and C go on serving; when the path heals, B
// serves again by itself and its long polls wake on approvals decided
// elsewhere. Every credential any replica issued is in the record.
func TestPartitionReplica(t *testing.T) {
	d, px := proxied(t, 3)
	A, B := d.replicas[0], d.replicas[1]
	var agents []agentKey
	for i := range 3 {
		id, tok := d.hire(t, d.replicas[i], fmt.Sprint("partition-", i))
		agents = append(agents, agentKey{id, tok})
	}
	boss := d.person(t, "boss@example.com")
	var all []attempt
	for _, mode := range []tcpfault.Mode{tcpfault.Reset, tcpfault.Stall} {
		t.Run(mode.String(), func(t *testing.T) {
			defer px[1].Set(tcpfault.Pass)
			l := startLoad(agents, 6, func(w, i int) *replica { return d.replicas[(w+i)%3] })
			time.Sleep(500 * time.Millisecond)
			cut := time.Now()
			px[1].Set(mode)
			// Hold the partition until B has refused a request sent after
			// the cut, and A and C have acknowledged five calls sent after
			// it. (Stalled mid-batch, B holds the log lock, and every
			// replica's appends wait until PostgreSQL ends its session.)
			sentAfter := func(a attempt) bool { return a.on == B && a.sent.After(cut) && !a.done.IsZero() }
			_, ok := l.firstAttempt(sentAfter, refuseBound+5*time.Second)
			if !ok {
				l.halt()
				t.Fatalf("B answered no request sent after the %s within %v", mode, refuseBound+5*time.Second)
			}
			var healthyFirst time.Duration
			for deadline := cut.Add(resumeBound + 5*time.Second); ; time.Sleep(20 * time.Millisecond) {
				n := 0
				for _, a := range l.snapshot() {
					if a.on != B && a.sent.After(cut) && a.call != "" {
						if n++; n == 1 || a.done.Sub(cut) < healthyFirst {
							healthyFirst = a.done.Sub(cut)
						}
					}
				}
				if n >= 5 {
					break
				}
				if time.Now().After(deadline) {
					l.halt()
					t.Fatalf("A and C acknowledged %d calls in %v of B's %s", n, resumeBound+5*time.Second, mode)
				}
			}
			heal := time.Now()
			px[1].Set(tcpfault.Pass)
			recovered, _ := recoverOn(t, B, agents[1], recoverBound)
			time.Sleep(300 * time.Millisecond)
			attempts := l.halt()
			all = append(all, attempts...)

			var refused, healthy, internal int
			var worst time.Duration
			firstRefusal := time.Duration(-1) // the cut to B's first 503, whenever its request was sent
			for _, a := range attempts {
				if a.on == B && a.status == http.StatusServiceUnavailable && a.done.After(cut) && (firstRefusal < 0 || a.done.Sub(cut) < firstRefusal) {
					firstRefusal = a.done.Sub(cut)
				}
				if a.status == http.StatusInternalServerError {
					internal++
				}
				if a.on == B && a.latency() > inFlightBound {
					t.Errorf("B took %v to answer a call sent %v after the %s (bound %v)", a.latency(), a.sent.Sub(cut), mode, inFlightBound)
				}
				switch {
				case a.on == B && a.sent.After(cut) && a.done.Before(heal):
					refused++
					worst = max(worst, a.latency())
					if a.call != "" {
						t.Errorf("B issued a credential (call %s) while cut off from the database", a.call)
					}
					if a.status != http.StatusServiceUnavailable || a.code != string(arxerr.RecordUnavailable) {
						t.Errorf("B answered a call during the %s with HTTP %d %q, want 503 record.unavailable", mode, a.status, a.code)
					}
					if a.latency() > refuseBound {
						t.Errorf("B took %v to refuse a call during the %s (bound %v)", a.latency(), mode, refuseBound)
					}
				case a.on != B && a.sent.After(cut) && a.done.Before(heal) && a.call != "":
					healthy++
				}
			}
			if internal > 0 {
				t.Errorf("%d answers were 500 internal: a lost database must be a stable 503", internal)
			}
			ready := waitReady(t, B, recoverBound)
			wake := wakeAcross(t, B, A, agents[1], boss)
			t.Logf("CAMPAIGN partition scenario=replica mode=%s first_refusal_s=%.3f refuse_max_s=%.3f refused=%d healthy_first_s=%.3f healthy_acked=%d recover_s=%.3f ready_s=%.3f wake_s=%.3f bound_s=%.0f",
				mode, firstRefusal.Seconds(), worst.Seconds(), refused, healthyFirst.Seconds(), healthy, recovered.Seconds(), ready.Seconds(),
				max(wake, 0).Seconds(), refuseBound.Seconds())
		})
	}
	checkRecord(t, d, A, all)
}

// TestPartitionTerminate: while B is cut off from PostgreSQL, the agent is
// terminated on A. Neither during the partition nor after it heals does B
// honour anything of that agent's: no gateway request reaches the
// upstream, no new call gets a credential, no credential introspects as
// active, the pending approval cannot be granted.
func TestPartitionTerminate(t *testing.T) {
	var hits atomic.Int64
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.Write([]byte(`{"account":"42"}`))
	}))
	defer upstream.Close()
	conf := filepath.Join(t.TempDir(), "connectors.yaml")
	os.WriteFile(conf, []byte(`connectors:
  crm:
    kind: http
    upstream: `+upstream.URL+`
    secret: env:ARX_TEST_CRM_KEY
    auth: bearer
    timeout: 10s
    actions:
      account.read:
        allow: ["GET /accounts/*"]
      account.delete:
        allow: ["DELETE /accounts/*"]
`), 0o600)
	t.Setenv("ARX_CONNECTORS", conf)
	t.Setenv("ARX_TEST_CRM_KEY", "upstream-secret")

	d, px := proxied(t, 3)
	A, B, C := d.replicas[0], d.replicas[1], d.replicas[2]
	boss := d.person(t, "boss@example.com")
	for _, mode := range []tcpfault.Mode{tcpfault.Reset, tcpfault.Stall} {
		t.Run(mode.String(), func(t *testing.T) {
			defer px[1].Set(tcpfault.Pass)
			id, token := d.hire(t, C, "terminated-"+mode.String())
			cred := func(on *replica, key string) string {
				r, err := do(t.Context(), "POST", on.url+"/v1/calls", token, map[string]string{"connector": "crm", "action": "account.read",
					"risk": "low", "idempotency_key": key})
				var c callView
				if err := json.Unmarshal(must(t, r, err, http.StatusCreated, "call on "+on.name), &c); err != nil || c.Credential == nil {
					t.Fatalf("call on %s: %s", on.name, r.body)
				}
				return c.Credential.Token
			}
			creds := []string{cred(B, "on-b"), cred(A, "on-a")}
			r, err := do(t.Context(), "POST", C.url+"/v1/calls", token, map[string]string{"connector": "crm", "action": "account.delete",
				"risk": "high", "idempotency_key": "pending"})
			var pending callView
			if err := json.Unmarshal(must(t, r, err, http.StatusAccepted, "high-risk call"), &pending); err != nil {
				t.Fatal(err)
			}
			gateway := func(ctx context.Context, on *replica, cred string) (*response, error) {
				return do(ctx, "GET", on.url+"/v1/gateway/crm/accounts/42", cred, nil)
			}
			r, err = gateway(t.Context(), B, creds[0])
			must(t, r, err, http.StatusOK, "gateway on B before the partition")

			// Everything of the agent's B might honour, each answer
			// checked: nothing honoured, and how long B took.
			// reads: the probes that read the database first; gateway:
			// those that go to the sequencer first.
			probe := func(when string) (readsMax, gatewayMax time.Duration) {
				type check struct {
					what string
					run  func(ctx context.Context) (honoured bool, status int, code string)
				}
				checks := []check{
					{"new call", func(ctx context.Context) (bool, int, string) {
						at := govern(B, agentKey{id, token}, fmt.Sprint("probe-", keySeq.Add(1)))
						return at.call != "", at.status, at.code
					}},
					{"approval", func(ctx context.Context) (bool, int, string) {
						r, err := do(ctx, "POST", B.url+"/v1/approvals/"+pending.ID+"/approve", boss, map[string]string{"reason": "late"})
						if err != nil {
							return false, 0, err.Error()
						}
						return r.status < 300, r.status, errCode(r.body)
					}},
				}
				for i, c := range creds {
					checks = append(checks, check{fmt.Sprint("gateway with credential ", i), func(ctx context.Context) (bool, int, string) {
						r, err := gateway(ctx, B, c)
						if err != nil {
							return false, 0, err.Error()
						}
						return r.status < 300, r.status, errCode(r.body)
					}}, check{fmt.Sprint("introspection of credential ", i), func(ctx context.Context) (bool, int, string) {
						r, err := do(ctx, "POST", B.url+"/v1/credentials/introspect", "", map[string]string{"credential": c})
						if err != nil {
							return false, 0, err.Error()
						}
						var in struct {
							Active bool   `json:"active"`
							Code   string `json:"code"`
						}
						json.Unmarshal(r.body, &in)
						return in.Active, r.status, in.Code
					}})
				}
				var mu sync.Mutex
				var wg sync.WaitGroup
				// A probe past every bound is a failure already: have B print
				// its goroutines (SIGQUIT; they are in its log, shown below)
				// to say where it waits, instead of waiting out the client.
				stuck := time.AfterFunc(inFlightBound+5*time.Second, func() {
					t.Errorf("%s: a probe of B is still unanswered after %v; B's goroutines follow in its log", when, inFlightBound+5*time.Second)
					B.cmd.Process.Signal(syscall.SIGQUIT)
				})
				defer stuck.Stop()
				for _, c := range checks {
					wg.Go(func() {
						ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
						defer cancel()
						start := time.Now()
						honoured, status, code := c.run(ctx)
						took := time.Since(start)
						mu.Lock()
						defer mu.Unlock()
						if strings.HasPrefix(c.what, "gateway") {
							gatewayMax = max(gatewayMax, took)
						} else {
							readsMax = max(readsMax, took)
						}
						if honoured {
							t.Errorf("%s: B honoured the terminated agent's %s (HTTP %d)", when, c.what, status)
						}
						if status == http.StatusInternalServerError {
							t.Errorf("%s: %s on B: 500 %s, want a stable code", when, c.what, code)
						}
						t.Logf("%s: %s on B: HTTP %d %s in %v", when, c.what, status, code, took.Round(time.Millisecond))
					})
				}
				wg.Wait()
				return readsMax, gatewayMax
			}

			before := hits.Load()
			px[1].Set(mode)
			r, err = do(t.Context(), "POST", A.url+"/v1/agents/"+id+"/terminate", boss, map[string]string{"reason": "end of contract"})
			must(t, r, err, http.StatusOK, "terminate on A")
			duringReads, duringGateway := probe("during the " + mode.String())
			if duringReads > refuseBound {
				t.Errorf("B took %v to refuse a request that reads first during the %s (bound %v)", duringReads, mode, refuseBound)
			}
			if duringGateway > inFlightBound {
				t.Errorf("B took %v to refuse a gateway request during the %s (bound %v)", duringGateway, mode, inFlightBound)
			}
			heal := time.Now()
			px[1].Set(tcpfault.Pass)
			afterReads, afterGateway := probe("after the heal")
			// Once B reads the database again, its answers are the
			// termination's, not unavailability.
			var settled time.Duration
			for {
				r, err := gateway(t.Context(), B, creds[0])
				if err == nil && r.status != http.StatusServiceUnavailable {
					if r.status < 400 {
						t.Errorf("gateway on B after the heal: HTTP %d", r.status)
					}
					settled = time.Since(heal)
					break
				}
				if time.Since(heal) > recoverBound {
					t.Fatalf("B still unavailable %v after the heal", recoverBound)
				}
				time.Sleep(50 * time.Millisecond)
			}
			if n := hits.Load() - before; n != 0 {
				t.Errorf("%d gateway requests reached the upstream after the termination", n)
			}
			t.Logf("CAMPAIGN partition scenario=terminate mode=%s during_reads_max_s=%.3f during_gateway_max_s=%.3f after_heal_max_s=%.3f settled_s=%.3f upstream_after=%d bound_reads_s=%.0f bound_gateway_s=%.0f",
				mode, duringReads.Seconds(), duringGateway.Seconds(), max(afterReads, afterGateway).Seconds(), settled.Seconds(), hits.Load()-before,
				refuseBound.Seconds(), inFlightBound.Seconds())
		})
	}
}

// lockHolder names the replica whose session holds the log lock now, with
// its backend's pid ("" when none does).
func lockHolder(t *testing.T, conn *pgx.Conn) (string, int32) {
	t.Helper()
	var name string
	var pid int32
	err := conn.QueryRow(t.Context(), `SELECT a.application_name, a.pid FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
		WHERE l.locktype = 'advisory' AND l.granted AND l.classid = 0 AND l.objid = $1
		AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())`, uint32(postgres.LogLockKey)).Scan(&name, &pid)
	if err != nil && err != pgx.ErrNoRows {
		t.Fatal(err)
	}
	return strings.TrimPrefix(name, "arx-"), pid
}

// TestPartitionStallSequencer: under load on all three replicas, the path
// of the replica holding the log lock is stalled mid-transaction. The
// others append again once PostgreSQL ends the stalled session
// (idle_in_transaction_session_timeout); no acknowledged call is lost;
// after the heal the stalled replica serves again, and the whole record
// verifies: contiguous indexes, every agent's chain intact.
func TestPartitionStallSequencer(t *testing.T) {
	d, px := proxied(t, 3)
	var agents []agentKey
	for i := range 3 {
		id, tok := d.hire(t, d.replicas[i], fmt.Sprint("sequencer-", i))
		agents = append(agents, agentKey{id, tok})
	}
	conn, err := pgx.Connect(t.Context(), d.db)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())

	l := startLoad(agents, 9, func(w, i int) *replica { return d.replicas[(w+i)%3] })
	defer func() {
		for _, p := range px {
			p.Set(tcpfault.Pass)
		}
	}()
	time.Sleep(time.Second)

	// Catch a replica holding the log lock mid-transaction: the test takes
	// the entries table for itself, so the batch that wins the log lock
	// next waits for the table while holding the lock (the others wait for
	// the lock); its replica's path is then stalled both ways and the
	// table let go. The batch's statements end, its answers never reach
	// the replica, and its transaction stays open, holding the lock. (A
	// batch holds the lock for a round trip or two, too short to stall its
	// holder by polling pg_locks.)
	var victim *replica
	var vp *tcpfault.Proxy
	var stalled, confirmed time.Time
	var pid int32
	for tries := 1; victim == nil; tries++ {
		if tries > 10 {
			l.halt()
			t.Fatal("never caught a replica holding the log lock in 10 tries")
		}
		tx, err := conn.Begin(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(t.Context(), "SET LOCAL lock_timeout = '5s'; LOCK TABLE entries IN ACCESS EXCLUSIVE MODE"); err != nil {
			tx.Rollback(context.Background())
			t.Fatalf("locking the entries table: %v", err)
		}
		var name string
		for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			if name, pid = lockHolder(t, conn); name != "" {
				break
			}
		}
		for i, r := range d.replicas {
			if name != "" && r.name == name {
				px[i].Set(tcpfault.Stall)
				victim, vp = r, px[i]
			}
		}
		stalled = time.Now()
		confirmed = stalled
		if err := tx.Rollback(t.Context()); err != nil {
			t.Fatal(err)
		}
		if victim != nil {
			t.Logf("stalled replica %s mid-transaction (holding the log lock) after %d tries", victim.name, tries)
		}
	}

	// The lock is freed when PostgreSQL ends the stalled session.
	var released time.Duration
	for {
		if _, p := lockHolder(t, conn); p != pid {
			released = time.Since(stalled)
			break
		}
		if time.Since(stalled) > resumeBound {
			l.halt()
			t.Fatalf("the stalled replica's session held the log lock for over %v", resumeBound)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The others append again.
	other := func(a attempt) bool { return a.on != victim && a.call != "" && a.done.After(confirmed) }
	first, ok := l.firstAttempt(other, resumeBound)
	if !ok {
		l.halt()
		t.Fatalf("no call acknowledged on the other replicas within %v of the stall", resumeBound)
	}
	resumed := first.done.Sub(stalled)
	var after int
	for deadline := time.Now().Add(15 * time.Second); after < 20 && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		after = 0
		for _, a := range l.snapshot() {
			if other(a) {
				after++
			}
		}
	}
	if after < 20 {
		t.Errorf("only %d calls acknowledged on the other replicas after the stall", after)
	}
	heal := time.Now()
	vp.Set(tcpfault.Pass)
	recovered, _ := recoverOn(t, victim, agents[0], recoverBound)
	time.Sleep(300 * time.Millisecond)
	attempts := l.halt()

	// What the stalled replica answered meanwhile: refusals, never a
	// credential it could not record, within the batch bound.
	var refused int
	var worst time.Duration
	for _, a := range attempts {
		if a.status == http.StatusInternalServerError {
			t.Errorf("HTTP 500 %s from %s: a lost database must be a stable 503", a.code, a.on.name)
		}
		if a.on == victim && a.latency() > inFlightBound {
			t.Errorf("the stalled replica took %v to answer a call sent %v after the stall (bound %v)", a.latency(), a.sent.Sub(stalled), inFlightBound)
		}
		if a.on != victim || a.sent.Before(stalled) || a.done.After(heal) {
			continue
		}
		refused++
		worst = max(worst, a.latency())
		if a.call != "" {
			t.Errorf("the stalled replica issued a credential (call %s)", a.call)
		}
		if a.status != http.StatusServiceUnavailable || a.code != string(arxerr.RecordUnavailable) {
			t.Errorf("the stalled replica answered HTTP %d %q, want 503 record.unavailable", a.status, a.code)
		}
	}
	live := d.replicas[0]
	if live == victim {
		live = d.replicas[1]
	}
	size := checkRecord(t, d, live, attempts)
	t.Logf("CAMPAIGN partition scenario=sequencer victim=%s lock_released_s=%.3f resume_s=%.3f acked_after=%d victim_refused=%d victim_refuse_max_s=%.3f recover_s=%.3f log_size=%d bound_s=%.0f",
		victim.name, released.Seconds(), resumed.Seconds(), after, refused, worst.Seconds(), recovered.Seconds(), size, resumeBound.Seconds())
	if resumed > resumeBound {
		t.Errorf("the others resumed %v after the stall (bound %v)", resumed, resumeBound)
	}
}

// checkRecord reads the whole log from a replica and checks it: indexes
// contiguous, every agent's chain intact, the latest checkpoint's root
// that of its prefix, and every call a client was acknowledged (a
// credential, a completion) in it. It returns the log's size.
func checkRecord(t *testing.T, d *deployment, on *replica, attempts []attempt) int64 {
	t.Helper()
	r, err := do(t.Context(), "GET", on.url+"/v1/log/checkpoint", "", nil)
	cp, _, cerr := record.OpenCheckpoint(must(t, r, err, http.StatusOK, "checkpoint"), d.logPub)
	if cerr != nil {
		t.Fatalf("checkpoint: %v", cerr)
	}
	var v record.Verifier
	issued, completed := map[string]int{}, map[string]bool{}
	checked := false
	for {
		r, err := do(t.Context(), "GET", fmt.Sprintf("%s/v1/log/entries?start=%d&limit=10000", on.url, v.Size()), d.admin, nil)
		var page struct {
			Entries []struct {
				Index int64  `json:"index"`
				Data  string `json:"data"`
			} `json:"entries"`
		}
		if err := json.Unmarshal(must(t, r, err, http.StatusOK, "log entries"), &page); err != nil {
			t.Fatal(err)
		}
		if len(page.Entries) == 0 {
			break
		}
		for _, e := range page.Entries {
			if v.Size() == int64(cp.Size) {
				checked = true
				if !bytes.Equal(rootOf(&v), cp.Hash) {
					t.Errorf("the checkpoint of size %d does not sign the log's first %d entries", int64(cp.Size), int64(cp.Size))
				}
			}
			if e.Index != v.Size() {
				t.Fatalf("entry at position %d has index %d", v.Size(), e.Index)
			}
			data, err := base64.StdEncoding.DecodeString(e.Data)
			if err != nil {
				t.Fatal(err)
			}
			v.Add(data)
			p, err := record.Parse(data)
			if err != nil {
				t.Fatalf("entry %d: %v", e.Index, err)
			}
			switch p.Type {
			case record.TypeCredentialIssued:
				issued[p.Call]++
			case record.TypeCallCompleted:
				completed[p.Call] = true
			}
		}
	}
	if v.Size() == int64(cp.Size) {
		checked = true
		if !bytes.Equal(rootOf(&v), cp.Hash) {
			t.Errorf("the checkpoint of size %d does not sign the log", int64(cp.Size))
		}
	}
	if !checked {
		t.Errorf("the checkpoint's size %d is past the log's %d", int64(cp.Size), v.Size())
	}
	for _, p := range v.Finish(nil) {
		t.Errorf("record: %v", p)
	}
	acked := 0
	for _, a := range attempts {
		if a.call == "" {
			continue
		}
		acked++
		if issued[a.call] != 1 {
			t.Errorf("call %s acknowledged by %s has %d credential.issued entries", a.call, a.on.name, issued[a.call])
		}
		if a.completed && !completed[a.call] {
			t.Errorf("the completion of %s acknowledged by %s has no call.completed entry", a.call, a.on.name)
		}
	}
	t.Logf("record: %d entries, %d agents, contiguous and chained; %d acknowledged calls all in it; checkpoint at %d matches",
		v.Size(), v.Agents(), acked, int64(cp.Size))
	return v.Size()
}

func rootOf(v *record.Verifier) []byte {
	h := v.Root()
	return h[:]
}
