package postgres_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/arxsec/arx/agentvault"
	"github.com/arxsec/arx/internal/arxtest"
	"github.com/arxsec/arx/internal/connector"
	"github.com/arxsec/arx/internal/connector/connectors"
	"github.com/arxsec/arx/internal/connector/postgres"
	"github.com/arxsec/arx/internal/connector/postgres/pgtest"
	"github.com/arxsec/arx/internal/server"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

const warehouseManifest = `apiVersion: arx.dev/v1
kind: JobDescription
agent:
  name: analyst
  owner: owner@example.com
scope:
  connectors:
    warehouse:
      actions:
        orders.query: {risk: low}
        orders.quick: {risk: low, max_duration: 1s}
budget:
  max_call_duration: 1m
approval:
  approvers: [boss@example.com]
termination:
  notify: [owner@example.com]
`

const warehouseConfig = `connectors:
  warehouse:
    kind: postgres
    upstream: %s
    secret: env:WAREHOUSE_PASSWORD
    timeout: 10s
    actions:
      orders.query:
        grants: ["SELECT ON orders"]
      orders.quick:
        grants: ["SELECT ON orders"]
`

type logBuffer struct {
	mu sync.Mutex
	bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.Buffer.Write(p)
}

// Bytes and String copy what was logged: the runtime may be logging still.
func (b *logBuffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return bytes.Clone(b.Buffer.Bytes())
}

func (b *logBuffer) String() string { return string(b.Bytes()) }

type env struct {
	db   *pgtest.DB
	s    *arxtest.Server
	logs *logBuffer
	dir  string
}

func (e *env) start(t *testing.T) {
	t.Helper()
	cfg, err := connector.Parse(fmt.Appendf(nil, warehouseConfig, e.db.AdminURL))
	if err != nil {
		t.Fatal(err)
	}
	cs, err := connectors.Open(cfg, func(connector.SecretRef) (string, error) { return e.db.AdminPassword, nil })
	if err != nil {
		t.Fatal(err)
	}
	e.s = arxtest.StartWith(t, e.dir, func(c *server.Config) {
		c.Connectors = cs
		c.Logger = slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
}

func newEnv(t *testing.T) *env {
	db := pgtest.New(t)
	conn, err := pgx.Connect(t.Context(), db.AdminConnURL())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(t.Context())
	for _, s := range []string{`CREATE TABLE orders (id int, account text, amount int)`, `INSERT INTO orders VALUES (1, '0017', 100)`,
		`CREATE TABLE payroll (v int)`} {
		if _, err := conn.Exec(t.Context(), s); err != nil {
			t.Fatal(err)
		}
	}
	e := &env{db: db, logs: &logBuffer{}, dir: t.TempDir()}
	e.start(t)
	return e
}

type callAnswer struct {
	ID         string `json:"id"`
	Status     string `json:"status"`
	Credential *struct {
		Token string `json:"token"`
		DSN   string `json:"dsn"`
	} `json:"credential"`
}

func (e *env) call(t *testing.T, token, action, key string) callAnswer {
	t.Helper()
	r := e.s.Do("POST", "/v1/calls", token, map[string]string{"connector": "warehouse", "action": action, "idempotency_key": key})
	if r.Status != http.StatusCreated && r.Status != http.StatusOK {
		t.Fatalf("call: %d %s", r.Status, r.Body)
	}
	var c callAnswer
	r.JSON(t, &c)
	if c.Credential == nil || c.Credential.DSN == "" || c.Credential.Token == "" {
		t.Fatalf("no DSN in %s", r.Body)
	}
	return c
}

func canLogin(t *testing.T, dsn string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return false
	}
	conn.Close(ctx)
	return true
}

func roleExists(t *testing.T, e *env, call string) bool {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), e.db.SuperURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(t.Context())
	var n int
	conn.QueryRow(t.Context(), `SELECT count(*) FROM pg_roles WHERE rolname = $1`, postgres.RoleName(call)).Scan(&n)
	return n > 0
}

