package agentvault

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/arxsec/arx/arxerr"
	"github.com/arxsec/arx/manifest"
)

// Risk is the risk an agent declares for an action. The server uses the
// higher of it and the manifest's risk for the action.
type Risk string

// The risks.
const (
	RiskLow    Risk = "low"
	RiskMedium Risk = "medium"
	RiskHigh   Risk = "high"
)

// Action names one governed action: a connector on the agent's manifest and
// one of its actions.
type Action struct {
	Connector string
	Action    string
	// Risk is the declared risk; default RiskLow.
	Risk Risk
	// Summary describes the arguments for approvers (at most 512
	// characters). Never put secrets in it.
	Summary string
	// IdempotencyKey makes retries of one request return the same call
	// (1-128 printable ASCII characters). Empty: Do and Request generate a
	// UUIDv4 and use it for all their retries.
	IdempotencyKey string
	// Args are the call's arguments, sent as a JSON object: conditions in
	// the job description (when:) are evaluated on them, approvers see
	// them, and the record keeps them (or only their hash, where the job
	// description says record_args: hash). Nil: none.
	Args map[string]any
}

// Call is a governed call as the server describes it (see docs/api.md).
// Encoding a Call as JSON or printing it redacts its credential's token.
type Call struct {
	ID             string     `json:"id"`
	AgentID        string     `json:"agent_id"`
	Connector      string     `json:"connector"`
	Action         string     `json:"action"`
	DeclaredRisk   Risk       `json:"declared_risk"`
	Risk           Risk       `json:"risk"` // effective risk
	Status         string     `json:"status"`
	IdempotencyKey string     `json:"idempotency_key"`
	Summary        string     `json:"summary"`
	Outcome        string     `json:"outcome"`
	CreatedAt      time.Time  `json:"created_at"`
	ExpiresAt      time.Time  `json:"expires_at"`
	CompletedAt    *time.Time `json:"completed_at"`
	// Credential is set only while the call is approved and unexpired.
	Credential *Credential `json:"credential,omitempty"`
}

// Outcome is how a call ended, sent when completing it.
type Outcome struct {
	// Outcome is "success", "error" or "cancelled".
	Outcome string
	// Error briefly says what went wrong; cut to 1 KiB. Never a secret.
	Error string
	// Duration is how long the work took; sent in milliseconds.
	Duration time.Duration
	// Usage is what the call used (nil: nothing to report). Do sends what
	// fn reported with ReportUsage.
	Usage *Usage
}

// Usage is what a call used, charged to the agent's daily caps in its job
// description (budget.tokens, budget.spend).
type Usage struct {
	// Tokens used (by a model, for example).
	Tokens int64 `json:"tokens,omitempty"`
	// Amount spent, with at most six decimals and the spend cap's
	// currency: "0.013 USD". It counts unless the action declares its
	// cost in the job description (cost:), which is charged instead.
	Amount string `json:"amount,omitempty"`
}

// Call statuses (docs/api.md).
const (
	statusPending   = "pending_approval"
	statusApproved  = "approved"
	statusCompleted = "completed"
	statusFailed    = "failed"
	statusExpired   = "expired"
	statusRefused   = "refused"
	statusDenied    = "denied"
	statusRevoked   = "revoked"
)

// Outcomes.
const (
	outcomeSuccess   = "success"
	outcomeError     = "error"
	outcomeCancelled = "cancelled"
)

// maxOutcomeError is the server's limit on an outcome's error text.
const maxOutcomeError = 1 << 10

// errorText is an error's text as the server accepts it: valid UTF-8,
// NULs shown as \x00, at most maxOutcomeError bytes. An error can carry
// anything (bytes an upstream returned); the outcome must still land.
func errorText(s string) string {
	s = strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", `\x00`)
	return trunc(s, maxOutcomeError)
}

// The wire forms of docs/api.md.
type (
	requestBody struct {
		Connector      string         `json:"connector"`
		Action         string         `json:"action"`
		Risk           Risk           `json:"risk"`
		IdempotencyKey string         `json:"idempotency_key"`
		Summary        string         `json:"summary,omitempty"`
		Args           map[string]any `json:"args,omitempty"`
	}
	completeBody struct {
		Outcome    string `json:"outcome"`
		Error      string `json:"error"`
		DurationMS int64  `json:"duration_ms"`
		Usage      *Usage `json:"usage,omitempty"`
	}
	wireCall struct {
		ID             string     `json:"id"`
		AgentID        string     `json:"agent_id"`
		Connector      string     `json:"connector"`
		Action         string     `json:"action"`
		DeclaredRisk   Risk       `json:"declared_risk"`
		Risk           Risk       `json:"risk"`
		Status         string     `json:"status"`
		IdempotencyKey string     `json:"idempotency_key"`
		Summary        string     `json:"summary"`
		Outcome        string     `json:"outcome"`
		CreatedAt      time.Time  `json:"created_at"`
		ExpiresAt      time.Time  `json:"expires_at"`
		CompletedAt    *time.Time `json:"completed_at"`
		Credential     *struct {
			Token     string    `json:"token"`
			Type      string    `json:"type"`
			ExpiresAt time.Time `json:"expires_at"`
			DSN       string    `json:"dsn"`
		} `json:"credential"`
	}
)

