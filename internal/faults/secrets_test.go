//go:build linux

package faults

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/arxsec/arx/internal/connector/postgres/pgtest"
	"github.com/arxsec/arx/record"
	"github.com/jackc/pgx/v5"
)

// TestNoSecretLeaks runs one scenario through the real binary that touches
// every path handling a secret (DESIGN.md promise 6): hiring, governed calls
// with approvals and a denial, the http gateway and its refusals, a
// PostgreSQL role per call (with ARX_TEST_POSTGRES), people's links,
// passwords, sessions and CSRF tokens, webhooks that fail and are retried, a
// witness, the bucket, termination, the CLI, /metrics and the event stream,
// plus an attacker's guessed and misplaced tokens. The server runs at its
// most verbose log level. Then every secret given or handed out is searched
// for, raw and in its usual encodings, in every log, every file of the data
// directory (running and stopped), the bucket, the CLI's output and every
// answer, except the one answer that hands it to its holder.
func TestNoSecretLeaks(t *testing.T) {
	if testing.Short() {
		t.Skip("secrets campaign skipped in -short mode")
	}
	c := &secretCampaign{t: t, allowIn: map[int]map[string]bool{}}
	root := t.TempDir()
	dataDir := filepath.Join(root, "data")
	bucketDir := filepath.Join(root, "bucket")
	witnessDir := filepath.Join(root, "witness")
	cliHome := filepath.Join(root, "home")
	for _, d := range []string{dataDir, bucketDir, witnessDir, cliHome} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}

	// The log key, made here as an operator copying keys to a replica would;
	// the server makes its credential key and admin token itself.
	logSKey, logVKey, err := record.GenerateKey("arx.test/secrets")
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dataDir, "log.key"), []byte(logSKey+"\n"), 0o600)
	os.WriteFile(filepath.Join(dataDir, "log.pub"), []byte(logVKey+"\n"), 0o644)
	c.secretNoteKey("log private key", logSKey)

	// Systems of record: the upstream checks that it gets the real secret
	// and never an ARX token or credential (scanned below).
	upstreamSecret := "ups_" + secretRandom(24)
	c.secret("connector secret", "crm upstream secret", upstreamSecret, 4)
	billingSecret := "bil_" + secretRandom(24)
	c.secret("connector secret", "billing upstream secret", billingSecret, 4)
	var upMu sync.Mutex
	var upSeen bytes.Buffer
	upGood, upBad, billingHits := 0, 0, 0
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		upMu.Lock()
		defer upMu.Unlock()
		fmt.Fprintf(&upSeen, "%s %s\n", r.Method, r.URL.RequestURI())
		r.Header.Write(&upSeen)
		upSeen.Write(body)
		upSeen.WriteString("\n")
		if strings.HasPrefix(r.URL.Path, "/billing/") {
			billingHits++
		}
		if r.Header.Get("Authorization") != "Bearer "+upstreamSecret {
			upBad++
			http.Error(w, "who are you", http.StatusUnauthorized)
			return
		}
		upGood++
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"account":"acme","path":%q}`, r.URL.Path)
	}))
	defer upstream.Close()
	secretFile := filepath.Join(root, "crm.secret")
	os.WriteFile(secretFile, []byte(upstreamSecret+"\n"), 0o600)
	t.Setenv("ARX_SECRETS_BILLING", billingSecret)

	// Webhooks whose URLs carry secrets, as Slack's do. Each endpoint cuts
	// the connection of its first delivery, so the failure path runs too.
	hookSecret := "hk_" + secretRandom(24)
	slackSecret := "sl_" + secretRandom(24)
	c.secret("webhook URL secret", "generic webhook path", hookSecret, 3)
	c.secret("webhook URL secret", "slack webhook path", slackSecret, 3)
	var hookMu sync.Mutex
	var hookSeen bytes.Buffer
	hookCalls := map[string]int{}
	hooks := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		hookMu.Lock()
		hookCalls[r.URL.Path]++
		n := hookCalls[r.URL.Path]
		r.Header.Write(&hookSeen) // the path is the endpoint's own secret: not kept
		hookSeen.Write(body)
		hookSeen.WriteString("\n")
		hookMu.Unlock()
		if n == 1 {
			if hj, ok := w.(http.Hijacker); ok {
				if conn, _, err := hj.Hijack(); err == nil {
					conn.Close()
					return
				}
			}
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	defer hooks.Close()
	hookURL := hooks.URL + "/hooks/" + hookSecret
	slackURL := hooks.URL + "/slack/" + slackSecret

	// PostgreSQL connector, when a server is at hand.
	var pg *pgtest.DB
	if os.Getenv("ARX_TEST_POSTGRES") == "" {
		t.Log("secrets: no ARX_TEST_POSTGRES: the PostgreSQL connector part is skipped (source .ci/setup-postgres.sh to include it)")
	} else {
		pg = pgtest.New(t)
		conn, err := pgx.Connect(t.Context(), pg.AdminConnURL())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Exec(t.Context(), "CREATE TABLE orders (id int); INSERT INTO orders VALUES (1), (2)"); err != nil {
			t.Fatal(err)
		}
		conn.Close(t.Context())
		t.Setenv("ARX_SECRETS_PG", pg.AdminPassword)
		c.secret("connector secret", "postgres connector admin password", pg.AdminPassword, 0)
	}
	connectors := fmt.Sprintf(`connectors:
  crm:
    kind: http
    upstream: %s/api
    secret: file:%s
    auth: bearer
    timeout: 5s
    actions:
      account.read: {allow: ["GET /accounts/*"]}
      account.quick: {allow: ["GET /accounts/*"]}
      account.update: {allow: ["PATCH /accounts/*"]}
  billing:
    kind: http
    upstream: %s/billing
    secret: env:ARX_SECRETS_BILLING
    auth: header X-Api-Key
    actions:
      invoice.read: {allow: ["GET /invoices/*"]}
`, upstream.URL, secretFile, upstream.URL)
	warehouse := ""
	if pg != nil {
		connectors += fmt.Sprintf(`  warehouse:
    kind: postgres
    upstream: %s
    secret: env:ARX_SECRETS_PG
    timeout: 10s
    actions:
      orders.query:
        grants: ["SELECT ON orders"]
