package state

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/arxsec/arx/internal/store"
	"github.com/arxsec/arx/record"
	"golang.org/x/mod/sumdb/tlog"
)

// Txn is a layer of changes over the committed State (a batch's) or over
// another Txn (an Update's within its batch). Its maps hold only what it
// changed, copied on first write, so a dropped Txn leaves nothing behind
// and a committed one is also the list of rows its store must write.
//
// A Txn is used by one goroutine.
type Txn struct {
	s      *State
	parent *Txn
	load   Loader

	Agents    map[string]*store.Agent
	Calls     map[string]*store.Call
	Approvals map[string]*store.Approval
	Counts    map[string]*store.Counts
	Heads     map[string]Head
	// Entries are the entries applied, in order: (agent, index) pairs for
	// the per-agent index of the log.
	Entries []Applied

	idem        map[IdemKey]string
	newKeys     []newKey
	size        int64
	revocations uint64
	lenient     bool // Replay: skip what is not held
}

// newKey is an idempotency key a layer used, for the State at commit.
type newKey struct {
	key  IdemKey
	call string
	at   time.Time
}

// Applied is an entry applied to the state.
type Applied struct {
	Agent string
	Index int64
}

// Begin starts a layer over the committed state; misses are read with load.
func (s *State) Begin(load Loader) *Txn {
	return &Txn{s: s, load: load, size: s.size, revocations: s.revocations}
}

// Replay starts a layer over the committed state for entries another
// process appended and already wrote to the shared tables: what they
// change that is not held (a closed call) is skipped, since it cannot
// change what calls are decided against; an agent not held is loaded.
func (s *State) Replay(load Loader) *Txn {
	return &Txn{s: s, load: load, size: s.size, revocations: s.revocations, lenient: true}
}

// Child starts a layer over t.
func (t *Txn) Child() *Txn {
	return &Txn{s: t.s, parent: t, load: t.load, size: t.size, revocations: t.revocations, lenient: t.lenient}
}

// Size is the log's size as this layer sees it.
func (t *Txn) Size() int64 { return t.size }

// Revocations is the count of token revocations as this layer sees it.
func (t *Txn) Revocations() uint64 { return t.revocations }

// Commit merges t into the layer below it: its parent, or the committed
// State (then at under a write lock, and keys past the window are
// forgotten as of now).
func (t *Txn) Commit(now time.Time) {
	if p := t.parent; p != nil {
		p.Agents = merge(p.Agents, t.Agents)
		p.Calls = merge(p.Calls, t.Calls)
		p.Approvals = merge(p.Approvals, t.Approvals)
		p.Counts = merge(p.Counts, t.Counts)
		p.Heads = merge(p.Heads, t.Heads)
		p.idem = merge(p.idem, t.idem)
		p.Entries = append(p.Entries, t.Entries...)
		p.newKeys = append(p.newKeys, t.newKeys...)
		p.size = t.size
		p.revocations = t.revocations
		return
	}
	s := t.s
	s.mu.Lock()
	defer s.mu.Unlock()
	maps.Copy(s.agents, t.Agents)
	maps.Copy(s.calls, t.Calls)
	maps.Copy(s.approvals, t.Approvals)
	maps.Copy(s.counts, t.Counts)
	maps.Copy(s.heads, t.Heads)
	for _, k := range t.newKeys {
		s.remember(k.key, k.call, k.at)
	}
	s.size = t.size
	s.revocations = t.revocations
	s.forget(now)
	s.evict()
}

func merge[K comparable, V any](dst, src map[K]V) map[K]V {
	if len(src) == 0 {
		return dst
	}
	if dst == nil {
		return src
	}
	maps.Copy(dst, src)
	return dst
}

// Agent reads an agent as this layer sees it.
func (t *Txn) Agent(id string) (*store.Agent, error) {
	a, err := t.agent(id)
	if err != nil {
		return nil, err
	}
	cp := *a
	return &cp, nil
}