// Request asks ARX for a call (POST /calls). The answer is the call: approved
// with a credential, pending_approval (then Wait), or, for a retry of a known
// idempotency key, as it stands. Refusals are *Error.
//
// Network errors, 5xx and 429 answers are retried a few times with backoff,
// always with the same idempotency key, so a retry never makes a second call.
func (c *Client) Request(ctx context.Context, a Action) (*Call, error) {
	if c == nil {
		return nil, errNoClient
	}
	if c.localMode {
		return c.requestLocal(ctx, a)
	}
	if a.IdempotencyKey == "" {
		a.IdempotencyKey = newUUID()
	}
	// What the server would refuse before deciding anything is refused
	// here, by the same check (nothing is sent, nothing recorded).
	if _, err := manifest.CheckAsk(a.Connector, a.Action, string(a.Risk), a.IdempotencyKey); err != nil {
		return nil, askError(err)
	}
	if a.Risk == "" {
		a.Risk = RiskLow
	}
	body := requestBody{Connector: a.Connector, Action: a.Action, Risk: a.Risk, IdempotencyKey: a.IdempotencyKey, Summary: a.Summary, Args: a.Args}
	ans, err := c.send(ctx, c.retry, http.MethodPost, "/calls", body, c.attemptTimeout)
	if err != nil {
		if _, isAPI := errors.AsType[*Error](err); !isAPI && ctx.Err() == nil {
			return nil, c.recordUnreachable(a, err) // fail closed, and keep the attempt
		}
		return nil, err
	}
	switch ans.status {
	case http.StatusOK, http.StatusCreated, http.StatusAccepted:
	default:
		if ans.transient() {
			return nil, c.recordUnreachable(a, c.apiError(ans, ""))
		}
		return nil, c.apiError(ans, "")
	}
	call, err := c.parseCall(ans, "POST /calls")
	if err != nil {
		return nil, err
	}
	c.log.LogAttrs(ctx, slog.LevelDebug, "arx: call requested", slog.String("call", call.ID),
		slog.String("connector", call.Connector), slog.String("action", call.Action),
		slog.String("risk", string(call.Risk)), slog.String("status", call.Status))
	return call, nil
}

// Wait long-polls the call (GET /calls/{id}?wait=30s) until it is no longer
// pending_approval, asking again at once each time the server's wait runs
// out, so it returns as soon as an approver decides. Network errors and 5xx
// answers do not end the wait: it retries with a capped backoff until ctx is
// done, so give ctx a deadline to bound it.
//
// An approved call is returned with its credential. A call that ends without
// approval is returned together with an *Error: call.denied, call.expired,
// or call.closed (refused, revoked, already completed).
func (c *Client) Wait(ctx context.Context, callID string) (*Call, error) {
	if c == nil {
		return nil, errNoClient
	}
	if c.localMode {
		return c.waitLocal(ctx, callID)
	}
	if callID == "" {
		return nil, newError(arxerr.BadRequest, "", "no call id to wait for")
	}
	path := "/calls/" + url.PathEscape(callID)
	query := "?wait=" + url.QueryEscape(c.wait.String())
	quick, failures := 0, 0
	for {
		start := time.Now()
		ans, err := c.exchange(ctx, http.MethodGet, path+query, nil, c.wait+c.attemptTimeout)
		if ctx.Err() != nil {
			return nil, fmt.Errorf("agentvault: waiting for approval of call %s: %w", callID, ctx.Err())
		}
		if _, isAPI := errors.AsType[*Error](err); isAPI {
			return nil, err
		}
		if err == nil && !ans.transient() {
			if ans.status != http.StatusOK {
				return nil, c.apiError(ans, callID)
			}
			call, err := c.parseCall(ans, "GET "+path)
			if err != nil {
				return nil, err
			}
			if call.Status != statusPending {
				c.log.LogAttrs(ctx, slog.LevelDebug, "arx: call decided", slog.String("call", call.ID), slog.String("status", call.Status))
				return call, decided(call)
			}
			failures = 0
			if time.Since(start) >= c.wait/4 {
				quick = 0 // the server held the poll: ask again at once
				continue
			}
			// The server answered "pending" early (it may not long-poll):
			// do not spin.
			quick++
			if err := sleep(ctx, c.waitRetry.delay(quick)); err != nil {
				return nil, fmt.Errorf("agentvault: waiting for approval of call %s: %w", callID, err)
			}
			continue
		}
		failures++
		d := c.waitRetry.delay(failures)
		if ans != nil {
			d = max(d, min(ans.retryAfter(), c.waitRetry.max))
		}
		c.log.LogAttrs(ctx, slog.LevelWarn, "arx: waiting for approval: retrying", slog.String("call", callID),
			slog.Int("attempt", failures), slog.Duration("delay", d), slog.String("reason", c.reason(ans, err)))
		if err := sleep(ctx, d); err != nil {
			return nil, fmt.Errorf("agentvault: waiting for approval of call %s: %w", callID, err)
		}
	}
}

