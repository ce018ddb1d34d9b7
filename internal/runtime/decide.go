package runtime

import (
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/arxsec/arx/arxerr"
	"github.com/arxsec/arx/internal/store"
	"github.com/arxsec/arx/manifest"
	"github.com/arxsec/arx/record"
)

// A governed call is decided in three steps, the middle one pure: gather
// what the decision needs (the agent, its counts, a call already made with
// the same idempotency key) in the store's transaction; decide (decideCall,
// here: inputs in, decision out, table-tested in decide_test.go); compose
// the entries that record the decision (callEntries); the store folds them
// into the state. What follows the commit (metrics, wake-ups, the
// credential) is the caller's.

// Drift rules beyond the manifest's scope (manifest.Decide has those).
const (
	DriftOffHours      = "off_hours"      // outside budget.active_hours
	DriftCallsPerDay   = "calls_per_day"  // more calls in the day than budget.calls_per_day
	DriftMaxConcurrent = "max_concurrent" // more open calls than budget.max_concurrent
	DriftCallDuration  = "call_duration"  // the work outlived its maximum duration
	DriftRateSpike     = "rate_spike"     // far above the agent's own recent rate
	DriftSpendPerDay   = "spend_per_day"  // the day's spend at budget.spend.per_day
	DriftTokensPerDay  = "tokens_per_day" // the day's tokens at budget.tokens.per_day
)

// Spike thresholds: at least SpikeMinCalls in the current minute and more
// than SpikeFactor times the average of the previous 59 minutes.
const (
	SpikeMinCalls = 120
	SpikeFactor   = 10
)

// callInput is what a call is decided on.
type callInput struct {
	M        *manifest.Manifest
	Req      CallRequest // validated
	Declared manifest.Risk
	Invalid  *arxerr.Error // what is wrong with the request's content, to refuse it recorded
	Now      time.Time
	Counts   store.Counts // the agent's, before this call
	// Unmet is the condition of the call's action its arguments do not
	// meet (nil: none, or met), and UnmetWhy why its evaluation failed
	// (" (…)"; "" when it ran): conditionRule, evaluated before the
	// serial step.
	Unmet    *manifest.Condition
	UnmetWhy string
	// Cost is the action's declared cost (nil: none).
	Cost *record.Money
}

// callDecision is the decision.
type callDecision struct {
	Risk          manifest.Risk
	Refusal       *arxerr.Error // the call is refused
	Drift         []manifest.Drift
	NeedsApproval bool
	Status        string    // store.CallRefused, CallPending or CallApproved
	ExpiresAt     time.Time // of the credential, or of the approval request
	Cost          string    // the declared cost, charged with the call's credential; "" for none
}

