package record

import (
	"encoding/json"
	"strconv"
	"time"
)

// More entry types; the constants in entry.go are the first ones.
const (
	TypeCredentialRevoked   = "credential.revoked"
	TypeApprovalCancelled   = "approval.cancelled"
	TypeApprovalGrantVoided = "approval.grant_voided"
	TypeDriftAcknowledged   = "drift.acknowledged"
	TypeGatewayRefused      = "gateway.refused"
	TypeGatewayResponse     = "gateway.response"
	TypeRoleDropped         = "connector.role_dropped"
	TypeRecordImported      = "record.imported"
	TypeUserAdded           = "user.added"
	TypeUserReset           = "user.reset"
	TypeUserRoleChanged     = "user.role_changed"
	TypeUserDisabled        = "user.disabled"
	TypeUserEnabled         = "user.enabled"
	TypeTerminationNotified = "termination.notified"
	TypeProcessStopped      = "agent.process_stopped"
)

// RevokedCallsPerEntry bounds the call ids one credential.revoked entry
// lists (37 bytes each, well within MaxEntrySize).
const RevokedCallsPerEntry = 500

// This file is the record's vocabulary: one constructor per entry type, so
// that every writer (the runtime, the SDKs' local mode) spells an entry the
// same way, and the accessors a reader (the store's state, a review, an
// auditor) uses to read the facts back, whether the entry was built here
// or parsed from its bytes (numbers are then json.Number).
//
// A constructor leaves Index and Prev to the log that appends the entry.

// CallRef names the call an entry is about.
type CallRef struct {
	Agent     string
	Call      string
	Connector string
	Action    string
	Risk      string // the effective risk
}

func (c CallRef) entry(typ, actor string, t time.Time, data map[string]any) *Entry {
	return &Entry{Agent: c.Agent, Call: c.Call, Connector: c.Connector, Action: c.Action, Risk: c.Risk,
		Type: typ, Actor: actor, Time: t, Data: data}
}

// Ask is what an agent asked for when it requested a call.
type Ask struct {
	DeclaredRisk   string
	Summary        string
	IdempotencyKey string
	// RaisedBy is the person whose token started the agent's process
	// ("user:<email>"), who may not decide its requests; "" for an
	// operator's token.
	RaisedBy string
	// Args are the call's arguments (canonical JSON text of an object);
	// "" when it had none, or when its action records their hash only.
	// ArgsHash is their SHA-256 in hex, "" when it had none.
	Args, ArgsHash string
	// Cost is the action's declared cost ("0.02 USD"); "" for none. A
	// credential.issued entry charges it to the agent's budget; on
	// call.requested it says what the call will cost once approved.
	Cost string
}

func (a Ask) data() map[string]any {
	d := map[string]any{"declared_risk": a.DeclaredRisk, "summary": a.Summary, "idempotency_key": a.IdempotencyKey}
	if a.RaisedBy != "" {
		d["raised_by"] = a.RaisedBy
	}
	if a.Args != "" {
		d["args"] = a.Args
	}
	if a.ArgsHash != "" {
		d["args_hash"] = a.ArgsHash
	}
	if a.Cost != "" {
		d["cost"] = a.Cost
	}
	return d
}

// AskOf reads the Ask of a call.requested, credential.issued or
// credential.refused entry.
func AskOf(e *Entry) Ask {
	return Ask{DeclaredRisk: Str(e.Data, "declared_risk"), Summary: Str(e.Data, "summary"),
		IdempotencyKey: Str(e.Data, "idempotency_key"), RaisedBy: Str(e.Data, "raised_by"), Args: Str(e.Data, "args"),
		ArgsHash: Str(e.Data, "args_hash"), Cost: Str(e.Data, "cost")}
}

// CallRequested records a call that waits for an approver.
func CallRequested(c CallRef, actor string, t time.Time, a Ask) *Entry {
	return c.entry(TypeCallRequested, actor, t, a.data())
}

// CredentialIssued records the credential of a call that may proceed until
// expires: at once (a), or once approvedBy approved it.
func CredentialIssued(c CallRef, actor string, t time.Time, a Ask, expires time.Time, approvedBy string) *Entry {
	d := a.data()
	d["expires_at"] = FormatTime(expires)
	if approvedBy != "" {
		d["approved_by"] = approvedBy
	}
	return c.entry(TypeCredentialIssued, actor, t, d)
}