func (t *Txn) agent(id string) (*store.Agent, error) {
	for l := t; l != nil; l = l.parent {
		if a, ok := l.Agents[id]; ok {
			return a, nil
		}
	}
	if a, ok := t.s.agents[id]; ok {
		return a, nil
	}
	a, err := t.load.Agent(id)
	if err != nil {
		return nil, err
	}
	// Cache what was read: agents are few, and every one is kept.
	t.s.mu.Lock()
	if cur, ok := t.s.agents[id]; ok {
		a = cur
	} else {
		t.s.agents[id] = a
	}
	t.s.mu.Unlock()
	return a, nil
}

// Call reads a call as this layer sees it.
func (t *Txn) Call(id string) (*store.Call, error) {
	c, err := t.call(id)
	if err != nil {
		return nil, err
	}
	cp := *c
	return &cp, nil
}

func (t *Txn) call(id string) (*store.Call, error) {
	for l := t; l != nil; l = l.parent {
		if c, ok := l.Calls[id]; ok {
			return c, nil
		}
	}
	if c, ok := t.s.calls[id]; ok {
		return c, nil
	}
	return t.load.Call(id)
}

// held says whether a call is in memory, in this layer or below.
func (t *Txn) held(id string) bool {
	for l := t; l != nil; l = l.parent {
		if _, ok := l.Calls[id]; ok {
			return true
		}
	}
	_, ok := t.s.calls[id]
	return ok
}

// Approval reads an approval as this layer sees it.
func (t *Txn) Approval(callID string) (*store.Approval, error) {
	a, err := t.approval(callID)
	if err != nil {
		return nil, err
	}
	cp := *a
	cp.Approvers = append([]string(nil), a.Approvers...)
	return &cp, nil
}

func (t *Txn) approval(callID string) (*store.Approval, error) {
	for l := t; l != nil; l = l.parent {
		if a, ok := l.Approvals[callID]; ok {
			return a, nil
		}
	}
	if a, ok := t.s.approvals[callID]; ok {
		return a, nil
	}
	return t.load.Approval(callID)
}

// CallByKey returns the id of the call an agent made with an idempotency
// key, if it is remembered.
func (t *Txn) CallByKey(agent, key string) (string, bool) {
	k := KeyOf(agent, key)
	for l := t; l != nil; l = l.parent {
		if id, ok := l.idem[k]; ok {
			return id, true
		}
	}
	return t.s.callOf(k)
}

// CountsOf returns an agent's counts as this layer sees them.
func (t *Txn) CountsOf(agent string) store.Counts {
	if c := t.counts(agent); c != nil {
		return *c
	}
	return store.Counts{}
}

func (t *Txn) counts(agent string) *store.Counts {
	for l := t; l != nil; l = l.parent {
		if c, ok := l.Counts[agent]; ok {
			return c
		}
	}
	return t.s.counts[agent]
}

// OpenCalls lists an agent's calls in status approved or pending. It
// looks at open calls only, whatever the agent's history.
func (t *Txn) OpenCalls(agent string) []store.Call {
	seen := map[string]bool{}
	var out []store.Call
	add := func(c *store.Call) {
		if seen[c.ID] {
			return
		}
		seen[c.ID] = true
		if c.AgentID == agent && open(c.Status) {
			out = append(out, *c)
		}
	}
	for l := t; l != nil; l = l.parent {
		for _, c := range l.Calls {
			add(c)
		}
	}
	for _, c := range t.s.calls {
		add(c)
	}
	return out
}

// Head is the last entry of an agent's chain, if it has one.
func (t *Txn) Head(agent string) (Head, bool) {
	for l := t; l != nil; l = l.parent {
		if h, ok := l.Heads[agent]; ok {
			return h, true
		}
	}
	h, ok := t.s.heads[agent]
	return h, ok
}

// PutAgent adds an agent (a hire: its profile, before its agent.hired
// entry is applied).
func (t *Txn) PutAgent(a *store.Agent) {
	cp := *a
	t.Agents = put(t.Agents, a.ID, &cp)
}

