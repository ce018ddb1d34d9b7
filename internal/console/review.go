package console

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/arxsec/arx/arxerr"
	"github.com/arxsec/arx/internal/runtime"
	"github.com/arxsec/arx/internal/store"
	"github.com/arxsec/arx/manifest"
	"github.com/arxsec/arx/record"
)

// DefaultReviewDays is the window of a review when the page asks for none.
const DefaultReviewDays = 7

// driftLabels name drift rules as performance events: what happened, in
// calm words.
var driftLabels = map[string]string{
	manifest.DriftUndeclaredAction:  "Outside the job description",
	manifest.DriftRiskUnderdeclared: "Risk declared lower than the job description",
	runtime.DriftOffHours:           "Outside active hours",
	runtime.DriftCallsPerDay:        "Over the daily budget",
	runtime.DriftMaxConcurrent:      "More calls at once than budgeted",
	runtime.DriftCallDuration:       "Took longer than allowed",
	runtime.DriftRateSpike:          "Unusually busy",
}

// driftPolicies say what ARX did about a drift event.
var driftPolicies = map[string]string{
	string(manifest.DriftRecord):          "Recorded",
	string(manifest.DriftRequireApproval): "Sent for approval",
	string(manifest.DriftRefuse):          "Refused",
}

// factLabels name the facts of drift events.
var factLabels = map[string]string{
	"declared":            "risk declared",
	"manifest":            "risk in job description",
	"local_time":          "local time",
	"window":              "active hours",
	"calls_today":         "calls that day",
	"limit":               "budget",
	"open_calls":          "calls open",
	"max_duration_ms":     "longest allowed (ms)",
	"open_after_ms":       "still open after (ms)",
	"completed_after_ms":  "completed after (ms)",
	"calls_last_minute":   "calls in the last minute",
	"baseline_per_minute": "usual calls per minute",
}

func driftLabel(rule string) string {
	if l, ok := driftLabels[rule]; ok {
		return l
	}
	return strings.ReplaceAll(rule, "_", " ")
}

// countRow is one labelled count.
type countRow struct {
	Label string
	N     int
}

type actionRow struct {
	runtime.ActionStats
	Undeclared bool // the job description does not list it
}

type driftRow struct {
	runtime.DriftEvent
	Label  string
	Policy string
	Facts  []dataPair
	Typed  string // the note typed into a refused form
}

// chartBar is one day of the calls chart, laid out on the server (the
// content security policy allows no inline style).
type chartBar struct {
	runtime.DayStats
	X, Y, W, H float64
	MarkX      float64 // centre of the drift marker
	Label      string  // the day as people read it
	Tick       bool    // the day is labelled under the axis
}

type reviewChart struct {
	Bars           []chartBar
	Height         float64 // of the plot
	Top            int     // calls at the top gridline
	MidY           float64 // the middle gridline
	HasDrift       bool
	Base           float64 // y of the axis
	LabelY, MarkY  float64
	ViewW, ViewH   float64
	PlotX          float64
	TopLabelY      float64
	MidLabelY      float64
	MidCalls       int
	DaysWithCalls  int
	DaysWithEvents int
}

type reviewData struct {
	Agent     *store.Agent
	R         *runtime.Review
	Days      int
	Ranges    []int
	Chart     reviewChart
	Outcomes  []countRow
	Approvals []countRow
	Actions   []actionRow
	Drift     []driftRow // all of the window's, newest first
	Events    driftPager // the kind and page of them shown
	Open      int        // drift events not acknowledged
	CanAck    bool       // the viewer may acknowledge drift
	Refusal   *refusal
	Done      string
}

var outcomeLabels = []struct{ key, label string }{
	{"success", "Succeeded"}, {"error", "Failed"}, {"cancelled", "Cancelled"},
	{"refused", "Refused"}, {"expired", "Expired"}, {"revoked", "Revoked"},
}

var approvalLabels = []struct{ key, label string }{
	{"requested", "Requested"}, {"granted", "Approved"}, {"denied", "Denied"},
	{"expired", "Expired"}, {"withdrawn", "Withdrawn"}, {"cancelled", "Cancelled"},
}

func reviewDays(q string) (int, error) {
	if q == "" {
		return DefaultReviewDays, nil
	}
	n, err := strconv.Atoi(q)
	if err != nil || n < 1 || n > runtime.MaxReviewDays {
		return 0, arxerr.New(arxerr.BadRequest, "days must be a number from 1 to %d", runtime.MaxReviewDays)
	}
	return n, nil
}