`, pg.AdminURL)
		warehouse = "    warehouse:\n      actions:\n        orders.query: {risk: low}\n"
	}
	connFile := filepath.Join(root, "connectors.yaml")
	os.WriteFile(connFile, []byte(connectors), 0o600)

	// A witness, with its own key, that the server's publisher asks to cosign.
	wpub := c.cli("witness keygen", nil, "", "witness", "keygen", "--name", "witness.test/w1",
		"--key", filepath.Join(witnessDir, "witness.key"), "--pub", filepath.Join(witnessDir, "witness.pub"))
	wkey, err := os.ReadFile(filepath.Join(witnessDir, "witness.key"))
	if err != nil {
		t.Fatal(err)
	}
	c.secretNoteKey("witness private key", strings.TrimSpace(string(wkey)))
	wit := secretStartWitness(t, witnessDir, logVKey)
	defer wit.stop()

	p := startServe(t, dataDir, "--log-level", "debug", "--connectors", connFile,
		"--webhook", hookURL, "--slack-webhook", slackURL,
		"--bucket", "file://"+bucketDir, "--publish-interval", "200ms",
		"--witness", wit.url+"="+strings.TrimSpace(wpub), "--witness-interval", "1s")
	stopped := false
	defer func() {
		if !stopped {
			p.kill()
		}
	}()
	adminB, err := os.ReadFile(filepath.Join(dataDir, "admin.token"))
	if err != nil {
		t.Fatal(err)
	}
	admin := strings.TrimSpace(string(adminB))
	c.secret("admin token", "operator admin token", admin, 5)
	c.secretPEMKey("credential signing key", filepath.Join(dataDir, "credential.key"))
	base := p.url

	adminEnv := []string{"ARX_ADMIN_TOKEN=" + admin}
	cliEnv := func(extra ...string) []string {
		env := []string{"HOME=" + cliHome, "XDG_CONFIG_HOME=" + filepath.Join(cliHome, ".config"), "ARX_SERVER=" + base}
		return append(env, extra...)
	}

	// The event stream, open for the whole scenario.
	sseCtx, sseCancel := context.WithCancel(t.Context())
	var sseMu sync.Mutex
	var sseBuf bytes.Buffer
	sseDone := make(chan struct{})
	go func() {
		defer close(sseDone)
		req, _ := http.NewRequestWithContext(sseCtx, "GET", base+"/v1/events", nil)
		req.Header.Set("Authorization", "Bearer "+admin)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return
		}
		defer resp.Body.Close()
		buf := make([]byte, 4096)
		for {
			n, err := resp.Body.Read(buf)
			sseMu.Lock()
			sseBuf.Write(buf[:n])
			sseMu.Unlock()
			if err != nil {
				return
			}
		}
	}()

	// Hire: alpha through the CLI, beta (to be terminated) through the API.
	manifestDir := filepath.Join(root, "manifests")
	os.MkdirAll(manifestDir, 0o700)
	alphaFile := filepath.Join(manifestDir, "alpha.yaml")
	os.WriteFile(alphaFile, fmt.Appendf(nil, secretManifest, "alpha", warehouse), 0o600)
	out, idx := c.cliPlace("hire alpha", cliEnv(adminEnv...), "", "hire", alphaFile)
	m := regexp.MustCompile(`ARX_AGENT_ID=(\S+)\nexport ARX_TOKEN=(\S+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("arx hire printed no token: %d bytes", len(out))
	}
	alphaID, alpha := m[1], m[2]
	c.secret("agent token", "agent alpha token", alpha, 5)
	c.allow(idx, "agent alpha token")
	r := c.do("hire beta", "POST", base+"/v1/agents", secretHeaders("Authorization", "Bearer "+admin),
		map[string]string{"manifest": fmt.Sprintf(secretManifest, "beta", "")})
	var hired struct {
		Agent struct{ ID string } `json:"agent"`
		Token string              `json:"token"`
	}
	r.json(t, 201, &hired)
	beta := hired.Token
	c.secret("agent token", "agent beta token (terminated later)", beta, 5)
	c.allow(r.place, "agent beta token (terminated later)")

	// arx run: the agent's process gets a token of its own, never the
	// operator's.
	envDump := filepath.Join(root, "agent.env")
	c.cli("run alpha", cliEnv(adminEnv...), "", "run", "alpha", "--", "sh", "-c", "env > "+envDump)
	envB, err := os.ReadFile(envDump)
	if err != nil {
		t.Fatal(err)
	}
	if mm := regexp.MustCompile(`(?m)^ARX_TOKEN=(\S+)$`).FindSubmatch(envB); mm == nil {
		t.Fatal("arx run gave the agent no ARX_TOKEN")
	} else {
		c.secret("agent token", "agent alpha run token (revoked on exit)", string(mm[1]), 5)
		c.placeAllow("agent process environment (arx run)", envB, "agent alpha run token (revoked on exit)")
	}

	// People: dana by link (console setup), lee by password on stdin and
	// arx login, sam by a link that is reset and never used.
	out, idx = c.cliPlace("users add dana", cliEnv(adminEnv...), "", "users", "add", "dana@example.com", "--role", "manager", "--show-link")
	danaLink := regexp.MustCompile(`https?://\S+/console/setup\?token=\S+`).FindString(out)
	if danaLink == "" {
		t.Fatalf("arx users add printed no link")
	}
	lu, _ := url.Parse(danaLink)
	danaSetup := lu.Query().Get("token")
	c.secret("setup link", "dana setup token", danaSetup, 0)
	c.allow(idx, "dana setup token")
	_, idx = c.cliPlace("users add sam", cliEnv(adminEnv...), "", "users", "add", "sam@example.com", "--show-link")
	samSetup := c.secretLinkFrom(idx, "sam setup token")
	_, idx = c.cliPlace("users reset sam", cliEnv(adminEnv...), "", "users", "reset", "sam@example.com", "--show-link")
	c.secretLinkFrom(idx, "sam reset token")
	_ = samSetup

	danaPW := "pw-dana-" + secretRandom(18)
	leePW := "pw-lee-" + secretRandom(18)
	c.secret("password", "dana password", danaPW, 0)
	c.secret("password", "lee password", leePW, 0)
	c.cli("users add lee", cliEnv(adminEnv...), leePW+"\n", "users", "add", "lee@example.com", "--password-stdin")
	c.cli("login lee", cliEnv(), leePW+"\n", "login", "--email", "lee@example.com", "--password-stdin")
	credFile := filepath.Join(cliHome, ".config", "arx", "credentials.json")
	if b, err := os.ReadFile(credFile); err != nil {
		t.Fatalf("arx login stored no token: %v", err)
	} else {
		var stored map[string]string
		json.Unmarshal(b, &stored)
		c.secret("person token", "lee CLI token (arx login)", stored[base], 5)
	}

	// dana sets her password in the console: the setup page, then the form.
	jar := &secretJar{}
	r = c.do("console setup page", "GET", base+"/console/setup?token="+url.QueryEscape(danaSetup), nil, nil)
	c.allow(r.place, "dana setup token")
	loginCSRF := jar.take(t, r, "arx_login")
	c.secret("CSRF token", "login form CSRF (setup)", loginCSRF, 0)
	c.allow(r.place, "login form CSRF (setup)")
	form := url.Values{"token": {danaSetup}, "password": {danaPW}, "confirm": {danaPW}, "csrf": {loginCSRF}}
	r = c.do("console setup post", "POST", base+"/console/setup", jar.headers(base, "Content-Type", "application/x-www-form-urlencoded"), form.Encode())
	if r.status != http.StatusSeeOther {
		t.Fatalf("console setup: %d", r.status)
	}
	session1 := jar.take(t, r, "arx_session")
	c.secret("session cookie", "dana session (setup)", session1, 5)
	c.allow(r.place, "dana session (setup)")

	// dana signs in again: the login page, a wrong password, the right one.
	jar = &secretJar{}
	r = c.do("console login page", "GET", base+"/console/login", nil, nil)
	loginCSRF2 := jar.take(t, r, "arx_login")
	c.secret("CSRF token", "login form CSRF (login)", loginCSRF2, 0)
	c.allow(r.place, "login form CSRF (login)")
	wrongPW := "pw-guess-" + secretRandom(18)
	c.secret("guessed password", "attacker's console password guess", wrongPW, 0)
	form = url.Values{"email": {"dana@example.com"}, "password": {wrongPW}, "csrf": {loginCSRF2}}
	r = c.do("console login wrong password", "POST", base+"/console/login", jar.headers(base, "Content-Type", "application/x-www-form-urlencoded"), form.Encode())
	c.allow(r.place, "login form CSRF (login)")
	if r.status != http.StatusUnauthorized {
		t.Fatalf("console login with a wrong password: %d", r.status)
	}
	form.Set("password", danaPW)
	r = c.do("console login", "POST", base+"/console/login", jar.headers(base, "Content-Type", "application/x-www-form-urlencoded"), form.Encode())
	if r.status != http.StatusSeeOther {
		t.Fatalf("console login: %d", r.status)
	}
	session := jar.take(t, r, "arx_session")
	c.secret("session cookie", "dana session (login)", session, 5)
	c.allow(r.place, "dana session (login)")

	// API login failures: a wrong password for a real person, an unknown
	// email, a guessed setup token.
	wrongPW2 := "pw-guess2-" + secretRandom(18)
	c.secret("guessed password", "attacker's API password guess", wrongPW2, 0)
	r = c.do("api login wrong password", "POST", base+"/v1/auth/tokens", nil, map[string]string{"email": "lee@example.com", "password": wrongPW2, "label": "x"})
	r.wantStatus(t, 401)
	r = c.do("api login unknown email", "POST", base+"/v1/auth/tokens", nil, map[string]string{"email": "nobody@example.com", "password": wrongPW2, "label": "x"})
	r.wantStatus(t, 401)
	guessSetup := secretRandom(32)
	c.secret("guessed setup token", "attacker's setup token guess", guessSetup, 0)
	r = c.do("api setup guessed token", "POST", base+"/v1/auth/setup", nil, map[string]string{"token": guessSetup, "password": wrongPW2})
	r.wantError(t)

	// Governed calls of alpha.
	agentH := secretHeaders("Authorization", "Bearer "+alpha)
	newCall := func(name, action, risk, key string) (string, string, secretResp) {
		r := c.do(name, "POST", base+"/v1/calls", agentH, map[string]string{"connector": "crm", "action": action, "risk": risk, "idempotency_key": key})
		var call secretCallJSON
		json.Unmarshal(r.body, &call)
		if call.Credential.Token != "" {
			c.secret("per-call credential", "credential of "+name, call.Credential.Token, -1)
			c.allow(r.place, "credential of "+name)
		}
		return call.ID, call.Credential.Token, r
	}
	gw := func(name, method, path, cred string, body any, extra ...string) secretResp {
		h := append(secretHeaders("Authorization", "Bearer "+cred), extra...)
		return c.do(name, method, base+"/v1/gateway/"+path, h, body)
	}
	complete := func(name, id string) {
		r := c.do(name, "POST", base+"/v1/calls/"+id+"/complete", agentH, map[string]any{"outcome": "success", "duration_ms": 3})
		r.wantStatus(t, 200)
	}

	lowID, low, r := newCall("low-risk call", "account.read", "low", "low-1")
	r.wantStatus(t, 201)
	gw("gateway read", "GET", "crm/accounts/42", low, nil).wantStatus(t, 200)
	gw("gateway path not allowed", "GET", "crm/secrets/1", low, nil).wantError(t)
	gw("gateway method not allowed", "DELETE", "crm/accounts/42", low, nil).wantError(t)
	gw("gateway undeclared connector", "GET", "billing/invoices/1", low, nil).wantError(t)
	gw("gateway unknown connector", "GET", "nowhere/x", low, nil).wantError(t)
	gw("gateway traversal", "GET", "crm/accounts/%2e%2e/admin", low, nil).wantError(t)
	r = c.do("introspect live", "POST", base+"/v1/credentials/introspect", nil, map[string]string{"credential": low})
	r.wantStatus(t, 200)
	complete("complete low", lowID)
	gw("gateway after completion", "GET", "crm/accounts/42", low, nil).wantError(t)
	c.do("introspect closed", "POST", base+"/v1/credentials/introspect", nil, map[string]string{"credential": low}).wantStatus(t, 200)

	// Forged credentials: a tampered signature, alg none, HS256.
	parts := strings.Split(low, ".")
	forged := parts[0] + "." + parts[1] + "." + secretRandom(len(parts[2]))
	c.secret("forged credential", "tampered credential", forged, -1)
	none := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + parts[1] + "." + secretRandom(20)
	c.secret("forged credential", "alg-none credential", none, -1)
	gw("gateway forged", "GET", "crm/accounts/42", forged, nil).wantError(t)
	gw("gateway alg none", "GET", "crm/accounts/42", none, nil).wantError(t)
	c.do("introspect forged", "POST", base+"/v1/credentials/introspect", nil, map[string]string{"credential": forged}).wantStatus(t, 200)

	// An expired credential.
	quickID, quick, r := newCall("short call", "account.quick", "low", "quick-1")
	r.wantStatus(t, 201)
	time.Sleep(1200 * time.Millisecond)
	gw("gateway expired", "GET", "crm/accounts/7", quick, nil).wantError(t)
	_ = quickID

	// A high-risk call, approved by dana in the console.
	highID, _, r := newCall("high-risk call", "account.update", "high", "high-1")
	r.wantStatus(t, 202)
	ck := secretHeaders("Cookie", "arx_session="+session)
	r = c.do("console approval page", "GET", base+"/console/approvals/"+highID, ck, nil)
	r.wantStatus(t, 200)
	pageCSRF := secretCSRF(t, r.body)
	c.secret("CSRF token", "dana session CSRF", pageCSRF, 0)
	c.allow(r.place, "dana session CSRF")
	guessCSRF := secretRandom(32)
	c.secret("guessed CSRF token", "attacker's CSRF guess", guessCSRF, 0)
	form = url.Values{"csrf": {guessCSRF}, "decision": {"approve"}, "reason": {"ok"}}
	r = c.do("console decide with a guessed CSRF", "POST", base+"/console/approvals/"+highID+"/decide",
		append(slices.Clone(ck), "Origin", base, "Content-Type", "application/x-www-form-urlencoded"), form.Encode())
	c.allow(r.place, "dana session CSRF")
	if r.status < 400 {
		t.Fatalf("a guessed CSRF token decided: %d", r.status)
	}
	form.Set("csrf", pageCSRF)
	r = c.do("console decide", "POST", base+"/console/approvals/"+highID+"/decide",
		append(slices.Clone(ck), "Origin", base, "Content-Type", "application/x-www-form-urlencoded"), form.Encode())
	if r.status != http.StatusSeeOther {
		t.Fatalf("console decide: %d", r.status)
	}
	r = c.do("long poll approved call", "GET", base+"/v1/calls/"+highID+"?wait=10s", agentH, nil)
	var call secretCallJSON
	r.json(t, 200, &call)
	if call.Credential.Token == "" {
		t.Fatalf("approved call without a credential: %s", call.Status)
	}
	c.secret("per-call credential", "credential of the approved call", call.Credential.Token, -1)
	c.allow(r.place, "credential of the approved call")
	gw("gateway update", "PATCH", "crm/accounts/42", call.Credential.Token, map[string]string{"name": "Acme"}).wantStatus(t, 200)
	complete("complete high", highID)

	// A high-risk call denied by lee with the CLI and his stored token.
	denyID, _, r := newCall("denied call", "account.update", "high", "high-2")
	r.wantStatus(t, 202)
	c.cli("approvals list (lee)", cliEnv(), "", "approvals", "list")
	c.cli("approvals deny (lee)", cliEnv(), "", "approvals", "deny", denyID, "--reason", "not today")
	r = c.do("long poll denied call", "GET", base+"/v1/calls/"+denyID+"?wait=5s", agentH, nil)
	r.json(t, 200, &call)
	if call.Status != "denied" {
		t.Fatalf("denied call is %s", call.Status)
	}

	// The PostgreSQL connector: a role made for one call.
	if pg != nil {
		r = c.do("postgres call", "POST", base+"/v1/calls", agentH, map[string]string{"connector": "warehouse", "action": "orders.query", "idempotency_key": "pg-1"})
		var pc secretCallJSON
		r.json(t, 201, &pc)
		c.secret("per-call credential", "credential of the postgres call", pc.Credential.Token, -1)
		c.allow(r.place, "credential of the postgres call")
		du, err := url.Parse(pc.Credential.DSN)
		if err != nil || du.User == nil {
			t.Fatalf("postgres call without a DSN")
		}
		rolePW, _ := du.User.Password()
		c.secret("per-call credential", "per-call database password", rolePW, 0)
		c.allow(r.place, "per-call database password")
		conn, err := pgx.Connect(t.Context(), pc.Credential.DSN)
		if err != nil {
			t.Fatalf("per-call role cannot connect: %v", err)
		}
		var n int
		if err := conn.QueryRow(t.Context(), "SELECT count(*) FROM orders").Scan(&n); err != nil || n != 2 {
			t.Fatalf("per-call role: %d %v", n, err)
		}
		conn.Close(t.Context())
		complete("complete postgres", pc.ID)
	}

	// Refusals and bad input, with real tokens in odd places and an
	// attacker's guesses.
	c.do("undeclared connector", "POST", base+"/v1/calls", agentH, map[string]string{"connector": "billing", "action": "invoice.read", "idempotency_key": "u-1"}).wantError(t)
	gw("gateway with the agent token", "GET", "crm/accounts/42", alpha, nil).wantError(t)
	c.do("token in query", "GET", base+"/v1/agents?access_token="+url.QueryEscape(admin)+"&token="+url.QueryEscape(alpha), nil, nil).wantError(t)
	c.do("gateway credential in query", "GET", base+"/v1/gateway/crm/accounts/1?access_token="+url.QueryEscape(low), nil, nil).wantError(t)
	c.do("token in X-Api-Key", "POST", base+"/v1/calls", secretHeaders("X-Api-Key", alpha), map[string]string{"connector": "crm", "action": "account.read", "idempotency_key": "q"}).wantError(t)
	c.do("token without Bearer", "GET", base+"/v1/agents", secretHeaders("Authorization", admin), nil).wantError(t)
	c.do("token as Basic", "GET", base+"/v1/agents", secretHeaders("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte("x:"+admin))), nil).wantError(t)
	c.do("agent token on the operator side", "GET", base+"/v1/agents", agentH, nil).wantError(t)
	c.do("token as session cookie", "GET", base+"/console/", secretHeaders("Cookie", "arx_session="+alpha), nil)
	c.do("token in JSON body", "POST", base+"/v1/calls", agentH, map[string]string{"connector": "crm", "action": "account.read", "idempotency_key": "b", "token": admin}).wantError(t)
	c.do("malformed JSON with a token", "POST", base+"/v1/calls", agentH, `{"connector": "crm", "action": `+admin).wantError(t)
	adminH := secretHeaders("Authorization", "Bearer "+admin)
	c.do("token in an agent path", "GET", base+"/v1/agents/"+alpha, adminH, nil).wantError(t)
	c.do("token in an unknown path", "GET", base+"/v1/nothing/"+alpha, adminH, nil).wantError(t)
	c.do("token in a token path", "DELETE", base+"/v1/agents/"+alphaID+"/tokens/"+alpha, adminH, nil).wantError(t)
	c.do("token in a console path", "GET", base+"/console/agents/"+alpha, ck, nil)
	c.allow(c.last(), "dana session CSRF")
	for i, g := range []struct{ prefix, method, path string }{
		{"arxa_", "POST", "/v1/calls"},
		{"arxk_", "GET", "/v1/agents"},
		{"arxu_", "GET", "/v1/approvals"},
		{"arxa_", "GET", "/v1/agent/status"},
	} {
		guess := g.prefix + secretRandom(32)
		name := fmt.Sprintf("attacker's guessed token %d", i)
		c.secret("guessed token", name, guess, 5)
		c.do("guessed token "+fmt.Sprint(i), g.method, base+g.path, secretHeaders("Authorization", "Bearer "+guess), map[string]string{}).wantError(t)
	}
	guessCookie := "arxc_" + secretRandom(32)
	c.secret("guessed token", "attacker's guessed session cookie", guessCookie, 5)
	c.do("guessed session cookie", "GET", base+"/console/approvals", secretHeaders("Cookie", "arx_session="+guessCookie), nil)
	c.do("guessed session cookie on events", "GET", base+"/console/events", secretHeaders("Cookie", "arx_session="+guessCookie), nil)
	long := "arxa_" + secretRandom(3000)
	c.secret("guessed token", "attacker's oversized token", long, 5)
	c.do("oversized token", "POST", base+"/v1/calls", secretHeaders("Authorization", "Bearer "+long), map[string]string{}).wantError(t)

	// beta holds a live credential when it is terminated.
	r = c.do("beta call", "POST", base+"/v1/calls", secretHeaders("Authorization", "Bearer "+beta),
		map[string]string{"connector": "crm", "action": "account.read", "idempotency_key": "b-1"})
	var bc secretCallJSON
	r.json(t, 201, &bc)
	c.secret("per-call credential", "credential of beta's open call", bc.Credential.Token, -1)
	c.allow(r.place, "credential of beta's open call")
	c.cli("terminate beta", cliEnv(adminEnv...), "", "terminate", hired.Agent.ID, "--reason", "secrets campaign")
	gw("gateway after termination", "GET", "crm/accounts/1", bc.Credential.Token, nil).wantError(t)
	c.do("terminated agent calls", "POST", base+"/v1/calls", secretHeaders("Authorization", "Bearer "+beta),
		map[string]string{"connector": "crm", "action": "account.read", "idempotency_key": "b-2"}).wantError(t)

	// Operator views.
	c.cli("agents", cliEnv(adminEnv...), "", "agents")
	c.cli("connectors list", cliEnv(adminEnv...), "", "connectors", "list")
	c.cli("users list", cliEnv(adminEnv...), "", "users", "list")
	c.cli("record show alpha", cliEnv(adminEnv...), "", "record", "show", alphaID)
	c.cli("record show alpha json", cliEnv(adminEnv...), "", "record", "show", alphaID, "--json")
	c.cli("record show beta", cliEnv(adminEnv...), "", "record", "show", hired.Agent.ID)
	c.cli("record verify", cliEnv(adminEnv...), "", "record", "verify", "--log-key", filepath.Join(dataDir, "log.pub"))
	c.do("metrics", "GET", base+"/metrics", nil, nil).wantStatus(t, 200)
	c.do("connectors api", "GET", base+"/v1/connectors", secretHeaders("Authorization", "Bearer "+admin), nil).wantStatus(t, 200)
	c.do("log entries", "GET", base+"/v1/log/entries?start=0&limit=5000", secretHeaders("Authorization", "Bearer "+admin), nil).wantStatus(t, 200)
	c.do("console dashboard", "GET", base+"/console/", ck, nil).wantStatus(t, 200)
	c.allow(c.last(), "dana session CSRF")
	c.do("console record", "GET", base+"/console/agents/"+alphaID+"/record", ck, nil).wantStatus(t, 200)
	c.allow(c.last(), "dana session CSRF")

	// Webhooks: each endpoint got its first delivery cut off, then
	// deliveries after the retry.
	deadline := time.Now().Add(12 * time.Second)
	for {
		hookMu.Lock()
		okHook, okSlack := hookCalls["/hooks/"+hookSecret] >= 2, hookCalls["/slack/"+slackSecret] >= 2
		hookMu.Unlock()
		if okHook && okSlack {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("webhooks were not retried after a failed delivery: %v %v", okHook, okSlack)
		}
		time.Sleep(200 * time.Millisecond)
	}

	// The bucket, checked by the auditor's verb once a cosigned
	// checkpoint covers the log.
	var auditErr error
	for deadline := time.Now().Add(15 * time.Second); ; {
		_, auditErr = c.cliErr("audit verify", cliEnv(), "", "audit", "verify", "--bucket", "file://"+bucketDir,
			"--log-key", filepath.Join(dataDir, "log.pub"), "--witness-key", filepath.Join(witnessDir, "witness.pub"))
		if auditErr == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Second)
	}
	if auditErr != nil {
		t.Errorf("arx audit verify did not pass: %v", auditErr)
	}

	upMu.Lock()
	if upGood < 2 || upBad > 0 || billingHits > 0 {
		t.Errorf("upstream: %d requests with the real secret, %d without, %d reached billing", upGood, upBad, billingHits)
	}
	c.placeAllow("crm upstream (what it received)", slices.Clone(upSeen.Bytes()), "crm upstream secret")
	upMu.Unlock()
	hookMu.Lock()
	c.placeAllow("webhook endpoint (what it received)", slices.Clone(hookSeen.Bytes()))
	hookMu.Unlock()

	// The data directory while the server runs (the WAL is still there).
	c.scanDir("data dir (running)", dataDir)
	sseCancel()
	<-sseDone
	sseMu.Lock()
	c.placeAllow("GET /v1/events stream", slices.Clone(sseBuf.Bytes()))
	sseMu.Unlock()

	p.stop(t)
	stopped = true
	wit.stop()
	c.scanDir("data dir (stopped)", dataDir)
	c.scanDir("bucket", bucketDir)
	c.scanDir("witness dir", witnessDir)
	c.placeAllow("witness stdout+stderr", wit.output())

	// The server's log: only its first-start banner may show the admin
	// token, once, to whoever started it.
	log := []byte(p.logText())
	banner := regexp.MustCompile(`(?m)^\s*export ARX_ADMIN_TOKEN=\S+$`)
	locs := banner.FindAllIndex(log, -1)
	if len(locs) != 1 {
		t.Errorf("the admin token banner appears %d times in the server's log", len(locs))
	}
	for _, l := range locs {
		for i := l[0]; i < l[1]; i++ {
			log[i] = ' '
		}
	}
	if !bytes.Contains(log, []byte(`"msg":"arx serving"`)) {
		t.Errorf("the server's log is empty")
	}
	c.placeAllow("arx serve log (stderr, --log-level debug)", log)

	c.scan()
}

