package api

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/arxsec/arx/arxerr"
	"github.com/arxsec/arx/internal/runtime"
	"github.com/arxsec/arx/internal/store"
	"github.com/arxsec/arx/record"
)

type principalKey struct{}

func principal(r *http.Request) *runtime.Principal {
	p, _ := r.Context().Value(principalKey{}).(*runtime.Principal)
	return p
}

// bearer extracts the token of an Authorization: Bearer header.
func bearer(r *http.Request) string {
	h := r.Header.Get("Authorization")
	if len(h) < 7 || !strings.EqualFold(h[:7], "bearer ") {
		return ""
	}
	return strings.TrimSpace(h[7:])
}

func (s *server) authed(fn handlerFunc) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		p, err := s.rt.AuthenticateFrom(r.Context(), bearer(r), ClientIP(r))
		if err != nil {
			return err
		}
		return fn(w, r.WithContext(context.WithValue(r.Context(), principalKey{}, p)))
	}
}

func (s *server) agentOnly(fn handlerFunc) handlerFunc {
	return s.authed(func(w http.ResponseWriter, r *http.Request) error {
		if principal(r).Kind != store.TokenAgent {
			return arxerr.New(arxerr.Forbidden, "this endpoint takes an agent's token (ARX_TOKEN)")
		}
		return fn(w, r)
	})
}

// agentCall serves an agent's request whose effects all happen in one
// Update (asking for a call, completing one): its token may be resolved
// from memory (runtime.AuthenticateAgent), the Update checking what memory
// cannot know. Nothing else may use it.
func (s *server) agentCall(fn handlerFunc) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		p, err := s.rt.AuthenticateAgent(r.Context(), bearer(r), ClientIP(r))
		if err != nil {
			return err
		}
		if p.Kind != store.TokenAgent {
			return arxerr.New(arxerr.Forbidden, "this endpoint takes an agent's token (ARX_TOKEN)")
		}
		return fn(w, r.WithContext(context.WithValue(r.Context(), principalKey{}, p)))
	}
}

func (s *server) adminOnly(fn handlerFunc) handlerFunc {
	return s.authed(func(w http.ResponseWriter, r *http.Request) error {
		if !principal(r).IsAdmin() {
			e := arxerr.New(arxerr.Forbidden, "this endpoint takes an operator's token")
			e.Hint = "use the admin token (ARX_ADMIN_TOKEN, written to DATA_DIR/admin.token on first start)"
			return e
		}
		return fn(w, r)
	})
}

// Views: the JSON shapes of docs/api.md.

type credentialView struct {
	Token     string    `json:"token"`
	Type      string    `json:"type"`
	ExpiresAt time.Time `json:"expires_at"`
	DSN       string    `json:"dsn,omitempty"` // postgres connectors: the call's database role
}

type callView struct {
	ID             string          `json:"id"`
	AgentID        string          `json:"agent_id"`
	Connector      string          `json:"connector"`
	Action         string          `json:"action"`
	DeclaredRisk   string          `json:"declared_risk"`
	Risk           string          `json:"risk"`
	Status         string          `json:"status"`
	Refusal        string          `json:"refusal,omitempty"`
	IdempotencyKey string          `json:"idempotency_key"`
	Summary        string          `json:"summary"`
	Args           json.RawMessage `json:"args,omitempty"`      // as recorded; absent when none, or only their hash is kept
	ArgsHash       string          `json:"args_hash,omitempty"` // SHA-256 of the arguments' canonical text
	CreatedAt      time.Time       `json:"created_at"`
	ExpiresAt      time.Time       `json:"expires_at"`
	CompletedAt    *time.Time      `json:"completed_at"`
	Outcome        string          `json:"outcome"`
	Error          string          `json:"error,omitempty"`
	DurationMS     int64           `json:"duration_ms,omitempty"`
	Credential     *credentialView `json:"credential,omitempty"`
}

