// Package replicas tests several arx serve processes on one PostgreSQL
// database end to end, as an operator runs them behind a load balancer:
// the binary is built here, started three times, and driven over HTTP and
// through the Go SDK; one replica is killed with SIGKILL under load.
//
// It needs ARX_TEST_POSTGRES (see .ci/setup-postgres.sh) and skips without
// it, unless ARX_TEST_REQUIRE_SERVERS=1.
package replicas

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"github.com/arxsec/arx/internal/arxtest"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/arxsec/arx/agentvault"
	"github.com/arxsec/arx/internal/store/postgres"
	"github.com/arxsec/arx/internal/store/postgres/pgtest"
	"github.com/arxsec/arx/record"
	"github.com/jackc/pgx/v5"
)

const manifest = `apiVersion: arx.dev/v1
kind: JobDescription
agent:
  name: %s
  owner: owner@example.com
scope:
  connectors:
    crm:
      actions:
        account.read: {risk: low}
        account.delete: {risk: high}
approval:
  approvers: [boss@example.com]
  timeout: 10m
budget:
  max_call_duration: 10m
  max_concurrent: 10000
termination:
  notify: [owner@example.com]
`

func TestMain(m *testing.M) {
	code := m.Run()
	arxtest.RemoveBinary()
	os.Exit(code)
}

func arxBinary(t *testing.T) string { return arxtest.Binary(t) }

// replica is one running arx serve.
type replica struct {
	name string
	dir  string
	url  string
	cmd  *exec.Cmd
	log  *arxtest.ServeLog
	done chan struct{}
}

func (r *replica) Logs() string { return r.log.String() }

// deployment is three replicas on one fresh database.
type deployment struct {
	db       string
	replicas []*replica
	admin    string // the first replica's admin token
	logPub   string
}

// start starts n replicas: the first on a fresh data directory (it makes
// the keys and the admin token), the others with copies of its keys, as
// the README says.
func start(t *testing.T, n int) *deployment {
	t.Helper()
	return startVia(t, n, nil)
}

// startVia is start with replica i reaching the database at via(i, url)
// (through a fault-injecting proxy: partition_test.go); nil: directly.
func startVia(t *testing.T, n int, via func(i int, db string) string) *deployment {
	t.Helper()
	d := &deployment{db: pgtest.Database(t)}
	bin := arxBinary(t)
	for i := range n {
		name := string(rune('A' + i))
		dir := filepath.Join(t.TempDir(), name)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if i > 0 {
			for _, f := range []string{"log.key", "log.pub", "credential.key"} {
				b, err := os.ReadFile(filepath.Join(d.replicas[0].dir, f))
				if err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(dir, f), b, 0o600); err != nil {
					t.Fatal(err)
				}
			}
		}
		db := d.db
		if via != nil {
			db = via(i, db)
		}
		d.replicas = append(d.replicas, startReplica(t, bin, name, dir, db))
		if i == 0 {
			b, err := os.ReadFile(filepath.Join(dir, "admin.token"))
			if err != nil {
				t.Fatal(err)
			}
			d.admin = strings.TrimSpace(string(b))
			b, err = os.ReadFile(filepath.Join(dir, "log.pub"))
			if err != nil {
				t.Fatal(err)
			}
			d.logPub = strings.TrimSpace(string(b))
		} else if _, err := os.Stat(filepath.Join(dir, "admin.token")); err == nil {
			t.Errorf("replica %s made an admin token of its own", name)
		}
	}
	return d
}

