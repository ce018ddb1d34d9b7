package runtime

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/arxsec/arx/arxerr"
	"github.com/arxsec/arx/internal/store"
	"github.com/arxsec/arx/manifest"
	"github.com/arxsec/arx/record"
)

// Policy replay: a changed job description evaluated against what an agent
// actually did. Each call in the agent's record is decided again by the
// same rule the runtime applies (decideCall), with the agent's counts and
// open calls as they were at that moment (folded from the record), and
// compared with what the record says happened.

// Changes a replay reports for one call.
const (
	ChangeRefused         = "refused"           // went ahead or waited; would be refused
	ChangeNoLongerRefused = "no_longer_refused" // was refused; would go ahead or wait
	ChangeHeld            = "held"              // went ahead at once; would wait for an approver
	ChangeNoLongerHeld    = "no_longer_held"    // waited for an approver; would go ahead at once
	ChangeNewDrift        = "new_drift"         // would be drift by a rule it was not
	ChangeDriftGone       = "drift_gone"        // was drift by a rule it would not be
)

// ReplayExamples is how many examples a replay keeps per change.
const ReplayExamples = 5

// ReplayReport is what a replay found.
type ReplayReport struct {
	Since     time.Time        `json:"since,omitzero"`
	Calls     int64            `json:"calls_replayed"`
	Changed   int64            `json:"calls_changed"`
	ByChange  map[string]int64 `json:"by_change"`
	ByAction  []ReplayAction   `json:"by_action"`
	Examples  []ReplayExample  `json:"examples"`
	NotReplay int64            `json:"calls_not_replayed"` // refused for reasons the job description does not decide (a bad request, a suspended agent)
}

// ReplayAction counts one connector and action's calls and changes.
type ReplayAction struct {
	Connector string           `json:"connector"`
	Action    string           `json:"action"`
	Calls     int64            `json:"calls"`
	Changes   map[string]int64 `json:"changes"`
}

// ReplayExample is one call that would have gone otherwise.
type ReplayExample struct {
	Call      string    `json:"call"`
	Time      time.Time `json:"time"`
	Connector string    `json:"connector"`
	Action    string    `json:"action"`
	Was       string    `json:"was"`   // "proceeded", "held for approval" or "refused (code)"
	Would     string    `json:"would"` // the same, under the new job description
	Changes   []string  `json:"changes"`
	Drift     []string  `json:"drift,omitempty"` // the drift rules it would be
}

// Replayer folds an agent's record, in log order, deciding each call again
// under M. Its memory is bounded by the agent's open calls and the actions
// it uses, not by the record's length.
type Replayer struct {
	M     *manifest.Manifest
	Since time.Time // calls before it count toward budgets but are not compared

	counts   store.Counts
	open     map[string]string   // call id → "pending" or "approved", as recorded
	drift    map[string][]string // call id → drift rules recorded, until its call entry
	actions  map[[2]string]*ReplayAction
	examples map[string]int
	rep      ReplayReport
}

// replayableRefusals are the refusals a job description decides; a call
// refused otherwise (bad content, a suspended agent) is not replayed.
var replayableRefusals = map[string]bool{
	string(arxerr.ConnectorNotDeclared): true, string(arxerr.ActionNotDeclared): true, string(arxerr.DriftRefused): true,
	string(arxerr.ConditionNotMet): true, string(arxerr.BudgetExceeded): true,
}

// Add folds one entry of the agent's record.
func (r *Replayer) Add(e *record.Entry) {
	if r.open == nil {
		r.open, r.drift, r.actions, r.examples = map[string]string{}, map[string][]string{}, map[[2]string]*ReplayAction{}, map[string]int{}
		r.rep.ByChange, r.rep.Since = map[string]int64{}, r.Since
	}
	switch e.Type {
	case record.TypeDriftDetected:
		// A call's drift comes before its call entry; a call that outlived
		// its duration is drift at its end, which a decision does not see.
		if e.Call != "" && record.Str(e.Data, "rule") != DriftCallDuration {
			r.drift[e.Call] = append(r.drift[e.Call], record.Str(e.Data, "rule"))
		}
	case record.TypeCredentialRefused:
		r.call(e, store.CallRefused, record.Str(e.Data, "code"))
	case record.TypeCallRequested:
		r.call(e, store.CallPending, "")
	case record.TypeCredentialIssued:
		if st, ok := r.open[e.Call]; ok {
			if st == store.CallPending {
				r.open[e.Call] = store.CallApproved // approved after waiting: not a new call
				r.chargeCost(e)
			}
			return
		}
		r.call(e, store.CallApproved, "") // decided before its own cost is charged
		r.chargeCost(e)
	case record.TypeCallCompleted, record.TypeApprovalWithdrawn:
		// What the call used, priced as the new job description prices
		// it: a reported amount counts unless the action now declares
		// its cost.
		o := record.OutcomeOf(e)
		var micros int64
		if a, ok := r.M.Action(e.Connector, e.Action); o.Amount != "" && (!ok || a.Cost == nil) {
			m, _ := record.ParseMoney(o.Amount)
			micros = m.Micros
		}
		r.charge(e.Time, micros, max(o.Tokens, 0))
		delete(r.open, e.Call)
		delete(r.drift, e.Call)
	case record.TypeCallExpired, record.TypeApprovalDenied, record.TypeApprovalExpired, record.TypeApprovalCancelled:
		delete(r.open, e.Call)
		delete(r.drift, e.Call)
	case record.TypeCredentialRevoked:
		for _, id := range record.Strs(e.Data, "calls") {
			delete(r.open, id)
		}
	}
}