func viewCall(c *store.Call, cred string, now time.Time) callView {
	v := callView{ID: c.ID, AgentID: c.AgentID, Connector: c.Connector, Action: c.Action, DeclaredRisk: c.DeclaredRisk,
		Risk: c.Risk, Status: runtime.EffectiveStatus(c, now), Refusal: c.Refusal, IdempotencyKey: c.IdempotencyKey,
		Summary: c.Summary, CreatedAt: c.CreatedAt, ExpiresAt: c.ExpiresAt, CompletedAt: c.CompletedAt,
		Outcome: c.Outcome, Error: c.Error, DurationMS: c.DurationMS, ArgsHash: c.ArgsHash}
	if c.Args != "" {
		v.Args = json.RawMessage(c.Args)
	}
	if cred != "" {
		v.Credential = &credentialView{Token: cred, Type: "Bearer", ExpiresAt: c.ExpiresAt}
	}
	return v
}

type agentView struct {
	ID           string     `json:"id"`
	Name         string     `json:"name"`
	Owner        string     `json:"owner"`
	Status       string     `json:"status"`
	ManifestHash string     `json:"manifest_hash"`
	ShadowHash   string     `json:"shadow_hash,omitempty"`
	CreatedAt    time.Time  `json:"created_at"`
	TerminatedAt *time.Time `json:"terminated_at"`
	Manifest     string     `json:"manifest,omitempty"`
	// ShadowManifest is the job description evaluated in shadow (GET of
	// one agent that has one).
	ShadowManifest string `json:"shadow_manifest,omitempty"`
	// Usage is the day's spend and tokens against the caps (GET of one
	// agent whose job description has caps).
	Usage *runtime.AgentUsage `json:"usage,omitempty"`
}

func viewAgent(a *store.Agent, withManifest bool) agentView {
	v := agentView{ID: a.ID, Name: a.Name, Owner: a.Owner, Status: a.Status, ManifestHash: a.ManifestHash, ShadowHash: a.ShadowHash,
		CreatedAt: a.CreatedAt, TerminatedAt: a.TerminatedAt}
	if withManifest {
		v.Manifest = string(a.Manifest)
	}
	return v
}

func (s *server) createCall(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		Connector      string          `json:"connector"`
		Action         string          `json:"action"`
		Risk           string          `json:"risk"`
		IdempotencyKey string          `json:"idempotency_key"`
		Summary        string          `json:"summary"`
		Args           json.RawMessage `json:"args"`
	}
	if err := decode(r, MaxBodyBytes, &req); err != nil {
		return err
	}
	res, err := s.rt.RequestCall(r.Context(), principal(r), runtime.CallRequest{Connector: req.Connector, Action: req.Action,
		Risk: req.Risk, IdempotencyKey: req.IdempotencyKey, Summary: req.Summary, Args: req.Args})
	if err != nil {
		return err
	}
	status := http.StatusCreated
	switch {
	case res.Replayed:
		status = http.StatusOK
	case res.Call.Status == store.CallPending:
		status = http.StatusAccepted
	}
	writeJSON(w, status, viewResult(res, time.Now()))
	return nil
}

func (s *server) getCall(w http.ResponseWriter, r *http.Request) error {
	var wait time.Duration
	if q := r.URL.Query().Get("wait"); q != "" {
		d, err := time.ParseDuration(q)
		if err != nil || d < 0 {
			if n, nerr := strconv.Atoi(q); nerr == nil && n >= 0 {
				d, err = time.Duration(n)*time.Second, nil
			} else {
				return arxerr.New(arxerr.BadRequest, "wait %q is not a duration such as 30s", truncate(q, 32))
			}
		}
		wait = d
	}
	res, err := s.rt.GetCall(r.Context(), principal(r), r.PathValue("id"), wait)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, viewResult(res, time.Now()))
	return nil
}

func (s *server) completeCall(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		Outcome    string `json:"outcome"`
		Error      string `json:"error"`
		DurationMS int64  `json:"duration_ms"`
		Usage      *struct {
			Tokens int64  `json:"tokens"`
			Amount string `json:"amount"`
		} `json:"usage"`
	}
	if err := decode(r, MaxBodyBytes, &req); err != nil {
		return err
	}
	o := runtime.Outcome{Outcome: req.Outcome, Error: req.Error, DurationMS: req.DurationMS}
	if req.Usage != nil {
		o.Usage = &runtime.Usage{Tokens: req.Usage.Tokens, Amount: req.Usage.Amount}
	}
	c, err := s.rt.CompleteCall(r.Context(), principal(r), r.PathValue("id"), o)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, viewCall(c, "", time.Now()))
	return nil
}