// decideCall applies the manifest's scope, then the rules on the agent's
// behaviour (active hours, budgets, rate), then what on_drift says.
func decideCall(in callInput) callDecision {
	m, now := in.M, in.Now
	if in.Invalid != nil {
		return callDecision{Risk: in.Declared, Refusal: in.Invalid, Status: store.CallRefused, ExpiresAt: now}
	}
	d := m.Decide(in.Req.Connector, in.Req.Action, in.Declared)
	out := callDecision{Risk: d.Risk, NeedsApproval: d.NeedsApproval}
	if d.Refusal != "" {
		out.Refusal = arxerr.New(d.Refusal, "%s", d.Message)
		out.Status, out.ExpiresAt = store.CallRefused, now
		return out
	}
	cond, condDrift := in.Unmet, in.UnmetWhy
	switch {
	case cond != nil && cond.Otherwise == manifest.OtherwiseRefuse:
		out.Refusal = arxerr.New(arxerr.ConditionNotMet, "the arguments of %s %s do not meet its condition %s%s", in.Req.Connector, in.Req.Action,
			cond.Expr, condDrift)
		out.Status, out.ExpiresAt = store.CallRefused, now
		return out
	case cond != nil && cond.Otherwise == manifest.OtherwiseRequireApproval:
		out.NeedsApproval = true
	}
	out.Drift = append(append(append(append([]manifest.Drift(nil), d.Drift...), hoursDrift(m, now)...),
		rateDrift(m, &in.Counts, now)...), budgetDrift(m, &in.Counts, now)...)
	if cond != nil && cond.Otherwise == manifest.OtherwiseDrift {
		facts := map[string]any{"condition": cond.Expr}
		if condDrift != "" {
			facts["error"] = strings.TrimPrefix(condDrift, " (")
		}
		out.Drift = append(out.Drift, manifest.Drift{Rule: manifest.DriftConditionNotMet, Policy: m.OnDrift, Facts: facts})
	}
	drifted := len(out.Drift) > 0
	caps := capDrift(m, &in.Counts, in.Cost, now) // handled as on_budget says, not on_drift
	out.Drift = append(out.Drift, caps...)
	if drifted {
		switch m.OnDrift {
		case manifest.DriftRefuse:
			rules := make([]string, len(out.Drift))
			for i, dr := range out.Drift {
				rules[i] = dr.Rule
			}
			out.Refusal = arxerr.New(arxerr.DriftRefused, "the call is outside the declared role (%s)", strings.Join(rules, ", "))
			out.Status, out.ExpiresAt = store.CallRefused, now
			return out
		case manifest.DriftRequireApproval:
			out.NeedsApproval = true
		}
	}
	if len(caps) > 0 {
		if m.Budget.OnBudgetPolicy() == manifest.OnBudgetRefuse {
			out.Refusal = arxerr.New(arxerr.BudgetExceeded, "the day's %s", capText(caps))
			out.Status, out.ExpiresAt = store.CallRefused, now
			return out
		}
		out.NeedsApproval = true
	}
	if in.Cost != nil && m.Budget.Spend != nil { // money is counted only against a cap, in its currency
		out.Cost = in.Cost.String()
	}
	if out.NeedsApproval {
		out.Status, out.ExpiresAt = store.CallPending, now.Add(m.Approval.Timeout)
	} else {
		out.Status, out.ExpiresAt = store.CallApproved, now.Add(m.CallTTL(in.Req.Connector, in.Req.Action))
	}
	return out
}

// conditionRule evaluates the condition of the call's action (a; nil for
// an undeclared one) on its
// arguments: nil when there is none or it holds; else the condition, and
// why it failed when its evaluation did (" (…)"; it then fails closed).
func conditionRule(a *manifest.Action, args map[string]any) (*manifest.Condition, string) {
	if a == nil || a.When == nil {
		return nil, ""
	}
	c := a.When
	ok, err := c.Holds(args)
	switch {
	case err != nil:
		if a.RecordArgs == "hash" {
			// The error may quote an argument, which the record must not hold.
			return c, " (its evaluation failed)"
		}
		return c, " (" + truncate(err.Error(), 200) + ")"
	case !ok:
		return c, ""
	}
	return nil, ""
}

// hoursDrift: a call outside budget.active_hours.
func hoursDrift(m *manifest.Manifest, now time.Time) []manifest.Drift {
	if h := m.Budget.ActiveHours; h != nil && !h.Contains(now) {
		return []manifest.Drift{{Rule: DriftOffHours, Policy: m.OnDrift, Facts: map[string]any{
			"local_time": now.In(h.Location).Format("Mon 15:04"), "timezone": h.Timezone, "window": h.Start + "-" + h.End}}}
	}
	return nil
}

// budgetDrift: the day's calls and the open calls against the budget.
func budgetDrift(m *manifest.Manifest, c *store.Counts, now time.Time) []manifest.Drift {
	var out []manifest.Drift
	if limit := m.Budget.CallsPerDay; limit > 0 {
		day, start := budgetDay(m, now)
		if n := int(c.Since(start)); n >= limit {
			out = append(out, manifest.Drift{Rule: DriftCallsPerDay, Policy: m.OnDrift, Facts: map[string]any{
				"calls_today": n, "limit": limit, "day": day}})
		}
	}
	if limit := m.Budget.MaxConcurrent; limit > 0 && c.Open >= limit {
		out = append(out, manifest.Drift{Rule: DriftMaxConcurrent, Policy: m.OnDrift, Facts: map[string]any{
			"open_calls": c.Open, "limit": limit}})
	}
	return out
}

