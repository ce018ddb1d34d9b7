// Package manifest reads an agent's job description (manifests/job_description.yaml):
// which connectors and actions the agent may use and at what risk, who approves risky
// actions, the agent's runtime budget and how it is terminated.
//
// Parsing is strict. Unknown fields, wrong types, duplicate keys, YAML anchors and
// aliases and out-of-range values are all errors, and every problem found is reported
// with its line and the path of the field, so that a manifest which parses means
// exactly what it says. The format is also described by a JSON Schema ([Schema]) for
// editors; a test keeps the two in step.
package manifest

import (
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"strings"
	"time"

	// Time zones in active_hours must validate the same way on every host, including
	// minimal containers without /usr/share/zoneinfo.
	_ "time/tzdata"

	"github.com/arxsec/arx/record"
)

// Schema is the JSON Schema (2020-12) of the job description format, for editors
// such as yaml-language-server.
//
//go:embed job_description.schema.json
var Schema []byte

// The values of apiVersion and kind that this package reads.
const (
	APIVersion = "arx.dev/v1"
	Kind       = "JobDescription"
)

// MaxSize is the largest manifest, in bytes, that Parse accepts.
const MaxSize = 1 << 20

// Defaults applied by Parse to fields the manifest leaves out.
const (
	DefaultApprovalTimeout = 15 * time.Minute
	DefaultMaxCallDuration = 5 * time.Minute
	DefaultOnTimeout       = "deny"
	DefaultOnDrift         = DriftRecord
)

// RevokeAll is the termination.revoke value that revokes every connector.
const RevokeAll = "all"

// A Manifest is a parsed and validated job description.
type Manifest struct {
	APIVersion  string      `json:"api_version"`
	Kind        string      `json:"kind"`
	Agent       Agent       `json:"agent"`
	Scope       Scope       `json:"scope"`
	Approval    Approval    `json:"approval"`
	Budget      Budget      `json:"budget"`
	Termination Termination `json:"termination"`
	OnDrift     DriftPolicy `json:"on_drift"`
}

// Agent names the agent and the person accountable for it.
type Agent struct {
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
	Owner       string `json:"owner"`
}

// Scope is what the agent may touch.
type Scope struct {
	Connectors []Connector `json:"connectors"` // in file order
}

// A Connector is a system of record the agent may use, with the actions it may take there.
type Connector struct {
	Name        string   `json:"name"`
	Description string   `json:"description,omitempty"`
	Actions     []Action `json:"actions"` // in file order
}

// An Action is one declared action on a connector.
type Action struct {
	Name        string        `json:"name"`
	Description string        `json:"description,omitempty"`
	Risk        Risk          `json:"risk"`
	MaxDuration time.Duration `json:"max_duration,omitempty"` // 0: use Budget.MaxCallDuration
	// When is a condition on the call's arguments (CEL, over args) that
	// must hold; nil: none. Its Otherwise says what happens when it does
	// not.
	When *Condition `json:"when,omitempty"`
	// RecordArgs is how the record keeps the call's arguments: "full"
	// (the default) or "hash" (their SHA-256 only, for arguments that
	// carry what the record must not).
	RecordArgs string `json:"record_args,omitempty"`
	// Cost is what one call of the action costs, charged to
	// budget.spend when the call is let through (or held for approval);
	// nil: the call costs what the agent reports when it completes it.
	Cost *record.Money `json:"cost,omitempty"`
}

// Approval says who decides on high-risk actions and what a timeout means.
type Approval struct {
	Approvers []string      `json:"approvers"`
	Delegates []string      `json:"delegates"` // may decide on the approvers' behalf
	Timeout   time.Duration `json:"timeout"`
	OnTimeout string        `json:"on_timeout"` // always "deny"
	// RequirePasskey: a decision counts only when the approver's own
	// passkey signed it (WebAuthn, in the console); unsigned decisions (a
	// token, the CLI, a chat button) are refused for this agent, and the
	// auditor flags any in the record.
	RequirePasskey bool `json:"require_passkey,omitempty"`
	// Quorum is how many different approvers (or delegates) must grant
	// a call before it proceeds; 0 or 1: one. A single denial ends it.
	Quorum int `json:"quorum,omitempty"`
}