func (c *Console) reviewData(r *http.Request, v *viewer, days int) (*reviewData, error) {
	ctx := r.Context()
	a, err := c.agentByPath(r)
	if err != nil {
		return nil, err
	}
	rv, err := c.rt.Review(ctx, v.Principal, a.ID, days)
	if err != nil {
		return nil, err
	}
	d := &reviewData{Agent: a, R: rv, Days: days, Ranges: []int{7, 30, 90}, CanAck: c.rt.CanTerminate(v.Principal, a)}
	m, _ := c.rt.Manifest(a)
	for _, o := range outcomeLabels {
		d.Outcomes = append(d.Outcomes, countRow{o.label, rv.Outcomes[o.key]})
	}
	for _, o := range approvalLabels {
		d.Approvals = append(d.Approvals, countRow{o.label, rv.Approvals[o.key]})
	}
	for _, s := range rv.ByAction {
		row := actionRow{ActionStats: s}
		if m != nil {
			_, ok := m.Action(s.Connector, s.Action)
			row.Undeclared = !ok
		}
		d.Actions = append(d.Actions, row)
	}
	for _, e := range rv.Drift {
		row := driftRow{DriftEvent: e, Label: driftLabel(e.Rule), Policy: driftPolicies[e.Policy]}
		if row.Policy == "" {
			row.Policy = e.Policy
		}
		for _, f := range dataPairs(e.Facts) {
			if (f.Key == "connector" && f.Value == e.Connector) || (f.Key == "action" && f.Value == e.Action) {
				continue // on the call line
			}
			if l, ok := factLabels[f.Key]; ok {
				f.Key = l
			} else {
				f.Key = strings.ReplaceAll(f.Key, "_", " ")
			}
			row.Facts = append(row.Facts, f)
		}
		if e.Ack == nil {
			d.Open++
		}
		d.Drift = append(d.Drift, row)
	}
	d.Chart = layoutChart(rv.PerDay)
	// The kind and page of events shown: from the query, or from the form
	// an acknowledgement was posted with.
	rule, pageQ := r.URL.Query().Get("rule"), r.URL.Query().Get("page")
	if r.Method == http.MethodPost {
		rule, pageQ = r.PostForm.Get("rule"), r.PostForm.Get("page")
	}
	page, _ := strconv.Atoi(pageQ)
	d.Events = pageDrift(d.Drift, rule, page, func(rule string, page int) string { return reviewLink(a.ID, days, rule, page) })
	return d, nil
}

// layoutChart places the bars of calls per day in a 760×200 drawing.
func layoutChart(days []runtime.DayStats) reviewChart {
	const (
		plotX, plotW, plotTop, plotH = 40.0, 710.0, 18.0, 150.0
	)
	ch := reviewChart{ViewW: plotX + plotW + 10, ViewH: plotTop + plotH + 28, PlotX: plotX, Height: plotH,
		Base: plotTop + plotH, LabelY: plotTop + plotH + 18, MarkY: plotTop - 8}
	peak := 0
	for _, d := range days {
		peak = max(peak, d.Calls)
		if d.Calls > 0 {
			ch.DaysWithCalls++
		}
		if d.Drift > 0 {
			ch.DaysWithEvents++
			ch.HasDrift = true
		}
	}
	ch.Top = niceCeil(max(peak, 1))
	ch.MidCalls = ch.Top / 2
	ch.MidY = plotTop + plotH - plotH*float64(ch.MidCalls)/float64(ch.Top)
	ch.TopLabelY, ch.MidLabelY = plotTop+4, ch.MidY+4
	n := len(days)
	if n == 0 {
		return ch
	}
	slot := plotW / float64(n)
	w := slot * 0.64
	every := max(1, (n+7)/8) // at most about eight labels
	for i, d := range days {
		h := plotH * float64(d.Calls) / float64(ch.Top)
		if d.Calls > 0 && h < 2 {
			h = 2
		}
		x := plotX + float64(i)*slot + (slot-w)/2
		b := chartBar{DayStats: d, X: round1(x), W: round1(w), H: round1(h), Y: round1(plotTop + plotH - h), MarkX: round1(x + w/2)}
		if t, err := time.Parse(time.DateOnly, d.Day); err == nil {
			b.Label = t.Format("2 Jan")
		} else {
			b.Label = d.Day
		}
		b.Tick = (n-1-i)%every == 0 // the last day (today) is always labelled
		ch.Bars = append(ch.Bars, b)
	}
	return ch
}

func round1(f float64) float64 { return float64(int(f*10+0.5)) / 10 }

// niceCeil rounds a count up to 1, 2 or 5 times a power of ten, and to an
// even number when above one, so the middle gridline is a whole count.
func niceCeil(n int) int {
	if n <= 2 {
		return 2
	}
	for p := 1; ; p *= 10 {
		for _, f := range []int{1, 2, 5} {
			if f*p >= n && f*p%2 == 0 {
				return f * p
			}
		}
	}
}

