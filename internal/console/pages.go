package console

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/arxsec/arx/arxerr"
	"github.com/arxsec/arx/internal/runtime"
	"github.com/arxsec/arx/internal/store"
	"github.com/arxsec/arx/manifest"
	"github.com/arxsec/arx/record"
)

// request is an approval as the pages show it: with what the viewer may do.
type request struct {
	runtime.ApprovalView
	Yours bool // the viewer may decide it
	Self  bool // the viewer raised it
}

func (c *Console) requests(v *viewer, list []runtime.ApprovalView) []request {
	out := make([]request, 0, len(list))
	for _, a := range list {
		self := a.Call.RaisedBy != "" && strings.EqualFold(a.Call.RaisedBy, v.Actor())
		granted := slices.ContainsFunc(a.Grants, func(g string) bool { return strings.EqualFold(g, v.User.Email) })
		out = append(out, request{ApprovalView: a, Self: self,
			Yours: !self && !granted && a.Agent.Status == store.AgentActive && c.rt.CanDecide(v.Principal, a.Agent)})
	}
	return out
}

// pendingRequests lists pending approvals, those the viewer can decide first,
// each group oldest first (the one that runs out soonest on top).
func (c *Console) pendingRequests(ctx context.Context, v *viewer) ([]request, error) {
	list, err := c.rt.Approvals(ctx, v.Principal, store.ApprovalPending, 500)
	if err != nil {
		return nil, err
	}
	out := c.requests(v, list)
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].Yours != out[j].Yours {
			return out[i].Yours
		}
		return out[i].ExpiresAt.Before(out[j].ExpiresAt)
	})
	return out, nil
}

type agentRow struct {
	store.Agent
	Connectors []string
	HighRisk   int
	Pending    int
}

func (c *Console) agentRows(ctx context.Context, pending []request) ([]agentRow, error) {
	agents, err := c.rt.Store().Agents(ctx)
	if err != nil {
		return nil, c.rt.ReadFailed("list agents", err)
	}
	waiting := map[string]int{}
	for _, p := range pending {
		waiting[p.AgentID]++
	}
	rows := make([]agentRow, 0, len(agents))
	for _, a := range agents {
		row := agentRow{Agent: a, Pending: waiting[a.ID]}
		if m, err := c.rt.Manifest(&a); err == nil {
			for _, cn := range m.Scope.Connectors {
				row.Connectors = append(row.Connectors, cn.Name)
				for _, ac := range cn.Actions {
					if ac.Risk >= manifest.RiskHigh {
						row.HighRisk++
					}
				}
			}
		}
		rows = append(rows, row)
	}
	rank := map[string]int{store.AgentActive: 0, store.AgentSuspended: 1, store.AgentTerminated: 2}
	sort.SliceStable(rows, func(i, j int) bool {
		if rank[rows[i].Status] != rank[rows[j].Status] {
			return rank[rows[i].Status] < rank[rows[j].Status]
		}
		return rows[i].Name < rows[j].Name
	})
	return rows, nil
}

type dashboardData struct {
	Pending    []request
	Yours      int
	Agents     []agentRow
	Active     int
	DecidedDay int
	Welcome    bool
	Publish    *publishData // nil: no bucket is configured
}

// publishData is the dashboard's view of publishing to the bucket.
type publishData struct {
	PublishStatus
	Waiting int64 // committed entries not yet in the bucket
}

// publishing reports publishing to the bucket, or nil without one.
func (c *Console) publishing(ctx context.Context) (*publishData, error) {
	if c.publish == nil {
		return nil, nil
	}
	d := &publishData{PublishStatus: c.publish()}
	tree, err := c.rt.Store().TreeSize(ctx)
	if err != nil {
		return nil, c.rt.ReadFailed("tree size", err)
	}
	d.Waiting = max(tree-d.Size, 0) // as arx_publish_pending_entries
	return d, nil
}