// Complete closes the call (POST /calls/{id}/complete) with its outcome; the
// call's credential is dead from then on. Completing again with the same
// outcome is harmless, so transient failures are retried. o.Error is cut to
// 1 KiB.
func (c *Client) Complete(ctx context.Context, callID string, o Outcome) (*Call, error) {
	if c == nil {
		return nil, errNoClient
	}
	if callID == "" {
		return nil, newError(arxerr.BadRequest, "", "no call id to complete")
	}
	switch o.Outcome {
	case outcomeSuccess, outcomeError, outcomeCancelled:
	default:
		return nil, newError(arxerr.BadRequest, callID, "unknown outcome %q (want success, error or cancelled)", o.Outcome)
	}
	if c.localMode {
		return c.completeLocal(ctx, callID, o)
	}
	path := "/calls/" + url.PathEscape(callID) + "/complete"
	body := completeBody{Outcome: o.Outcome, Error: errorText(c.scrub(o.Error)), DurationMS: max(o.Duration.Milliseconds(), 0), Usage: o.Usage}
	ans, err := c.send(ctx, c.retry, http.MethodPost, path, body, c.attemptTimeout)
	if err != nil {
		return nil, err
	}
	if ans.status != http.StatusOK && ans.status != http.StatusCreated {
		return nil, c.apiError(ans, callID)
	}
	call, err := c.parseCall(ans, "POST "+path)
	if err != nil {
		return nil, err
	}
	c.log.LogAttrs(ctx, slog.LevelDebug, "arx: call completed", slog.String("call", callID),
		slog.String("outcome", o.Outcome), slog.Duration("duration", o.Duration))
	return call, nil
}

// parseCall decodes a 2xx answer holding a call.
func (c *Client) parseCall(ans *answer, what string) (*Call, error) {
	var w wireCall
	err := json.Unmarshal(ans.body, &w)
	if err == nil && (w.ID == "" || w.Status == "") {
		err = fmt.Errorf("the call has no id or status")
	}
	if err != nil {
		return nil, &Error{Code: arxerr.Internal, Status: ans.status,
			Message: c.scrub(fmt.Sprintf("%s: malformed answer (HTTP %d): %v", what, ans.status, err)),
			Hint:    "check that " + envBaseURL + " points at an ARX server"}
	}
	call := &Call{
		ID: w.ID, AgentID: w.AgentID, Connector: w.Connector, Action: w.Action,
		DeclaredRisk: w.DeclaredRisk, Risk: w.Risk, Status: w.Status,
		IdempotencyKey: w.IdempotencyKey, Summary: w.Summary, Outcome: w.Outcome,
		CreatedAt: w.CreatedAt, ExpiresAt: w.ExpiresAt, CompletedAt: w.CompletedAt,
	}
	if cr := w.Credential; cr != nil && cr.Token != "" {
		cred := &Credential{
			Token: cr.Token, Type: cr.Type, ExpiresAt: cr.ExpiresAt, DSN: cr.DSN,
			CallID: w.ID, AgentID: w.AgentID, Connector: w.Connector, Action: w.Action, Risk: w.Risk,
		}
		if cred.Type == "" {
			cred.Type = "Bearer"
		}
		if cred.ExpiresAt.IsZero() {
			cred.ExpiresAt = w.ExpiresAt
		}
		call.Credential = cred
	}
	return call, nil
}

// decided maps a call that is no longer pending to nil (approved, with a
// credential) or to the *Error that says why it cannot proceed.
func decided(call *Call) error {
	switch call.Status {
	case statusApproved:
		if call.Credential != nil {
			return nil
		}
		if !call.ExpiresAt.IsZero() && time.Now().After(call.ExpiresAt) {
			return newError(arxerr.CallExpired, call.ID, "call %s expired before its credential was used", call.ID)
		}
		return newError(arxerr.Internal, call.ID, "call %s is approved but the server sent no credential", call.ID)
	case statusDenied:
		return newError(arxerr.CallDenied, call.ID, "call %s was denied by an approver", call.ID)
	case statusExpired:
		return newError(arxerr.CallExpired, call.ID, "call %s expired", call.ID)
	case statusRefused, statusRevoked, statusCompleted, statusFailed:
		return newError(arxerr.CallClosed, call.ID, "call %s is %s", call.ID, call.Status)
	case statusPending:
		return newError(arxerr.CallPending, call.ID, "call %s is waiting for approval", call.ID)
	default:
		return newError(arxerr.Internal, call.ID, "call %s has unknown status %q", call.ID, call.Status)
	}
}

// newUUID returns a random (version 4) UUID.
func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand, Go 1.24+)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}
