package api_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/arxsec/arx/credential"
	"github.com/arxsec/arx/internal/api"
	"github.com/arxsec/arx/internal/arxtest"
	"github.com/arxsec/arx/internal/server"
	"github.com/arxsec/arx/record"
)

type callJSON struct {
	ID         string `json:"id"`
	Status     string `json:"status"`
	Risk       string `json:"risk"`
	Credential *struct {
		Token     string    `json:"token"`
		ExpiresAt time.Time `json:"expires_at"`
	} `json:"credential"`
}

func request(s *arxtest.Server, token, connector, action, risk, key string) *arxtest.Response {
	return s.Do("POST", "/v1/calls", token, map[string]string{"connector": connector, "action": action, "risk": risk, "idempotency_key": key})
}

func introspect(t *testing.T, s *arxtest.Server, cred string) (active bool, code string) {
	t.Helper()
	r := s.Do("POST", "/v1/credentials/introspect", "", map[string]string{"credential": cred})
	if r.Status != 200 {
		t.Fatalf("introspect: %d %s", r.Status, r.Body)
	}
	var out struct {
		Active bool   `json:"active"`
		Code   string `json:"code"`
	}
	r.JSON(t, &out)
	return out.Active, out.Code
}

// entries returns the agent's record entries, parsed, paging through.
func entries(t *testing.T, s *arxtest.Server, agent string) []*record.Entry {
	t.Helper()
	var out []*record.Entry
	after := int64(-1)
	for {
		r := s.Do("GET", fmt.Sprintf("/v1/agents/%s/record?limit=1000&after=%d", agent, after), s.AdminToken, nil)
		if r.Status != 200 {
			t.Fatalf("record: %d %s", r.Status, r.Body)
		}
		var page struct {
			Entries []struct {
				Entry json.RawMessage `json:"entry"`
			} `json:"entries"`
			Next *int64 `json:"next"`
		}
		r.JSON(t, &page)
		for _, e := range page.Entries {
			pe, err := record.Parse(e.Entry)
			if err != nil {
				t.Fatalf("entry %s: %v", e.Entry, err)
			}
			out = append(out, pe)
		}
		if page.Next == nil {
			return out
		}
		after = *page.Next
	}
}

func types(es []*record.Entry) string {
	var s []string
	for _, e := range es {
		s = append(s, e.Type)
	}
	return strings.Join(s, ",")
}