func (c *Console) dashboard(w http.ResponseWriter, r *http.Request) error {
	ctx, v := r.Context(), viewerOf(r)
	pending, err := c.pendingRequests(ctx, v)
	if err != nil {
		return err
	}
	rows, err := c.agentRows(ctx, pending)
	if err != nil {
		return err
	}
	d := dashboardData{Pending: pending, Agents: rows, Welcome: r.URL.Query().Has("welcome")}
	for _, p := range pending {
		if p.Yours {
			d.Yours++
		}
	}
	for _, a := range rows {
		if a.Status == store.AgentActive {
			d.Active++
		}
	}
	// Counted from the approvals alone: no call or agent needed.
	recent, err := c.rt.Store().Approvals(ctx, "", 500)
	if err != nil {
		return c.rt.ReadFailed("list approvals", err)
	}
	for _, a := range recent {
		if a.Status != store.ApprovalPending && a.DecidedAt != nil && time.Since(*a.DecidedAt) < 24*time.Hour {
			d.DecidedDay++
		}
	}
	if d.Publish, err = c.publishing(ctx); err != nil {
		return err
	}
	return c.render(w, r, http.StatusOK, "dashboard", "Dashboard", d)
}

type approvalsData struct {
	Pending []request
	Decided []runtime.ApprovalView
}

func (c *Console) approvals(w http.ResponseWriter, r *http.Request) error {
	ctx, v := r.Context(), viewerOf(r)
	pending, err := c.pendingRequests(ctx, v)
	if err != nil {
		return err
	}
	all, err := c.rt.Approvals(ctx, v.Principal, "", 150)
	if err != nil {
		return err
	}
	d := approvalsData{Pending: pending}
	for _, a := range all {
		if a.Status != store.ApprovalPending {
			d.Decided = append(d.Decided, a)
		}
	}
	sort.SliceStable(d.Decided, func(i, j int) bool {
		ti, tj := d.Decided[i].RequestedAt, d.Decided[j].RequestedAt
		if d.Decided[i].DecidedAt != nil {
			ti = *d.Decided[i].DecidedAt
		}
		if d.Decided[j].DecidedAt != nil {
			tj = *d.Decided[j].DecidedAt
		}
		return ti.After(tj)
	})
	if len(d.Decided) > 100 {
		d.Decided = d.Decided[:100]
	}
	return c.render(w, r, http.StatusOK, "approvals", "Approvals", d)
}

type approverRow struct {
	Email    string
	Delegate bool
	You      bool
	Granted  bool // granted this request (a quorum of several)
}

type refusal struct {
	Heading string
	Message string
	Hint    string
	Code    arxerr.Code
}

type approvalData struct {
	request
	Pending    bool
	Expired    bool // pending, but its time ran out (the sweeper closes it within a second)
	WhyNot     string
	Approvers  []approverRow
	RiskRaised bool // the manifest rates the action higher than the code declared
	Refusal    *refusal
	Typed      string // the reason typed into a refused form
	Done       string
	// Passkey is how the decision form signs: "required" (the manifest
	// requires a passkey signature), "available" (the person has a
	// passkey; signing is offered), or "" (unsigned).
	Passkey     string
	NeedPasskey bool   // required, and the person has no passkey yet
	SignedWith  string // the name of the passkey that signed the decision; "" unsigned
	// Quorum is how many approvers must grant (0: one), Granted how many
	// did; YouGranted: the viewer is one of them.
	Quorum, Granted int
	YouGranted      bool
}

var refusalHeadings = map[arxerr.Code]string{
	arxerr.NotApprover:     "You are not an approver of this agent",
	arxerr.SelfApproval:    "You cannot decide a request you raised",
	arxerr.ApprovalExpired: "This request has expired",
	arxerr.ApprovalDecided: "This request was already decided",
	arxerr.AgentTerminated: "The agent is terminated",
	arxerr.AgentSuspended:  "The agent is suspended",
	arxerr.BadRequest:      "Your decision needs a change",
	arxerr.PasskeyRequired: "This decision needs your passkey",
	arxerr.PasskeyInvalid:  "Your passkey signature was not accepted",
}

