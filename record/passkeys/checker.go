package passkeys

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/arxsec/arx/record"
	"golang.org/x/mod/sumdb/tlog"
)

// Checker checks, over a log read in order, every approval decision
// against the passkeys registered before it. Feed it the entries Wants
// says it needs (the rest change nothing), then call Finish. Its memory is
// bounded by the registered keys, the agents and the calls waiting for a
// decision, never by the log's length.
type Checker struct {
	// Report receives each problem found (an index, a kind, a message).
	Report func(record.Problem)
	// Entry reads the entry at an index again (AddRequested); nil when
	// entries are given with Add only.
	Entry func(index int64) ([]byte, error)

	keys    map[string]*key   // credential id → the key the log registered
	shown   shownMap          // call id → what its call.requested showed
	agents  map[string]*Agent // agent id → its counts
	early   map[string][]use  // credential id → signed decisions before any registration
	ordered []string          // agent ids in order of first decision or hire
}

// shownMap maps call ids to what their call.requested showed. The ids ARX
// writes (UUIDs, 36 bytes) are kept as arrays, which costs no allocation
// and hashes fast; any other, from a log written by something else, as a
// string.
type shownMap struct {
	uuid  map[[36]byte]shown
	other map[string]shown
}

func (m *shownMap) len() int { return len(m.uuid) + len(m.other) }

func (m *shownMap) set(call []byte, s shown) {
	if len(call) == 36 {
		if m.uuid == nil {
			m.uuid = map[[36]byte]shown{}
		}
		m.uuid[[36]byte(call)] = s
		return
	}
	if m.other == nil {
		m.other = map[string]shown{}
	}
	m.other[string(call)] = s
}

func (m *shownMap) get(call []byte) (shown, bool) {
	if len(call) == 36 {
		s, ok := m.uuid[[36]byte(call)]
		return s, ok
	}
	s, ok := m.other[string(call)]
	return s, ok
}

func (m *shownMap) del(call []byte) {
	if len(call) == 36 {
		delete(m.uuid, [36]byte(call))
	} else if len(m.other) > 0 {
		delete(m.other, string(call))
	}
}

type key struct {
	record.Passkey
	index   int64
	removed int64 // index of its passkey.removed; -1 while registered
}

type shown struct {
	// Of a call.requested noted by AddRequested: where it is, and its
	// leaf hash, until a signed decision needs what it showed (small, as
	// every call waiting for a decision has one).
	index int64
	leaf  tlog.Hash
	f     *fields // nil until read
}

// fields are what a call.requested showed the approvers.
type fields struct {
	connector, action, risk, summary, args, argsHash string
}

// read reads what the call showed, once: from the call.requested entry
// read again (Entry), which must have the leaf hash it had.
func (c *Checker) read(s *shown) error {
	if s.f != nil {
		return nil
	}
	if c.Entry == nil {
		return errors.New("the checker cannot read entries again")
	}
	raw, err := c.Entry(s.index)
	if err != nil {
		return err
	}
	if record.LeafHash(raw) != s.leaf {
		return fmt.Errorf("entry %d read again is not the entry checked before", s.index)
	}
	e, err := record.Parse(raw)
	if err != nil {
		return err
	}
	s.f = fieldsOf(e)
	return nil
}

func fieldsOf(e *record.Entry) *fields {
	return &fields{connector: e.Connector, action: e.Action, risk: e.Risk, summary: record.Str(e.Data, "summary"),
		args: record.Str(e.Data, "args"), argsHash: record.Str(e.Data, "args_hash")}
}

type use struct {
	index int64
	agent string
	by    string
}

// Agent is what the Checker counts for one agent.
type Agent struct {
	ID             string `json:"agent"`
	Name           string `json:"name,omitempty"`
	RequirePasskey bool   `json:"require_passkey"`
	Signed         int64  `json:"signed_decisions"`
	Unsigned       int64  `json:"unsigned_decisions"`
}

// Wants says whether an entry of type typ matters to the Checker (typ as
// record.ScanEntry returns it; it allocates nothing).
func Wants(typ []byte) bool {
	switch string(typ) {
	case record.TypeApprovalGranted, record.TypeApprovalDenied, record.TypeCallRequested, record.TypeAgentHired, record.TypeManifestChanged,
		record.TypePasskeyRegistered, record.TypePasskeyRemoved, record.TypeApprovalExpired, record.TypeApprovalWithdrawn,
		record.TypeApprovalCancelled:
		return true
	}
	return false
}

func (c *Checker) report(index int64, agent, kind, format string, args ...any) {
	if c.Report != nil {
		c.Report(record.Problem{Kind: kind, Index: index, Agent: agent, Message: fmt.Sprintf(format, args...)})
	}
}

func (c *Checker) agent(id string) *Agent {
	if c.agents == nil {
		c.agents = map[string]*Agent{}
	}
	a := c.agents[id]
	if a == nil {
		a = &Agent{ID: id}
		c.agents[id] = a
		c.ordered = append(c.ordered, id)
	}
	return a
}

// AddRequested notes the call.requested entry of call at index, with its
// leaf hash, without parsing it: only a signed decision needs what it
// showed, and then Entry reads it again. Add does the same from a parsed
// entry.
func (c *Checker) AddRequested(index int64, leaf tlog.Hash, call []byte) {
	c.init()
	c.shown.set(call, shown{index: index, leaf: leaf})
}

// Closed says a call can have no more decisions (its credential was
// issued, or it ended), so that what it showed is forgotten.
func (c *Checker) Closed(call []byte) {
	if c.shown.len() > 0 {
		c.shown.del(call)
	}
}

func (c *Checker) init() {
	if c.keys == nil {
		c.keys, c.shown, c.early = map[string]*key{}, shownMap{}, map[string][]use{}
	}
}