func TestGovernedCallLifecycle(t *testing.T) {
	s := arxtest.Start(t)
	agent, token := s.Hire(arxtest.Manifest)

	r := request(s, token, "crm", "account.read", "low", "k1")
	if r.Status != http.StatusCreated {
		t.Fatalf("request: %d %s", r.Status, r.Body)
	}
	var c callJSON
	r.JSON(t, &c)
	if c.Status != "approved" || c.Credential == nil || c.Credential.Token == "" {
		t.Fatalf("want an approved call with a credential, got %s", r.Body)
	}
	// The credential verifies with the published keys and is bound to the call.
	jwks := s.Do("GET", "/.well-known/jwks.json", "", nil)
	ks, err := credential.ParseKeySet(jwks.Body, s.Runtime.Origin())
	if err != nil {
		t.Fatal(err)
	}
	cl, err := ks.Verify(c.Credential.Token, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if cl.AgentID != agent || cl.CallID != c.ID || cl.Connector != "crm" || cl.Action != "account.read" {
		t.Fatalf("claims %+v do not bind agent, call, connector and action", cl)
	}
	if ttl := time.Until(cl.Expiry); ttl > time.Minute+time.Second {
		t.Fatalf("credential lives %v, longer than the manifest's max_call_duration", ttl)
	}
	if err := cl.Require("db", ""); err == nil {
		t.Fatal("credential accepted for another connector")
	}
	if ok, code := introspect(t, s, c.Credential.Token); !ok {
		t.Fatalf("live credential refused: %s", code)
	}

	r = s.Do("POST", "/v1/calls/"+c.ID+"/complete", token, map[string]any{"outcome": "success", "duration_ms": 5})
	if r.Status != 200 {
		t.Fatalf("complete: %d %s", r.Status, r.Body)
	}
	if ok, code := introspect(t, s, c.Credential.Token); ok || code != "credential.call_closed" {
		t.Fatalf("credential after completion: active=%v code=%s", ok, code)
	}
	// A retried completion is answered again; a contradicting one is refused.
	if r := s.Do("POST", "/v1/calls/"+c.ID+"/complete", token, map[string]any{"outcome": "success"}); r.Status != 200 {
		t.Fatalf("retried completion: %d %s", r.Status, r.Body)
	}
	if r := s.Do("POST", "/v1/calls/"+c.ID+"/complete", token, map[string]any{"outcome": "error"}); r.ErrorCode() != "call.closed" {
		t.Fatalf("contradicting completion: %d %s", r.Status, r.Body)
	}
	// The agent polling its completed call gets no credential.
	r = s.Do("GET", "/v1/calls/"+c.ID, token, nil)
	var again callJSON
	r.JSON(t, &again)
	if again.Status != "completed" || again.Credential != nil {
		t.Fatalf("completed call: %s", r.Body)
	}
	if got, want := types(entries(t, s, agent)), "agent.hired,credential.issued,call.completed"; got != want {
		t.Fatalf("record: %s, want %s", got, want)
	}
}

func TestRefusalIsRecorded(t *testing.T) {
	s := arxtest.Start(t)
	agent, token := s.Hire(arxtest.Manifest)
	r := request(s, token, "hubspot", "contact.read", "low", "k1")
	if r.Status != http.StatusForbidden || r.ErrorCode() != "manifest.connector_not_declared" {
		t.Fatalf("undeclared connector: %d %s", r.Status, r.Body)
	}
	if bytes.Contains(r.Body, []byte(`"credential"`)) {
		t.Fatal("a refusal carries a credential")
	}
	var body struct {
		Error struct {
			CallID string `json:"call_id"`
			Hint   string `json:"hint"`
		} `json:"error"`
	}
	r.JSON(t, &body)
	if body.Error.CallID == "" || body.Error.Hint == "" {
		t.Fatalf("refusal without call id or hint: %s", r.Body)
	}
	// Retrying the same request repeats the refusal without a second entry.
	if r := request(s, token, "hubspot", "contact.read", "low", "k1"); r.ErrorCode() != "manifest.connector_not_declared" {
		t.Fatalf("retried refusal: %d %s", r.Status, r.Body)
	}
	es := entries(t, s, agent)
	if got, want := types(es), "agent.hired,credential.refused"; got != want {
		t.Fatalf("record: %s, want %s", got, want)
	}
	if es[1].Call != body.Error.CallID || es[1].Connector != "hubspot" || es[1].Data["code"] != "manifest.connector_not_declared" {
		t.Fatalf("refusal entry: %+v", es[1])
	}
}

func TestIdempotencyKey(t *testing.T) {
	s := arxtest.Start(t)
	_, token := s.Hire(arxtest.Manifest)
	var a, b callJSON
	r1 := request(s, token, "crm", "account.read", "low", "same")
	r1.JSON(t, &a)
	r2 := request(s, token, "crm", "account.read", "low", "same")
	r2.JSON(t, &b)
	if r1.Status != 201 || r2.Status != 200 || a.ID != b.ID || a.Credential.Token != b.Credential.Token {
		t.Fatalf("retry made a second call: %d %s / %d %s", r1.Status, r1.Body, r2.Status, r2.Body)
	}
	if r := request(s, token, "crm", "account.export", "low", "same"); r.ErrorCode() != "request.conflict" {
		t.Fatalf("same key, other call: %d %s", r.Status, r.Body)
	}
}

func TestHighRiskWaitsWithoutCredential(t *testing.T) {
	s := arxtest.Start(t)
	agent, token := s.Hire(arxtest.Manifest)
	r := request(s, token, "crm", "account.delete", "low", "k1") // under-declared: the manifest says high
	var c callJSON
	r.JSON(t, &c)
	if r.Status != http.StatusAccepted || c.Status != "pending_approval" || c.Credential != nil || c.Risk != "high" {
		t.Fatalf("high-risk call: %d %s", r.Status, r.Body)
	}
	start := time.Now()
	r = s.Do("GET", "/v1/calls/"+c.ID+"?wait=300ms", token, nil)
	if time.Since(start) < 250*time.Millisecond || r.Status != 200 {
		t.Fatalf("long poll returned early: %d %s", r.Status, r.Body)
	}
	// Giving up withdraws the request.
	if r := s.Do("POST", "/v1/calls/"+c.ID+"/complete", token, map[string]any{"outcome": "cancelled"}); r.Status != 200 {
		t.Fatalf("withdraw: %d %s", r.Status, r.Body)
	}
	if got, want := types(entries(t, s, agent)), "agent.hired,drift.detected,call.requested,approval.requested,approval.withdrawn"; got != want {
		t.Fatalf("record: %s, want %s", got, want)
	}
}

func TestCredentialDiesWithTTL(t *testing.T) {
	s := arxtest.Start(t)
	agent, token := s.Hire(arxtest.Manifest)
	var c callJSON
	request(s, token, "db", "query", "low", "k1").JSON(t, &c) // max_duration: 1s
	if c.Credential == nil {
		t.Fatal("no credential")
	}
	time.Sleep(time.Until(c.Credential.ExpiresAt) + 50*time.Millisecond)
	if ok, code := introspect(t, s, c.Credential.Token); ok || code != "credential.expired" {
		t.Fatalf("credential past its TTL: active=%v code=%s", ok, code)
	}
	// The sweeper records the expiry.
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(types(entries(t, s, agent)), "call.expired") {
		if time.Now().After(deadline) {
			t.Fatalf("no call.expired entry: %s", types(entries(t, s, agent)))
		}
		time.Sleep(50 * time.Millisecond)
	}
	if r := s.Do("GET", "/v1/calls/"+c.ID, token, nil); !bytes.Contains(r.Body, []byte(`"status":"expired"`)) || bytes.Contains(r.Body, []byte(`"credential"`)) {
		t.Fatalf("expired call: %s", r.Body)
	}
}

// TestFailClosed makes every write of the log fail, as a disk that
// refuses writes would (the store's LogFault): no credential leaves, and
// nothing is recorded or decided until the log can be written again.
func TestFailClosed(t *testing.T) {
	var refuse atomic.Bool
	s := arxtest.StartWith(t, t.TempDir(), func(c *server.Config) {
		c.Database.LogFault = func() error {
			if refuse.Load() {
				return errors.New("disk refused")
			}
			return nil
		}
	})
	agent, token := s.Hire(arxtest.Manifest)
	refuse.Store(true)
	for _, conn := range []string{"crm", "hubspot"} { // an issue and a refusal: neither can be recorded
		r := request(s, token, conn, "account.read", "low", "k-"+conn)
		if r.Status != http.StatusServiceUnavailable || r.ErrorCode() != "record.unavailable" {
			t.Fatalf("%s with the record failing: %d %s", conn, r.Status, r.Body)
		}
		if bytes.Contains(r.Body, []byte("credential")) && !bytes.Contains(r.Body, []byte("no credential")) || bytes.Contains(r.Body, []byte("disk refused")) {
			t.Fatalf("answer leaks a credential or the cause: %s", r.Body)
		}
	}
	if calls, err := s.Runtime.Store().Calls(t.Context(), agent, 10); err != nil || len(calls) != 0 {
		t.Fatalf("calls made while the record failed: %d (%v)", len(calls), err)
	}
	refuse.Store(false)
	// Recovered: the retry with the same key makes the call once.
	if r := request(s, token, "crm", "account.read", "low", "k-crm"); r.Status != http.StatusCreated {
		t.Fatalf("after recovery: %d %s", r.Status, r.Body)
	}
	if got, want := types(entries(t, s, agent)), "agent.hired,credential.issued"; got != want {
		t.Fatalf("record: %s, want %s", got, want)
	}
}

func TestTokensStoredOnlyHashed(t *testing.T) {
	s := arxtest.Start(t)
	_, token := s.Hire(arxtest.Manifest)
	request(s, token, "crm", "account.read", "low", "k1")
	if err := s.Runtime.Checkpoint(t.Context()); err != nil {
		t.Fatal(err)
	}
	found := 0
	filepath.Walk(s.DataDir, func(path string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() || filepath.Base(path) == "admin.token" {
			return nil
		}
		b, _ := os.ReadFile(path)
		for _, secret := range []string{token, s.AdminToken} {
			if bytes.Contains(b, []byte(secret)) {
				t.Errorf("%s holds a token in clear", path)
			}
			h := sha256.Sum256([]byte(secret))
			if bytes.Contains(b, h[:]) {
				found++
			}
		}
		return nil
	})
	if found == 0 {
		t.Error("token hashes not found in the database: are tokens stored some other way?")
	}
	if info, err := os.Stat(filepath.Join(s.DataDir, "admin.token")); err != nil || info.Mode().Perm() != 0o600 {
		t.Errorf("admin.token mode: %v %v", info.Mode(), err)
	}
	for _, f := range []string{"log.key", "credential.key", "arx.db"} {
		if info, err := os.Stat(filepath.Join(s.DataDir, f)); err != nil || info.Mode().Perm() != 0o600 {
			t.Errorf("%s mode: %v %v", f, info.Mode(), err)
		}
	}
}

func TestBadInput(t *testing.T) {
	s := arxtest.Start(t)
	agent, token := s.Hire(arxtest.Manifest)
	_, other := s.Hire(strings.Replace(arxtest.Manifest, "test-agent", "other-agent", 1))
	var theirs callJSON
	request(s, other, "crm", "account.read", "low", "theirs").JSON(t, &theirs)
	before := len(entries(t, s, agent))

	forged, _ := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(token, "arxa_"))
	forged[0] ^= 1
	for _, tc := range []struct {
		name, method, path, token string
		body                      any
		status                    int
		code                      string
	}{
		{"no token", "POST", "/v1/calls", "", `{}`, 401, "auth.unauthenticated"},
		{"wrong token", "POST", "/v1/calls", "arxa_" + base64.RawURLEncoding.EncodeToString(forged), `{}`, 401, "auth.invalid_token"},
		{"garbage token", "POST", "/v1/calls", "Basic abc", `{}`, 401, "auth.invalid_token"},
		{"admin token on agent route", "POST", "/v1/calls", s.AdminToken, `{}`, 403, "auth.forbidden"},
		{"agent token on admin route", "GET", "/v1/agents", token, nil, 403, "auth.forbidden"},
		{"malformed JSON", "POST", "/v1/calls", token, `{"connector": "crm",`, 400, "request.invalid"},
		{"unknown field", "POST", "/v1/calls", token, `{"connector":"crm","action":"account.read","idempotency_key":"x","sudo":true}`, 400, "request.invalid"},
		{"wrong type", "POST", "/v1/calls", token, `{"connector":7}`, 400, "request.invalid"},
		{"two values", "POST", "/v1/calls", token, `{}{}`, 400, "request.invalid"},
		{"empty body", "POST", "/v1/calls", token, ``, 400, "request.invalid"},
		{"oversized body", "POST", "/v1/calls", token, `{"summary":"` + strings.Repeat("a", 300<<10) + `"}`, 413, "request.too_large"},
		{"bad risk", "POST", "/v1/calls", token, `{"connector":"crm","action":"account.read","risk":"none","idempotency_key":"x"}`, 400, "manifest.invalid_risk"},
		{"no idempotency key", "POST", "/v1/calls", token, `{"connector":"crm","action":"account.read"}`, 400, "request.invalid"},
		{"bad connector name", "POST", "/v1/calls", token, `{"connector":"../etc","action":"account.read","idempotency_key":"x"}`, 400, "request.invalid"},
		{"unknown call", "GET", "/v1/calls/nope", token, nil, 404, "call.not_found"},
		{"another agent's call", "GET", "/v1/calls/" + theirs.ID, token, nil, 404, "call.not_found"},
		{"complete another agent's call", "POST", "/v1/calls/" + theirs.ID + "/complete", token, `{"outcome":"success"}`, 404, "call.not_found"},
		{"bad outcome", "POST", "/v1/calls/" + theirs.ID + "/complete", other, `{"outcome":"great"}`, 400, "request.invalid"},
		{"bad wait", "GET", "/v1/calls/" + theirs.ID + "?wait=forever", other, nil, 400, "request.invalid"},
		{"unknown agent", "GET", "/v1/agents/nope", s.AdminToken, nil, 404, "agent.not_found"},
		{"invalid manifest", "POST", "/v1/agents", s.AdminToken, `{"manifest":"kind: nope\n"}`, 422, "manifest.invalid"},
		{"unknown route", "GET", "/v1/nope", token, nil, 404, "request.not_found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := s.Do(tc.method, tc.path, tc.token, tc.body)
			if r.Status != tc.status || r.ErrorCode() != tc.code {
				t.Fatalf("got %d %s, want %d %s", r.Status, truncate(r.Body), tc.status, tc.code)
			}
			var body struct {
				Error struct{ Message string } `json:"error"`
			}
			json.Unmarshal(r.Body, &body)
			if body.Error.Message == "" {
				t.Fatalf("no message: %s", truncate(r.Body))
			}
		})
	}
	// Form content type is refused before the body is read.
	req, _ := http.NewRequest("POST", s.URL+"/v1/calls", strings.NewReader("a=b"))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 415 {
		t.Fatalf("form body: %v %v", resp.StatusCode, err)
	}
	resp.Body.Close()
	if after := len(entries(t, s, agent)); after != before {
		t.Fatalf("bad input wrote %d record entries", after-before)
	}
}