func (c *Console) approvalData(ctx context.Context, v *viewer, callID string) (*approvalData, error) {
	a, err := c.rt.Approval(ctx, v.Principal, callID)
	if err != nil {
		return nil, err
	}
	req := c.requests(v, []runtime.ApprovalView{*a})[0]
	d := &approvalData{request: req, Pending: a.Status == store.ApprovalPending}
	d.Expired = d.Pending && !time.Now().Before(a.ExpiresAt)
	if dr, err1 := manifest.ParseRisk(a.Call.DeclaredRisk); err1 == nil {
		if er, err2 := manifest.ParseRisk(a.Call.Risk); err2 == nil && er > dr {
			d.RiskRaised = true
		}
	}
	var delegates []string
	required := false
	if m, err := c.rt.Manifest(a.Agent); err == nil {
		delegates, required = m.Approval.Delegates, m.Approval.RequirePasskey
	}
	if err := c.passkeyMode(ctx, v, a, required, d); err != nil {
		return nil, err
	}
	d.Quorum, d.Granted = a.Quorum, len(a.Grants)
	for _, e := range a.Approvers {
		row := approverRow{Email: e, You: strings.EqualFold(e, v.User.Email)}
		for _, g := range a.Grants {
			if strings.EqualFold(g, e) {
				row.Granted = true
				d.YouGranted = d.YouGranted || row.You
			}
		}
		for _, dg := range delegates {
			if strings.EqualFold(dg, e) {
				row.Delegate = true
			}
		}
		d.Approvers = append(d.Approvers, row)
	}
	switch {
	case !d.Pending:
	case d.Expired:
		d.WhyNot = "The time to decide has run out; the request counts as denied."
	case a.Agent.Status != store.AgentActive:
		d.WhyNot = "The agent is " + a.Agent.Status + ", so its requests can no longer be granted."
	case d.Self:
		d.WhyNot = "You raised this request, so another approver has to decide it."
	case d.YouGranted:
		d.WhyNot = fmt.Sprintf("You granted this request. It needs %d approvals; %d more must come from other approvers.", d.Quorum, d.Quorum-d.Granted)
	case !d.Yours:
		d.WhyNot = "Only the approvers and delegates named in the job description of " + a.Agent.Name +
			" can decide, and you are not one of them."
	case d.NeedPasskey:
		d.WhyNot = "The job description of " + a.Agent.Name + " counts only decisions signed with the approver's passkey, and you have none yet."
	}
	return d, nil
}

// passkeyMode says how the decision form signs, and which passkey signed
// a decided request.
func (c *Console) passkeyMode(ctx context.Context, v *viewer, a *runtime.ApprovalView, required bool, d *approvalData) error {
	if !d.Pending && a.Passkey == "" {
		return nil
	}
	var keys []store.Passkey
	var err error
	if d.Pending {
		keys, err = c.rt.Passkeys(ctx, v.Principal)
	} else {
		keys, err = c.rt.PersonPasskeys(ctx, v.Principal, strings.TrimPrefix(a.DecidedBy, "user:"))
	}
	if err != nil {
		return err
	}
	if !d.Pending {
		d.SignedWith = "a passkey since removed"
		for _, k := range keys {
			if record.EncodeID(k.ID) == a.Passkey {
				d.SignedWith = k.Name
			}
		}
		return nil
	}
	available := c.rt.PasskeysAvailable() == nil
	switch {
	case required && (len(keys) == 0 || !available):
		d.Passkey, d.NeedPasskey = "required", true
	case required:
		d.Passkey = "required"
	case len(keys) > 0 && available:
		d.Passkey = "available"
	}
	return nil
}

func (c *Console) approval(w http.ResponseWriter, r *http.Request) error {
	d, err := c.approvalData(r.Context(), viewerOf(r), r.PathValue("call"))
	if err != nil {
		return err
	}
	switch r.URL.Query().Get("done") {
	case "approve":
		d.Done = "You approved this request. The agent's call goes ahead now."
	case "deny":
		d.Done = "You denied this request. The agent's call will not run."
	}
	return c.render(w, r, http.StatusOK, "approval", "Request from "+d.Agent.Name, d)
}