func (c *Console) review(w http.ResponseWriter, r *http.Request) error {
	days, err := reviewDays(r.URL.Query().Get("days"))
	if err != nil {
		return err
	}
	d, err := c.reviewData(r, viewerOf(r), days)
	if err != nil {
		return err
	}
	if q := r.URL.Query().Get("acked"); q != "" {
		for _, e := range d.Drift {
			if strconv.FormatInt(e.Index, 10) == q && e.Ack != nil {
				d.Done = "Your note on this event is in the agent's personnel record."
			}
		}
	}
	// After a bulk acknowledgement: said only when nothing is open now (a
	// crafted link cannot make the page claim what did not happen).
	if n, err := strconv.Atoi(r.URL.Query().Get("ackedall")); err == nil && n > 0 && d.Open == 0 {
		d.Done = fmt.Sprintf("Your note is on all %d events, each in the agent's personnel record.", n)
	}
	return c.render(w, r, http.StatusOK, "review", "Review of "+d.Agent.Name, d)
}

// ackDrift records a manager's note on a drift event; a refusal is shown
// on the review page, with the runtime's message and the note kept.
func (c *Console) ackDrift(w http.ResponseWriter, r *http.Request) error {
	v := viewerOf(r)
	index, err := strconv.ParseInt(r.PathValue("index"), 10, 64)
	if err != nil || index < 0 {
		return arxerr.New(arxerr.BadRequest, "the event number must be a whole number")
	}
	days, err := reviewDays(r.PostForm.Get("days"))
	if err != nil {
		days = DefaultReviewDays
	}
	note := r.PostForm.Get("note")
	agentID := r.PathValue("id")
	aerr := c.rt.AcknowledgeDrift(r.Context(), v.Principal, agentID, index, note)
	if aerr == nil {
		c.log.Info("console drift acknowledged", "user", v.User.Email, "agent", agentID, "index", index)
		q := url.Values{"days": {strconv.Itoa(days)}, "acked": {strconv.FormatInt(index, 10)}}
		if rule := r.PostForm.Get("rule"); rule != "" {
			q.Set("rule", rule)
		}
		if page, err := strconv.Atoi(r.PostForm.Get("page")); err == nil && page > 1 {
			q.Set("page", strconv.Itoa(page))
		}
		http.Redirect(w, r, fmt.Sprintf("/console/agents/%s/review?%s#drift-%d", url.PathEscape(agentID), q.Encode(), index), http.StatusSeeOther)
		return nil
	}
	ae, ok := shownRefusal(aerr)
	if !ok {
		return aerr
	}
	d, err := c.reviewData(r, v, days)
	if err != nil {
		return err
	}
	heading := "Your note was not recorded"
	if ae.Code == arxerr.Forbidden {
		heading = "You cannot acknowledge this agent's events"
	}
	d.Refusal = &refusal{Heading: heading, Message: sentence(ae.Message), Hint: sentence(ae.Hint), Code: ae.Code}
	for i := range d.Drift {
		if d.Drift[i].Index == index {
			d.Drift[i].Typed = note
		}
	}
	return c.render(w, r, errStatus(ae), "review", "Review of "+d.Agent.Name, d)
}

// ackAllDrift acknowledges every open drift event of the review window
// with one note.
func (c *Console) ackAllDrift(w http.ResponseWriter, r *http.Request) error {
	v := viewerOf(r)
	days, err := reviewDays(r.PostForm.Get("days"))
	if err != nil {
		days = DefaultReviewDays
	}
	agentID := r.PathValue("id")
	n, aerr := c.rt.AcknowledgeAllDrift(r.Context(), v.Principal, agentID, days, r.PostForm.Get("note"))
	if aerr == nil {
		c.log.Info("console drift acknowledged in bulk", "user", v.User.Email, "agent", agentID, "events", n)
		http.Redirect(w, r, fmt.Sprintf("/console/agents/%s/review?days=%d&ackedall=%d#drift-h", url.PathEscape(agentID), days, n), http.StatusSeeOther)
		return nil
	}
	ae, ok := shownRefusal(aerr)
	if !ok {
		return aerr
	}
	d, err := c.reviewData(r, v, days)
	if err != nil {
		return err
	}
	d.Refusal = &refusal{Heading: "Your note was not recorded", Message: sentence(ae.Message), Hint: sentence(ae.Hint), Code: ae.Code}
	return c.render(w, r, errStatus(ae), "review", "Review of "+d.Agent.Name, d)
}

// shownRefusal says whether err is a refusal to show on the form's page
// (rather than as an error page).
func shownRefusal(err error) (*arxerr.Error, bool) {
	var ae *arxerr.Error
	if !errors.As(err, &ae) || ae.Code == arxerr.AgentNotFound || ae.Code == arxerr.Internal || ae.Code == arxerr.RecordUnavailable {
		return nil, false
	}
	return ae, true
}