// capDrift: the day's spend and tokens against budget.spend and
// budget.tokens. A call is at the spend cap when what was spent already
// reaches it, or its declared cost would take the day past it; at the
// token cap when the day's tokens reach it (tokens are known only when
// calls complete). Its policy is on_budget's.
func capDrift(m *manifest.Manifest, c *store.Counts, cost *record.Money, now time.Time) []manifest.Drift {
	b := &m.Budget
	if b.Spend == nil && b.Tokens == nil {
		return nil
	}
	day, start := budgetDay(m, now)
	spent, tokens := c.Spent(start)
	policy := manifest.DriftPolicy(b.OnBudgetPolicy())
	var out []manifest.Drift
	if l := b.Spend; l != nil {
		var add int64
		if cost != nil {
			add = cost.Micros
		}
		if spent >= l.PerDay.Micros || spent+add > l.PerDay.Micros {
			cur := l.PerDay.Currency
			facts := map[string]any{"spent_today": record.Money{Micros: spent, Currency: cur}.String(), "limit": l.PerDay.String(), "day": day}
			if cost != nil {
				facts["cost"] = cost.String()
			}
			out = append(out, manifest.Drift{Rule: DriftSpendPerDay, Policy: policy, Facts: facts})
		}
	}
	if l := b.Tokens; l != nil && tokens >= l.PerDay {
		out = append(out, manifest.Drift{Rule: DriftTokensPerDay, Policy: policy, Facts: map[string]any{
			"tokens_today": tokens, "limit": l.PerDay, "day": day}})
	}
	return out
}

// thresholdRule: the notify_at shares of the daily caps that the day's
// usage passed from before to after (an agent's counts around one
// charge), each as the facts its budget.threshold_reached entry records.
// Usage only grows within a day, so each share is passed once a day.
func thresholdRule(m *manifest.Manifest, before, after *store.Counts, now time.Time) []map[string]any {
	day, start := budgetDay(m, now)
	m0, t0 := before.Spent(start)
	m1, t1 := after.Spent(start)
	var out []map[string]any
	if l := m.Budget.Spend; l != nil && l.NotifyAt > 0 {
		if at := max(l.PerDay.Micros*int64(l.NotifyAt)/100, 1); m0 < at && m1 >= at {
			out = append(out, map[string]any{"budget": "spend", "notify_at": int64(l.NotifyAt), "day": day,
				"used_today": record.Money{Micros: m1, Currency: l.PerDay.Currency}.String(), "limit": l.PerDay.String()})
		}
	}
	if l := m.Budget.Tokens; l != nil && l.NotifyAt > 0 {
		if at := max(l.PerDay*int64(l.NotifyAt)/100, 1); t0 < at && t1 >= at {
			out = append(out, map[string]any{"budget": "tokens", "notify_at": int64(l.NotifyAt), "day": day,
				"used_today": t1, "limit": l.PerDay})
		}
	}
	return out
}

// capText says which caps a call is at.
func capText(caps []manifest.Drift) string {
	var parts []string
	for _, d := range caps {
		switch d.Rule {
		case DriftSpendPerDay:
			s := "spend is at its cap of " + d.Facts["limit"].(string) + " (spent " + d.Facts["spent_today"].(string)
			if c, ok := d.Facts["cost"].(string); ok {
				s += ", this call costs " + c
			}
			parts = append(parts, s+")")
		case DriftTokensPerDay:
			parts = append(parts, fmt.Sprintf("tokens are at their cap of %d (used %d)", d.Facts["limit"], d.Facts["tokens_today"]))
		}
	}
	return strings.Join(parts, "; and the day's ")
}

// budgetDay is the calendar day a call counts toward, and its start: in the
// time zone of the manifest's active hours, else UTC.
func budgetDay(m *manifest.Manifest, now time.Time) (string, time.Time) {
	loc := time.UTC
	if h := m.Budget.ActiveHours; h != nil && h.Location != nil {
		loc = h.Location
	}
	t := now.In(loc)
	y, mo, d := t.Date()
	return t.Format(time.DateOnly), time.Date(y, mo, d, 0, 0, 0, 0, loc)
}

