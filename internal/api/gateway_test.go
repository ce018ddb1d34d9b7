package api_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/arxsec/arx/internal/arxtest"
	"github.com/arxsec/arx/internal/connector"
	"github.com/arxsec/arx/internal/connector/connectors"
	"github.com/arxsec/arx/internal/logbuf"
	"github.com/arxsec/arx/internal/server"
)

// upstreamSecret is the connector's real secret: only ARX and the upstream
// know it.
const upstreamSecret = "crm-api-key-7f3e9c2b5d1a4e8f"

// upstream is a system of record behind the gateway: it serves only
// requests that carry the connector's secret.
type upstream struct {
	*httptest.Server
	mu   sync.Mutex
	seen []*http.Request
	hits atomic.Int64
}

func newUpstream(t *testing.T) *upstream {
	u := &upstream{}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.hits.Add(1)
		u.mu.Lock()
		u.seen = append(u.seen, r.Clone(r.Context()))
		u.mu.Unlock()
		if r.Header.Get("Authorization") != "Bearer "+upstreamSecret {
			http.Error(w, "no", http.StatusUnauthorized)
			return
		}
		switch {
		case r.URL.Path == "/api/slow":
			time.Sleep(2 * time.Second)
		case r.URL.Path == "/api/upload":
			h := sha256.New()
			n, _ := io.Copy(h, r.Body)
			fmt.Fprintf(w, "%d %x", n, h.Sum(nil))
			return
		case r.URL.Path == "/api/download":
			w.Header().Set("Content-Type", "application/octet-stream")
			block := bytes.Repeat([]byte("0123456789abcdef"), 4096)
			for range 512 { // 32 MiB
				w.Write(block)
			}
			return
		case r.URL.Path == "/api/echo":
			// A careless upstream: it quotes what authenticated the request.
			w.Header().Set("X-Debug-Auth", r.Header.Get("Authorization"))
			if r.URL.Query().Get("chunked") == "" {
				w.Header().Set("Content-Length", fmt.Sprint(len(`{"auth":""}`)+len(r.Header.Get("Authorization"))))
			}
			fmt.Fprintf(w, `{"auth":"%s"}`, r.Header.Get("Authorization"))
			return
		case r.URL.Path == "/api/stream":
			w.Header().Set("Content-Type", "text/event-stream")
			fmt.Fprint(w, "data: first\n\n")
			w.(http.Flusher).Flush()
			<-r.Context().Done() // until the agent hangs up
			return
		}
		w.Header().Set("Set-Cookie", "session=upstream-session")
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Upstream", "yes")
		w.WriteHeader(http.StatusNonAuthoritativeInfo)
		fmt.Fprintf(w, `{"path":%q}`, r.URL.Path)
	}))
	t.Cleanup(u.Close)
	return u
}

func (u *upstream) last() *http.Request {
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.seen) == 0 {
		return nil
	}
	return u.seen[len(u.seen)-1]
}

const gatewayConfig = `connectors:
  crm:
    kind: http
    upstream: %s/api
    secret: env:CRM_KEY
    auth: bearer
    timeout: %s
    max_request_bytes: 100000000
    actions:
      account.read:
        allow: ["GET,HEAD /accounts/*", "GET /stream", "GET /slow", "GET /download", "GET /echo"]
      account.export:
        allow: ["POST /upload", "POST /exports"]
  db:
    kind: http
    upstream: %s/api
    secret: env:CRM_KEY
    actions:
      query:
        allow: ["GET /accounts/*", "GET /stream"]
  down:
    kind: http
    upstream: http://%s/api
    secret: env:CRM_KEY
    actions:
      account.read:
        allow: ["GET /**"]
`

// gatewayServer starts ARX with the connectors above in front of up, its log
// captured in logs.
func gatewayServer(t *testing.T, up *upstream, timeout string) (*arxtest.Server, *logbuf.Buffer) {
	t.Helper()
	return gatewayServerWith(t, up, timeout, nil)
}