// decide records an approval or a denial; a refusal is shown on the
// request's page, with the runtime's message.
func (c *Console) decide(w http.ResponseWriter, r *http.Request) error {
	v := viewerOf(r)
	callID := r.PathValue("call")
	decision := r.PostForm.Get("decision")
	if decision != "approve" && decision != "deny" {
		return arxerr.New(arxerr.BadRequest, "choose approve or deny")
	}
	reason := r.PostForm.Get("reason")
	sd, derr := signedDecision(r)
	switch {
	case derr != nil:
	case sd != nil:
		_, derr = c.rt.DecideSigned(r.Context(), v.Principal, callID, decision == "approve", reason, sd)
	default:
		_, derr = c.rt.Decide(r.Context(), v.Principal, callID, decision == "approve", reason)
	}
	if derr == nil {
		c.log.Info("console decision", "user", v.User.Email, "call", callID, "decision", decision, "signed", sd != nil)
		http.Redirect(w, r, "/console/approvals/"+callID+"?done="+decision, http.StatusSeeOther)
		return nil
	}
	var ae *arxerr.Error
	if !errors.As(derr, &ae) || ae.Code == arxerr.ApprovalNotFound || ae.Code == arxerr.Internal || ae.Code == arxerr.RecordUnavailable {
		return derr
	}
	d, err := c.approvalData(r.Context(), v, callID)
	if err != nil {
		return err
	}
	heading := refusalHeadings[ae.Code]
	if heading == "" {
		heading = "Your decision was not recorded"
	}
	d.Refusal = &refusal{Heading: heading, Message: sentence(ae.Message), Hint: sentence(ae.Hint), Code: ae.Code}
	d.Typed = reason
	status := ae.Status
	if status == 0 {
		status = arxerr.Lookup(ae.Code).Status
	}
	return c.render(w, r, status, "approval", "Request from "+d.Agent.Name, d)
}

func (c *Console) agentByPath(r *http.Request) (*store.Agent, error) {
	a, err := c.rt.Store().Agent(r.Context(), r.PathValue("id"))
	if errors.Is(err, store.ErrNotFound) {
		return nil, arxerr.New(arxerr.AgentNotFound, "there is no agent %s", truncate(r.PathValue("id"), 64))
	}
	if err != nil {
		return nil, c.rt.ReadFailed("agent", err)
	}
	return a, nil
}

type agentsData struct {
	Agents []agentRow
}

func (c *Console) agents(w http.ResponseWriter, r *http.Request) error {
	ctx, v := r.Context(), viewerOf(r)
	pending, err := c.pendingRequests(ctx, v)
	if err != nil {
		return err
	}
	rows, err := c.agentRows(ctx, pending)
	if err != nil {
		return err
	}
	return c.render(w, r, http.StatusOK, "agents", "Agents", agentsData{Agents: rows})
}

type callRow struct {
	store.Call
	Status      string // effective
	HasApproval bool
}

type agentData struct {
	Agent      *store.Agent
	M          *manifest.Manifest
	Problem    string // the stored manifest does not parse
	Hours      string
	Calls      []callRow
	Pending    int
	Raw        string
	YouApprove bool
	// CanTerminate: the agent is active and the viewer may terminate it.
	CanTerminate bool
	Termination  *termination // of a terminated agent, from its record
	Done         string
	// Usage is the day's spend and tokens against the caps (nil: no caps,
	// or a terminated agent).
	Usage *usageView
	// Shadow is what the agent's shadow job description would have
	// changed (nil: none), ShadowLines its summary and ShadowYAML its text.
	Shadow      *runtime.ShadowReport
	ShadowLines []string
	ShadowYAML  string
	// CanChange: the viewer may change the agent's job description (an
	// admin, the agent not terminated).
	CanChange bool
}

// usageView is the day's usage of a capped budget, for the Budget card.
type usageView struct {
	*runtime.AgentUsage
	SpendPct, TokensPct int    // of the cap, 0 to 100 (meters are drawn up to full)
	SpendAt, TokensAt   int    // notify_at, where the meters turn
	OnBudget            string // what a call at a cap does, in words
}

