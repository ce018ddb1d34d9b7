package runtime

import (
	"context"
	"time"

	"github.com/arxsec/arx/internal/store"
	"github.com/arxsec/arx/manifest"
	"github.com/arxsec/arx/record"
)

// Money and token budgets (budget.spend, budget.tokens). A call's cost is
// charged by the entry that records it: the action's declared cost with
// the call's credential (credential.issued: a call held, then denied,
// costs nothing), what the agent reports with its completion.
// The state folds the charges into the agent's counts (store.Counts.Usage),
// so the day's usage survives restarts and is the same on every replica;
// capDrift holds or refuses calls at a cap, thresholdRule finds the shares
// of a cap at which the owner is told.

// recordThresholds records, and tells the agent's owner of, each
// notify_at share of a daily cap that the entries just appended made the
// day's usage pass (before: the agent's counts before them).
func (r *Runtime) recordThresholds(tx store.Tx, a *store.Agent, m *manifest.Manifest, ref record.CallRef, before *store.Counts, now time.Time) error {
	if m.Budget.Spend == nil && m.Budget.Tokens == nil {
		return nil
	}
	after := tx.CallCounts(ref.Agent)
	for _, facts := range thresholdRule(m, before, &after, now) {
		if err := tx.Append(record.BudgetThreshold(ref, now, facts)); err != nil {
			return err
		}
		if err := r.notifyBudget(tx, a, facts, now); err != nil {
			return err
		}
	}
	return nil
}

// notifyBudget enqueues, in the transaction, a notice to the configured
// webhooks that the agent's owner should hear of a threshold passed.
func (r *Runtime) notifyBudget(tx store.Tx, a *store.Agent, facts map[string]any, now time.Time) error {
	p := map[string]any{
		"event": record.TypeBudgetThreshold, "to": a.Owner,
		"agent":  map[string]any{"id": a.ID, "name": a.Name, "owner": a.Owner},
		"budget": facts, "at": now.UTC(),
	}
	if r.publicURL != "" {
		p["url"] = r.publicURL + "/console/agents/" + a.ID
	}
	return r.enqueueWebhooks(tx, p, now)
}

// AgentUsage is what an agent used in its current budget day, against
// its caps (budget.spend, budget.tokens).
type AgentUsage struct {
	Day         string `json:"day"`
	SpentToday  string `json:"spent_today,omitempty"` // in the spend cap's currency; "" without one
	SpendLimit  string `json:"spend_limit,omitempty"`
	TokensToday int64  `json:"tokens_today"`
	TokensLimit int64  `json:"tokens_limit,omitempty"` // 0: no cap
}

// Usage is the agent's usage today, or nil when its job description caps
// neither spend nor tokens. It is read as the log stands now (through the
// store's sequencer, so replicas agree).
func (r *Runtime) Usage(ctx context.Context, a *store.Agent) (*AgentUsage, error) {
	m, err := r.Manifest(a)
	if err != nil {
		return nil, r.internal("manifest", err)
	}
	if m.Budget.Spend == nil && m.Budget.Tokens == nil {
		return nil, nil
	}
	var c store.Counts
	if err := r.store.Update(ctx, func(tx store.Tx) error {
		c = tx.CallCounts(a.ID)
		return nil
	}); err != nil {
		return nil, r.ReadFailed("usage", err)
	}
	return usageOf(m, &c, r.now()), nil
}

// usageOf reads the day's usage from an agent's counts.
func usageOf(m *manifest.Manifest, c *store.Counts, now time.Time) *AgentUsage {
	day, start := budgetDay(m, now)
	micros, tokens := c.Spent(start)
	u := &AgentUsage{Day: day, TokensToday: tokens}
	if l := m.Budget.Spend; l != nil {
		u.SpentToday = record.Money{Micros: micros, Currency: l.PerDay.Currency}.String()
		u.SpendLimit = l.PerDay.String()
	}
	if l := m.Budget.Tokens; l != nil {
		u.TokensLimit = l.PerDay
	}
	return u
}
