package agentvault

import (
	"cmp"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/arxsec/arx/arxerr"
	"github.com/arxsec/arx/internal/logbuf"
)

// testToken is the agent's bearer token in every test. No error string and
// no log line may contain it.
const testToken = "arxa_TEST-SECRET-bearer-0123456789"

// protocolServer speaks the agent side of docs/api.md, for the client-side
// cases that the real runtime will not produce on demand: transient 503s,
// dropped connections, garbage bodies, slow answers. It keeps calls in
// memory and has no manifest: needsApproval and undeclared stand in for one.
//
// Faults are consumed in order, one per request of that kind:
//
//	"unavailable"  503 record.unavailable, before anything is done
//	"html502"      a proxy's HTML 502, before anything is done
//	"drop"         (POST /calls: after creating the call) close the connection unanswered
//	"slow"         (POST /calls: after creating the call) answer only once the client gave up
type protocolServer struct {
	*httptest.Server
	ttl time.Duration // credential lifetime

	mu             sync.Mutex
	seq            int
	calls          map[string]*psCall
	byKey          map[string]string
	posts          map[string]int // POST /calls per idempotency key
	gets           int            // GET /calls/{id}
	polling        int            // GETs now held in a long poll
	completions    []psComplete
	issued         []string        // every credential token handed out
	needsApproval  map[string]bool // action -> waits for an approver
	undeclared     map[string]bool // connector -> not on the manifest
	autoApprove    time.Duration   // > 0: approve pending calls after this
	ignoreWait     bool            // answer GET at once, as a server without long polling
	postFaults     []string
	getFaults      []string
	completeFaults []string
	intercept      func(w http.ResponseWriter, r *http.Request) bool // runs first; true: answered
}

type psCall struct {
	ID             string          `json:"id"`
	AgentID        string          `json:"agent_id"`
	Connector      string          `json:"connector"`
	Action         string          `json:"action"`
	DeclaredRisk   string          `json:"declared_risk"`
	Risk           string          `json:"risk"`
	Status         string          `json:"status"`
	IdempotencyKey string          `json:"idempotency_key"`
	Summary        string          `json:"summary"`
	CreatedAt      time.Time       `json:"created_at"`
	ExpiresAt      time.Time       `json:"expires_at"`
	CompletedAt    *time.Time      `json:"completed_at"`
	Outcome        string          `json:"outcome"`
	Credential     json.RawMessage `json:"credential,omitempty"`

	token   string
	decided chan struct{} // closed when the call leaves pending_approval
}

type psComplete struct {
	CallID     string
	Outcome    string `json:"outcome"`
	Error      string `json:"error"`
	DurationMS int64  `json:"duration_ms"`
}

func newProtocolServer(t testing.TB) *protocolServer {
	t.Helper()
	ps := &protocolServer{
		ttl:           2 * time.Minute,
		calls:         map[string]*psCall{},
		byKey:         map[string]string{},
		posts:         map[string]int{},
		needsApproval: map[string]bool{},
		undeclared:    map[string]bool{},
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/calls", ps.create)
	mux.HandleFunc("GET /v1/calls/{id}", ps.get)
	mux.HandleFunc("POST /v1/calls/{id}/complete", ps.complete)
	ps.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+testToken {
			writeError(w, arxerr.New(arxerr.InvalidToken, "unknown token"))
			return
		}
		if f := ps.intercept; f != nil && f(w, r) {
			return
		}
		mux.ServeHTTP(w, r)
	}))
	t.Cleanup(ps.Close)
	return ps
}