// chargeCost charges a credential with its action's cost under the new
// job description.
func (r *Replayer) chargeCost(e *record.Entry) {
	if a, ok := r.M.Action(e.Connector, e.Action); ok && a.Cost != nil {
		r.charge(e.Time, a.Cost.Micros, 0)
	}
}

// charge counts a cost in the replay's own window, in place: no Counts
// shares it (the copy call takes for a decision is done with before the
// next charge), so a long record does not allocate a window per charge as
// Counts.Charge does.
func (r *Replayer) charge(t time.Time, micros, tokens int64) {
	if micros == 0 && tokens == 0 {
		return
	}
	if r.counts.Usage == nil {
		r.counts.Usage = new(store.UsageWindow)
	}
	r.counts.Usage.Charge(t, micros, tokens)
}

// call decides a call again, at its first entry, and folds what happened.
func (r *Replayer) call(e *record.Entry, was, code string) {
	drift := r.drift[e.Call]
	delete(r.drift, e.Call)
	r.counts.Open = len(r.open)
	counts := r.counts
	r.counts.Add(e.Time, was != store.CallRefused)
	if was != store.CallRefused {
		r.open[e.Call] = was
	}
	if e.Time.Before(r.Since) {
		return
	}
	if was == store.CallRefused && !replayableRefusals[code] {
		r.rep.NotReplay++
		return
	}
	declared, err := manifest.ParseRisk(record.Str(e.Data, "declared_risk"))
	if err != nil {
		declared = manifest.RiskLow
	}
	// A condition is evaluated on the arguments the record kept; where it
	// kept only their hash, it cannot be, and counts as met.
	var unmet *manifest.Condition
	var why string
	if ask := record.AskOf(e); ask.Args != "" || ask.ArgsHash == "" {
		if args, err := parseArgs([]byte(ask.Args)); err == nil {
			act, _ := r.M.Action(e.Connector, e.Action)
			unmet, why = conditionRule(act, args.value)
		}
	}
	var cost *record.Money
	if a, ok := r.M.Action(e.Connector, e.Action); ok {
		cost = a.Cost
	}
	d := decideCall(callInput{M: r.M, Req: CallRequest{Connector: e.Connector, Action: e.Action}, Declared: declared, Now: e.Time, Counts: counts,
		Unmet: unmet, UnmetWhy: why, Cost: cost})
	rules := make([]string, len(d.Drift))
	for i, dr := range d.Drift {
		rules[i] = dr.Rule
	}
	changes := replayChanges(was, d.Status, drift, rules)
	r.rep.Calls++
	key := [2]string{e.Connector, e.Action}
	a := r.actions[key]
	if a == nil {
		a = &ReplayAction{Connector: e.Connector, Action: e.Action, Changes: map[string]int64{}}
		r.actions[key] = a
	}
	a.Calls++
	if len(changes) == 0 {
		return
	}
	r.rep.Changed++
	for _, c := range changes {
		r.rep.ByChange[c]++
		a.Changes[c]++
	}
	if r.examples[changes[0]] < ReplayExamples {
		r.examples[changes[0]]++
		would := outcomeName(d.Status, "")
		if d.Refusal != nil {
			would = outcomeName(d.Status, string(d.Refusal.Code))
		}
		r.rep.Examples = append(r.rep.Examples, ReplayExample{Call: e.Call, Time: e.Time, Connector: e.Connector, Action: e.Action,
			Was: outcomeName(was, code), Would: would, Changes: changes, Drift: rules})
	}
}