// gatewayServerWith is gatewayServer with its configuration adjusted.
func gatewayServerWith(t *testing.T, up *upstream, timeout string, configure func(*server.Config)) (*arxtest.Server, *logbuf.Buffer) {
	t.Helper()
	closed, _ := net.Listen("tcp", "127.0.0.1:0")
	deadAddr := closed.Addr().String()
	closed.Close() // nothing listens there now
	cfg, err := connector.Parse(fmt.Appendf(nil, gatewayConfig, up.URL, timeout, up.URL, deadAddr))
	if err != nil {
		t.Fatal(err)
	}
	cs, err := connectors.Open(cfg, func(ref connector.SecretRef) (string, error) {
		if ref.String() != "env:CRM_KEY" {
			return "", fmt.Errorf("unexpected reference %s", ref)
		}
		return upstreamSecret, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	logs := &logbuf.Buffer{}
	s := arxtest.StartWith(t, t.TempDir(), func(c *server.Config) {
		c.Connectors = cs
		c.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
		if configure != nil {
			configure(c)
		}
	})
	return s, logs
}

// callCredential makes a call and returns its id and credential.
func callCredential(t *testing.T, s *arxtest.Server, token, conn, action, key string) (string, string) {
	t.Helper()
	r := s.Do("POST", "/v1/calls", token, map[string]string{"connector": conn, "action": action, "risk": "medium", "idempotency_key": key})
	if r.Status != http.StatusCreated {
		t.Fatalf("call %s %s: %d %s", conn, action, r.Status, r.Body)
	}
	var c struct {
		ID         string `json:"id"`
		Credential struct {
			Token string `json:"token"`
		} `json:"credential"`
	}
	r.JSON(t, &c)
	return c.ID, c.Credential.Token
}

// through sends a raw request to the gateway.
func through(t *testing.T, s *arxtest.Server, method, rawPath, cred string, body io.Reader, hdr map[string]string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(method, s.URL+"/v1/gateway/"+rawPath, body)
	if err != nil {
		t.Fatal(err)
	}
	p, _, _ := strings.Cut(rawPath, "?")
	req.URL.Opaque = "//" + req.URL.Host + "/v1/gateway/" + p // send the path exactly as given
	if cred != "" {
		req.Header.Set("Authorization", "Bearer "+cred)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, rawPath, err)
	}
	return resp
}

func readAll(t *testing.T, resp *http.Response) []byte {
	t.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func errCode(b []byte) string {
	var e struct {
		Error struct {
			Code string `json:"code"`
		} `json:"error"`
	}
	json.Unmarshal(b, &e)
	return e.Error.Code
}

// recordOf returns an agent's entries, decoded.
func recordOf(t *testing.T, s *arxtest.Server, agent string) []map[string]any {
	t.Helper()
	r := s.Do("GET", "/v1/agents/"+agent+"/record?limit=1000", s.AdminToken, nil)
	var out struct {
		Entries []struct {
			Entry map[string]any `json:"entry"`
		} `json:"entries"`
	}
	r.JSON(t, &out)
	var es []map[string]any
	for _, e := range out.Entries {
		es = append(es, e.Entry)
	}
	return es
}

func ofType(es []map[string]any, typ string) []map[string]any {
	var out []map[string]any
	for _, e := range es {
		if e["type"] == typ {
			out = append(out, e)
		}
	}
	return out
}

// waitEntries polls until the agent's record has n entries of typ.
func waitEntries(t *testing.T, s *arxtest.Server, agent, typ string, n int) []map[string]any {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		es := ofType(recordOf(t, s, agent), typ)
		if len(es) >= n {
			return es
		}
		if time.Now().After(deadline) {
			t.Fatalf("record has %d %s entries, want %d", len(es), typ, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestGatewayForwardsWithTheRealSecret(t *testing.T) {
	up := newUpstream(t)
	s, logs := gatewayServer(t, up, "1s")
	agent, token := s.Hire(gatewayManifest)
	call, cred := callCredential(t, s, token, "crm", "account.read", "k1")

	resp := through(t, s, "GET", "crm/accounts/%30017%20x?q=secret-query-value", cred, nil, map[string]string{
		"Cookie": "agent=1", "Connection": "X-Hop", "X-Hop": "v", "X-Forwarded-For": "1.2.3.4", "X-Custom": "kept"})
	body := readAll(t, resp)
	if resp.StatusCode != http.StatusNonAuthoritativeInfo || !strings.Contains(string(body), `"/api/accounts/0017 x"`) {
		t.Fatalf("forwarded: %d %s", resp.StatusCode, body)
	}
	if resp.Header.Get("X-Upstream") != "yes" || resp.Header.Get("Set-Cookie") != "" {
		t.Errorf("answer headers: %v", resp.Header)
	}
	in := up.last()
	// The upstream gets the path the rules checked, escaped anew.
	if in.URL.EscapedPath() != "/api/accounts/0017%20x" {
		t.Errorf("upstream path %q, want /api/accounts/0017%%20x", in.URL.EscapedPath())
	}
	if in.Header.Get("Authorization") != "Bearer "+upstreamSecret || in.URL.RawQuery != "q=secret-query-value" ||
		in.Header.Get("Cookie") != "" || in.Header.Get("X-Hop") != "" || in.Header.Get("X-Forwarded-For") != "" || in.Header.Get("X-Custom") != "kept" {
		t.Errorf("upstream saw: %v %v", in.URL, in.Header)
	}
	if strings.Contains(fmt.Sprint(in.Header), cred) {
		t.Error("the agent's credential reached the upstream")
	}
	req := waitEntries(t, s, agent, "gateway.request", 1)[0]
	rsp := waitEntries(t, s, agent, "gateway.response", 1)[0]
	d := req["data"].(map[string]any)
	if req["call"] != call || d["method"] != "GET" || d["path"] != "/accounts/0017 x" || d["query"] != true {
		t.Errorf("gateway.request: %v", req)
	}
	rd := rsp["data"].(map[string]any)
	if rd["status"] != float64(203) || rd["request"] != req["index"] || rd["response_bytes"] != float64(len(body)) {
		t.Errorf("gateway.response: %v (request %v)", rsp, req["index"])
	}
	if i, j := req["index"].(float64), rsp["index"].(float64); j <= i {
		t.Errorf("response entry %v before request entry %v", j, i)
	}

	// The secret is nowhere the agent, the record or the log can show it.
	scan := map[string][]byte{"answer": body, "logs": []byte(logs.String())}
	scan["record"], _ = json.Marshal(recordOf(t, s, agent))
	scan["connectors"] = s.Do("GET", "/v1/connectors", s.AdminToken, nil).Body
	if !bytes.Contains(scan["connectors"], []byte("env:CRM_KEY")) {
		t.Errorf("connectors list lacks the reference: %s", scan["connectors"])
	}
	r := s.Do("GET", "/v1/log/entries?start=0&limit=1000", s.AdminToken, nil)
	var le struct {
		Entries []struct {
			Data string `json:"data"`
		} `json:"entries"`
	}
	r.JSON(t, &le)
	for _, e := range le.Entries {
		b, _ := base64.StdEncoding.DecodeString(e.Data)
		scan["log"] = append(scan["log"], b...)
	}
	for where, b := range scan {
		for _, secret := range []string{upstreamSecret, cred, "secret-query-value"} {
			if bytes.Contains(b, []byte(secret)) && !(where == "answer" && secret != upstreamSecret) {
				t.Errorf("%s holds %q", where, secret[:8])
			}
		}
	}
}

func TestGatewayRefusals(t *testing.T) {
	up := newUpstream(t)
	s, _ := gatewayServer(t, up, "300ms")
	agent, token := s.Hire(gatewayManifest)
	_, read := callCredential(t, s, token, "crm", "account.read", "read")
	_, export := callCredential(t, s, token, "crm", "account.export", "export")
	_, down := callCredential(t, s, token, "down", "account.read", "down")

	for _, tc := range []struct {
		name, method, path, cred string
		hdr                      map[string]string
		status                   int
		code                     string
		recorded                 bool // a gateway.refused entry
	}{
		{"no credential", "GET", "crm/accounts/1", "", nil, 401, "auth.unauthenticated", false},
		{"forged credential", "GET", "crm/accounts/1", read[:len(read)-4] + "AAAA", nil, 401, "credential.invalid", false},
		{"agent token instead", "GET", "crm/accounts/1", token, nil, 401, "credential.invalid", false},
		{"unknown connector", "GET", "nope/accounts/1", read, nil, 404, "connector.not_found", false},
		{"another connector's credential", "GET", "db/accounts/1", read, nil, 403, "credential.scope_mismatch", false},
		{"method not allowed", "DELETE", "crm/accounts/1", read, nil, 403, "gateway.method_not_allowed", true},
		{"another action's credential", "GET", "crm/accounts/1", export, nil, 403, "gateway.method_not_allowed", true},
		{"path not allowed", "GET", "crm/admin/users", read, nil, 403, "gateway.path_not_allowed", true},
		{"path too deep", "GET", "crm/accounts/1/2", read, nil, 403, "gateway.path_not_allowed", true},
		{"dot dot", "GET", "crm/accounts/../admin", read, nil, 400, "gateway.path_invalid", true},
		{"encoded dot dot", "GET", "crm/accounts/%2e%2e/admin", read, nil, 400, "gateway.path_invalid", true},
		{"encoded slash", "GET", "crm/accounts/1%2Fadmin", read, nil, 400, "gateway.path_invalid", true},
		{"empty segment", "GET", "crm/accounts//1", read, nil, 400, "gateway.path_invalid", true},
		{"backslash", "GET", `crm/accounts/1%5C..%5Cadmin`, read, nil, 400, "gateway.path_invalid", true},
		{"dot dot semicolon", "GET", "crm/accounts/..;/admin", read, nil, 400, "gateway.path_invalid", true},
		{"path parameter", "GET", "crm/accounts/1;jsessionid=x", read, nil, 400, "gateway.path_invalid", true},
		{"double-encoded dot dot", "GET", "crm/accounts/%252e%252e/admin", read, nil, 400, "gateway.path_invalid", true},
		{"not UTF-8", "GET", "crm/accounts/%ff%fe", read, nil, 400, "gateway.path_invalid", true},
		{"method override header", "GET", "crm/accounts/1", read, map[string]string{"X-HTTP-Method-Override": "DELETE"}, 400, "gateway.request_ambiguous", true},
		{"method override (X-HTTP-Method)", "GET", "crm/accounts/1", read, map[string]string{"X-HTTP-Method": "DELETE"}, 400, "gateway.request_ambiguous", true},
		{"URL rewrite header", "GET", "crm/accounts/1", read, map[string]string{"X-Original-URL": "/admin/users"}, 400, "gateway.request_ambiguous", true},
		{"URL rewrite header (X-Rewrite-URL)", "GET", "crm/accounts/1", read, map[string]string{"X-Rewrite-URL": "/admin/users"}, 400, "gateway.request_ambiguous", true},
		{"method parameter", "GET", "crm/accounts/1?_method=DELETE", read, nil, 400, "gateway.request_ambiguous", true},
		{"a query that does not parse", "GET", "crm/accounts/1?a=%zz", read, nil, 400, "gateway.request_ambiguous", true},
		{"too large", "POST", "crm/upload", export, map[string]string{"Content-Length": "100000001"}, 413, "request.too_large", false},
		{"upstream unreachable", "GET", "down/accounts/1", down, nil, 502, "gateway.upstream_unreachable", false},
		{"upstream timeout", "GET", "crm/slow", read, nil, 504, "gateway.upstream_timeout", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(ofType(recordOf(t, s, agent), "gateway.refused"))
			hits := up.hits.Load()
			var resp *http.Response
			if cl := tc.hdr["Content-Length"]; cl != "" {
				// Declares more than it sends: net/http would not.
				conn, err := net.Dial("tcp", strings.TrimPrefix(s.URL, "http://"))
				if err != nil {
					t.Fatal(err)
				}
				defer conn.Close()
				fmt.Fprintf(conn, "%s /v1/gateway/%s HTTP/1.1\r\nHost: arx\r\nAuthorization: Bearer %s\r\nContent-Length: %s\r\n\r\nx",
					tc.method, tc.path, tc.cred, cl)
				if resp, err = http.ReadResponse(bufio.NewReader(conn), nil); err != nil {
					t.Fatal(err)
				}
			} else {
				resp = through(t, s, tc.method, tc.path, tc.cred, nil, tc.hdr)
			}
			b := readAll(t, resp)
			if resp.StatusCode != tc.status || errCode(b) != tc.code {
				t.Fatalf("%d %s, want %d %s", resp.StatusCode, b, tc.status, tc.code)
			}
			if tc.code != "gateway.upstream_timeout" && up.hits.Load() != hits {
				t.Error("the refused request reached the upstream")
			}
			after := len(ofType(recordOf(t, s, agent), "gateway.refused"))
			if got := after - before; got != map[bool]int{true: 1, false: 0}[tc.recorded] {
				t.Errorf("%d gateway.refused entries recorded", got)
			}
		})
	}
	// None of it cost the server its readiness (a path that is not UTF-8
	// once failed the record's write and turned /readyz 503).
	if r := s.Do("GET", "/readyz", "", nil); r.Status != http.StatusOK {
		t.Errorf("readyz after the refusals: %d %s", r.Status, r.Body)
	}
	// The failed forwards are in the record, with their codes.
	rs := waitEntries(t, s, agent, "gateway.response", 2)
	codes := map[string]bool{}
	for _, e := range rs {
		if c, ok := e["data"].(map[string]any)["error"].(string); ok {
			codes[c] = true
		}
	}
	if !codes["gateway.upstream_unreachable"] || !codes["gateway.upstream_timeout"] {
		t.Errorf("recorded failures: %v", codes)
	}
}

// TestGatewayMasksAnEchoedSecret: an upstream that quotes the connector's
// secret (in a header, in its body, with or without a length) does not
// hand it to the agent: it is masked, the answer keeps its length, and the
// record says so.
func TestGatewayMasksAnEchoedSecret(t *testing.T) {
	up := newUpstream(t)
	s, _ := gatewayServer(t, up, "1s")
	agent, token := s.Hire(gatewayManifest)
	_, cred := callCredential(t, s, token, "crm", "account.read", "echo")
	for _, path := range []string{"crm/echo", "crm/echo?chunked=1"} {
		resp := through(t, s, "GET", path, cred, nil, map[string]string{"Accept-Encoding": "gzip"})
		body := readAll(t, resp)
		masked := strings.Repeat("*", len("Bearer "+upstreamSecret))
		if resp.StatusCode != http.StatusOK || string(body) != `{"auth":"`+masked+`"}` {
			t.Errorf("%s: %d %s", path, resp.StatusCode, body)
		}
		if strings.Contains(fmt.Sprint(resp.Header), upstreamSecret) {
			t.Errorf("%s: the secret is in the answer's headers: %v", path, resp.Header)
		}
		if up.last().Header.Get("Accept-Encoding") != "" {
			t.Errorf("%s: the upstream was asked for a compressed answer", path)
		}
	}
	rs := waitEntries(t, s, agent, "gateway.response", 2)
	for _, e := range rs {
		if e["data"].(map[string]any)["secret_redacted"] != true {
			t.Errorf("gateway.response does not say the secret was masked: %v", e)
		}
	}
}

// TestGatewayCutsInFlight: a request already forwarded (a stream that
// would run until the agent hangs up, an upload) does not outlive its
// call: completion, expiry and termination cut it within a second, and
// gateway.response says it was cut and why.
func TestGatewayCutsInFlight(t *testing.T) {
	up := newUpstream(t)
	s, _ := gatewayServer(t, up, "30s")
	agent, token := s.Hire(gatewayManifest)
	// open starts a stream and returns a channel that gets how long after
	// cutAt it ended.
	// tryOpen is open, or the answer that refused the stream.
	var open func(conn, cred string) (func(cutAt time.Time) time.Duration, func())
	tryOpen := func(conn, cred string) (func(cutAt time.Time) time.Duration, func(), *http.Response) {
		resp := through(t, s, "GET", conn+"/stream", cred, nil, nil)
		if resp.StatusCode != 200 {
			return nil, nil, resp
		}
		first := make([]byte, len("data: first\n\n"))
		if _, err := io.ReadFull(resp.Body, first); err != nil {
			t.Fatal(err)
		}
		ended := make(chan time.Time, 1)
		go func() {
			io.Copy(io.Discard, resp.Body)
			ended <- time.Now()
		}()
		wait := func(cutAt time.Time) time.Duration {
			select {
			case at := <-ended:
				return at.Sub(cutAt)
			case <-time.After(10 * time.Second):
				t.Fatal("the stream was not cut")
				return 0
			}
		}
		return wait, func() { resp.Body.Close() }, nil
	}
	open = func(conn, cred string) (func(cutAt time.Time) time.Duration, func()) {
		wait, stop, refused := tryOpen(conn, cred)
		if refused != nil {
			t.Fatalf("stream: %d %s", refused.StatusCode, readAll(t, refused))
		}
		return wait, stop
	}
	const bound = time.Second

	// Completion.
	call, cred := callCredential(t, s, token, "crm", "account.read", "done")
	wait, stop := open("crm", cred)
	at := time.Now()
	if r := s.Do("POST", "/v1/calls/"+call+"/complete", token, map[string]any{"outcome": "success"}); r.Status != 200 {
		t.Fatalf("complete: %d %s", r.Status, r.Body)
	}
	if took := wait(at); took > bound {
		t.Errorf("completion cut the stream after %v (bound %v)", took, bound)
	}
	stop()
	waitCut(t, s, agent, call, "the call was completed")

	// Expiry (db query: max_duration 1s). A machine that stalls for a
	// second between the credential and the stream (a loaded CI runner) sees
	// the credential expire first: then again with a new call, three times
	// at most.
	for attempt := 1; ; attempt++ {
		call, cred = callCredential(t, s, token, "db", "query", fmt.Sprintf("expires-%d", attempt))
		var refused *http.Response
		if wait, stop, refused = tryOpen("db", cred); refused == nil {
			break
		}
		body := readAll(t, refused)
		if refused.StatusCode != 401 || !bytes.Contains(body, []byte("credential.expired")) || attempt == 3 {
			t.Fatalf("stream: %d %s", refused.StatusCode, body)
		}
	}
	var c struct {
		ExpiresAt time.Time `json:"expires_at"`
	}
	s.Do("GET", "/v1/calls/"+call, token, nil).JSON(t, &c)
	if took := wait(c.ExpiresAt); took > bound {
		t.Errorf("expiry cut the stream %v after it (bound %v)", took, bound)
	}
	stop()
	waitCut(t, s, agent, call, "the call's credential expired")

	// Termination: a stream, and an upload whose body is still coming.
	call, cred = callCredential(t, s, token, "crm", "account.read", "terminated")
	wait, stop = open("crm", cred)
	defer stop()
	upCall, export := callCredential(t, s, token, "crm", "account.export", "upload")
	pr, pw := io.Pipe()
	go func() {
		block := bytes.Repeat([]byte{1}, 64<<10)
		for i := 0; i < 1000; i++ {
			if _, err := pw.Write(block); err != nil {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
		pw.Close()
	}()
	upload := make(chan *http.Response, 1)
	go func() { upload <- through(t, s, "POST", "crm/upload", export, pr, nil) }()
	time.Sleep(300 * time.Millisecond) // the upload is under way
	at = time.Now()
	if r := s.Do("POST", "/v1/agents/"+agent+"/terminate", s.AdminToken, map[string]string{"reason": "cut"}); r.Status != 200 {
		t.Fatalf("terminate: %d %s", r.Status, r.Body)
	}
	if took := wait(at); took > bound {
		t.Errorf("termination cut the stream after %v (bound %v)", took, bound)
	}
	select {
	case resp := <-upload:
		b := readAll(t, resp)
		if took := time.Since(at); took > bound+500*time.Millisecond {
			t.Errorf("termination cut the upload after %v", took)
		}
		if resp.StatusCode != http.StatusForbidden || errCode(b) != "gateway.cut" {
			t.Errorf("the cut upload: %d %s, want 403 gateway.cut", resp.StatusCode, b)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the upload went on after the termination")
	}
	pw.CloseWithError(errors.New("done"))
	waitCut(t, s, agent, call, "the agent was terminated")
	waitCut(t, s, agent, upCall, "the agent was terminated")
}

// TestSweepCutsWithTheCallItClosed pins what TestGatewayCutsInFlight once
// met only by chance under load: the expiry sweep cuts a request in flight
// with the call as its own update left it (expired), not with the copy it
// read before it (still approved: "the call was approved"). Here the sweep
// is the one that notices: the runtime's clock jumps past the call's
// expiry and the test sweeps at once, a few milliseconds before the check
// of requests in flight (every 250 ms) could notice it by itself.
func TestSweepCutsWithTheCallItClosed(t *testing.T) {
	up := newUpstream(t)
	var ahead atomic.Int64 // how far the runtime's clock runs ahead
	s, _ := gatewayServerWith(t, up, "30s", func(c *server.Config) {
		c.Now = func() time.Time { return time.Now().Add(time.Duration(ahead.Load())) }
		c.SweepInterval = time.Hour // only this test sweeps
	})
	agent, token := s.Hire(gatewayManifest)
	call, cred := callCredential(t, s, token, "crm", "account.read", "swept") // open for a minute
	resp := through(t, s, "GET", "crm/stream", cred, nil, nil)
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("stream: %d %s", resp.StatusCode, readAll(t, resp))
	}
	first := make([]byte, len("data: first\n\n"))
	if _, err := io.ReadFull(resp.Body, first); err != nil {
		t.Fatal(err)
	}
	ended := make(chan struct{})
	go func() {
		io.Copy(io.Discard, resp.Body)
		close(ended)
	}()

	ahead.Store(int64(5 * time.Minute))
	if err := s.Runtime.Sweep(context.Background()); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ended:
	case <-time.After(10 * time.Second):
		t.Fatal("the sweep closed the call, and its stream went on")
	}
	waitCut(t, s, agent, call, "the call's credential expired")
	var c struct {
		Status string `json:"status"`
	}
	s.Do("GET", "/v1/calls/"+call, token, nil).JSON(t, &c)
	if c.Status != "expired" {
		t.Errorf("the swept call is %s, want expired", c.Status)
	}
}

// waitCut waits for the gateway.response entry that says a request of the
// call was cut, and checks the reason the first one gives.
func waitCut(t *testing.T, s *arxtest.Server, agent, call, reason string) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		var cuts []string
		for _, e := range ofType(recordOf(t, s, agent), "gateway.response") {
			if d, _ := e["data"].(map[string]any); e["call"] == call && d["error"] == "gateway.cut" {
				cuts = append(cuts, fmt.Sprint(d["cut"]))
			}
		}
		if len(cuts) > 0 {
			if cuts[0] != reason {
				t.Errorf("call %s cut because %q, want %q", call, cuts[0], reason)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no gateway.response of call %s says it was cut", call)
		}
	}
}

// TestGatewayCredentialDies: a credential stops working at the gateway when
// its call completes, when it expires, and when its agent is terminated.
func TestGatewayCredentialDies(t *testing.T) {
	up := newUpstream(t)
	s, _ := gatewayServer(t, up, "1s")
	agent, token := s.Hire(gatewayManifest)
	get := func(cred, conn string) (int, string) {
		resp := through(t, s, "GET", conn+"/accounts/1", cred, nil, nil)
		b := readAll(t, resp)
		return resp.StatusCode, errCode(b)
	}

	call, cred := callCredential(t, s, token, "crm", "account.read", "c1")
	if st, _ := get(cred, "crm"); st != 203 {
		t.Fatalf("live credential: %d", st)
	}
	if r := s.Do("POST", "/v1/calls/"+call+"/complete", token, map[string]any{"outcome": "success"}); r.Status != 200 {
		t.Fatalf("complete: %d %s", r.Status, r.Body)
	}
	if st, code := get(cred, "crm"); st != 401 || code != "credential.call_closed" {
		t.Fatalf("after completion: %d %s", st, code)
	}

	_, short := callCredential(t, s, token, "db", "query", "c2") // max_duration 1s
	time.Sleep(1100 * time.Millisecond)
	if st, code := get(short, "db"); st != 401 || code != "credential.expired" {
		t.Fatalf("after expiry: %d %s", st, code)
	}

	_, cred = callCredential(t, s, token, "crm", "account.read", "c3")
	if r := s.Do("POST", "/v1/agents/"+agent+"/terminate", s.AdminToken, map[string]string{"reason": "test"}); r.Status != 200 {
		t.Fatalf("terminate: %d %s", r.Status, r.Body)
	}
	if st, code := get(cred, "crm"); st != 403 || code != "agent.terminated" {
		t.Fatalf("after termination: %d %s", st, code)
	}
}

// TestGatewayFailClosed makes every write of the log fail (the store's
// LogFault): the gateway forwards nothing.
func TestGatewayFailClosed(t *testing.T) {
	up := newUpstream(t)
	var refuse atomic.Bool
	s, _ := gatewayServerWith(t, up, "1s", func(c *server.Config) {
		c.Database.LogFault = func() error {
			if refuse.Load() {
				return errors.New("disk refused")
			}
			return nil
		}
	})
	_, token := s.Hire(gatewayManifest)
	_, cred := callCredential(t, s, token, "crm", "account.read", "k")
	refuse.Store(true)
	hits := up.hits.Load()
	for _, method := range []string{"GET", "HEAD"} {
		resp := through(t, s, method, "crm/accounts/1", cred, nil, nil)
		b := readAll(t, resp)
		if resp.StatusCode != 503 || method == "GET" && errCode(b) != "record.unavailable" {
			t.Fatalf("%s with the record failing: %d %s", method, resp.StatusCode, b)
		}
	}
	if up.hits.Load() != hits {
		t.Fatal("a request was forwarded although its entry could not be written")
	}
	refuse.Store(false)
	if resp := through(t, s, "GET", "crm/accounts/1", cred, nil, nil); readAll(t, resp) == nil || resp.StatusCode != 203 {
		t.Fatalf("after recovery: %d", resp.StatusCode)
	}
}

// TestGatewayStreams sends and receives bodies far over the API's JSON
// limit, and passes a streamed answer on before the upstream has finished.
func TestGatewayStreams(t *testing.T) {
	up := newUpstream(t)
	s, _ := gatewayServer(t, up, "20s")
	_, token := s.Hire(gatewayManifest)
	_, export := callCredential(t, s, token, "crm", "account.export", "up")
	_, read := callCredential(t, s, token, "crm", "account.read", "down")

	const size = 48 << 20
	h := sha256.New()
	pr, pw := io.Pipe()
	go func() {
		block := bytes.Repeat([]byte{7}, 1<<20)
		for range size >> 20 {
			h.Write(block)
			pw.Write(block)
		}
		pw.Close()
	}()
	resp := through(t, s, "POST", "crm/upload", export, pr, nil) // chunked: no declared length
	b := readAll(t, resp)
	if want := fmt.Sprintf("%d %s", size, hex.EncodeToString(h.Sum(nil))); resp.StatusCode != 200 || string(b) != want {
		t.Fatalf("upload: %d %s, want %s", resp.StatusCode, b, want)
	}

	resp = through(t, s, "GET", "crm/download", read, nil, nil)
	n, err := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil || n != 32<<20 || resp.StatusCode != 200 {
		t.Fatalf("download: %d bytes, %v, status %d", n, err, resp.StatusCode)
	}

	resp = through(t, s, "GET", "crm/stream", read, nil, nil)
	first := make([]byte, len("data: first\n\n"))
	done := make(chan error, 1)
	go func() { _, err := io.ReadFull(resp.Body, first); done <- err }()
	select {
	case err := <-done:
		if err != nil || string(first) != "data: first\n\n" {
			t.Fatalf("stream: %q %v", first, err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the streamed answer was held back")
	}
	resp.Body.Close()
}

func TestGatewayConnectorsList(t *testing.T) {
	up := newUpstream(t)
	s, _ := gatewayServer(t, up, "1s")
	_, token := s.Hire(gatewayManifest)
	if r := s.Do("GET", "/v1/connectors", token, nil); r.Status != 403 {
		t.Fatalf("agent lists connectors: %d", r.Status)
	}
	r := s.Do("GET", "/v1/connectors", s.AdminToken, nil)
	var out struct {
		Connectors []connector.Info `json:"connectors"`
	}
	r.JSON(t, &out)
	if len(out.Connectors) != 3 || out.Connectors[0].Name != "crm" || out.Connectors[0].Actions[1].Allow[0] != "GET,HEAD /accounts/*" {
		t.Fatalf("connectors: %s", r.Body)
	}
	if bytes.Contains(r.Body, []byte(upstreamSecret)) {
		t.Fatal("the list shows a secret")
	}
}

// gatewayManifest is arxtest.Manifest with the connector "down" too.
var gatewayManifest = strings.Replace(arxtest.Manifest, "    db:\n", "    down:\n      actions:\n        account.read: {risk: low}\n    db:\n", 1)