func put[K comparable, V any](m map[K]V, k K, v V) map[K]V {
	if m == nil {
		m = map[K]V{}
	}
	m[k] = v
	return m
}

// writable returns a copy of a call that this layer owns.
func (t *Txn) writableCall(id string) (*store.Call, error) {
	if c, ok := t.Calls[id]; ok {
		return c, nil
	}
	c, err := t.call(id)
	if err != nil {
		return nil, err
	}
	cp := *c
	t.Calls = put(t.Calls, id, &cp)
	return &cp, nil
}

func (t *Txn) writableApproval(id string) (*store.Approval, error) {
	if a, ok := t.Approvals[id]; ok {
		return a, nil
	}
	a, err := t.approval(id)
	if err != nil {
		return nil, err
	}
	cp := *a
	t.Approvals = put(t.Approvals, id, &cp)
	return &cp, nil
}

func (t *Txn) writableCounts(agent string) *store.Counts {
	if c, ok := t.Counts[agent]; ok {
		return c
	}
	var cp store.Counts
	if c := t.counts(agent); c != nil {
		cp = *c
	}
	t.Counts = put(t.Counts, agent, &cp)
	return &cp
}

func (t *Txn) writableAgent(id string) (*store.Agent, error) {
	if a, ok := t.Agents[id]; ok {
		return a, nil
	}
	a, err := t.agent(id)
	if err != nil {
		return nil, err
	}
	cp := *a
	t.Agents = put(t.Agents, id, &cp)
	return &cp, nil
}

// ErrNotApplicable is wrapped by Apply's error when an entry names a call,
// approval or agent that does not exist: the log and the state disagree.
var ErrNotApplicable = errors.New("state: entry does not apply")