func (s *server) introspect(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		Credential string `json:"credential"`
	}
	if err := decode(r, MaxBodyBytes, &req); err != nil {
		return err
	}
	in := s.rt.Introspect(r.Context(), req.Credential)
	if !in.Active {
		writeJSON(w, http.StatusOK, map[string]any{"active": false, "code": in.Code, "message": in.Reason})
		return nil
	}
	c := in.Claims
	writeJSON(w, http.StatusOK, map[string]any{"active": true, "agent_id": c.AgentID, "call_id": c.CallID,
		"connector": c.Connector, "action": c.Action, "risk": c.Risk, "expires_at": c.Expiry.UTC()})
	return nil
}

func (s *server) hire(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		Manifest string `json:"manifest"`
		Replace  bool   `json:"replace"` // terminate the agents on staff of the same name in the same step
	}
	if err := decode(r, MaxManifestBytes, &req); err != nil {
		return err
	}
	if strings.TrimSpace(req.Manifest) == "" {
		return arxerr.New(arxerr.BadRequest, "manifest is empty")
	}
	a, token, err := s.rt.HireWith(r.Context(), principal(r), []byte(req.Manifest), req.Replace)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, map[string]any{"agent": viewAgent(a, false), "token": token})
	return nil
}

func (s *server) agentByPath(r *http.Request) (*store.Agent, error) {
	a, err := s.rt.Store().Agent(r.Context(), r.PathValue("id"))
	if errors.Is(err, store.ErrNotFound) {
		return nil, arxerr.New(arxerr.AgentNotFound, "no agent %s", truncate(r.PathValue("id"), 64))
	}
	if err != nil {
		return nil, s.rt.ReadFailed("agent", err)
	}
	return a, nil
}

// seesAgent: an operator sees every agent; a person, the agents they are
// responsible for (owner, approver, delegate), as in the console; an
// agent, none through these routes (GET /v1/agent is its own).
func (s *server) seesAgent(p *runtime.Principal, a *store.Agent) bool {
	return p.IsAdmin() || p.IsPerson() && s.rt.CanTerminate(p, a)
}

func (s *server) listAgents(w http.ResponseWriter, r *http.Request) error {
	p := principal(r)
	if !p.IsAdmin() && !p.IsPerson() {
		return arxerr.New(arxerr.Forbidden, "an agent lists itself with GET /v1/agent")
	}
	agents, err := s.rt.Store().Agents(r.Context())
	if err != nil {
		return s.rt.ReadFailed("list agents", err)
	}
	out := make([]agentView, 0, len(agents))
	for i := range agents {
		if s.seesAgent(p, &agents[i]) {
			out = append(out, viewAgent(&agents[i], false))
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"agents": out})
	return nil
}

func (s *server) getAgent(w http.ResponseWriter, r *http.Request) error {
	a, err := s.agentByPath(r)
	if err != nil {
		return err
	}
	if !s.seesAgent(principal(r), a) {
		return arxerr.New(arxerr.AgentNotFound, "no agent %s", truncate(r.PathValue("id"), 64))
	}
	return s.writeAgent(w, r, a)
}

// writeAgent answers with one agent: its job descriptions' texts (the one
// it is held to, and its shadow) and its usage today.
func (s *server) writeAgent(w http.ResponseWriter, r *http.Request, a *store.Agent) error {
	v := viewAgent(a, false)
	enforced, shadow, err := s.rt.ManifestText(a)
	if err != nil {
		return err
	}
	v.Manifest, v.ShadowManifest = string(enforced), string(shadow)
	if v.Usage, err = s.rt.Usage(r.Context(), a); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, v)
	return nil
}

func (s *server) agentCalls(w http.ResponseWriter, r *http.Request) error {
	a, err := s.agentByPath(r)
	if err != nil {
		return err
	}
	limit, err := intParam(r, "limit", 50, 1, 1000)
	if err != nil {
		return err
	}
	calls, err := s.rt.Store().Calls(r.Context(), a.ID, int(limit))
	if err != nil {
		return s.rt.ReadFailed("list calls", err)
	}
	now := time.Now()
	out := make([]callView, 0, len(calls))
	for i := range calls {
		out = append(out, viewCall(&calls[i], "", now))
	}
	writeJSON(w, http.StatusOK, map[string]any{"calls": out})
	return nil
}