// CredentialRefused records a refused call, with the error code.
func CredentialRefused(c CallRef, actor string, t time.Time, a Ask, code, reason string) *Entry {
	d := a.data()
	d["code"], d["reason"] = code, reason
	return c.entry(TypeCredentialRefused, actor, t, d)
}

// ApprovalRequested records who may decide a pending call, and until when.
func ApprovalRequested(c CallRef, actor string, t time.Time, approvers, delegates []string, expires time.Time) *Entry {
	return c.entry(TypeApprovalRequested, actor, t, map[string]any{"approvers": strs(approvers), "delegates": strs(delegates),
		"expires_at": FormatTime(expires)})
}

// ApprovalRequestedQuorum is ApprovalRequested for a call that needs
// quorum different approvers to grant (more than one).
func ApprovalRequestedQuorum(c CallRef, actor string, t time.Time, approvers, delegates []string, expires time.Time, quorum int) *Entry {
	e := ApprovalRequested(c, actor, t, approvers, delegates, expires)
	if quorum > 1 {
		e.Data["quorum"] = quorum
	}
	return e
}

// ApprovalGranted records an approval by a person (by is their email;
// actor is "user:<email>").
func ApprovalGranted(c CallRef, actor string, t time.Time, by, reason string) *Entry {
	return c.entry(TypeApprovalGranted, actor, t, map[string]any{"by": by, "reason": reason})
}

// ApprovalDenied records a denial by a person.
func ApprovalDenied(c CallRef, actor string, t time.Time, by, reason string) *Entry {
	return c.entry(TypeApprovalDenied, actor, t, map[string]any{"by": by, "reason": reason})
}

// ApprovalExpired records that nobody decided in time; onTimeout is what
// that means (deny).
func ApprovalExpired(c CallRef, t, expiredAt time.Time, onTimeout string) *Entry {
	return c.entry(TypeApprovalExpired, "system", t, map[string]any{"expired_at": FormatTime(expiredAt), "on_timeout": onTimeout})
}

// ApprovalCancelled records a pending request ended by the agent's
// termination.
func ApprovalCancelled(c CallRef, actor string, t time.Time, reason string) *Entry {
	return c.entry(TypeApprovalCancelled, actor, t, map[string]any{"reason": reason})
}

// ApprovalGrantVoided records that a grant toward a quorum no longer
// counts: the person who gave it was disabled (by an admin, or
// deprovisioned by the identity provider) before the quorum was reached.
func ApprovalGrantVoided(c CallRef, actor string, t time.Time, by, reason string) *Entry {
	return c.entry(TypeApprovalGrantVoided, actor, t, map[string]any{"by": by, "reason": reason})
}

// Outcome is how the agent says a call ended.
type Outcome struct {
	Outcome    string // success, error, cancelled
	Error      string
	DurationMS int64
	Late       bool // the work outlived the credential
	// What the agent reported the call used: Tokens, and Amount ("0.013
	// USD"; "" when not reported). Charged is the amount charged to the
	// budget (the reported one, unless the action declares its cost,
	// which was charged when the call began); "" for none.
	Tokens          int64
	Amount, Charged string
	// UsageRefused says why a reported usage was not counted ("" when it
	// was, or none was reported).
	UsageRefused string
}

func (o Outcome) data() map[string]any {
	d := map[string]any{"outcome": o.Outcome, "error": o.Error, "duration_ms": o.DurationMS}
	if o.Late {
		d["late"] = true
	}
	if o.Tokens != 0 {
		d["tokens"] = o.Tokens
	}
	if o.Amount != "" {
		d["amount"] = o.Amount
	}
	if o.Charged != "" {
		d["charged"] = o.Charged
	}
	if o.UsageRefused != "" {
		d["usage_refused"] = o.UsageRefused
	}
	return d
}

// OutcomeOf reads the outcome of a call.completed or approval.withdrawn entry.
func OutcomeOf(e *Entry) Outcome {
	late, _ := e.Data["late"].(bool)
	return Outcome{Outcome: Str(e.Data, "outcome"), Error: Str(e.Data, "error"), DurationMS: Int(e.Data, "duration_ms"), Late: late,
		Tokens: Int(e.Data, "tokens"), Amount: Str(e.Data, "amount"), Charged: Str(e.Data, "charged"), UsageRefused: Str(e.Data, "usage_refused")}
}

// CallCompleted records the end of a call the agent reported.
func CallCompleted(c CallRef, actor string, t time.Time, o Outcome) *Entry {
	return c.entry(TypeCallCompleted, actor, t, o.data())
}