// replayChanges compares what happened (was, the drift rules recorded)
// with what the new job description decides (would, its rules): a pure
// decision, table-tested.
func replayChanges(was, would string, wasDrift, wouldDrift []string) []string {
	var out []string
	switch {
	case would == store.CallRefused && was != store.CallRefused:
		out = append(out, ChangeRefused)
	case was == store.CallRefused && would != store.CallRefused:
		out = append(out, ChangeNoLongerRefused)
	case was == store.CallApproved && would == store.CallPending:
		out = append(out, ChangeHeld)
	case was == store.CallPending && would == store.CallApproved:
		out = append(out, ChangeNoLongerHeld)
	}
	if would != store.CallRefused || was == store.CallRefused {
		for _, rule := range wouldDrift {
			if !slices.Contains(wasDrift, rule) {
				out = append(out, ChangeNewDrift)
				break
			}
		}
	}
	if was != store.CallRefused || would == store.CallRefused {
		for _, rule := range wasDrift {
			if !slices.Contains(wouldDrift, rule) {
				out = append(out, ChangeDriftGone)
				break
			}
		}
	}
	return out
}

func outcomeName(status, code string) string {
	switch status {
	case store.CallRefused:
		if code != "" {
			return "refused (" + code + ")"
		}
		return "refused"
	case store.CallPending:
		return "held for approval"
	}
	return "proceeded"
}

// Report returns what the replay found, actions by calls (most first).
func (r *Replayer) Report() *ReplayReport {
	rep := r.rep
	if rep.ByChange == nil {
		rep.ByChange = map[string]int64{}
	}
	rep.ByAction = make([]ReplayAction, 0, len(r.actions))
	for _, a := range r.actions {
		rep.ByAction = append(rep.ByAction, *a)
	}
	sort.Slice(rep.ByAction, func(i, j int) bool {
		x, y := rep.ByAction[i], rep.ByAction[j]
		if x.Calls != y.Calls {
			return x.Calls > y.Calls
		}
		return x.Connector+"\x00"+x.Action < y.Connector+"\x00"+y.Action
	})
	if rep.Examples == nil {
		rep.Examples = []ReplayExample{}
	}
	return &rep
}

// Summary is the report in one line per change, for people.
func (rep *ReplayReport) Summary() []string {
	names := []struct{ key, text string }{
		{ChangeRefused, "would be refused"}, {ChangeNoLongerRefused, "would no longer be refused"},
		{ChangeHeld, "would wait for an approver"}, {ChangeNoLongerHeld, "would no longer wait for an approver"},
		{ChangeNewDrift, "would be drift by a new rule"}, {ChangeDriftGone, "would no longer be drift by a rule"},
	}
	var out []string
	for _, n := range names {
		if c := rep.ByChange[n.key]; c > 0 {
			var acts []string
			for _, a := range rep.ByAction {
				if k := a.Changes[n.key]; k > 0 {
					acts = append(acts, fmt.Sprintf("%s %s: %d", a.Connector, a.Action, k))
				}
			}
			noun := "calls"
			if c == 1 {
				noun = "call"
			}
			line := fmt.Sprintf("%d %s %s", c, noun, n.text)
			if len(acts) > 0 {
				line += " (" + strings.Join(acts, ", ") + ")"
			}
			out = append(out, line)
		}
	}
	return out
}

// ReplayTimeout bounds a replay run by the server (the console's): a
// record too long to read in it is replayed up to where it got, and the
// report says so.
const ReplayTimeout = 20 * time.Second

// ReplayAgent replays job description yaml against the record of agent
// agentID, for people and operators: the console's "try a changed job
// description". Nothing is written.
func (r *Runtime) ReplayAgent(ctx context.Context, p *Principal, agentID string, yaml []byte, since time.Time) (*ReplayReport, bool, error) {
	if !p.IsAdmin() && !p.IsPerson() {
		return nil, false, arxerr.New(arxerr.Forbidden, "replays are for people and operators")
	}
	m, err := parseManifest(yaml)
	if err != nil {
		return nil, false, err
	}
	if _, err := r.store.Agent(ctx, agentID); errors.Is(err, store.ErrNotFound) {
		return nil, false, arxerr.New(arxerr.AgentNotFound, "no agent %s", truncate(agentID, 64))
	} else if err != nil {
		return nil, false, r.ReadFailed("agent", err)
	}
	ctx, cancel := context.WithTimeout(ctx, ReplayTimeout)
	defer cancel()
	rp := &Replayer{M: m, Since: since}
	after := int64(-1)
	for {
		page, err := r.store.AgentEntries(ctx, agentID, after, 1000)
		if errors.Is(err, context.DeadlineExceeded) || ctx.Err() != nil {
			return rp.Report(), true, nil
		}
		if err != nil {
			return nil, false, r.ReadFailed("agent record", err)
		}
		for _, se := range page {
			e, err := record.Parse(se.Data)
			if err != nil {
				return nil, false, r.ReadFailed("agent record", err)
			}
			rp.Add(e)
			after = se.Index
		}
		if len(page) < 1000 {
			return rp.Report(), false, nil
		}
	}
}