// secretManifest is the job description of the campaign's agents:
// %s name, %s more connectors.
const secretManifest = `apiVersion: arx.dev/v1
kind: JobDescription
agent:
  name: %s
  owner: owner@example.com
scope:
  connectors:
    crm:
      actions:
        account.read: {risk: low}
        account.quick: {risk: low, max_duration: 1s}
        account.update: {risk: high}
%sapproval:
  approvers: [dana@example.com, lee@example.com]
  timeout: 5m
  on_timeout: deny
budget:
  max_call_duration: 5m
termination:
  notify: [owner@example.com]
`

type secretCallJSON struct {
	ID         string `json:"id"`
	Status     string `json:"status"`
	Credential struct {
		Token string `json:"token"`
		DSN   string `json:"dsn"`
	} `json:"credential"`
}

// secretItem is one secret the campaign was given or handed out.
type secretItem struct {
	kind, name string
	value      []byte
	// pub is the length of a public prefix (arxa_, ...); prefix checks
	// start after it. -1: a JWS, whose signature is the distinctive part.
	pub int
}

// secretPlace is one thing scanned: a log, a file, an answer, an output.
type secretPlace struct {
	name string
	data []byte
}

type secretCampaign struct {
	t       *testing.T
	mu      sync.Mutex
	secrets []secretItem
	places  []secretPlace
	allowIn map[int]map[string]bool // place index -> secrets it may hold (where they are handed out)
}