// ApprovalWithdrawn records an agent giving up on a pending request.
func ApprovalWithdrawn(c CallRef, actor string, t time.Time, o Outcome) *Entry {
	return c.entry(TypeApprovalWithdrawn, actor, t, o.data())
}

// TypeBudgetThreshold is the day's spend or tokens passing the share of
// their cap (budget.*.notify_at) at which the agent's owner is told.
const TypeBudgetThreshold = "budget.threshold_reached"

// BudgetThreshold records a threshold passed by the call's charge; facts
// are budget ("spend" or "tokens"), notify_at, used_today, limit, day.
func BudgetThreshold(c CallRef, t time.Time, facts map[string]any) *Entry {
	return c.entry(TypeBudgetThreshold, "system", t, facts)
}

// CallExpired records a credential that ran out before its call ended.
func CallExpired(c CallRef, t, expiredAt time.Time) *Entry {
	return c.entry(TypeCallExpired, "system", t, map[string]any{"expired_at": FormatTime(expiredAt)})
}

// CredentialsRevoked records live credentials of an agent revoked at once,
// at most RevokedCallsPerEntry call ids per entry.
func CredentialsRevoked(agent, actor string, t time.Time, reason string, calls []string) *Entry {
	return &Entry{Agent: agent, Type: TypeCredentialRevoked, Actor: actor, Time: t,
		Data: map[string]any{"reason": reason, "calls": strs(calls)}}
}

// DriftDetected records a call outside the declared role; data is what the
// rule saw (manifest.Drift.Data).
func DriftDetected(c CallRef, actor string, t time.Time, data map[string]any) *Entry {
	return c.entry(TypeDriftDetected, actor, t, data)
}

// DriftAcknowledged records a person's note on a drift event.
func DriftAcknowledged(agent, actor string, t time.Time, index int64, note string) *Entry {
	return &Entry{Agent: agent, Type: TypeDriftAcknowledged, Actor: actor, Time: t, Data: map[string]any{"index": index, "note": note}}
}

// Hire is what agent.hired records.
type Hire struct {
	Name, Owner, ManifestHash string
	Connectors                []string
	TokenID                   string
	// RequirePasskey: the manifest counts only passkey-signed decisions
	// (approval.require_passkey); recorded so an auditor can tell an
	// unsigned decision that should not be there.
	RequirePasskey bool
}

// AgentHired records a hire.
func AgentHired(agent, actor string, t time.Time, h Hire) *Entry {
	d := map[string]any{"name": h.Name, "owner": h.Owner, "manifest_hash": h.ManifestHash, "connectors": strs(h.Connectors), "token_id": h.TokenID}
	if h.RequirePasskey {
		d["require_passkey"] = true
	}
	return &Entry{Agent: agent, Type: TypeAgentHired, Actor: actor, Time: t, Data: d}
}

// Termination is what agent.terminated records.
type Termination struct {
	Reason             string
	RevokedTokens      int
	RevokedCredentials int
	CancelledApprovals int
}

// AgentTerminated records a termination and what it ended.
func AgentTerminated(agent, actor string, t time.Time, x Termination) *Entry {
	return &Entry{Agent: agent, Type: TypeAgentTerminated, Actor: actor, Time: t, Data: map[string]any{"reason": x.Reason,
		"revoked_tokens": x.RevokedTokens, "revoked_credentials": x.RevokedCredentials, "cancelled_approvals": x.CancelledApprovals}}
}

// TokenIssued records a new token (never the token): of an agent (agent
// set, kind ""), of a person or an operator (agent "", kind set).
func TokenIssued(agent, actor string, t time.Time, tokenID, kind, label string) *Entry {
	d := map[string]any{"token_id": tokenID, "label": label}
	if kind != "" {
		d["kind"] = kind
	}
	return &Entry{Agent: agent, Type: TypeTokenIssued, Actor: actor, Time: t, Data: d}
}

// TokenRevoked records a revoked token.
func TokenRevoked(agent, actor string, t time.Time, tokenID string) *Entry {
	return &Entry{Agent: agent, Type: TypeTokenRevoked, Actor: actor, Time: t, Data: map[string]any{"token_id": tokenID}}
}

// UserAdded records a new person.
// link says where the person's setup link went: LinkSent (their
// notification channel) or LinkShown (to the caller, who asked for it).
func UserAdded(actor string, t time.Time, email, role, link string) *Entry {
	return &Entry{Type: TypeUserAdded, Actor: actor, Time: t, Data: map[string]any{"user": email, "role": role, "link": link}}
}