// dropped waits until the call's role is gone and its drop is recorded.
func (e *env) dropped(t *testing.T, agent, call, reason string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		for _, en := range entries(t, e.s, agent) {
			d, _ := en["data"].(map[string]any)
			if en["type"] == "connector.role_dropped" && en["call"] == call && d["reason"] == reason && d["existed"] == true {
				if roleExists(t, e, call) {
					t.Fatal("drop recorded, role still there")
				}
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no connector.role_dropped (%s) for call %s; log:\n%s", reason, call, e.logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func entries(t *testing.T, s *arxtest.Server, agent string) []map[string]any {
	r := s.Do("GET", "/v1/agents/"+agent+"/record?limit=1000", s.AdminToken, nil)
	var out struct {
		Entries []struct {
			Entry map[string]any `json:"entry"`
		} `json:"entries"`
	}
	r.JSON(t, &out)
	var es []map[string]any
	for _, x := range out.Entries {
		es = append(es, x.Entry)
	}
	return es
}

func TestDynamicRoleLifecycle(t *testing.T) {
	e := newEnv(t)
	agent, token := e.s.Hire(warehouseManifest)

	// Completed: the role works during the call, is dropped after it.
	c := e.call(t, token, "orders.query", "k1")
	if again := e.call(t, token, "orders.query", "k1"); again.Credential.DSN != c.Credential.DSN {
		t.Fatal("a retried request got another DSN")
	}
	ctx := t.Context()
	conn, err := pgx.Connect(ctx, c.Credential.DSN)
	if err != nil {
		t.Fatalf("connect with the call's DSN: %v", err)
	}
	var n int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM orders`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("query: %d %v", n, err)
	}
	if _, err := conn.Exec(ctx, `SELECT * FROM payroll`); err == nil {
		t.Fatal("the role reads a table its action does not grant")
	}
	conn.Close(ctx)
	if r := e.s.Do("POST", "/v1/calls/"+c.ID+"/complete", token, map[string]any{"outcome": "success"}); r.Status != 200 {
		t.Fatalf("complete: %d %s", r.Status, r.Body)
	}
	e.dropped(t, agent, c.ID, "completed")
	if canLogin(t, c.Credential.DSN) {
		t.Fatal("the DSN logs in after the call completed")
	}

	// Expired: the sweeper closes the call, and the role goes with it.
	q := e.call(t, token, "orders.quick", "k2")
	e.dropped(t, agent, q.ID, "expired")

	// Terminated: every open call's role goes.
	c3 := e.call(t, token, "orders.query", "k3")
	if !canLogin(t, c3.Credential.DSN) {
		t.Fatal("a live call's DSN does not log in")
	}
	if r := e.s.Do("POST", "/v1/agents/"+agent+"/terminate", e.s.AdminToken, map[string]string{"reason": "test"}); r.Status != 200 {
		t.Fatalf("terminate: %d %s", r.Status, r.Body)
	}
	e.dropped(t, agent, c3.ID, "revoked")
	if canLogin(t, c3.Credential.DSN) {
		t.Fatal("the DSN logs in after the agent was terminated")
	}

	// No password, neither the admin's nor a call's, in the record or the log.
	if err := e.s.Runtime.Checkpoint(ctx); err != nil {
		t.Fatal(err)
	}
	r := e.s.Do("GET", "/v1/log/entries?start=0&limit=1000", e.s.AdminToken, nil)
	var le struct {
		Entries []struct {
			Data string `json:"data"`
		} `json:"entries"`
	}
	r.JSON(t, &le)
	var log []byte
	for _, x := range le.Entries {
		b, _ := base64.StdEncoding.DecodeString(x.Data)
		log = append(log, b...)
	}
	list := e.s.Do("GET", "/v1/connectors", e.s.AdminToken, nil).Body
	for _, dsn := range []string{c.Credential.DSN, q.Credential.DSN, c3.Credential.DSN} {
		rest := strings.TrimPrefix(dsn, "postgres://")
		pw := rest[strings.Index(rest, ":")+1 : strings.Index(rest, "@")]
		for where, b := range map[string][]byte{"record": log, "server log": e.logs.Bytes(), "connectors": list} {
			if bytes.Contains(b, []byte(pw)) || bytes.Contains(b, []byte(e.db.AdminPassword)) {
				t.Errorf("%s holds a password", where)
			}
		}
	}
}

// TestLeftoverRolesDroppedAtStart: a role whose call is closed (left behind
// by a crash) is dropped when ARX starts; a role of a call ARX does not
// know is left alone.
func TestLeftoverRolesDroppedAtStart(t *testing.T) {
	e := newEnv(t)
	agent, token := e.s.Hire(warehouseManifest)
	c := e.call(t, token, "orders.query", "k1")
	if r := e.s.Do("POST", "/v1/calls/"+c.ID+"/complete", token, map[string]any{"outcome": "error", "error": "boom"}); r.Status != 200 {
		t.Fatalf("complete: %d", r.Status)
	}
	e.dropped(t, agent, c.ID, "failed")
	e.s.Close()

	// A crash between the close and the drop leaves the role behind.
	cfg, _ := connector.Parse(fmt.Appendf(nil, warehouseConfig, e.db.AdminURL))
	pc, err := postgres.New(cfg.Connectors[0], e.db.AdminPassword)
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	foreign := uuid.NewString()
	for _, id := range []string{c.ID, foreign} {
		if _, err := pc.Provision(t.Context(), connector.Call{ID: id, Action: "orders.query", Expiry: time.Now().Add(time.Hour),
			Password: strings.Repeat("x", 40)}); err != nil {
			t.Fatal(err)
		}
	}
	e.start(t)
	e.dropped(t, agent, c.ID, "leftover")
	if !roleExists(t, e, foreign) {
		t.Fatal("a role of a call this deployment does not know was dropped")
	}
	pc.Revoke(t.Context(), foreign)
}

// TestSDKGivesTheDSN: the Go SDK hands the DSN over with the credential and
// never prints it.
func TestSDKGivesTheDSN(t *testing.T) {
	e := newEnv(t)
	agentID, token := e.s.Hire(warehouseManifest)
	arx, err := agentvault.New(agentvault.Config{Token: token, BaseURL: e.s.BaseURL(), AgentID: agentID})
	if err != nil {
		t.Fatal(err)
	}
	var printed string
	n, err := agentvault.Do(t.Context(), arx, agentvault.Action{Connector: "warehouse", Action: "orders.query"},
		func(ctx context.Context, cred agentvault.Credential) (int, error) {
			b, _ := json.Marshal(cred)
			printed = fmt.Sprintf("%v %+v %#v %s", cred, cred, cred, b)
			conn, err := pgx.Connect(ctx, cred.DSN)
			if err != nil {
				return 0, err
			}
			defer conn.Close(ctx)
			var n int
			return n, conn.QueryRow(ctx, `SELECT count(*) FROM orders`).Scan(&n)
		})
	if err != nil || n != 1 {
		t.Fatalf("Do: %d %v", n, err)
	}
	if strings.Contains(printed, "postgres://") {
		t.Fatalf("the credential prints its DSN: %s", printed)
	}
	// A failure that quotes the DSN is recorded without its password.
	_, err = agentvault.Do(t.Context(), arx, agentvault.Action{Connector: "warehouse", Action: "orders.query"},
		func(ctx context.Context, cred agentvault.Credential) (int, error) {
			return 0, fmt.Errorf("could not use %s", cred.DSN)
		})
	if err == nil {
		t.Fatal("want the function's error")
	}
	for _, en := range entries(t, e.s, agentID) {
		if d, ok := en["data"].(map[string]any); ok && en["type"] == "call.completed" {
			if msg, _ := d["error"].(string); strings.Contains(msg, "could not use") && !strings.Contains(msg, "REDACTED@") {
				t.Fatalf("recorded error holds the DSN's password: %s", msg)
			}
		}
	}
}

// allDropped waits until each call has exactly one connector.role_dropped
// entry that found its role, with reason, and no role of the calls is left.
func (e *env) allDropped(t *testing.T, agent string, calls []string, reason string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		found := map[string]int{}
		for _, en := range entries(t, e.s, agent) {
			d, _ := en["data"].(map[string]any)
			if en["type"] == "connector.role_dropped" && d["existed"] == true {
				if d["reason"] != reason {
					t.Fatalf("role of %v dropped for %v, want %s", en["call"], d["reason"], reason)
				}
				found[en["call"].(string)]++
			}
		}
		done := true
		for _, c := range calls {
			if found[c] > 1 {
				t.Fatalf("the role of call %s was dropped %d times", c, found[c])
			}
			done = done && found[c] == 1
		}
		if done {
			for _, c := range calls {
				if roleExists(t, e, c) {
					t.Fatalf("drop of %s recorded, role still there", c)
				}
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d roles dropped; log:\n%s", len(found), len(calls), e.logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (e *env) calls(t *testing.T, token string, n int) []callAnswer {
	t.Helper()
	out := make([]callAnswer, n)
	var wg sync.WaitGroup
	for i := range out {
		wg.Go(func() { out[i] = e.call(t, token, "orders.query", fmt.Sprintf("k%d", i)) })
	}
	wg.Wait()
	return out
}

// TestManyCallsCompleteAtOnce: the roles of many calls that complete at
// once are each dropped exactly once, and none is left.
func TestManyCallsCompleteAtOnce(t *testing.T) {
	e := newEnv(t)
	agent, token := e.s.Hire(warehouseManifest)
	cs := e.calls(t, token, 60)
	var wg sync.WaitGroup
	ids := make([]string, len(cs))
	for i, c := range cs {
		ids[i] = c.ID
		wg.Go(func() {
			if r := e.s.Do("POST", "/v1/calls/"+c.ID+"/complete", token, map[string]any{"outcome": "success"}); r.Status != 200 {
				t.Errorf("complete: %d %s", r.Status, r.Body)
			}
		})
	}
	wg.Wait()
	e.allDropped(t, agent, ids, "completed")
	for _, c := range cs[:3] {
		if canLogin(t, c.Credential.DSN) {
			t.Fatal("a DSN logs in after its call completed")
		}
	}
}

// TestTerminationDropsManyRoles: terminating an agent with many live roles
// drops every one of them.
func TestTerminationDropsManyRoles(t *testing.T) {
	e := newEnv(t)
	agent, token := e.s.Hire(warehouseManifest)
	cs := e.calls(t, token, 120) // more than one outbox batch
	ids := make([]string, len(cs))
	for i, c := range cs {
		ids[i] = c.ID
	}
	if r := e.s.Do("POST", "/v1/agents/"+agent+"/terminate", e.s.AdminToken, map[string]string{"reason": "test"}); r.Status != 200 {
		t.Fatalf("terminate: %d %s", r.Status, r.Body)
	}
	e.allDropped(t, agent, ids, "revoked")
	for _, c := range cs[:3] {
		if canLogin(t, c.Credential.DSN) {
			t.Fatal("a DSN logs in after the agent was terminated")
		}
	}
}