func (c *secretCampaign) secret(kind, name, value string, pub int) {
	c.t.Helper()
	if len(value) < 12 {
		c.t.Fatalf("secret %s is too short to search for (%d bytes)", name, len(value))
	}
	c.secrets = append(c.secrets, secretItem{kind: kind, name: name, value: []byte(value), pub: pub})
}

// secretNoteKey adds a note signer key (PRIVATE+KEY+name+hash+key) and its
// key material alone.
func (c *secretCampaign) secretNoteKey(kind, skey string) {
	f := strings.SplitN(skey, "+", 5) // PRIVATE, KEY, name, hash, key (whose base64 may hold a "+")
	if len(f) != 5 {
		c.t.Fatalf("%s is not a note signer key", kind)
	}
	material := f[4]
	c.secret(kind, kind+" (whole)", skey, len(skey)-len(material))
	c.secret(kind, kind+" (key material)", material, 0)
	if raw, err := base64.StdEncoding.DecodeString(material); err == nil && len(raw) > 1 {
		c.secrets = append(c.secrets, secretItem{kind: kind, name: kind + " (raw bytes)", value: raw[1:]})
	}
}

// secretPEMKey adds an Ed25519 PKCS #8 key file's body and its seed.
func (c *secretCampaign) secretPEMKey(kind, path string) {
	c.t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		c.t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		c.t.Fatalf("%s is not PEM", path)
	}
	c.secrets = append(c.secrets, secretItem{kind: kind, name: kind + " (PKCS #8)", value: blk.Bytes})
	if k, err := x509.ParsePKCS8PrivateKey(blk.Bytes); err == nil {
		if ek, ok := k.(ed25519.PrivateKey); ok {
			c.secrets = append(c.secrets, secretItem{kind: kind, name: kind + " (seed)", value: ek.Seed()})
		}
	}
}