// Budget bounds the agent's use of its scope. Zero CallsPerDay or MaxConcurrent means
// no limit; a nil ActiveHours means at any time.
type Budget struct {
	CallsPerDay     int           `json:"calls_per_day"`
	MaxConcurrent   int           `json:"max_concurrent"`
	MaxCallDuration time.Duration `json:"max_call_duration"`
	ActiveHours     *ActiveHours  `json:"active_hours,omitempty"`
	// Spend and Tokens cap what the agent spends in a day (the budget day
	// of calls_per_day); nil: no cap. OnBudget says what a call at a cap
	// does (OnBudgetRequireApproval, the default, or OnBudgetRefuse).
	Spend    *SpendLimit `json:"spend,omitempty"`
	Tokens   *TokenLimit `json:"tokens,omitempty"`
	OnBudget string      `json:"on_budget,omitempty"`
}

// SpendLimit caps an agent's spending in a day. At NotifyAt percent of
// PerDay (0: never) the agent's owner is told, once a day.
type SpendLimit struct {
	PerDay   record.Money `json:"per_day"`
	NotifyAt int          `json:"notify_at"`
}

// TokenLimit caps the tokens an agent uses in a day (as its completion
// reports say). At NotifyAt percent of PerDay (0: never) its owner is told.
type TokenLimit struct {
	PerDay   int64 `json:"per_day"`
	NotifyAt int   `json:"notify_at"`
}

// What a call does when the day's spend or tokens are at the cap.
const (
	OnBudgetRequireApproval = "require_approval" // held for an approver
	OnBudgetRefuse          = "refuse"           // refused (budget.exceeded)
	DefaultNotifyAt         = 80                 // percent
	MaxTokensPerDay         = 1_000_000_000_000_000
)

// OnBudgetPolicy is what a call at a cap does: OnBudget, or its default.
func (b *Budget) OnBudgetPolicy() string {
	if b.OnBudget == "" {
		return OnBudgetRequireApproval
	}
	return b.OnBudget
}

// Termination says who is told when the agent is terminated and what is revoked.
type Termination struct {
	Notify []string `json:"notify"` // email addresses and https:// webhook URLs
	Revoke []string `json:"revoke"` // connector names; nil or ["all"] means all
}

// DriftPolicy says what happens when the agent acts outside its declared role.
type DriftPolicy string

// The drift policies.
const (
	DriftRecord          DriftPolicy = "record"
	DriftRequireApproval DriftPolicy = "require_approval"
	DriftRefuse          DriftPolicy = "refuse"
)

// Connector returns the declared connector with the given name.
func (m *Manifest) Connector(name string) (*Connector, bool) {
	for i := range m.Scope.Connectors {
		if m.Scope.Connectors[i].Name == name {
			return &m.Scope.Connectors[i], true
		}
	}
	return nil, false
}

// Action returns the declared action of the given connector.
func (m *Manifest) Action(connector, action string) (*Action, bool) {
	c, ok := m.Connector(connector)
	if !ok {
		return nil, false
	}
	for i := range c.Actions {
		if c.Actions[i].Name == action {
			return &c.Actions[i], true
		}
	}
	return nil, false
}

// IsApprover reports whether email names an approver or a delegate. Addresses are
// compared without regard to case.
func (m *Manifest) IsApprover(email string) bool {
	if email == "" {
		return false
	}
	for _, list := range [][]string{m.Approval.Approvers, m.Approval.Delegates} {
		for _, a := range list {
			if strings.EqualFold(a, email) {
				return true
			}
		}
	}
	return false
}

// CallTTL is how long a credential for one call of the action may live: the action's
// max_duration if it has one, else budget.max_call_duration, else
// DefaultMaxCallDuration. An undeclared action gets the budget's bound.
func (m *Manifest) CallTTL(connector, action string) time.Duration {
	if a, ok := m.Action(connector, action); ok && a.MaxDuration > 0 {
		return a.MaxDuration
	}
	if m.Budget.MaxCallDuration > 0 {
		return m.Budget.MaxCallDuration
	}
	return DefaultMaxCallDuration
}

// RevokesAll reports whether termination revokes every connector.
func (t Termination) RevokesAll() bool {
	return len(t.Revoke) == 0 || (len(t.Revoke) == 1 && t.Revoke[0] == RevokeAll)
}

// Hash identifies the exact bytes of a manifest: "sha256:" and the hex SHA-256.
func Hash(data []byte) string {
	sum := sha256.Sum256(data)
	return "sha256:" + hex.EncodeToString(sum[:])
}