type entryView struct {
	Index    int64   `json:"index"`
	LeafHash string  `json:"leaf_hash"`
	Entry    jsonRaw `json:"entry"`
	Raw      string  `json:"raw,omitempty"`
}

// jsonRaw embeds canonical entry bytes as they are.
type jsonRaw []byte

func (j jsonRaw) MarshalJSON() ([]byte, error) { return j, nil }

func (s *server) agentRecord(w http.ResponseWriter, r *http.Request) error {
	a, err := s.agentByPath(r)
	if err != nil {
		return err
	}
	after, err := intParam(r, "after", -1, -1, 1<<53)
	if err != nil {
		return err
	}
	limit, err := intParam(r, "limit", 100, 1, 1000)
	if err != nil {
		return err
	}
	entries, err := s.rt.Store().AgentEntries(r.Context(), a.ID, after, int(limit))
	if err != nil {
		return s.rt.ReadFailed("agent record", err)
	}
	out := make([]entryView, 0, len(entries))
	next := after
	for _, e := range entries {
		out = append(out, entryView{Index: e.Index, LeafHash: record.HashString(e.Leaf), Entry: e.Data})
		next = e.Index
	}
	resp := map[string]any{"agent": viewAgent(a, false), "entries": out}
	if len(entries) == int(limit) {
		resp["next"] = next
	}
	writeJSON(w, http.StatusOK, resp)
	return nil
}

func (s *server) logEntries(w http.ResponseWriter, r *http.Request) error {
	start, err := intParam(r, "start", 0, 0, 1<<53)
	if err != nil {
		return err
	}
	limit, err := intParam(r, "limit", 1000, 1, 10000)
	if err != nil {
		return err
	}
	entries, err := s.rt.Store().Entries(r.Context(), start, int(limit))
	if err != nil {
		return s.rt.ReadFailed("log entries", err)
	}
	out := make([]map[string]any, 0, len(entries))
	for _, e := range entries {
		out = append(out, map[string]any{"index": e.Index, "data": base64.StdEncoding.EncodeToString(e.Data)})
	}
	writeJSON(w, http.StatusOK, map[string]any{"entries": out})
	return nil
}

func (s *server) issueToken(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		Label string `json:"label"`
	}
	if err := decode(r, MaxBodyBytes, &req); err != nil {
		return err
	}
	id, token, err := s.rt.IssueToken(r.Context(), principal(r), r.PathValue("id"), req.Label)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, map[string]string{"token_id": id, "token": token})
	return nil
}

func (s *server) processStopped(w http.ResponseWriter, r *http.Request) error {
	var req runtime.ProcessStop
	if err := decode(r, MaxBodyBytes, &req); err != nil {
		return err
	}
	if err := s.rt.RecordProcessStopped(r.Context(), principal(r), r.PathValue("id"), req); err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, map[string]string{"status": "recorded"})
	return nil
}

func (s *server) revokeToken(w http.ResponseWriter, r *http.Request) error {
	if err := s.rt.RevokeToken(r.Context(), principal(r), r.PathValue("id"), r.PathValue("token")); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "revoked"})
	return nil
}

func (s *server) checkpoint(w http.ResponseWriter, r *http.Request) error {
	cp, err := s.rt.Store().LatestCheckpoint(r.Context())
	if errors.Is(err, store.ErrNotFound) {
		if err := s.rt.Checkpoint(r.Context()); err != nil {
			return err
		}
		cp, err = s.rt.Store().LatestCheckpoint(r.Context())
	}
	if err != nil {
		return s.rt.ReadFailed("checkpoint", err)
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-cache")
	_, err = w.Write(cp.Signed)
	return err
}

func (s *server) key(w http.ResponseWriter, r *http.Request) error {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, err := w.Write([]byte(s.logKey + "\n"))
	return err
}

func intParam(r *http.Request, name string, def, min, max int64) (int64, error) {
	q := r.URL.Query().Get(name)
	if q == "" {
		return def, nil
	}
	n, err := strconv.ParseInt(q, 10, 64)
	if err != nil || n < min || n > max {
		return 0, arxerr.New(arxerr.BadRequest, "%s must be an integer from %d to %d", name, min, max)
	}
	return n, nil
}