// secretLinkFrom takes the setup link a CLI output (place idx) prints,
// adds its token as a secret, and allows it there.
func (c *secretCampaign) secretLinkFrom(idx int, name string) string {
	c.t.Helper()
	link := regexp.MustCompile(`https?://\S+/console/setup\?token=\S+`).Find(c.places[idx].data)
	u, err := url.Parse(string(link))
	if link == nil || err != nil || u.Query().Get("token") == "" {
		c.t.Fatalf("%s: no setup link printed", c.places[idx].name)
	}
	tok := u.Query().Get("token")
	c.secret("setup link", name, tok, 0)
	c.allow(idx, name)
	return tok
}

func (c *secretCampaign) placeAllow(name string, data []byte, allow ...string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.places = append(c.places, secretPlace{name: name, data: data})
	i := len(c.places) - 1
	for _, a := range allow {
		if c.allowIn[i] == nil {
			c.allowIn[i] = map[string]bool{}
		}
		c.allowIn[i][a] = true
	}
	return i
}

func (c *secretCampaign) allow(idx int, name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.allowIn[idx] == nil {
		c.allowIn[idx] = map[string]bool{}
	}
	c.allowIn[idx][name] = true
}

func (c *secretCampaign) last() int { return len(c.places) - 1 }

// scanDir adds every file under dir, except the private key files, which
// are where those keys belong (and the admin token's file, which is where
// the operator picks it up).
func (c *secretCampaign) scanDir(label, dir string) {
	c.t.Helper()
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		switch d.Name() {
		case "log.key", "credential.key", "witness.key":
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if d.Name() == "admin.token" {
			c.placeAllow(label+" "+rel, b, "operator admin token")
			return nil
		}
		c.placeAllow(label+" "+rel, b)
		return nil
	})
	if err != nil {
		c.t.Fatal(err)
	}
}