func startReplica(t *testing.T, bin, name, dir, db string, extra ...string) *replica {
	t.Helper()
	// Each replica names itself to PostgreSQL, so a test can tell which one
	// holds the log lock.
	cmd := exec.Command(bin, append([]string{"serve", "--data", dir, "--listen", "127.0.0.1:0", "--log-format", "json", "--db-max-conns", "8"}, extra...)...)
	// GOTRACEBACK=all: a replica a test finds stuck is asked for its
	// goroutines (SIGQUIT), every one of them.
	cmd.Env = append(os.Environ(), "ARX_DATABASE="+db+"&application_name=arx-"+name, "GOTRACEBACK=all")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	r := &replica{name: name, dir: dir, cmd: cmd, done: make(chan struct{})}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r.log = arxtest.WatchServe(stderr)
	go func() {
		cmd.Wait()
		close(r.done)
	}()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-r.done:
		case <-time.After(15 * time.Second):
			cmd.Process.Kill()
			<-r.done
		}
		if t.Failed() {
			t.Logf("replica %s logs:\n%s", name, r.Logs())
		}
	})
	select {
	case r.url = <-r.log.URL():
	case <-r.done:
		t.Fatalf("replica %s exited: %s", name, r.Logs())
	case <-time.After(60 * time.Second):
		t.Fatalf("replica %s did not start: %s", name, r.Logs())
	}
	// Ready: the database answers and wake-ups from the others arrive.
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(r.url + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("replica %s never ready: %v", name, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return r
}

// kill ends a replica with SIGKILL, as a crash would.
func (r *replica) kill(t *testing.T) {
	t.Helper()
	if err := r.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-r.done
}

type response struct {
	status int
	body   []byte
}

var client = &http.Client{Timeout: 90 * time.Second}

// do sends a JSON request to a replica.
func do(ctx context.Context, method, url, token string, body any) (*response, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return &response{resp.StatusCode, b}, err
}

func must(t *testing.T, r *response, err error, want int, what string) []byte {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	if r.status != want {
		t.Fatalf("%s: HTTP %d %s", what, r.status, r.body)
	}
	return r.body
}

func (d *deployment) hire(t *testing.T, on *replica, name string) (id, token string) {
	t.Helper()
	r, err := do(t.Context(), "POST", on.url+"/v1/agents", d.admin, map[string]string{"manifest": fmt.Sprintf(manifest, name)})
	var out struct {
		Agent struct {
			ID string `json:"id"`
		} `json:"agent"`
		Token string `json:"token"`
	}
	if err := json.Unmarshal(must(t, r, err, http.StatusCreated, "hire on "+on.name), &out); err != nil {
		t.Fatal(err)
	}
	return out.Agent.ID, out.Token
}

// person adds a person on one replica, sets the password on another and
// logs in on a third: their token then works everywhere.
func (d *deployment) person(t *testing.T, email string) string {
	t.Helper()
	rs := d.replicas
	r, err := do(t.Context(), "POST", rs[0].url+"/v1/users", d.admin, map[string]any{"email": email, "role": "manager", "show_link": true})
	var u struct {
		SetupToken string `json:"setup_token"`
	}
	if err := json.Unmarshal(must(t, r, err, http.StatusCreated, "add user"), &u); err != nil {
		t.Fatal(err)
	}
	const pw = "correct horse battery staple"
	r, err = do(t.Context(), "POST", rs[1%len(rs)].url+"/v1/auth/setup", "", map[string]string{"token": u.SetupToken, "password": pw})
	must(t, r, err, http.StatusOK, "set password")
	r, err = do(t.Context(), "POST", rs[2%len(rs)].url+"/v1/auth/tokens", "", map[string]string{"email": email, "password": pw})
	var tok struct {
		Token string `json:"token"`
	}
	if err := json.Unmarshal(must(t, r, err, http.StatusCreated, "login"), &tok); err != nil {
		t.Fatal(err)
	}
	return tok.Token
}

type callView struct {
	ID         string `json:"id"`
	Status     string `json:"status"`
	Credential *struct {
		Token string `json:"token"`
	} `json:"credential"`
}

func sdk(t *testing.T, on *replica, agentID, token string) *agentvault.Client {
	t.Helper()
	c, err := agentvault.New(agentvault.Config{Token: token, BaseURL: on.url + "/v1", AgentID: agentID})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// events subscribes to a replica's event stream and returns the event
// types as they arrive.
func events(t *testing.T, on *replica, token string) <-chan string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	req, _ := http.NewRequestWithContext(ctx, "GET", on.url+"/v1/events", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("events on %s: %v %v", on.name, err, resp)
	}
	out := make(chan string, 100)
	connected := make(chan struct{})
	go func() {
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			line := sc.Text()
			if line == ": connected" {
				close(connected)
			}
			if ev, ok := strings.CutPrefix(line, "event: "); ok {
				select {
				case out <- ev:
				default:
				}
			}
		}
	}()
	<-connected
	return out
}

