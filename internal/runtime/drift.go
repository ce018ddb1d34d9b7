package runtime

import (
	"math"
	"time"

	"github.com/arxsec/arx/internal/store"
	"github.com/arxsec/arx/manifest"
)

// Drift rules beyond the manifest's scope (manifest.Decide has those).
const (
	DriftOffHours      = "off_hours"      // outside budget.active_hours
	DriftCallsPerDay   = "calls_per_day"  // more calls in 24 hours than budget.calls_per_day
	DriftMaxConcurrent = "max_concurrent" // more open calls than budget.max_concurrent
	DriftCallDuration  = "call_duration"  // the work outlived its maximum duration
	DriftRateSpike     = "rate_spike"     // far above the agent's own recent rate
)

// behaviourDrift applies the rules that need no database.
func (r *Runtime) behaviourDrift(m *manifest.Manifest, now time.Time) []manifest.Drift {
	var out []manifest.Drift
	if h := m.Budget.ActiveHours; h != nil && !h.Contains(now) {
		out = append(out, manifest.Drift{Rule: DriftOffHours, Policy: m.OnDrift, Facts: map[string]any{
			"local_time": now.In(h.Location).Format("Mon 15:04"), "timezone": h.Timezone, "window": h.Start + "-" + h.End}})
	}
	return out
}

// budgetDrift applies the budget rules, inside the call's transaction so
// that concurrent calls count each other.
func budgetDrift(tx store.Tx, m *manifest.Manifest, agentID string, now time.Time) ([]manifest.Drift, error) {
	var out []manifest.Drift
	if limit := m.Budget.CallsPerDay; limit > 0 {
		n, err := tx.CallsOn(agentID, budgetDay(m, now))
		if err != nil {
			return nil, err
		}
		if n >= limit {
			out = append(out, manifest.Drift{Rule: DriftCallsPerDay, Policy: m.OnDrift, Facts: map[string]any{
				"calls_today": n, "limit": limit, "day": budgetDay(m, now)}})
		}
	}
	if limit := m.Budget.MaxConcurrent; limit > 0 {
		n, err := tx.OpenCalls(agentID)
		if err != nil {
			return nil, err
		}
		if n >= limit {
			out = append(out, manifest.Drift{Rule: DriftMaxConcurrent, Policy: m.OnDrift, Facts: map[string]any{
				"open_calls": n, "limit": limit}})
		}
	}
	return out, nil
}

// budgetDay is the calendar day a call counts toward: in the time zone of
// the manifest's active hours, else UTC.
func budgetDay(m *manifest.Manifest, now time.Time) string {
	if h := m.Budget.ActiveHours; h != nil && h.Location != nil {
		return now.In(h.Location).Format(time.DateOnly)
	}
	return now.UTC().Format(time.DateOnly)
}

// Spike thresholds: at least SpikeMinCalls in the current minute and more
// than SpikeFactor times the average of the previous 59 minutes.
const (
	SpikeMinCalls = 120
	SpikeFactor   = 10
)

// rateDrift applies the call-rate rule inside the call's transaction: the
// agent's calls per minute over the last hour are counted in the store,
// so calls spread over replicas count together. It is a heuristic for
// performance reviews, not an authority.
func rateDrift(tx store.Tx, m *manifest.Manifest, agentID string, now time.Time) ([]manifest.Drift, error) {
	minute := now.Unix() / 60
	last, earlier, err := tx.CountMinute(agentID, minute, minute-59)
	if err != nil {
		return nil, err
	}
	baseline := float64(earlier) / 59
	// Report once per minute: when the threshold is first crossed.
	threshold := max(float64(SpikeMinCalls), SpikeFactor*baseline)
	if float64(last) <= threshold || float64(last-1) > threshold {
		return nil, nil
	}
	return []manifest.Drift{{Rule: DriftRateSpike, Policy: m.OnDrift, Facts: map[string]any{
		"calls_last_minute": last, "baseline_per_minute": int64(math.Round(baseline))}}}, nil // record data holds integers only
}