// client returns a Client of ps with short backoffs, logging at debug level
// into a buffer that is checked for secrets when the test ends.
func (ps *protocolServer) client(t *testing.T) *Client {
	t.Helper()
	logs := new(logbuf.Buffer)
	c, err := New(Config{Token: testToken, BaseURL: ps.URL + "/v1/", AgentID: "agent-1", LocalRecordDir: t.TempDir(),
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatal(err)
	}
	c.retry = backoff{attempts: 5, base: time.Millisecond, max: 5 * time.Millisecond}
	c.waitRetry = backoff{base: time.Millisecond, max: 10 * time.Millisecond}
	t.Cleanup(func() { ps.noSecret(t, "log", logs.String()) })
	return c
}

// noSecret fails the test if s holds the agent token or any credential.
func (ps *protocolServer) noSecret(t *testing.T, what, s string) {
	t.Helper()
	ps.mu.Lock()
	secrets := append([]string{testToken}, ps.issued...)
	ps.mu.Unlock()
	for _, sec := range secrets {
		if strings.Contains(s, sec) {
			t.Errorf("%s contains a secret %q:\n%s", what, sec, s)
		}
	}
}

func (ps *protocolServer) create(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Connector      string `json:"connector"`
		Action         string `json:"action"`
		Risk           string `json:"risk"`
		IdempotencyKey string `json:"idempotency_key"`
		Summary        string `json:"summary"`
	}
	if !decodeStrict(w, r, &req) {
		return
	}
	if req.Connector == "" || req.Action == "" || req.IdempotencyKey == "" || len(req.IdempotencyKey) > 128 {
		writeError(w, arxerr.New(arxerr.BadRequest, "connector, action and idempotency_key are required"))
		return
	}
	ps.mu.Lock()
	ps.posts[req.IdempotencyKey]++
	fault := pop(&ps.postFaults)
	if answerFault(w, fault) {
		ps.mu.Unlock()
		return
	}
	if id, ok := ps.byKey[req.IdempotencyKey]; ok {
		body, _ := json.Marshal(ps.calls[id])
		ps.mu.Unlock()
		writeRaw(w, http.StatusOK, body)
		return
	}
	ps.seq++
	now := time.Now().UTC()
	c := &psCall{
		ID: fmt.Sprintf("call-%04d", ps.seq), AgentID: "agent-1", Connector: req.Connector, Action: req.Action,
		DeclaredRisk: cmp.Or(req.Risk, "low"), Risk: cmp.Or(req.Risk, "low"), IdempotencyKey: req.IdempotencyKey,
		Summary: req.Summary, CreatedAt: now, ExpiresAt: now.Add(ps.ttl), decided: make(chan struct{}),
	}
	ps.calls[c.ID] = c
	ps.byKey[req.IdempotencyKey] = c.ID
	status := http.StatusCreated
	switch {
	case ps.undeclared[req.Connector]:
		c.Status = "refused"
		close(c.decided)
		ps.mu.Unlock()
		e := arxerr.New(arxerr.ConnectorNotDeclared, "connector %q is not on the manifest of agent agent-1", req.Connector)
		e.CallID = c.ID
		writeError(w, e)
		return
	case ps.needsApproval[req.Action]:
		c.Status, status = "pending_approval", http.StatusAccepted
		if d := ps.autoApprove; d > 0 {
			time.AfterFunc(d, func() { ps.approve(c.ID) })
		}
	default:
		ps.issue(c)
	}
	body, _ := json.Marshal(c)
	ps.mu.Unlock()
	switch fault {
	case "drop":
		hangUp(w)
		return
	case "slow":
		<-r.Context().Done()
		return
	}
	writeRaw(w, status, body)
}

func (ps *protocolServer) get(w http.ResponseWriter, r *http.Request) {
	ps.mu.Lock()
	ps.gets++
	fault := pop(&ps.getFaults)
	c, ok := ps.calls[r.PathValue("id")]
	ps.mu.Unlock()
	if answerFault(w, fault) {
		return
	}
	if fault == "drop" {
		hangUp(w)
		return
	}
	if !ok {
		writeError(w, arxerr.New(arxerr.CallNotFound, "no call %q", r.PathValue("id")))
		return
	}
	if wait, err := time.ParseDuration(r.URL.Query().Get("wait")); err == nil && wait > 0 && !ps.ignoreWait {
		ps.mu.Lock()
		ps.polling++
		ps.mu.Unlock()
		select {
		case <-c.decided:
		case <-time.After(min(wait, time.Minute)):
		case <-r.Context().Done():
		}
		ps.mu.Lock()
		ps.polling--
		ps.mu.Unlock()
	}
	ps.mu.Lock()
	defer ps.mu.Unlock()
	writeJSON(w, http.StatusOK, c)
}