// Apply folds one entry into the layer: e.Index is its index in the log
// and leaf its leaf hash. Entries must be applied in log order. It returns
// an error only when a call, approval or agent the entry is about cannot
// be read (then the layer must be dropped).
func (t *Txn) Apply(e *record.Entry, leaf tlog.Hash) error {
	t.Heads = put(t.Heads, e.Agent, Head{Hash: leaf, Index: e.Index})
	t.Entries = append(t.Entries, Applied{Agent: e.Agent, Index: e.Index})
	t.size = e.Index + 1
	switch e.Type {
	case record.TypeCredentialRefused, record.TypeCallRequested, record.TypeCredentialIssued:
		return t.applyAsk(e)
	case record.TypeApprovalRequested:
		exp := record.Time(e.Data, "expires_at")
		c, err := t.writableCall(e.Call)
		if err != nil {
			return t.notApplicable(e, err)
		}
		c.ExpiresAt = exp
		approvers := append(record.Strs(e.Data, "approvers"), record.Strs(e.Data, "delegates")...)
		t.Approvals = put(t.Approvals, e.Call, &store.Approval{CallID: e.Call, AgentID: e.Agent, Status: store.ApprovalPending,
			Approvers: approvers, RequestedAt: e.Time, ExpiresAt: exp, Quorum: int(record.Int(e.Data, "quorum"))})
	case record.TypeApprovalGranted:
		a, err := t.writableApproval(e.Call)
		if err != nil {
			return t.notApplicable(e, err)
		}
		a.Grants = append(slices.Clone(a.Grants), record.Str(e.Data, "by"))
		if len(a.Grants) < a.Quorum {
			return nil // more approvers must grant: still pending
		}
		return t.decide(e, store.ApprovalGranted, "", record.Str(e.Data, "reason"))
	case record.TypeTokenRevoked:
		t.revocations++
	case record.TypeApprovalGrantVoided:
		a, err := t.writableApproval(e.Call)
		if err != nil {
			return t.notApplicable(e, err)
		}
		by := record.Str(e.Data, "by")
		a.Grants = slices.DeleteFunc(slices.Clone(a.Grants), func(g string) bool { return strings.EqualFold(g, by) })
	case record.TypeApprovalDenied:
		return t.decide(e, store.ApprovalDenied, store.CallDenied, record.Str(e.Data, "reason"))
	case record.TypeApprovalExpired:
		return t.decide(e, store.ApprovalExpired, store.CallExpired, "")
	case record.TypeApprovalCancelled:
		return t.decide(e, store.ApprovalCancelled, store.CallRevoked, record.Str(e.Data, "reason"))
	case record.TypeApprovalWithdrawn:
		if err := t.decide(e, store.ApprovalWithdrawn, store.CallFailed, ""); err != nil {
			return err
		}
		c, _ := t.writableCall(e.Call) // owned by this layer now
		o := record.OutcomeOf(e)
		c.Outcome, c.Error, c.DurationMS = o.Outcome, o.Error, o.DurationMS
		t.charge(e, o)
	case record.TypeCallCompleted:
		c, err := t.writableCall(e.Call)
		if err != nil {
			return t.notApplicable(e, err)
		}
		o := record.OutcomeOf(e)
		status := store.CallCompleted
		if o.Outcome != "success" {
			status = store.CallFailed
		}
		t.close(c, status, e.Time)
		c.Outcome, c.Error, c.DurationMS = o.Outcome, o.Error, o.DurationMS
		t.charge(e, o)
	case record.TypeCallExpired:
		c, err := t.writableCall(e.Call)
		if err != nil {
			return t.notApplicable(e, err)
		}
		t.close(c, store.CallExpired, time.Time{}) // still open to a late completion's outcome
	case record.TypeCredentialRevoked:
		for _, id := range record.Strs(e.Data, "calls") {
			c, err := t.writableCall(id)
			if err != nil {
				return t.notApplicable(e, err)
			}
			t.close(c, store.CallRevoked, e.Time)
		}
	case record.TypeAgentHired:
		a, err := t.writableAgent(e.Agent)
		if err != nil {
			return t.notApplicable(e, err)
		}
		a.Status = store.AgentActive
	case record.TypeManifestShadowed, record.TypeManifestShadowCleared, record.TypeManifestChanged:
		a, err := t.writableAgent(e.Agent)
		if err != nil {
			return t.notApplicable(e, err)
		}
		switch e.Type {
		case record.TypeManifestShadowed:
			a.ShadowHash, a.ShadowSince = record.Str(e.Data, "manifest_hash"), e.Index
		case record.TypeManifestChanged:
			a.ManifestHash = record.Str(e.Data, "manifest_hash")
			fallthrough
		default:
			a.ShadowHash, a.ShadowSince = "", -1
		}
	case record.TypeAgentTerminated:
		t.revocations++ // a termination revokes the agent's tokens
		a, err := t.writableAgent(e.Agent)
		if err != nil {
			return t.notApplicable(e, err)
		}
		at := e.Time
		a.Status, a.TerminatedAt = store.AgentTerminated, &at
	}
	return nil
}

func (t *Txn) notApplicable(e *record.Entry, err error) error {
	if errors.Is(err, store.ErrNotFound) {
		if t.lenient {
			return nil
		}
		return &ApplyError{Index: e.Index, Type: e.Type, Err: ErrNotApplicable}
	}
	return &ApplyError{Index: e.Index, Type: e.Type, Err: err}
}

// ApplyError says which entry could not be applied.
type ApplyError struct {
	Index int64
	Type  string
	Err   error
}

func (e *ApplyError) Error() string {
	return "state: entry " + strconv.FormatInt(e.Index, 10) + " (" + e.Type + "): " + e.Err.Error()
}

func (e *ApplyError) Unwrap() error { return e.Err }

