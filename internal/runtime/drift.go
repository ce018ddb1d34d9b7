package runtime

import (
	"math"
	"sync"
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
func (r *Runtime) behaviourDrift(m *manifest.Manifest, agentID string, now time.Time) []manifest.Drift {
	var out []manifest.Drift
	if h := m.Budget.ActiveHours; h != nil && !h.Contains(now) {
		out = append(out, manifest.Drift{Rule: DriftOffHours, Policy: m.OnDrift, Facts: map[string]any{
			"local_time": now.In(h.Location).Format("Mon 15:04"), "timezone": h.Timezone, "window": h.Start + "-" + h.End}})
	}
	if last, baseline, spike := r.rates.observe(agentID, now); spike {
		out = append(out, manifest.Drift{Rule: DriftRateSpike, Policy: m.OnDrift, Facts: map[string]any{
			"calls_last_minute": last, "baseline_per_minute": int64(math.Round(baseline))}}) // record data holds integers only
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

// rates keeps each agent's calls per minute over the last hour, on this
// replica, to spot a rate far above the agent's own baseline. It is a
// heuristic for performance reviews, not an authority: with several
// replicas each sees its share.
type rates struct {
	mu     sync.Mutex
	agents map[string]*minuteRing
}

type minuteRing struct {
	minute int64     // the minute of counts[0]
	counts [60]int64 // counts[i]: calls in minute (minute - i)
}

// Spike thresholds: at least SpikeMinCalls in the current minute and more
// than SpikeFactor times the average of the previous 59 minutes.
const (
	SpikeMinCalls = 120
	SpikeFactor   = 10
)

func (r *rates) observe(agentID string, now time.Time) (last int64, baseline float64, spike bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.agents == nil {
		r.agents = map[string]*minuteRing{}
	}
	ring := r.agents[agentID]
	minute := now.Unix() / 60
	if ring == nil {
		ring = &minuteRing{minute: minute}
		r.agents[agentID] = ring
	}
	if shift := minute - ring.minute; shift > 0 {
		if shift >= 60 {
			ring.counts = [60]int64{}
		} else {
			copy(ring.counts[shift:], ring.counts[:60-shift])
			for i := int64(0); i < shift; i++ {
				ring.counts[i] = 0
			}
		}
		ring.minute = minute
	}
	ring.counts[0]++
	var sum int64
	for _, n := range ring.counts[1:] {
		sum += n
	}
	last, baseline = ring.counts[0], float64(sum)/59
	// Report once per minute: when the threshold is first crossed.
	threshold := max(float64(SpikeMinCalls), SpikeFactor*baseline)
	return last, baseline, float64(last) > threshold && float64(last-1) <= threshold
}
