package runtime

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/arxsec/arx/arxerr"
	"github.com/arxsec/arx/credential"
	"github.com/arxsec/arx/internal/store"
	"github.com/arxsec/arx/manifest"
	"github.com/arxsec/arx/record"
	"github.com/google/uuid"
)

// CallRequest is what an agent asks for.
type CallRequest struct {
	Connector      string
	Action         string
	Risk           string // declared by the code; "" means low
	IdempotencyKey string
	Summary        string
	// Args are the call's arguments as the agent sent them: a JSON object
	// (nil: none). Conditions of the job description are evaluated on
	// them; the record keeps them, or their hash.
	Args json.RawMessage
}

// CallResult is a call and, while it may proceed, its credential.
type CallResult struct {
	Call       *store.Call
	Credential string // empty unless the call is approved and open
	Replayed   bool   // an earlier request with the same idempotency key made the call
	DSN        string // postgres connectors: the call's own database role, beside Credential (connectors.go)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// callRules is what a call's decision needs from a job description that
// depends on the call alone: its action's condition on the arguments, its
// declared cost, whether the record keeps the arguments' hash only; for
// the enforced job description and, when the agent has one, its shadow.
type callRules struct {
	m        *manifest.Manifest
	hash     string
	unmet    *manifest.Condition
	unmetWhy string
	cost     *record.Money
	hashOnly bool

	shadowHash string
	shadow     *callRules
}

func (r *Runtime) callRules(a *store.Agent, req CallRequest, args callArgs) (*callRules, error) {
	m, err := r.Manifest(a)
	if err != nil {
		return nil, err
	}
	rules := rulesOf(m, req, args)
	rules.hash = a.ManifestHash
	if a.ShadowHash != "" {
		sm, err := r.manifestByHash(a.ShadowHash, nil)
		if err != nil {
			return nil, fmt.Errorf("shadow job description of agent %s: %w", a.ID, err)
		}
		rules.shadowHash, rules.shadow = a.ShadowHash, rulesOf(sm, req, args)
	}
	return rules, nil
}

func rulesOf(m *manifest.Manifest, req CallRequest, args callArgs) *callRules {
	act, _ := m.Action(req.Connector, req.Action)
	rules := &callRules{m: m}
	rules.unmet, rules.unmetWhy = conditionRule(act, args.value)
	if act != nil {
		rules.cost, rules.hashOnly = act.Cost, act.RecordArgs == "hash"
	}
	return rules
}

// RequestCall decides a call: refused (and recorded) when its connector is
// not on the manifest, pending when it needs an approver, otherwise approved
// with a credential. The credential is signed only after the entry that
// records its issue has committed.
func (r *Runtime) RequestCall(ctx context.Context, p *Principal, req CallRequest) (*CallResult, error) {
	return withReauth(ctx, r, p, func(p *Principal) (*CallResult, error) { return r.requestCall(ctx, p, req) })
}

func (r *Runtime) requestCall(ctx context.Context, p *Principal, req CallRequest) (*CallResult, error) {
	start := r.now()
	if p.Kind != store.TokenAgent {
		return nil, arxerr.New(arxerr.Forbidden, "only an agent's token can make calls")
	}
	declared, err := manifest.CheckAsk(req.Connector, req.Action, req.Risk, req.IdempotencyKey)
	if err != nil {
		return nil, err
	}
	// A summary that cannot be stored as it is (a NUL, bytes that are not
	// UTF-8, too long) makes the call a recorded refusal: the record
	// keeps the attempt, with the summary shown escaped.
	invalid := manifest.CheckSummary(req.Summary)
	if invalid != nil {
		req.Summary = ShownText(req.Summary, manifest.MaxSummary)
	}
	args, err := parseArgs(req.Args)
	if err != nil {
		return nil, err
	}
	// What depends on the arguments and the job descriptions alone is
	// evaluated here, in parallel, not in the serial step (again there
	// only when the agent's job description changed meanwhile).
	rules, err := r.callRules(p.Agent, req, args)
	if err != nil {
		return nil, r.internal("manifest", err)
	}
	now := start
	c := &store.Call{ID: newCallID(), AgentID: p.Agent.ID, Connector: req.Connector, Action: req.Action,
		DeclaredRisk: declared.String(), IdempotencyKey: req.IdempotencyKey, Summary: req.Summary, CreatedAt: now,
		Args: args.text, ArgsHash: args.hash}
	if strings.HasPrefix(p.IssuedBy, "user:") {
		c.RaisedBy = p.IssuedBy // a person started this agent process: they cannot approve its requests
	}
	actor := p.Actor()
	var d callDecision
	var existing *store.Call
	_, endCommit := r.stage(ctx, "arx.record.append")
	err = r.update(ctx, p, "request call", func(tx store.Tx) error {
		// Gather. Authority is read inside the transaction: a termination
		// that committed before this point is seen here.
		if p.revokedSince(tx) { // its agent is read and checked just below
			return errReauth
		}
		a, err := tx.Agent(p.Agent.ID)
		if err != nil {
			return err
		}
		if err := agentUsable(a); err != nil {
			return err
		}
		if a.ManifestHash != rules.hash || a.ShadowHash != rules.shadowHash {
			if rules, err = r.callRules(a, req, args); err != nil {
				return err
			}
		}
		m := rules.m
		c.Args = args.text
		if rules.hashOnly {
			c.Args = "" // the record keeps their hash only
		}
		// A retry finds the call its first request made.
		if prior, err := tx.CallByIdempotencyKey(c.AgentID, c.IdempotencyKey); err == nil {
			existing = prior
			return nil
		} else if !errors.Is(err, store.ErrNotFound) {
			return err
		}
		// Decide, compose, append: the store folds the entries into the
		// call's state.
		in := callInput{M: m, Req: req, Declared: declared, Invalid: invalid, Now: now, Counts: tx.CallCounts(c.AgentID),
			Unmet: rules.unmet, UnmetWhy: rules.unmetWhy, Cost: rules.cost}
		d = decideCall(in)
		c.Risk = d.Risk.String()
		entries := callEntries(c, d, m, actor)
		if s := rules.shadow; s != nil {
			in.M, in.Unmet, in.UnmetWhy, in.Cost = s.m, s.unmet, s.unmetWhy, s.cost
			if e := shadowRule(callRef(c), now, rules.shadowHash, d, decideCall(in)); e != nil {
				entries = append(entries, e)
			}
		}
		for _, e := range entries {
			if err := tx.Append(e); err != nil {
				return err
			}
		}
		if d.Cost != "" && d.Status == store.CallApproved {
			if err := r.recordThresholds(tx, a, m, callRef(c), &in.Counts, now); err != nil {
				return err
			}
		}
		if c, err = tx.Call(c.ID); err != nil {
			return err
		}
		if d.Status == store.CallPending {
			ap, err := tx.Approval(c.ID)
			if err != nil {
				return err
			}
			return r.notify(tx, "approval.requested", a, c, ap, now)
		}
		return nil
	})
	endCommit()
	if errors.Is(err, errReauth) {
		return nil, err
	}
	if err != nil {
		r.metrics.calls.WithLabelValues("error").Inc()
		return nil, r.writeFailed("request call", err)
	}
	if existing != nil {
		annotateCall(ctx, p.Agent.Name, existing)
		if existing.Connector != c.Connector || existing.Action != c.Action || existing.DeclaredRisk != c.DeclaredRisk ||
			existing.ArgsHash != c.ArgsHash {
			return nil, arxerr.New(arxerr.Conflict, "idempotency_key %q was used for a different call", truncate(c.IdempotencyKey, 64))
		}
		if existing.Status == store.CallRefused {
			return nil, r.refusalOf(existing)
		}
		res, err := r.result(ctx, existing, true)
		if err != nil {
			return nil, err
		}
		res.Replayed = true
		return res, nil
	}
	r.metrics.calls.WithLabelValues(c.Status).Inc()
	r.metrics.requestLatency.Observe(r.now().Sub(start).Seconds())
	annotateCall(ctx, p.Agent.Name, c)
	if c.Status == store.CallPending {
		r.broadcast(ctx, &Event{Type: "approval.requested", AgentID: c.AgentID, CallID: c.ID, At: now})
		r.kickOutbox()
	}
	if refusal := d.Refusal; refusal != nil {
		refusal.CallID = c.ID
		r.log.Info("call refused", "agent", c.AgentID, "call", c.ID, "connector", c.Connector, "action", c.Action, "code", refusal.Code)
		return nil, refusal
	}
	return r.result(ctx, c, false)
}

func (r *Runtime) refusalOf(c *store.Call) error {
	e := arxerr.New(arxerr.Code(c.Refusal), "call %s was refused", c.ID)
	e.CallID = c.ID
	return e
}

// result attaches the credential when the call may proceed. decided says
// the call may have waited for an approver (not one just decided at once):
// its approval is checked first.
func (r *Runtime) result(ctx context.Context, c *store.Call, decided bool) (*CallResult, error) {
	res := &CallResult{Call: c}
	if c.Status == store.CallApproved && r.now().Before(c.ExpiresAt) {
		if decided || c.Risk == manifest.RiskHigh.String() {
			if err := r.checkSignedApproval(ctx, c); err != nil {
				return nil, err
			}
		}
		_, endSign := r.stage(ctx, "arx.credential.issue")
		tok, err := r.issuer.Sign(credential.Claims{AgentID: c.AgentID, CallID: c.ID, Connector: c.Connector,
			Action: c.Action, Risk: c.Risk, ArgsHash: c.ArgsHash, IssuedAt: c.CreatedAt, Expiry: c.ExpiresAt})
		endSign()
		if err != nil {
			return nil, r.internal("sign credential", err)
		}
		res.Credential = tok
		if err := r.connectorCredential(res); err != nil {
			return nil, err
		}
	}
	return res, nil
}

// EffectiveStatus is a call's status as of now: an approved call past its
// expiry is expired even before the sweeper records it.
func EffectiveStatus(c *store.Call, now time.Time) string {
	if c.Status == store.CallApproved && !now.Before(c.ExpiresAt) {
		return store.CallExpired
	}
	return c.Status
}

// GetCall returns a call its owner (or an operator) may see, long-polling
// up to wait while it is pending.
func (r *Runtime) GetCall(ctx context.Context, p *Principal, id string, wait time.Duration) (*CallResult, error) {
	if wait > MaxWait {
		wait = MaxWait
	}
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	endWait, waiting := func() {}, false
	defer func() { endWait() }()
	for {
		ch := r.waiters.add(id)
		c, err := r.store.Call(ctx, id)
		if err != nil {
			r.waiters.remove(id, ch)
			if errors.Is(err, store.ErrNotFound) {
				return nil, arxerr.New(arxerr.CallNotFound, "no call %s", id)
			}
			return nil, r.ReadFailed("get call", err)
		}
		if p.Kind == store.TokenAgent && c.AgentID != p.Agent.ID || p.Kind != store.TokenAgent && !p.IsAdmin() && !p.IsPerson() {
			r.waiters.remove(id, ch)
			return nil, arxerr.New(arxerr.CallNotFound, "no call %s", id) // do not reveal other agents' calls
		}
		if c.Status != store.CallPending || wait <= 0 {
			r.waiters.remove(id, ch)
			endWait()
			if p.Kind != store.TokenAgent {
				return &CallResult{Call: c}, nil // credentials go only to the agent
			}
			annotateCall(ctx, p.Agent.Name, c)
			return r.result(ctx, c, true)
		}
		if r.tracing != nil && !waiting { // one span for the whole wait, however many wake-ups
			_, endWait = r.stage(ctx, "arx.approval.wait")
			waiting = true
		}
		select {
		case <-ch:
		case <-deadline.C:
			r.waiters.remove(id, ch)
			return &CallResult{Call: c}, nil
		case <-r.stopping:
			r.waiters.remove(id, ch)
			return &CallResult{Call: c}, nil
		case <-ctx.Done():
			r.waiters.remove(id, ch)
			return nil, ctx.Err()
		}
	}
}

// Outcome is how an agent reports a call's end.
type Outcome struct {
	Outcome    string // success, error, cancelled
	Error      string
	DurationMS int64
	// Usage is what the call used, as the agent reports it (nil: not
	// reported): charged to the agent's daily spend and token caps.
	Usage *Usage
}

// Usage is what a call used: tokens, and an amount ("0.013 USD").
type Usage struct {
	Tokens int64
	Amount string
}

// MaxUsageTokens bounds the tokens one completion may report.
const MaxUsageTokens = 1_000_000_000_000

// usageRule checks a completion's reported usage against the call's job
// description and says what it charges: the amount (unless the action
// declares its cost, charged when the call began) and the tokens.
func usageRule(m *manifest.Manifest, c *store.Call, u *Usage) (amount, charged string, tokens int64, err error) {
	if u == nil {
		return "", "", 0, nil
	}
	if u.Tokens < 0 || u.Tokens > MaxUsageTokens {
		return "", "", 0, arxerr.New(arxerr.UsageInvalid, "usage.tokens %d is not between 0 and %d", u.Tokens, int64(MaxUsageTokens))
	}
	if u.Amount == "" {
		return "", "", u.Tokens, nil
	}
	money, err := record.ParseMoney(u.Amount)
	if err != nil {
		return "", "", 0, arxerr.New(arxerr.UsageInvalid, "usage.amount: %s", err.Error())
	}
	if l := m.Budget.Spend; l != nil && money.Currency != l.PerDay.Currency {
		return "", "", 0, arxerr.New(arxerr.UsageInvalid, "usage.amount is in %s but this agent's spend cap is in %s", money.Currency, l.PerDay.Currency)
	}
	amount = money.String()
	if a, ok := m.Action(c.Connector, c.Action); m.Budget.Spend != nil && (!ok || a.Cost == nil) {
		charged = amount // counted only against a cap, in its currency
	}
	return amount, charged, u.Tokens, nil
}

// CompleteCall closes a call; its credential dies with the commit.
func (r *Runtime) CompleteCall(ctx context.Context, p *Principal, id string, o Outcome) (*store.Call, error) {
	if p.Kind != store.TokenAgent {
		return nil, arxerr.New(arxerr.Forbidden, "only the agent that made a call can complete it")
	}
	switch o.Outcome {
	case "success", "error", "cancelled":
	default:
		return nil, arxerr.New(arxerr.BadRequest, "outcome %q is not success, error or cancelled", truncate(o.Outcome, 32))
	}
	if record.TextProblem(o.Error, 1024) != "" {
		return nil, arxerr.New(arxerr.BadRequest, "error %s", record.TextProblem(o.Error, 1024))
	}
	if o.DurationMS < 0 || o.DurationMS > int64(24*time.Hour/time.Millisecond) {
		return nil, arxerr.New(arxerr.BadRequest, "duration_ms out of range")
	}
	return withReauth(ctx, r, p, func(p *Principal) (*store.Call, error) { return r.completeCall(ctx, p, id, o) })
}

func (r *Runtime) completeCall(ctx context.Context, p *Principal, id string, o Outcome) (*store.Call, error) {
	now := r.now()
	var out *store.Call
	withdrawn := false
	err := r.update(ctx, p, "complete call", func(tx store.Tx) error {
		if err := checkRemembered(tx, p); err != nil {
			return err
		}
		c, err := tx.Call(id)
		if errors.Is(err, store.ErrNotFound) || (err == nil && c.AgentID != p.Agent.ID) {
			return arxerr.New(arxerr.CallNotFound, "no call %s", id)
		}
		if err != nil {
			return err
		}
		out = c
		status := store.CallCompleted
		if o.Outcome != "success" {
			status = store.CallFailed
		}
		switch c.Status {
		case store.CallApproved, store.CallPending:
		case store.CallExpired:
			if c.CompletedAt == nil { // a credential that expired: the outcome still belongs in the record
				break
			}
			return arxerr.New(arxerr.CallClosed, "call %s is %s", id, c.Status)
		case store.CallCompleted, store.CallFailed:
			if c.Status == status && c.Outcome == o.Outcome {
				return nil // a retried completion
			}
			return arxerr.New(arxerr.CallClosed, "call %s is already %s", id, c.Status)
		default:
			return arxerr.New(arxerr.CallClosed, "call %s is %s", id, c.Status)
		}
		ref, actor := callRef(c), p.Actor()
		outcome := record.Outcome{Outcome: o.Outcome, Error: o.Error, DurationMS: o.DurationMS}
		var m *manifest.Manifest
		var a *store.Agent
		manifestOf := func() (*manifest.Manifest, error) {
			if m != nil {
				return m, nil
			}
			if a, err = tx.Agent(c.AgentID); err != nil {
				return nil, err
			}
			m, err = r.Manifest(a)
			return m, err
		}
		if o.Usage != nil {
			if _, err := manifestOf(); err != nil {
				return err
			}
			// A report ARX cannot count does not keep the call open: the
			// completion is recorded with why its usage was not counted.
			if outcome.Amount, outcome.Charged, outcome.Tokens, err = usageRule(m, c, o.Usage); err != nil {
				var ae *arxerr.Error
				if !errors.As(err, &ae) {
					return err
				}
				outcome.UsageRefused = truncate(ae.Message, 200)
				r.log.Warn("call completed with usage that is not counted", "agent", c.AgentID, "call", c.ID, "why", ae.Message)
			}
		}
		var e *record.Entry
		switch {
		case c.Status == store.CallPending:
			// The agent gave up waiting: its request is withdrawn.
			e, withdrawn = record.ApprovalWithdrawn(ref, actor, now, outcome), true
		case c.Status == store.CallExpired:
			outcome.Late = true // recorded as drift when it expired
		case !now.Before(c.ExpiresAt):
			outcome.Late = true // the work outlived its credential
			if _, err := manifestOf(); err != nil {
				return err
			}
			if err := tx.Append(record.DriftDetected(ref, "system", now, durationDrift(m, c, now, "completed_after_ms"))); err != nil {
				return err
			}
		}
		if e == nil {
			e = record.CallCompleted(ref, actor, now, outcome)
		}
		var before store.Counts
		if outcome.Charged != "" || outcome.Tokens > 0 {
			before = tx.CallCounts(c.AgentID)
		}
		if err := tx.Append(e); err != nil {
			return err
		}
		if outcome.Charged != "" || outcome.Tokens > 0 {
			if err := r.recordThresholds(tx, a, m, ref, &before, now); err != nil {
				return err
			}
		}
		if out, err = tx.Call(id); err != nil {
			return err
		}
		return r.onCallClosed(tx, out) // connectors.go: drop the call's database role
	})
	if errors.Is(err, errReauth) {
		return nil, err
	}
	if err != nil {
		return nil, r.writeFailed("complete call", err)
	}
	annotateCall(ctx, p.Agent.Name, out)
	r.afterCallClosed(out)
	if withdrawn {
		r.broadcast(ctx, &Event{Type: "approval.decided", AgentID: out.AgentID, CallID: id, Status: store.ApprovalWithdrawn, At: now}, id)
	} else {
		r.waiters.wake(id)
	}
	return out, nil
}

// Introspection is what ARX says of a presented credential.
type Introspection struct {
	Active bool
	Claims *credential.Claims
	Code   arxerr.Code
	Reason string
}

// Introspect says whether a credential is live now: a valid signature, not
// expired, its call still approved and open, its agent active. Everything
// after the signature is read from the database on each request.
func (r *Runtime) Introspect(ctx context.Context, token string) Introspection {
	now := r.now()
	cl, err := r.keys.Verify(token, now)
	switch {
	case errors.Is(err, credential.ErrExpired):
		return Introspection{Code: arxerr.CredentialExpired, Reason: "the credential has expired", Claims: cl}
	case err != nil:
		return Introspection{Code: arxerr.CredentialInvalid, Reason: "the credential is not valid"}
	}
	c, err := r.store.Call(ctx, cl.CallID)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return Introspection{Code: arxerr.CredentialInvalid, Reason: "no such call", Claims: cl}
		}
		r.log.Error("introspect", "err", err)
		return Introspection{Code: arxerr.RecordUnavailable, Reason: "the personnel record could not be read", Claims: cl}
	}
	if c.AgentID != cl.AgentID || c.Connector != cl.Connector || c.Action != cl.Action {
		return Introspection{Code: arxerr.CredentialMismatch, Reason: "the credential does not match its call", Claims: cl}
	}
	if st := EffectiveStatus(c, now); st != store.CallApproved {
		code := arxerr.CredentialClosed
		if st == store.CallExpired {
			code = arxerr.CredentialExpired
		}
		return Introspection{Code: code, Reason: fmt.Sprintf("the call is %s", st), Claims: cl}
	}
	a, err := r.store.Agent(ctx, c.AgentID)
	if err != nil {
		r.log.Error("introspect", "err", err)
		return Introspection{Code: arxerr.RecordUnavailable, Reason: "the personnel record could not be read", Claims: cl}
	}
	if err := agentUsable(a); err != nil {
		return Introspection{Code: arxerr.AgentTerminated, Reason: "the agent is not active", Claims: cl}
	}
	return Introspection{Active: true, Claims: cl}
}