func waitEvent(t *testing.T, ch <-chan string, want string, within time.Duration) {
	t.Helper()
	deadline := time.After(within)
	for {
		select {
		case ev := <-ch:
			if ev == want {
				return
			}
		case <-deadline:
			t.Fatalf("no %s event within %v", want, within)
		}
	}
}

// TestApproveOnAnotherReplica: the agent waits (SDK long poll) on B, the
// approver approves on A, and the wait ends at once with a credential; the
// manager's console stream on C sees the request and the decision.
func TestApproveOnAnotherReplica(t *testing.T) {
	d := start(t, 3)
	A, B, C := d.replicas[0], d.replicas[1], d.replicas[2]
	agentID, token := d.hire(t, C, "approvals")
	boss := d.person(t, "boss@example.com")
	stream := events(t, C, boss)

	wake := wakeAcross(t, B, A, agentKey{agentID, token}, boss)
	t.Logf("B's long poll answered %v after A's approval returned", wake.Round(time.Millisecond))
	waitEvent(t, stream, "approval.requested", 10*time.Second)
	waitEvent(t, stream, "approval.decided", 10*time.Second)
}

// wakeAcross: the agent long-polls a pending call on `on`, a named
// approver approves it on `other`, and the poll answers with a credential
// at once: the wake-up came through LISTEN/NOTIFY. It returns the delay.
func wakeAcross(t *testing.T, on, other *replica, a agentKey, boss string) time.Duration {
	t.Helper()
	agent := sdk(t, on, a.id, a.token)
	call, err := agent.Request(t.Context(), agentvault.Action{Connector: "crm", Action: "account.delete", Risk: agentvault.RiskHigh,
		Summary: "delete account 42"})
	if err != nil || call.Status != "pending_approval" {
		t.Fatalf("high-risk call on %s: %v %+v", on.name, err, call)
	}
	type result struct {
		call *agentvault.Call
		err  error
		at   time.Time
	}
	got := make(chan result, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		c, err := agent.Wait(ctx, call.ID)
		got <- result{c, err, time.Now()}
	}()
	time.Sleep(300 * time.Millisecond) // the long poll is parked on `on`
	r, err := do(t.Context(), "POST", other.url+"/v1/approvals/"+call.ID+"/approve", boss, map[string]string{"reason": "ok"})
	must(t, r, err, http.StatusOK, "approve on "+other.name)
	approved := time.Now()
	select {
	case res := <-got:
		if res.err != nil || res.call.Status != "approved" || res.call.Credential == nil {
			t.Fatalf("wait on %s: %v %+v", on.name, res.err, res.call)
		}
		wake := res.at.Sub(approved)
		if wake > 2*time.Second {
			t.Errorf("%s woke %v after the approval on %s: not from a wake-up", on.name, wake, other.name)
		}
		return wake
	case <-time.After(20 * time.Second):
		t.Fatalf("%s's long poll did not wake after the approval on %s", on.name, other.name)
	}
	return 0
}