func notifyAt(p int) int {
	if p == 0 {
		return 100
	}
	return p
}

func viewUsage(u *runtime.AgentUsage, m *manifest.Manifest) *usageView {
	if u == nil {
		return nil
	}
	pct := func(used, limit int64) int {
		if limit <= 0 {
			return 0
		}
		return int(min(used*100/limit, 100))
	}
	v := &usageView{AgentUsage: u, OnBudget: "waits for an approver"}
	if l := m.Budget.Spend; l != nil {
		spent, _ := record.ParseMoney(u.SpentToday)
		v.SpendPct, v.SpendAt = pct(spent.Micros, l.PerDay.Micros), notifyAt(l.NotifyAt)
	}
	if l := m.Budget.Tokens; l != nil {
		v.TokensPct, v.TokensAt = pct(u.TokensToday, u.TokensLimit), notifyAt(l.NotifyAt)
	}
	if m.Budget.OnBudgetPolicy() == manifest.OnBudgetRefuse {
		v.OnBudget = "is refused"
	}
	return v
}

func (c *Console) agent(w http.ResponseWriter, r *http.Request) error {
	ctx, v := r.Context(), viewerOf(r)
	a, err := c.agentByPath(r)
	if err != nil {
		return err
	}
	d := agentData{Agent: a}
	enforced, shadow, err := c.rt.ManifestText(a)
	if err != nil {
		return err
	}
	d.Raw, d.ShadowYAML = string(enforced), string(shadow)
	d.CanChange = v.IsAdmin() && a.Status != store.AgentTerminated
	if a.ShadowHash != "" {
		if d.Shadow, err = c.rt.Shadow(ctx, v.Principal, a.ID); err != nil {
			return err
		}
		d.ShadowLines = d.Shadow.Summary()
	}
	switch r.URL.Query().Get("done") {
	case "shadowed":
		d.Done = "The job description is tried in shadow: every call is also decided by it, and only recorded where it would differ. Nothing enforced changed."
	case "applied", "promoted":
		d.Done = a.Name + " is held to the new job description from now on."
	case "discarded":
		d.Done = "The shadow job description is dropped. Nothing enforced changed."
	}
	if m, err := c.rt.Manifest(a); err != nil {
		d.Problem = "The stored job description does not parse; it is shown as hired below."
	} else {
		d.M = m
		d.Hours = activeHours(m.Budget.ActiveHours)
		d.YouApprove = a.Status == store.AgentActive && m.IsApprover(v.User.Email)
		if a.Status != store.AgentTerminated {
			u, err := c.rt.Usage(ctx, a)
			if err != nil {
				return err
			}
			d.Usage = viewUsage(u, m)
		}
	}
	d.CanTerminate = a.Status == store.AgentActive && c.rt.CanTerminate(v.Principal, a)
	if a.Status == store.AgentTerminated {
		if d.Termination, err = c.terminationOf(r, a); err != nil {
			return err
		}
		if r.URL.Query().Get("done") == "terminated" {
			d.Done = a.Name + " is terminated. Nothing it held is honoured any more."
		}
	}
	calls, err := c.rt.Store().Calls(ctx, a.ID, 25)
	if err != nil {
		return c.rt.ReadFailed("list calls", err)
	}
	now := time.Now()
	for _, cl := range calls {
		row := callRow{Call: cl, Status: runtime.EffectiveStatus(&cl, now)}
		if cl.Risk == "high" || cl.Status == store.CallPending || cl.Status == store.CallDenied {
			if _, err := c.rt.Store().Approval(ctx, cl.ID); err == nil {
				row.HasApproval = true
			}
		}
		if cl.Status == store.CallPending {
			d.Pending++
		}
		d.Calls = append(d.Calls, row)
	}
	return c.render(w, r, http.StatusOK, "agent", a.Name, d)
}

var dayNames = []string{"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"}