// Add checks entry e, at log index index.
func (c *Checker) Add(index int64, e *record.Entry) {
	c.init()
	switch e.Type {
	case record.TypeAgentHired:
		a := c.agent(e.Agent)
		a.Name = record.Str(e.Data, "name")
		a.RequirePasskey, _ = e.Data["require_passkey"].(bool)
	case record.TypeManifestChanged: // held to another job description from here on
		c.agent(e.Agent).RequirePasskey, _ = e.Data["require_passkey"].(bool)
	case record.TypeCallRequested:
		c.shown.set([]byte(e.Call), shown{index: index, f: fieldsOf(e)})
	case record.TypeApprovalExpired, record.TypeApprovalWithdrawn, record.TypeApprovalCancelled:
		c.shown.del([]byte(e.Call))
	case record.TypePasskeyRegistered:
		k, ok := record.PasskeyOf(e)
		if !ok {
			c.report(index, "", record.ProblemMalformed, "passkey.registered does not name a user, relying party, credential and public key that decode")
			return
		}
		id := string(k.CredentialID)
		if old := c.keys[id]; old != nil && old.removed < 0 {
			c.report(index, "", KindKeyUnknown, "passkey %s of %s is registered again (first at entry %d, for %s)",
				record.EncodeID(k.CredentialID), k.User, old.index, old.User)
			return
		}
		c.keys[id] = &key{Passkey: k, index: index, removed: -1}
		for _, u := range c.early[id] {
			c.report(u.index, u.agent, KindKeyRegisteredAfterUse, "the decision by %s is signed with passkey %s, which the log registered only later, at entry %d: it was not witnessed when it was used",
				u.by, record.EncodeID(k.CredentialID), index)
		}
		delete(c.early, id)
	case record.TypePasskeyRemoved:
		id, err := record.DecodeID(record.Str(e.Data, "credential_id"))
		if k := c.keys[string(id)]; err == nil && k != nil && k.removed < 0 && strings.EqualFold(k.User, record.Str(e.Data, "user")) {
			k.removed = index
		}
	case record.TypeApprovalGranted, record.TypeApprovalDenied:
		c.decision(index, e)
	}
}

func (c *Checker) decision(index int64, e *record.Entry) {
	a := c.agent(e.Agent)
	by := record.Str(e.Data, "by")
	s, ok := record.SignatureOf(e)
	sh, requested := c.shown.get([]byte(e.Call))
	// A grant short of its quorum leaves the call waiting for more.
	if q := record.Int(e.Data, "quorum"); e.Type == record.TypeApprovalDenied || q <= 1 || record.Int(e.Data, "grants") >= q {
		c.shown.del([]byte(e.Call))
	}
	switch {
	case !ok:
		a.Signed++
		c.report(index, e.Agent, KindSignatureInvalid, "the decision by %s carries a passkey signature that does not decode", by)
		return
	case s == nil:
		a.Unsigned++
		if a.RequirePasskey {
			c.report(index, e.Agent, KindUnsigned, "the decision by %s is not signed with a passkey, and the agent's manifest requires one (approval.require_passkey)", by)
		}
		return
	}
	a.Signed++
	k := c.keys[string(s.CredentialID)]
	switch {
	case k == nil:
		c.early[string(s.CredentialID)] = append(c.early[string(s.CredentialID)], use{index, e.Agent, by})
		return
	case !strings.EqualFold(k.User, by):
		c.report(index, e.Agent, KindKeyUnknown, "the decision by %s is signed with passkey %s, which the log registered for %s (entry %d)",
			by, record.EncodeID(s.CredentialID), k.User, k.index)
		return
	case k.removed >= 0:
		c.report(index, e.Agent, KindKeyUnknown, "the decision by %s is signed with passkey %s, which was removed at entry %d",
			by, record.EncodeID(s.CredentialID), k.removed)
		return
	case !requested:
		c.report(index, e.Agent, KindSignatureInvalid, "the decision by %s is about call %s, which no call.requested before it showed", by, e.Call)
		return
	}
	if err := c.read(&sh); err != nil {
		c.report(index, e.Agent, KindSignatureInvalid, "the decision by %s could not be checked: reading what call %s showed: %v", by, e.Call, err)
		return
	}
	verdict := record.DecisionApprove
	if e.Type == record.TypeApprovalDenied {
		verdict = record.DecisionDeny
	}
	d := record.Decision{Call: e.Call, Agent: e.Agent, Connector: sh.f.connector, Action: sh.f.action, Risk: sh.f.risk, Summary: sh.f.summary,
		Args: sh.f.args, ArgsHash: sh.f.argsHash, By: by, Verdict: verdict, Reason: record.Str(e.Data, "reason"), At: s.DecidedAt}
	if err := Verify(k.Passkey, d, s); err != nil {
		c.report(index, e.Agent, KindSignatureInvalid, "the decision by %s: %v", by, strings.TrimPrefix(err.Error(), ErrSignature.Error()+": "))
	}
}

// Finish reports the decisions whose key the log never registered.
func (c *Checker) Finish() {
	ids := make([]string, 0, len(c.early))
	for id := range c.early {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		for _, u := range c.early[id] {
			c.report(u.index, u.agent, KindKeyUnknown, "the decision by %s is signed with passkey %s, which the log never registered",
				u.by, record.EncodeID([]byte(id)))
		}
	}
	c.early = map[string][]use{}
}

// Agents returns the counts of every agent that was hired or decided
// about, in log order.
func (c *Checker) Agents() []Agent {
	out := make([]Agent, 0, len(c.ordered))
	for _, id := range c.ordered {
		out = append(out, *c.agents[id])
	}
	return out
}