func (ps *protocolServer) complete(w http.ResponseWriter, r *http.Request) {
	var req psComplete
	if !decodeStrict(w, r, &req) {
		return
	}
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if answerFault(w, pop(&ps.completeFaults)) {
		return
	}
	c, ok := ps.calls[r.PathValue("id")]
	switch {
	case !ok:
		writeError(w, arxerr.New(arxerr.CallNotFound, "no call %q", r.PathValue("id")))
		return
	case req.Outcome != "success" && req.Outcome != "error" && req.Outcome != "cancelled", len(req.Error) > 1024:
		writeError(w, arxerr.New(arxerr.BadRequest, "bad outcome or error"))
		return
	case c.Outcome != "" && c.Outcome != req.Outcome, c.Outcome == "" && c.Status != "approved" && c.Status != "pending_approval":
		writeError(w, arxerr.New(arxerr.CallClosed, "call %s is %s", c.ID, c.Status))
		return
	}
	req.CallID = c.ID
	ps.completions = append(ps.completions, req)
	if c.Outcome == "" {
		now := time.Now().UTC()
		if c.Status == "pending_approval" {
			close(c.decided)
		}
		c.Status, c.Outcome, c.CompletedAt, c.Credential = "failed", req.Outcome, &now, nil
		if req.Outcome == "success" {
			c.Status = "completed"
		}
	}
	writeJSON(w, http.StatusOK, c)
}

// issue gives c a credential. ps.mu is held.
func (ps *protocolServer) issue(c *psCall) {
	c.Status = "approved"
	c.token = "eyJhbGciOiJFZERTQSJ9." + base64.RawURLEncoding.EncodeToString([]byte(`{"jti":"`+c.ID+`"}`)) + ".c2lnbmF0dXJl"
	c.Credential, _ = json.Marshal(map[string]any{"token": c.token, "type": "Bearer", "expires_at": c.ExpiresAt})
	ps.issued = append(ps.issued, c.token)
}

func (ps *protocolServer) approve(id string) { ps.decide(id, "approved") }
func (ps *protocolServer) deny(id string)    { ps.decide(id, "denied") }

func (ps *protocolServer) decide(id, status string) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	c := ps.calls[id]
	if c.Status != "pending_approval" {
		return
	}
	if status == "approved" {
		ps.issue(c)
	} else {
		c.Status = status
	}
	close(c.decided)
}

// waitPolling waits until a GET is held in a long poll. It may run outside
// the test's goroutine, so it reports a timeout with t.Error and false.
func (ps *protocolServer) waitPolling(t *testing.T) bool {
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		ps.mu.Lock()
		n := ps.polling
		ps.mu.Unlock()
		if n > 0 {
			return true
		}
	}
	t.Error("no long poll started")
	return false
}

// lastCall returns the newest call.
func (ps *protocolServer) lastCall() *psCall {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	return ps.calls[fmt.Sprintf("call-%04d", ps.seq)]
}

func (ps *protocolServer) completionsOf(id string) []psComplete {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	var out []psComplete
	for _, c := range ps.completions {
		if c.CallID == id {
			out = append(out, c)
		}
	}
	return out
}

func answerFault(w http.ResponseWriter, fault string) bool {
	switch fault {
	case "unavailable":
		writeError(w, arxerr.New(arxerr.RecordUnavailable, "the record entry could not be committed"))
	case "html502":
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(http.StatusBadGateway)
		fmt.Fprint(w, "<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>")
	default:
		return false
	}
	return true
}

func hangUp(w http.ResponseWriter) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err == nil {
		conn.Close()
	}
}

func decodeStrict(w http.ResponseWriter, r *http.Request, v any) bool {
	if r.Header.Get("Content-Type") != "application/json" {
		writeError(w, arxerr.New(arxerr.UnsupportedMedia, "want application/json"))
		return false
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		writeError(w, arxerr.New(arxerr.BadRequest, "%v", err))
		return false
	}
	return true
}

func writeError(w http.ResponseWriter, e *arxerr.Error) {
	writeJSON(w, e.Status, arxerr.Body{Error: e})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	body, _ := json.Marshal(v)
	writeRaw(w, status, body)
}

func writeRaw(w http.ResponseWriter, status int, body []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

func pop(q *[]string) string {
	if len(*q) == 0 {
		return ""
	}
	f := (*q)[0]
	*q = (*q)[1:]
	return f
}