// Where a setup link went.
const (
	LinkSent  = "sent to the person"
	LinkShown = "shown to the caller"
	LinkNone  = "none: the person signs in through the identity provider"
)

// UserReset records a password reset: the person's sessions and tokens
// ended, a new setup link made (link: where it went).
func UserReset(actor string, t time.Time, email, link string, tokens int) *Entry {
	return &Entry{Type: TypeUserReset, Actor: actor, Time: t, Data: map[string]any{"user": email, "link": link, "revoked_tokens": tokens}}
}

// UserRoleChanged records a person's new role.
func UserRoleChanged(actor string, t time.Time, email, from, to string) *Entry {
	return &Entry{Type: TypeUserRoleChanged, Actor: actor, Time: t, Data: map[string]any{"user": email, "from": from, "to": to}}
}

// UserDisabled records a person disabled: their sessions, tokens and setup
// link ended.
func UserDisabled(actor string, t time.Time, email string, tokens int) *Entry {
	return &Entry{Type: TypeUserDisabled, Actor: actor, Time: t, Data: map[string]any{"user": email, "revoked_tokens": tokens}}
}

// UserEnabled records a disabled person enabled again.
func UserEnabled(actor string, t time.Time, email string) *Entry {
	return &Entry{Type: TypeUserEnabled, Actor: actor, Time: t, Data: map[string]any{"user": email}}
}

// ProcessStopped records that `arx run` stopped an agent's process group
// once the agent was terminated: with signal (SIGTERM, or SIGKILL after the
// grace period), tookMS from the termination seen to the group gone, and
// the run's token.
func ProcessStopped(agent, actor string, t time.Time, pid int, signal string, tookMS int64, tokenID string) *Entry {
	return &Entry{Agent: agent, Type: TypeProcessStopped, Actor: actor, Time: t,
		Data: map[string]any{"pid": pid, "signal": signal, "took_ms": tookMS, "token_id": tokenID}}
}

// TerminationNotified records a notice of termination sent to target.
func TerminationNotified(agent string, t time.Time, target, channel string) *Entry {
	return &Entry{Agent: agent, Type: TypeTerminationNotified, Actor: "system", Time: t,
		Data: map[string]any{"target": target, "channel": channel}}
}

// FormatTime is the canonical form of a time in entry data.
func FormatTime(t time.Time) string { return t.UTC().Format(TimeFormat) }

// Time reads a time that FormatTime wrote; the zero time when absent or
// malformed.
func Time(data map[string]any, key string) time.Time {
	s, _ := data[key].(string)
	t, err := time.Parse(TimeFormat, s)
	if err != nil {
		return time.Time{}
	}
	return t
}

// Str reads a string of entry data; "" when absent or not a string.
func Str(data map[string]any, key string) string {
	s, _ := data[key].(string)
	return s
}

// Int reads an integer of entry data, built or parsed; 0 when absent.
func Int(data map[string]any, key string) int64 {
	switch v := data[key].(type) {
	case int:
		return int64(v)
	case int64:
		return v
	case json.Number:
		n, _ := strconv.ParseInt(string(v), 10, 64)
		return n
	case float64:
		return int64(v)
	}
	return 0
}

// Strs reads a list of strings of entry data, built or parsed.
func Strs(data map[string]any, key string) []string {
	switch v := data[key].(type) {
	case []string:
		return v
	case []any:
		out := make([]string, 0, len(v))
		for _, x := range v {
			if s, ok := x.(string); ok {
				out = append(out, s)
			}
		}
		return out
	}
	return nil
}

func strs(s []string) []any {
	out := make([]any, len(s))
	for i, v := range s {
		out[i] = v
	}
	return out
}

// TypeTerminationReceipt is what a termination confirmed and what it could
// not, written after it (TerminationReceipt).
const TypeTerminationReceipt = "termination.receipt"

// ReceiptItem is one line of a termination receipt: something the
// termination ended (What: tokens_revoked, credentials_revoked,
// approvals_cancelled, gateway_requests_cut, database_role_dropped,
// process_stopped), confirmed At, or, unconfirmed, Why not.
type ReceiptItem struct {
	What      string    `json:"what"`
	Connector string    `json:"connector,omitempty"`
	Count     int       `json:"count"`
	Detail    string    `json:"detail,omitempty"` // a database role, a process id
	At        time.Time `json:"at,omitzero"`
	Why       string    `json:"why,omitempty"`
}