// TestTerminateOnAnotherReplica: callers hammer A and B with new calls and
// with credentials issued earlier; C terminates the agent. Nothing of the
// agent's is honoured on any replica in a request sent after the
// termination returned.
func TestTerminateOnAnotherReplica(t *testing.T) {
	d := start(t, 3)
	A, B, C := d.replicas[0], d.replicas[1], d.replicas[2]
	agentID, token := d.hire(t, A, "terminated")
	boss := d.person(t, "boss@example.com")

	// Outstanding credentials, issued on A and on B, and a pending approval.
	var creds []string
	for i, on := range []*replica{A, B, A, B} {
		r, err := do(t.Context(), "POST", on.url+"/v1/calls", token, map[string]string{"connector": "crm", "action": "account.read",
			"risk": "low", "idempotency_key": fmt.Sprint("pre-", i)})
		var c callView
		if err := json.Unmarshal(must(t, r, err, http.StatusCreated, "call"), &c); err != nil || c.Credential == nil {
			t.Fatalf("call on %s: %s", on.name, r.body)
		}
		creds = append(creds, c.Credential.Token)
	}
	r, err := do(t.Context(), "POST", B.url+"/v1/calls", token, map[string]string{"connector": "crm", "action": "account.delete",
		"risk": "high", "idempotency_key": "pending"})
	var pending callView
	if err := json.Unmarshal(must(t, r, err, http.StatusAccepted, "high-risk call"), &pending); err != nil {
		t.Fatal(err)
	}

	// The agent waits for its approval on B (SDK long poll).
	waited := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		_, err := sdk(t, B, agentID, token).Wait(ctx, pending.ID)
		waited <- err
	}()

	// Callers on A and B: each request notes when it was sent and whether
	// it was honoured.
	type attempt struct {
		sent     time.Time
		honoured bool
		what     string
	}
	var mu sync.Mutex
	var attempts []attempt
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var n atomic.Int64
	for w := range 8 {
		on := []*replica{A, B}[w%2]
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				sent := time.Now()
				var a attempt
				if i%2 == 0 {
					r, err := do(context.Background(), "POST", on.url+"/v1/calls", token, map[string]string{"connector": "crm",
						"action": "account.read", "risk": "low", "idempotency_key": fmt.Sprintf("w%d-%d", w, i)})
					var c callView
					if err == nil && r.status < 300 {
						json.Unmarshal(r.body, &c)
					}
					a = attempt{sent, err == nil && r.status < 300 && c.Credential != nil, "call on " + on.name}
				} else {
					r, err := do(context.Background(), "POST", on.url+"/v1/credentials/introspect", "",
						map[string]string{"credential": creds[i%len(creds)]})
					var in struct {
						Active bool `json:"active"`
					}
					if err == nil && r.status == http.StatusOK {
						json.Unmarshal(r.body, &in)
					}
					a = attempt{sent, in.Active, "credential on " + on.name}
				}
				n.Add(1)
				mu.Lock()
				attempts = append(attempts, a)
				mu.Unlock()
			}
		})
	}
	time.Sleep(700 * time.Millisecond)
	r, err = do(t.Context(), "POST", C.url+"/v1/agents/"+agentID+"/terminate", boss, map[string]string{"reason": "end of contract"})
	must(t, r, err, http.StatusOK, "terminate on C")
	returned := time.Now()
	select {
	case err := <-waited:
		if err == nil {
			t.Error("the wait on B for a cancelled approval ended without an error")
		}
		t.Logf("B's long poll ended %v after the termination on C returned: %v", time.Since(returned).Round(time.Millisecond), err)
	case <-time.After(5 * time.Second):
		t.Error("B's long poll on the terminated agent's call did not wake within 5s")
	}
	time.Sleep(700 * time.Millisecond)
	close(stop)
	wg.Wait()

	before, after := 0, 0
	for _, a := range attempts {
		if !a.sent.After(returned) {
			if a.honoured {
				before++
			}
			continue
		}
		after++
		if a.honoured {
			t.Errorf("%s sent %v after the termination returned was honoured", a.what, a.sent.Sub(returned))
		}
	}
	t.Logf("%d requests; %d honoured before the termination returned; %d sent after it, none honoured", n.Load(), before, after)
	if before == 0 || after == 0 {
		t.Fatalf("the load did not straddle the termination (%d honoured before, %d after)", before, after)
	}

	// On every replica: no credential, no approval, no call.
	for _, on := range d.replicas {
		for _, cred := range creds {
			r, err := do(t.Context(), "POST", on.url+"/v1/credentials/introspect", "", map[string]string{"credential": cred})
			if err != nil || !bytes.Contains(r.body, []byte(`"active":false`)) {
				t.Errorf("credential on %s after termination: %v %s", on.name, err, r.body)
			}
		}
		r, err := do(t.Context(), "POST", on.url+"/v1/approvals/"+pending.ID+"/approve", boss, map[string]string{"reason": "late"})
		if err != nil || r.status < 400 {
			t.Errorf("approval on %s after termination: %v %d %s", on.name, err, r.status, r.body)
		}
		r, err = do(t.Context(), "POST", on.url+"/v1/calls", token, map[string]string{"connector": "crm", "action": "account.read",
			"risk": "low", "idempotency_key": "after-" + on.name})
		if err != nil || r.status < 400 {
			t.Errorf("call on %s after termination: %v %d %s", on.name, err, r.status, r.body)
		}
	}
}