// secretResp is an HTTP answer kept as a place.
type secretResp struct {
	name   string
	status int
	header http.Header
	body   []byte
	place  int
}

func (r secretResp) wantStatus(t *testing.T, status int) {
	t.Helper()
	if r.status != status {
		t.Fatalf("%s: status %d, want %d (%s)", r.name, r.status, status, secretCode(r.body))
	}
}

// wantError checks the answer is an error in the API's shape.
func (r secretResp) wantError(t *testing.T) {
	t.Helper()
	var eb struct {
		Error struct{ Code string } `json:"error"`
	}
	if r.status < 400 || json.Unmarshal(r.body, &eb) != nil || eb.Error.Code == "" {
		t.Fatalf("%s: want an error answer, got %d", r.name, r.status)
	}
}

func (r secretResp) json(t *testing.T, status int, v any) {
	t.Helper()
	r.wantStatus(t, status)
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("%s: %v", r.name, err)
	}
}

var secretClient = &http.Client{Timeout: 20 * time.Second,
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

func secretHeaders(kv ...string) []string { return kv }

// do sends one request (body: nil, a string sent as is, or a value sent as
// JSON) and keeps its answer, status line, headers and body, as a place.
func (c *secretCampaign) do(name, method, u string, headers []string, body any) secretResp {
	c.t.Helper()
	var rd io.Reader
	ct := ""
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
		ct = "application/json"
	default:
		j, _ := json.Marshal(b)
		rd = bytes.NewReader(j)
		ct = "application/json"
	}
	req, err := http.NewRequestWithContext(c.t.Context(), method, u, rd)
	if err != nil {
		c.t.Fatal(err)
	}
	if ct != "" {
		req.Header.Set("Content-Type", ct)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := secretClient.Do(req)
	if err != nil {
		c.t.Fatalf("%s: %v", name, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var dump bytes.Buffer
	fmt.Fprintf(&dump, "HTTP %d\n", resp.StatusCode)
	resp.Header.Write(&dump)
	dump.WriteString("\n")
	dump.Write(b)
	i := c.placeAllow("answer to "+name, dump.Bytes())
	return secretResp{name: name, status: resp.StatusCode, header: resp.Header, body: b, place: i}
}

// cli runs an arx verb, keeps its output as places, and fails the test
// when it fails; it returns its standard output.
func (c *secretCampaign) cli(name string, env []string, stdin string, args ...string) string {
	c.t.Helper()
	out, err := c.cliErr(name, env, stdin, args...)
	if err != nil {
		c.t.Fatalf("arx %s: %v", name, err)
	}
	return out
}

// cliPlace is cli, also returning the place of its standard output.
func (c *secretCampaign) cliPlace(name string, env []string, stdin string, args ...string) (string, int) {
	c.t.Helper()
	out := c.cli(name, env, stdin, args...)
	return out, c.last() - 1
}

func (c *secretCampaign) cliErr(name string, env []string, stdin string, args ...string) (string, error) {
	c.t.Helper()
	cmd := exec.CommandContext(c.t.Context(), arxBinary(c.t), args...)
	cmd.Env = append(secretBaseEnv(), env...)
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	c.placeAllow("arx "+name+" stdout", stdout.Bytes())
	c.placeAllow("arx "+name+" stderr", stderr.Bytes())
	if err != nil {
		// The output is not printed: it may hold what the scan looks for.
		return stdout.String(), fmt.Errorf("%v (%d bytes of stderr)", err, stderr.Len())
	}
	return stdout.String(), nil
}

// secretBaseEnv is the test's environment without ARX's variables and the
// campaign's secrets, so each verb gets only what the scenario gives it.
func secretBaseEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "ARX_") && !strings.HasPrefix(kv, "HOME=") && !strings.HasPrefix(kv, "XDG_CONFIG_HOME=") {
			env = append(env, kv)
		}
	}
	return env
}