func (i ReceiptItem) data() map[string]any {
	d := map[string]any{"what": i.What}
	if i.Connector != "" {
		d["connector"] = i.Connector
	}
	if i.Count != 0 {
		d["count"] = i.Count
	}
	if i.Detail != "" {
		d["detail"] = i.Detail
	}
	if !i.At.IsZero() {
		d["at"] = FormatTime(i.At)
	}
	if i.Why != "" {
		d["why"] = i.Why
	}
	return d
}

// TerminationReceipt records what the termination of agent (at
// terminated) confirmed, and what it could not.
func TerminationReceipt(agent, actor string, t, terminated time.Time, confirmed, unconfirmed []ReceiptItem) *Entry {
	list := func(items []ReceiptItem) []any {
		out := make([]any, len(items))
		for i, it := range items {
			out[i] = it.data()
		}
		return out
	}
	return &Entry{Agent: agent, Type: TypeTerminationReceipt, Actor: actor, Time: t, Data: map[string]any{
		"terminated_at": FormatTime(terminated), "confirmed": list(confirmed), "unconfirmed": list(unconfirmed)}}
}

// ReceiptItemsOf reads the confirmed (or unconfirmed) items of a
// termination.receipt entry.
func ReceiptItemsOf(e *Entry, key string) []ReceiptItem {
	raw, _ := e.Data[key].([]any)
	out := make([]ReceiptItem, 0, len(raw))
	for _, x := range raw {
		m, ok := x.(map[string]any)
		if !ok {
			continue
		}
		out = append(out, ReceiptItem{What: Str(m, "what"), Connector: Str(m, "connector"), Count: int(Int(m, "count")),
			Detail: Str(m, "detail"), At: Time(m, "at"), Why: Str(m, "why")})
	}
	return out
}

// Job descriptions applied after the hire, and shadowed ones.
const (
	// TypeManifestShadowed: a job description is evaluated beside the
	// agent's own on every call, without being enforced.
	TypeManifestShadowed = "manifest.shadowed"
	// TypeManifestShadowCleared: the shadow job description is dropped.
	TypeManifestShadowCleared = "manifest.shadow_cleared"
	// TypeManifestChanged: the agent is held to another job description
	// from this entry on (its shadow is dropped).
	TypeManifestChanged = "manifest.changed"
	// TypeShadowDiffers: the shadow job description would have decided a
	// call otherwise than the enforced one did.
	TypeShadowDiffers = "shadow.differs"
)

// ManifestShadowed records a shadow job description (by its hash).
func ManifestShadowed(agent, actor string, t time.Time, hash, enforced string) *Entry {
	return &Entry{Agent: agent, Type: TypeManifestShadowed, Actor: actor, Time: t,
		Data: map[string]any{"manifest_hash": hash, "enforced_hash": enforced}}
}

// ManifestShadowCleared records a shadow job description dropped.
func ManifestShadowCleared(agent, actor string, t time.Time, hash, reason string) *Entry {
	return &Entry{Agent: agent, Type: TypeManifestShadowCleared, Actor: actor, Time: t,
		Data: map[string]any{"manifest_hash": hash, "reason": reason}}
}

// ManifestChange is what a manifest.changed entry says: the new job
// description (its hash, its connectors, whether it requires passkey-signed
// decisions, as agent.hired says of the first), the one it replaces, and
// whether it was the shadow.
type ManifestChange struct {
	ManifestHash, PreviousHash string
	Connectors                 []string
	RequirePasskey             bool
	FromShadow                 bool
}

// ManifestChanged records an agent held to another job description.
func ManifestChanged(agent, actor string, t time.Time, c ManifestChange) *Entry {
	return &Entry{Agent: agent, Type: TypeManifestChanged, Actor: actor, Time: t, Data: map[string]any{
		"manifest_hash": c.ManifestHash, "previous_hash": c.PreviousHash, "connectors": strs(c.Connectors),
		"require_passkey": c.RequirePasskey, "from_shadow": c.FromShadow}}
}

// ShadowDiffers records a call the shadow job description (hash) would
// have decided otherwise: what the enforced one did and what the shadow
// would have done ("proceeded", "held for approval", "refused (code)"),
// the changes (as policy replay names them) and the shadow's drift rules.
func ShadowDiffers(c CallRef, t time.Time, hash, enforced, shadow string, changes, drift []string) *Entry {
	d := map[string]any{"manifest_hash": hash, "enforced": enforced, "shadow": shadow, "changes": strs(changes)}
	if len(drift) > 0 {
		d["drift"] = strs(drift)
	}
	return c.entry(TypeShadowDiffers, "system", t, d)
}