// TestKillSequencer: under a load of governed calls on all three replicas,
// the replica holding the log lock is killed with SIGKILL. The others go on
// at once; every call a replica acknowledged has its entries; the log's
// indexes are contiguous; arx record verify passes.
func TestKillSequencer(t *testing.T) {
	d := start(t, 3)
	type agent struct{ id, token string }
	var agents []agent
	for i := range 3 {
		id, tok := d.hire(t, d.replicas[i], fmt.Sprint("load-", i))
		agents = append(agents, agent{id, tok})
	}
	var killed atomic.Pointer[replica]
	var mu sync.Mutex
	acked := map[string]string{} // call id -> what its acknowledgement promised: "issued" or "completed"
	var afterKill, ackedN atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 9 {
		wg.Go(func() {
			a := agents[w%len(agents)]
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				on := d.replicas[(w+i)%len(d.replicas)]
				if on == killed.Load() {
					on = d.replicas[(w+i+1)%len(d.replicas)]
				}
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				r, err := do(ctx, "POST", on.url+"/v1/calls", a.token, map[string]string{"connector": "crm", "action": "account.read",
					"risk": "low", "idempotency_key": fmt.Sprintf("k%d-%d", w, i)})
				var c callView
				if err == nil && r.status == http.StatusCreated && json.Unmarshal(r.body, &c) == nil && c.Credential != nil {
					mu.Lock()
					acked[c.ID] = "issued"
					mu.Unlock()
					ackedN.Add(1)
					if killed.Load() != nil {
						afterKill.Add(1)
					}
					r, err := do(ctx, "POST", on.url+"/v1/calls/"+c.ID+"/complete", a.token, map[string]any{"outcome": "success", "duration_ms": 1})
					if err == nil && r.status == http.StatusOK {
						mu.Lock()
						acked[c.ID] = "completed"
						mu.Unlock()
					}
				}
				cancel()
			}
		})
	}

	// Find the replica that holds the log lock while the load runs.
	conn, err := pgx.Connect(t.Context(), d.db)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	time.Sleep(time.Second)
	var holder string
	for deadline := time.Now().Add(10 * time.Second); holder == "" && time.Now().Before(deadline); {
		err := conn.QueryRow(t.Context(), `SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
			WHERE l.locktype = 'advisory' AND l.granted AND l.classid = 0 AND l.objid = $1
			AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())`, uint32(postgres.LogLockKey)).Scan(&holder)
		if err != nil && err != pgx.ErrNoRows {
			t.Fatal(err)
		}
	}
	var victim *replica
	for _, r := range d.replicas {
		if "arx-"+r.name == holder {
			victim = r
		}
	}
	if victim == nil {
		t.Fatalf("no replica seen holding the log lock (holder %q)", holder)
	}
	before := ackedN.Load()
	killed.Store(victim)
	victim.kill(t)
	killedAt := time.Now()
	t.Logf("killed replica %s (holding the log lock) after %d acknowledged calls", victim.name, before)

	// The others go on.
	for afterKill.Load() < 20 && time.Since(killedAt) < 30*time.Second {
		time.Sleep(10 * time.Millisecond)
	}
	firstAfter := time.Since(killedAt)
	time.Sleep(time.Second)
	close(stop)
	wg.Wait()
	if afterKill.Load() < 20 {
		t.Fatalf("only %d calls acknowledged in 30s after the kill", afterKill.Load())
	}
	t.Logf("20 calls acknowledged within %v of the kill; %d acknowledged in all", firstAfter.Round(time.Millisecond), ackedN.Load())

	// Every acknowledged call has its entries, at contiguous indexes.
	live := d.replicas[0]
	if live == victim {
		live = d.replicas[1]
	}
	issued, completed := map[string]bool{}, map[string]bool{}
	var next int64
	for {
		r, err := do(t.Context(), "GET", fmt.Sprintf("%s/v1/log/entries?start=%d&limit=10000", live.url, next), d.admin, nil)
		var page struct {
			Entries []struct {
				Index int64  `json:"index"`
				Data  []byte `json:"data"`
			} `json:"entries"`
		}
		if err := json.Unmarshal(must(t, r, err, http.StatusOK, "log entries"), &page); err != nil {
			t.Fatal(err)
		}
		if len(page.Entries) == 0 {
			break
		}
		for _, e := range page.Entries {
			if e.Index != next {
				t.Fatalf("entry at position %d has index %d", next, e.Index)
			}
			next++
			p, err := record.Parse(e.Data)
			if err != nil {
				t.Fatalf("entry %d: %v", e.Index, err)
			}
			switch p.Type {
			case record.TypeCredentialIssued:
				if issued[p.Call] {
					t.Errorf("call %s issued twice", p.Call)
				}
				issued[p.Call] = true
			case record.TypeCallCompleted:
				completed[p.Call] = true
			}
		}
	}
	mu.Lock()
	for id, what := range acked {
		if !issued[id] {
			t.Errorf("acknowledged call %s has no credential.issued entry", id)
		}
		if what == "completed" && !completed[id] {
			t.Errorf("acknowledged completion of %s has no call.completed entry", id)
		}
	}
	mu.Unlock()
	t.Logf("the log has %d entries at contiguous indexes", next)

	// The surviving replicas sign a checkpoint of the whole log, and arx
	// record verify checks it against the first replica's log.pub.
	bin := arxBinary(t)
	deadline := time.Now().Add(30 * time.Second)
	for {
		out, err := exec.Command(bin, "record", "verify", "--json", "--server", live.url, "--token", d.admin,
			"--log-key", filepath.Join(d.replicas[0].dir, "log.pub")).CombinedOutput()
		var rep struct {
			OK   bool  `json:"ok"`
			Size int64 `json:"checkpoint_size"`
		}
		json.Unmarshal(out, &rep)
		if err == nil && rep.OK && rep.Size == next {
			t.Logf("arx record verify: ok, %d entries", rep.Size)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("arx record verify (size %d, log %d): %v\n%s", rep.Size, next, err, out)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestRevokeTokenOnAnotherReplica: an agent token revoked on one replica
// is refused on the other at once, though that replica answered the token
// from memory until then (runtime.AuthenticateAgent): the next request
// after the revocation's answer is refused, for asking a call and for
// completing one, while the agent's other token goes on working.
func TestRevokeTokenOnAnotherReplica(t *testing.T) {
	d := start(t, 2)
	A, B := d.replicas[0], d.replicas[1]
	agentID, first := d.hire(t, A, "revoked")
	r, err := do(t.Context(), "POST", A.url+"/v1/agents/"+agentID+"/tokens", d.admin, map[string]string{"label": "second"})
	var second struct {
		ID    string `json:"token_id"`
		Token string `json:"token"`
	}
	if err := json.Unmarshal(must(t, r, err, http.StatusCreated, "second token"), &second); err != nil {
		t.Fatal(err)
	}
	call := func(on *replica, token, key string) *response {
		r, err := do(t.Context(), "POST", on.url+"/v1/calls", token, map[string]string{"connector": "crm", "action": "account.read",
			"risk": "low", "idempotency_key": key})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	// B remembers both tokens; an open call waits to be completed.
	var open callView
	if err := json.Unmarshal(must(t, call(B, second.Token, "open"), nil, http.StatusCreated, "call"), &open); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		must(t, call(B, first, fmt.Sprint("warm-", i)), nil, http.StatusCreated, "call with the first token")
	}
	must(t, call(B, second.Token, "warm-second"), nil, http.StatusCreated, "call with the second token")

	r, err = do(t.Context(), "DELETE", A.url+"/v1/agents/"+agentID+"/tokens/"+second.ID, d.admin, nil)
	must(t, r, err, http.StatusOK, "revoke on A")
	if r := call(B, second.Token, "after"); r.status != http.StatusUnauthorized || !strings.Contains(string(r.body), "auth.invalid_token") {
		t.Errorf("the revoked token on B right after the revocation: HTTP %d %s", r.status, r.body)
	}
	r, err = do(t.Context(), "POST", B.url+"/v1/calls/"+open.ID+"/complete", second.Token, map[string]any{"outcome": "success"})
	if err != nil || r.status != http.StatusUnauthorized {
		t.Errorf("completing with the revoked token on B: HTTP %d %s (%v)", r.status, r.body, err)
	}
	must(t, call(B, first, "other-token"), nil, http.StatusCreated, "the agent's other token on B")
	must(t, call(A, first, "other-token-a"), nil, http.StatusCreated, "the agent's other token on A")
}