// newCallID is a time-ordered UUID (version 7): calls are inserted in key
// order, which keeps the database's writes on few pages.
func newCallID() string {
	id, err := uuid.NewV7()
	if err != nil {
		return uuid.NewString()
	}
	return id.String()
}

// MaxArgsBytes bounds a call's arguments, as JSON.
const MaxArgsBytes = 8 << 10

// callArgs are a call's arguments, read: the value conditions see, their
// canonical text and its SHA-256.
type callArgs struct {
	value      map[string]any
	text, hash string
}

// parseArgs reads a call's arguments: a JSON object of at most
// MaxArgsBytes, nested at most 8 deep. Numbers are int64 when whole, else
// float64; the text is re-encoded with sorted keys (encoding/json), so the
// same arguments always give the same text and hash.
func parseArgs(raw json.RawMessage) (callArgs, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return callArgs{}, nil
	}
	bad := func(why string) error {
		e := arxerr.New(arxerr.BadRequest, "args %s", why)
		e.Hint = fmt.Sprintf("send the call's arguments as one JSON object of at most %d bytes", MaxArgsBytes)
		return e
	}
	if len(raw) > MaxArgsBytes {
		return callArgs{}, bad(fmt.Sprintf("are larger than %d bytes", MaxArgsBytes))
	}
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil || d.More() {
		return callArgs{}, bad("are not valid JSON")
	}
	obj, ok := v.(map[string]any)
	if !ok {
		return callArgs{}, bad("are not a JSON object")
	}
	conv, err := argValue(obj, 0)
	if err != nil {
		return callArgs{}, bad(err.Error())
	}
	text, err := json.Marshal(conv)
	if err != nil {
		return callArgs{}, bad("cannot be encoded")
	}
	if !utf8.Valid(text) {
		return callArgs{}, bad("are not valid UTF-8")
	}
	sum := sha256.Sum256(text)
	return callArgs{value: conv.(map[string]any), text: string(text), hash: hex.EncodeToString(sum[:])}, nil
}

func argValue(v any, depth int) (any, error) {
	if depth > 8 {
		return nil, errors.New("are nested more than 8 deep")
	}
	switch x := v.(type) {
	case json.Number:
		if i, err := x.Int64(); err == nil {
			return i, nil
		}
		f, err := x.Float64()
		if err != nil {
			return nil, fmt.Errorf("hold a number out of range (%s)", truncate(string(x), 32))
		}
		return f, nil
	case map[string]any:
		for k, e := range x {
			c, err := argValue(e, depth+1)
			if err != nil {
				return nil, err
			}
			x[k] = c
		}
		return x, nil
	case []any:
		for i, e := range x {
			c, err := argValue(e, depth+1)
			if err != nil {
				return nil, err
			}
			x[i] = c
		}
		return x, nil
	}
	return v, nil
}