// applyAsk folds the first entry of a call (or the credential of an
// approved one).
func (t *Txn) applyAsk(e *record.Entry) error {
	ask := record.AskOf(e)
	if e.Type == record.TypeCredentialIssued && record.Str(e.Data, "approved_by") != "" {
		// The credential of a call that waited for its approver.
		c, err := t.writableCall(e.Call)
		if err != nil {
			return t.notApplicable(e, err)
		}
		if c.Status != store.CallPending {
			return &ApplyError{Index: e.Index, Type: e.Type, Err: fmt.Errorf("%w: call %s is %s, not pending", ErrNotApplicable, c.ID, c.Status)}
		}
		c.Status, c.ExpiresAt = store.CallApproved, record.Time(e.Data, "expires_at")
		t.chargeCost(e, ask)
		return nil
	}
	// A new call, of a known agent; its id must be new (the ids are
	// random; a call that is not held was closed long ago, and is not
	// looked for).
	if _, err := t.agent(e.Agent); err != nil {
		return t.notApplicable(e, err)
	}
	if t.held(e.Call) {
		return &ApplyError{Index: e.Index, Type: e.Type, Err: fmt.Errorf("%w: call %s exists", ErrNotApplicable, e.Call)}
	}
	c := &store.Call{ID: e.Call, AgentID: e.Agent, Connector: e.Connector, Action: e.Action, DeclaredRisk: ask.DeclaredRisk,
		Risk: e.Risk, IdempotencyKey: ask.IdempotencyKey, Summary: ask.Summary, RaisedBy: ask.RaisedBy, Args: ask.Args, ArgsHash: ask.ArgsHash,
		CreatedAt: e.Time}
	allowed := true
	switch e.Type {
	case record.TypeCredentialRefused:
		at := e.Time
		c.Status, c.Refusal, c.ExpiresAt, c.CompletedAt = store.CallRefused, record.Str(e.Data, "code"), e.Time, &at
		allowed = false
	case record.TypeCallRequested:
		c.Status = store.CallPending
	default:
		c.Status, c.ExpiresAt = store.CallApproved, record.Time(e.Data, "expires_at")
	}
	t.Calls = put(t.Calls, c.ID, c)
	n := t.writableCounts(e.Agent)
	n.Add(e.Time, allowed)
	if allowed {
		n.Open++
	}
	if e.Type == record.TypeCredentialIssued {
		t.chargeCost(e, ask)
	}
	if ask.IdempotencyKey != "" {
		k := KeyOf(e.Agent, ask.IdempotencyKey)
		t.idem = put(t.idem, k, c.ID)
		t.newKeys = append(t.newKeys, newKey{key: k, call: c.ID, at: e.Time})
	}
	return nil
}

// chargeCost counts an action's declared cost, charged with the call's
// credential.
func (t *Txn) chargeCost(e *record.Entry, ask record.Ask) {
	if ask.Cost == "" {
		return
	}
	cost, _ := record.ParseMoney(ask.Cost) // the runtime wrote it
	t.writableCounts(e.Agent).Charge(e.Time, cost.Micros, 0)
}

// charge counts what a completed call used against its agent's budget.
func (t *Txn) charge(e *record.Entry, o record.Outcome) {
	if o.Charged == "" && o.Tokens == 0 {
		return
	}
	var m record.Money
	if o.Charged != "" {
		m, _ = record.ParseMoney(o.Charged) // the runtime wrote it
	}
	t.writableCounts(e.Agent).Charge(e.Time, m.Micros, max(o.Tokens, 0))
}

// decide folds an approval's end, and the call's when callStatus is set.
func (t *Txn) decide(e *record.Entry, status, callStatus, reason string) error {
	a, err := t.writableApproval(e.Call)
	if err != nil {
		return t.notApplicable(e, err)
	}
	at := e.Time
	a.Status, a.DecidedBy, a.DecidedAt, a.Reason = status, e.Actor, &at, reason
	if s, ok := record.SignatureOf(e); ok && s != nil {
		a.Passkey = record.EncodeID(s.CredentialID)
	}
	if callStatus == "" {
		return nil
	}
	c, err := t.writableCall(e.Call)
	if err != nil {
		return t.notApplicable(e, err)
	}
	t.close(c, callStatus, e.Time)
	return nil
}

// close ends an open call (completedAt zero: not completed yet).
func (t *Txn) close(c *store.Call, status string, completedAt time.Time) {
	if open(c.Status) {
		t.writableCounts(c.AgentID).Open--
	}
	c.Status = status
	if !completedAt.IsZero() {
		c.CompletedAt = &completedAt
	}
}