// rateDrift: far more calls this minute than the agent's own average over
// the hour before. Reported once per minute: when the threshold is first
// crossed. It is a heuristic for performance reviews, not an authority.
func rateDrift(m *manifest.Manifest, c *store.Counts, now time.Time) []manifest.Drift {
	minute := now.Unix() / 60
	last, earlier := c.Minute(minute, minute-59)
	last++ // this call
	baseline := float64(earlier) / 59
	threshold := max(float64(SpikeMinCalls), SpikeFactor*baseline)
	if float64(last) <= threshold || float64(last-1) > threshold {
		return nil
	}
	return []manifest.Drift{{Rule: DriftRateSpike, Policy: m.OnDrift, Facts: map[string]any{
		"calls_last_minute": last, "baseline_per_minute": int64(math.Round(baseline))}}} // record data holds integers only
}

// callEntries composes the entries that record a decided call: its drift,
// then its credential, its refusal, or its request and the approval it
// waits for.
func callEntries(c *store.Call, d callDecision, m *manifest.Manifest, actor string) []*record.Entry {
	ref := record.CallRef{Agent: c.AgentID, Call: c.ID, Connector: c.Connector, Action: c.Action, Risk: c.Risk}
	ask := record.Ask{DeclaredRisk: c.DeclaredRisk, Summary: c.Summary, IdempotencyKey: c.IdempotencyKey, RaisedBy: c.RaisedBy,
		Args: c.Args, ArgsHash: c.ArgsHash}
	now := c.CreatedAt
	var out []*record.Entry
	for _, dr := range d.Drift {
		out = append(out, record.DriftDetected(ref, actor, now, dr.Data()))
	}
	switch d.Status {
	case store.CallRefused:
		out = append(out, record.CredentialRefused(ref, actor, now, ask, string(d.Refusal.Code), d.Refusal.Message))
	case store.CallPending:
		ask.Cost = d.Cost
		out = append(out, record.CallRequested(ref, actor, now, ask),
			record.ApprovalRequestedQuorum(ref, actor, now, m.Approval.Approvers, m.Approval.Delegates, d.ExpiresAt, m.Approval.Quorum))
	default:
		ask.Cost = d.Cost
		out = append(out, record.CredentialIssued(ref, actor, now, ask, d.ExpiresAt, ""))
	}
	return out
}

// callRef names a call in its entries.
func callRef(c *store.Call) record.CallRef {
	return record.CallRef{Agent: c.AgentID, Call: c.ID, Connector: c.Connector, Action: c.Action, Risk: c.Risk}
}

// durationDrift is the drift of a call whose work outlived its credential.
func durationDrift(m *manifest.Manifest, c *store.Call, now time.Time, key string) map[string]any {
	return manifest.Drift{Rule: DriftCallDuration, Policy: m.OnDrift, Facts: map[string]any{
		"max_duration_ms": m.CallTTL(c.Connector, c.Action).Milliseconds(), key: now.Sub(c.CreatedAt).Milliseconds()}}.Data()
}

// signatureRule decides whether a decision may be recorded: signed with
// the approver's passkey, or unsigned where the agent's manifest does not
// require a signature (approval.require_passkey).
func signatureRule(required, signed bool) error {
	if required && !signed {
		e := arxerr.New(arxerr.PasskeyRequired, "this agent's manifest counts only decisions signed with the approver's passkey; this one is not signed")
		return e
	}
	return nil
}

// quorumRule decides a person's grant or denial of an approval that may
// need several approvers: no person counts twice; a denial ends it at
// once; a grant counts, and is enough when the quorum is reached. It
// returns the grants counting this one.
func quorumRule(ap *store.Approval, email string, grant bool) (grants int, enough bool, err error) {
	for _, g := range ap.Grants {
		if strings.EqualFold(g, email) {
			e := arxerr.New(arxerr.ApprovalDecided, "%s already granted this request; %d more of the approvers must", email, ap.Quorum-len(ap.Grants))
			e.Hint = "ask another approver named in the job description"
			return len(ap.Grants), false, e
		}
	}
	if !grant {
		return len(ap.Grants), false, nil
	}
	grants = len(ap.Grants) + 1
	return grants, grants >= max(1, ap.Quorum), nil
}