func activeHours(h *manifest.ActiveHours) string {
	if h == nil {
		return ""
	}
	days := "every day"
	if len(h.Days) > 0 && len(h.Days) < 7 {
		names := make([]string, 0, len(h.Days))
		for _, d := range h.Days {
			names = append(names, dayNames[d])
		}
		days = strings.Join(names, ", ")
		if strings.Join(names, ",") == "Mon,Tue,Wed,Thu,Fri" {
			days = "Mon–Fri"
		}
	}
	return days + ", " + h.Start + "–" + h.End + " (" + h.Timezone + ")"
}

// RecordPageSize is the number of entries on one page of a record.
const RecordPageSize = 50

type entryRow struct {
	Index     int64
	Time      time.Time
	Type      string
	Call      string
	Connector string
	Action    string
	Risk      string
	Actor     string
	Data      []dataPair
	Leaf      string
	Problem   string
	// Approval says the call has an approval page.
	Approval bool
}

type recordData struct {
	Agent    *store.Agent
	Check    *chainCheck
	Entries  []entryRow
	Page     int
	Pages    int
	First    int // 1-based positions shown, newest = 1
	Last     int
	Newer    string
	Older    string
	SigCheck bool
	// Approvers are the people the job description names to decide, with
	// the passkeys their signed decisions are checked against.
	Approvers      []approverKeys
	RequirePasskey bool
}

type approverKeys struct {
	Email    string
	Delegate bool
	Account  bool
	Keys     []passkeyRow
}

func (c *Console) record(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	a, err := c.agentByPath(r)
	if err != nil {
		return err
	}
	vctx, cancel := context.WithTimeout(ctx, VerifyTimeout)
	check, err := verifyChain(vctx, c.rt.Store(), c.logKey, a.ID)
	cancel()
	if err != nil {
		return err
	}
	d := recordData{Agent: a, Check: check, Page: 1, SigCheck: c.logKey != ""}
	required, approvers, err := c.rt.ApproverPasskeys(ctx, viewerOf(r).Principal, a)
	if err != nil {
		return err
	}
	d.RequirePasskey = required
	for _, ak := range approvers {
		d.Approvers = append(d.Approvers, approverKeys{Email: ak.Email, Delegate: ak.Delegate, Account: ak.Account, Keys: passkeyRows(ak.Keys)})
	}
	n := len(check.Indexes)
	d.Pages = max(1, (n+RecordPageSize-1)/RecordPageSize)
	if q := r.URL.Query().Get("page"); q != "" {
		p, err := strconv.Atoi(q)
		if err != nil || p < 1 {
			return arxerr.New(arxerr.BadRequest, "page must be a number from 1")
		}
		d.Page = min(p, d.Pages)
	}
	// Newest first: page 1 holds the last RecordPageSize entries.
	hi := n - (d.Page-1)*RecordPageSize
	lo := max(0, hi-RecordPageSize)
	if hi > lo {
		list, err := c.rt.Store().AgentEntries(ctx, a.ID, check.Indexes[lo]-1, hi-lo)
		if err != nil {
			return c.rt.ReadFailed("agent record", err)
		}
		for i := len(list) - 1; i >= 0; i-- {
			e := list[i]
			row := entryRow{Index: e.Index, Type: e.Type, Call: e.Call, Leaf: record.HashString(e.Leaf),
				Approval: e.Call != "" && (strings.HasPrefix(e.Type, "approval.") || e.Type == record.TypeCallRequested)}
			if pe, err := record.Parse(e.Data); err != nil {
				row.Problem = "this entry is not canonical"
			} else {
				row.Time, row.Connector, row.Action, row.Risk = pe.Time, pe.Connector, pe.Action, pe.Risk
				row.Actor = actorLabel(pe.Actor, a.ID)
				row.Data = dataPairs(pe.Data)
			}
			d.Entries = append(d.Entries, row)
		}
		d.First, d.Last = n-hi+1, n-lo
	}
	base := "/console/agents/" + a.ID + "/record"
	if d.Page > 1 {
		d.Newer = base + "?page=" + strconv.Itoa(d.Page-1)
	}
	if d.Page < d.Pages {
		d.Older = base + "?page=" + strconv.Itoa(d.Page+1)
	}
	return c.render(w, r, http.StatusOK, "record", "Record of "+a.Name, d)
}