// secretJar keeps the cookies one browser would.
type secretJar struct{ cookies map[string]string }

// take reads a cookie set by an answer, and keeps it.
func (j *secretJar) take(t *testing.T, r secretResp, name string) string {
	t.Helper()
	for _, ck := range (&http.Response{Header: r.header}).Cookies() {
		if ck.Name == name && ck.Value != "" {
			if j.cookies == nil {
				j.cookies = map[string]string{}
			}
			j.cookies[name] = ck.Value
			return ck.Value
		}
	}
	t.Fatalf("%s: no %s cookie (status %d)", r.name, name, r.status)
	return ""
}

// headers are a same-origin form post's headers with the jar's cookies.
func (j *secretJar) headers(origin string, kv ...string) []string {
	var cks []string
	for k, v := range j.cookies {
		cks = append(cks, k+"="+v)
	}
	slices.Sort(cks)
	return append([]string{"Origin", origin, "Cookie", strings.Join(cks, "; ")}, kv...)
}

// secretCode is an error answer's code, all a failure message shows of
// an answer (its body may hold a secret).
func secretCode(body []byte) string {
	var eb struct {
		Error struct{ Code string } `json:"error"`
	}
	json.Unmarshal(body, &eb)
	return eb.Error.Code
}

var secretCSRFRE = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