func errStatus(ae *arxerr.Error) int {
	if ae.Status != 0 {
		return ae.Status
	}
	return arxerr.Lookup(ae.Code).Status
}

type terminateData struct {
	Agent   *store.Agent
	M       *manifest.Manifest
	Reason  string
	Typed   string // the confirmation typed
	Refusal *refusal
	Blocked bool     // the refusal is final: no form
	Notify  []string // the channels notices go out on; none: nobody is told
}

// terminate is the two steps of a termination: the agent page's form
// (a reason) leads to a confirmation page that asks for the agent's name;
// only a post of that page with the exact name terminates.
func (c *Console) terminate(w http.ResponseWriter, r *http.Request) error {
	v := viewerOf(r)
	a, err := c.agentByPath(r)
	if err != nil {
		return err
	}
	d := &terminateData{Agent: a, Reason: r.PostForm.Get("reason"), Typed: r.PostForm.Get("confirm"), Notify: c.rt.NotifyChannels()}
	if m, err := c.rt.Manifest(a); err == nil {
		d.M = m
	}
	show := func(status int, heading, msg string, code arxerr.Code, blocked bool) error {
		d.Refusal = &refusal{Heading: heading, Message: msg, Code: code}
		d.Blocked = blocked
		return c.render(w, r, status, "terminate", "Terminate "+a.Name, d)
	}
	if !c.rt.CanTerminate(v.Principal, a) {
		return show(http.StatusForbidden, "You cannot terminate this agent",
			"Only an operator, the agent's owner or its approvers can terminate it. Nothing was changed.", arxerr.Forbidden, true)
	}
	if a.Status == store.AgentTerminated {
		return show(http.StatusConflict, "The agent is already terminated", "Nothing was changed.", arxerr.AgentTerminated, true)
	}
	if r.PostForm.Get("step") != "confirm" {
		return c.render(w, r, http.StatusOK, "terminate", "Terminate "+a.Name, d)
	}
	if strings.TrimSpace(d.Reason) == "" {
		return show(http.StatusBadRequest, "A termination needs a reason",
			"Say why: the reason goes into the agent's personnel record. Nothing was changed.", arxerr.BadRequest, false)
	}
	if strings.TrimSpace(d.Typed) != a.Name {
		return show(http.StatusBadRequest, "The name does not match",
			"Type the agent's name, "+a.Name+", exactly to confirm. Nothing was changed.", arxerr.BadRequest, false)
	}
	res, terr := c.rt.Terminate(r.Context(), v.Principal, a.ID, d.Reason)
	if terr != nil {
		ae, ok := shownRefusal(terr)
		if !ok {
			return terr
		}
		heading := "The agent was not terminated"
		if ae.Code == arxerr.Forbidden {
			heading = "You cannot terminate this agent"
		}
		return show(errStatus(ae), heading, sentence(ae.Message)+" Nothing was changed.", ae.Code, ae.Code == arxerr.Forbidden || ae.Code == arxerr.AgentTerminated)
	}
	c.log.Info("console termination", "user", v.User.Email, "agent", a.ID, "tokens", res.RevokedTokens,
		"credentials", res.RevokedCredentials, "approvals", res.CancelledApprovals)
	http.Redirect(w, r, "/console/agents/"+url.PathEscape(a.ID)+"?done=terminated", http.StatusSeeOther)
	return nil
}

// termination is what the record says about an agent's termination.
type termination struct {
	By          string
	Time        time.Time
	Reason      string
	Tokens      int64
	Credentials int64
	Approvals   int64
}

// terminationOf finds the agent.terminated entry of a terminated agent.
func (c *Console) terminationOf(r *http.Request, a *store.Agent) (*termination, error) {
	var out *termination
	after := int64(-1)
	for {
		page, err := c.rt.Store().AgentEntries(r.Context(), a.ID, after, 1000)
		if err != nil {
			return nil, c.rt.ReadFailed("agent record", err)
		}
		for _, se := range page {
			after = se.Index
			if se.Type != record.TypeAgentTerminated {
				continue
			}
			e, err := record.Parse(se.Data)
			if err != nil {
				continue
			}
			t := &termination{By: actorLabel(e.Actor, a.ID), Time: e.Time}
			t.Reason, _ = e.Data["reason"].(string)
			t.Tokens = count(e.Data["revoked_tokens"])
			t.Credentials = count(e.Data["revoked_credentials"])
			t.Approvals = count(e.Data["cancelled_approvals"])
			out = t
		}
		if len(page) < 1000 {
			return out, nil
		}
	}
}

func count(v any) int64 {
	switch n := v.(type) {
	case int64:
		return n
	case int:
		return int64(n)
	case float64:
		return int64(n)
	case interface{ Int64() (int64, error) }:
		i, _ := n.Int64()
		return i
	}
	return 0
}