func truncate(b []byte) string {
	if len(b) > 200 {
		return string(b[:200]) + "..."
	}
	return string(b)
}

func TestForgedCredentials(t *testing.T) {
	s := arxtest.Start(t)
	_, token := s.Hire(arxtest.Manifest)
	var c callJSON
	request(s, token, "crm", "account.read", "low", "k1").JSON(t, &c)
	real := c.Credential.Token
	parts := strings.Split(real, ".")

	// Signed by another key with the same claims and key id.
	_, k, _ := ed25519.GenerateKey(rand.Reader)
	iss, _ := credential.NewIssuer(s.Runtime.Origin(), k)
	cl, _ := s.Runtime.KeySet().Verify(real, time.Now())
	otherKey, _ := iss.Sign(*cl)
	op := strings.Split(otherKey, ".")
	hdr, _ := base64.RawURLEncoding.DecodeString(parts[0])
	noneHdr := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`))
	hsHdr := base64.RawURLEncoding.EncodeToString([]byte(strings.Replace(string(hdr), "EdDSA", "HS256", 1)))
	payload, _ := base64.RawURLEncoding.DecodeString(parts[1])
	elevated := base64.RawURLEncoding.EncodeToString([]byte(strings.Replace(string(payload), "account.read", "account.delete", 1)))

	for _, tc := range []struct{ name, cred, code string }{
		{"another key", parts[0] + "." + op[1] + "." + op[2], "credential.invalid"},
		{"alg none", noneHdr + "." + parts[1] + ".", "credential.invalid"},
		{"alg HS256", hsHdr + "." + parts[1] + "." + parts[2], "credential.invalid"},
		{"edited claims", parts[0] + "." + elevated + "." + parts[2], "credential.invalid"},
		{"garbage", "not.a.jwt", "credential.invalid"},
		{"empty", "", "credential.invalid"},
		{"huge", strings.Repeat("a", 10000), "credential.invalid"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if ok, code := introspect(t, s, tc.cred); ok || code != tc.code {
				t.Fatalf("active=%v code=%s, want %s", ok, code, tc.code)
			}
		})
	}
}

// TestConcurrentCalls runs many agents at once (under -race in CI) and
// checks that the log stays one contiguous, verifiable log.
func TestConcurrentCalls(t *testing.T) {
	s := arxtest.Start(t)
	const agents, calls = 8, 25
	var wg sync.WaitGroup
	errs := make(chan error, agents*calls)
	for a := 0; a < agents; a++ {
		_, token := s.Hire(strings.Replace(arxtest.Manifest, "test-agent", fmt.Sprint("agent-", a), 1))
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < calls; i++ {
				var c callJSON
				r := request(s, token, "crm", "account.read", "low", fmt.Sprint("k", i))
				if r.Status != 201 {
					errs <- fmt.Errorf("request: %d %s", r.Status, r.Body)
					return
				}
				json.Unmarshal(r.Body, &c)
				if r := s.Do("POST", "/v1/calls/"+c.ID+"/complete", token, map[string]any{"outcome": "success"}); r.Status != 200 {
					errs <- fmt.Errorf("complete: %d %s", r.Status, r.Body)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if err := s.Runtime.Checkpoint(t.Context()); err != nil {
		t.Fatal(err)
	}
	signed := s.Do("GET", "/v1/log/checkpoint", "", nil)
	cp, _, err := record.OpenCheckpoint(signed.Body, s.LogKey)
	if err != nil {
		t.Fatal(err)
	}
	want := uint64(1 + agents + 2*agents*calls) // admin token, hires, two entries per call
	if cp.Size != want {
		t.Fatalf("log has %d entries, want %d", cp.Size, want)
	}
	var v record.Verifier
	r := s.Do("GET", fmt.Sprintf("/v1/log/entries?start=0&limit=%d", want), s.AdminToken, nil)
	var page struct {
		Entries []struct {
			Data []byte `json:"data"`
		} `json:"entries"`
	}
	r.JSON(t, &page)
	for _, e := range page.Entries {
		v.Add(e.Data)
	}
	if p := v.Finish(cp); len(p) != 0 {
		t.Fatalf("log does not verify: %v", p)
	}
}

// TestTokensInPathsAreNotEchoed: a token pasted into a URL by mistake does
// not come back in the error answer, which clients print and log.
func TestTokensInPathsAreNotEchoed(t *testing.T) {
	s := arxtest.Start(t)
	_, token := s.Hire(arxtest.Manifest)
	for _, path := range []string{"/v1/agents/" + token, "/v1/calls/" + token, "/v1/agents/" + s.AdminToken + "/record"} {
		r := s.Do("GET", path, s.AdminToken, nil)
		if r.Status < 400 || r.ErrorCode() == "" {
			t.Fatalf("GET %s: %d %s", path[:20], r.Status, r.Body)
		}
		if bytes.Contains(r.Body, []byte(token[5:21])) || bytes.Contains(r.Body, []byte(s.AdminToken[5:21])) {
			t.Fatalf("GET %s...: the answer repeats the token", path[:20])
		}
	}
	for _, tok := range []string{"arxa_", "arxk_", "arxu_", "arxc_", "arxs_"} {
		msg := "no agent " + tok + "AAAAAAAAAAAAAAAAAAAAAAAA here"
		if got := api.RedactTokens(msg); got != "no agent [redacted] here" {
			t.Errorf("RedactTokens(%q) = %q", msg, got)
		}
	}
	jws := "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ4In0.c2ln"
	if got := api.RedactTokens("bad " + jws); got != "bad [redacted]" {
		t.Errorf("RedactTokens(a credential) = %q", got)
	}
	if got := api.RedactTokens("no agent 0192-abc"); got != "no agent 0192-abc" {
		t.Errorf("RedactTokens changed a message without tokens: %q", got)
	}
}