func secretCSRF(t *testing.T, page []byte) string {
	t.Helper()
	m := secretCSRFRE.FindSubmatch(page)
	if m == nil {
		t.Fatal("no CSRF token on the console page")
	}
	return string(m[1])
}

func secretRandom(n int) string {
	b := make([]byte, (n*3+3)/4)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)[:n]
}

// secretWitness is a running arx witness serve.
type secretWitness struct {
	cmd  *exec.Cmd
	url  string
	mu   sync.Mutex
	out  bytes.Buffer
	once sync.Once
}

func secretStartWitness(t *testing.T, dir, logVKey string) *secretWitness {
	t.Helper()
	w := &secretWitness{}
	w.cmd = exec.Command(arxBinary(t), "witness", "serve", "--listen", "127.0.0.1:0", "--key", filepath.Join(dir, "witness.key"),
		"--state", filepath.Join(dir, "state"), "--log", logVKey, "--log-format", "json", "--log-level", "debug")
	w.cmd.Env = secretBaseEnv()
	stdout, err := w.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	w.cmd.Stderr = &secretLockedWriter{mu: &w.mu, w: &w.out}
	if err := w.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	urls := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			line := sc.Text()
			w.mu.Lock()
			w.out.WriteString(line + "\n")
			w.mu.Unlock()
			if m := regexp.MustCompile(`listening on (http://\S+)`).FindStringSubmatch(line); m != nil {
				select {
				case urls <- m[1]:
				default:
				}
			}
		}
	}()
	select {
	case w.url = <-urls:
	case <-time.After(20 * time.Second):
		w.cmd.Process.Kill()
		t.Fatal("arx witness serve did not start")
	}
	if _, _, err := net.SplitHostPort(strings.TrimPrefix(w.url, "http://")); err != nil {
		t.Fatalf("witness URL %q: %v", w.url, err)
	}
	return w
}

func (w *secretWitness) stop() {
	w.once.Do(func() {
		w.cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { w.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			w.cmd.Process.Kill()
			<-done
		}
	})
}

func (w *secretWitness) output() []byte {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.out.Bytes())
}

type secretLockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l *secretLockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// secretForm is one way a secret may be written.
type secretForm struct {
	label string
	b     []byte
}

// secretForms are the secret raw and in its obvious encodings, and, for a
// token, the first 16 characters after its public prefix (a truncated
// leak), raw and hex.
func secretForms(s secretItem) []secretForm {
	var forms []secretForm
	seen := map[string]bool{}
	add := func(label string, b []byte) {
		if len(b) < 8 || seen[string(b)] {
			return
		}
		seen[string(b)] = true
		forms = append(forms, secretForm{label, b})
	}
	v := s.value
	add("raw", v)
	add("base64", []byte(base64.StdEncoding.EncodeToString(v)))
	add("base64 unpadded", []byte(base64.RawStdEncoding.EncodeToString(v)))
	add("base64url", []byte(base64.URLEncoding.EncodeToString(v)))
	add("base64url unpadded", []byte(base64.RawURLEncoding.EncodeToString(v)))
	add("hex", []byte(hex.EncodeToString(v)))
	add("HEX", []byte(strings.ToUpper(hex.EncodeToString(v))))
	add("URL-escaped", []byte(url.QueryEscape(string(v))))
	add("path-escaped", []byte(url.PathEscape(string(v))))
	j, _ := json.Marshal(string(v))
	add("JSON-escaped", j[1:len(j)-1])
	var jb bytes.Buffer
	enc := json.NewEncoder(&jb)
	enc.SetEscapeHTML(false)
	enc.Encode(string(v))
	add("JSON-escaped", bytes.TrimSuffix(bytes.TrimSuffix(jb.Bytes(), []byte("\n")), []byte(`"`))[1:])
	// A truncated leak: a prefix of the distinctive part.
	d := v
	switch {
	case s.pub < 0:
		if i := bytes.LastIndexByte(v, '.'); i >= 0 {
			d = v[i+1:]
			add("signature", d)
		}
	case s.pub > 0 && s.pub < len(v):
		d = v[s.pub:]
	}
	if len(d) >= 16 && len(d) > 16 {
		p := d[:16]
		add("16-byte prefix", p)
		add("16-byte prefix, hex", []byte(hex.EncodeToString(p)))
		add("15-byte prefix, base64", []byte(base64.StdEncoding.EncodeToString(p[:15])))
		add("15-byte prefix, base64url", []byte(base64.URLEncoding.EncodeToString(p[:15])))
		if s.pub > 0 {
			add("public prefix and 16 bytes", v[:s.pub+16])
		}
	}
	return forms
}

// scan looks for every form of every secret in every place, except where
// the secret is handed out, and fails naming the kind, the place and the
// offset, never the secret.
func (c *secretCampaign) scan() {
	c.t.Helper()
	kinds := map[string]bool{}
	var scanned int64
	leaks := 0
	formsOf := make([][]secretForm, len(c.secrets))
	for i, s := range c.secrets {
		kinds[s.kind] = true
		formsOf[i] = secretForms(s)
	}
	for pi, p := range c.places {
		scanned += int64(len(p.data))
		for si, s := range c.secrets {
			if c.allowIn[pi][s.name] {
				continue
			}
			for _, f := range formsOf[si] {
				if off := bytes.Index(p.data, f.b); off >= 0 {
					leaks++
					c.t.Errorf("LEAK: %s %q (%s form) in %s at byte %d", s.kind, s.name, f.label, p.name, off)
					break
				}
			}
		}
	}
	// Self-check: a secret handed out somewhere is found there, so the
	// search works on real data.
	for si, s := range c.secrets {
		handed, found := false, false
		for pi := range c.places {
			if !c.allowIn[pi][s.name] {
				continue
			}
			handed = true
			for _, f := range formsOf[si] {
				found = found || bytes.Contains(c.places[pi].data, f.b)
			}
		}
		if handed && !found {
			c.t.Errorf("scan self-check: %s %q is not found where it was handed out", s.kind, s.name)
		}
	}
	c.t.Logf("CAMPAIGN secrets kinds=%d secrets=%d places_scanned=%d bytes_scanned=%d leaks=%d",
		len(kinds), len(c.secrets), len(c.places), scanned, leaks)
}
