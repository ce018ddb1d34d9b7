package manifest

import (
	"fmt"

	"github.com/arxsec/arx/arxerr"
)

// Decision is what a manifest says of one call, by its scope alone: refused
// or not, at what effective risk, with which drift, and whether a named
// approver must decide. Budgets, active hours and approvals themselves are
// the caller's business. The runtime and the SDKs' local-only mode decide by
// the same rules; testdata/vectors/decisions.json pins them for every
// implementation.
type Decision struct {
	// Refusal is the error code of a refused call, "" when the call may go on:
	// arxerr.ConnectorNotDeclared (whatever on_drift says) or
	// arxerr.ActionNotDeclared (only under on_drift: refuse).
	Refusal arxerr.Code
	// Message says why the call is refused.
	Message string
	// Risk is the effective risk: the higher of the declared risk and the
	// manifest's risk for the action (the declared risk for an undeclared
	// action).
	Risk Risk
	// Drift lists how the call departs from the declared role, one
	// drift.detected entry each. Empty for a refused call.
	Drift []Drift
	// NeedsApproval is true when the call must wait for a named approver: its
	// effective risk is high, or it drifts under on_drift: require_approval.
	NeedsApproval bool
}

// Drift is one departure from the declared role.
type Drift struct {
	Rule   string         // DriftUndeclaredAction or DriftRiskUnderdeclared
	Policy DriftPolicy    // the manifest's on_drift
	Facts  map[string]any // what was seen
}

// The drift rules Decide applies.
const (
	DriftUndeclaredAction  = "undeclared_action"  // a declared connector, an action not declared for it
	DriftRiskUnderdeclared = "risk_underdeclared" // the code declares a lower risk than the manifest
)

// Data is the data of the drift.detected entry that records d.
func (d Drift) Data() map[string]any {
	return map[string]any{"rule": d.Rule, "policy": string(d.Policy), "facts": d.Facts}
}

// Decide applies the manifest's scope to a call of action on connector that
// the agent's code declares at risk declared (a valid Risk; callers map ""
// to RiskLow).
func (m *Manifest) Decide(connector, action string, declared Risk) Decision {
	d := Decision{Risk: declared}
	conn, ok := m.Connector(connector)
	if !ok {
		// Never drift: a connector outside the scope is refused, always.
		d.Refusal = arxerr.ConnectorNotDeclared
		d.Message = fmt.Sprintf("connector %q is not on the manifest of agent %s", connector, m.Agent.Name)
		return d
	}
	act, ok := m.Action(connector, action)
	if !ok {
		if m.OnDrift == DriftRefuse {
			d.Refusal = arxerr.ActionNotDeclared
			d.Message = fmt.Sprintf("action %q is not declared for connector %q", action, conn.Name)
			return d
		}
		d.Drift = append(d.Drift, Drift{Rule: DriftUndeclaredAction, Policy: m.OnDrift,
			Facts: map[string]any{"connector": connector, "action": action}})
	} else {
		d.Risk = max(declared, act.Risk)
		if declared < act.Risk {
			d.Drift = append(d.Drift, Drift{Rule: DriftRiskUnderdeclared, Policy: m.OnDrift,
				Facts: map[string]any{"declared": declared.String(), "manifest": act.Risk.String()}})
		}
	}
	d.NeedsApproval = d.Risk >= RiskHigh || (len(d.Drift) > 0 && m.OnDrift == DriftRequireApproval)
	return d
}
