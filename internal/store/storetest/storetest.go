// Package storetest is the conformance suite for store.Store. Every backend
// runs Run against fresh stores of its own, and RunReopen against stores it
// closes and opens again, so that SQLite, PostgreSQL and whatever follows
// keep one contract: the one written in package store, made precise here
// where the interface leaves room (list orders, times, which writes an
// error undoes).
//
// The suite is organized by role port, one file per port: the log (Log,
// LogReader: log.go), agents and tokens (Agents, AgentsTx: agents.go),
// calls (Calls, CallsTx: calls.go), approvals (Approvals: approvals.go),
// the counts budgets are checked against (CallsTx.CallCounts: counts.go),
// people (People, PeopleTx: people.go), the outbox (Outbox, OutboxTx:
// outbox.go), settings (Settings, SettingsTx: settings.go), what Update
// itself promises (update.go), and what a reopen keeps (reopen.go). The
// state of agents, calls and approvals is a fold of the log, so the suite
// changes it only by appending the entries that record each change
// (record/events.go), and reads it back through the store's reads and a
// later Update's; view.go compares all of them at once.
//
// A check that fails on a known bug of a store says so ("store bug:").
package storetest

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/arxsec/arx/internal/store"
	"github.com/arxsec/arx/record"
	"golang.org/x/mod/sumdb/tlog"
)

// Run runs the suite. open returns a fresh, empty store and closes it with
// t.Cleanup; a test may close it earlier, so a second Close must not hang.
func Run(t *testing.T, open func(t *testing.T) store.Store) {
	for _, tc := range []struct {
		name string
		test func(t *testing.T, s store.Store)
	}{
		// Log, LogReader (log.go).
		{"Append", testAppend},
		{"Hashes", testHashes},
		{"UnknownSubjects", testUnknownSubjects},
		{"IgnoredTypes", testIgnoredTypes},
		{"AskOfUnknownAgent", testAskOfUnknownAgent},
		{"StateTimesAreTheLogs", testStateTimes},
		// Agents, AgentsTx (agents.go).
		{"Agents", testAgents},
		{"AgentStatus", testAgentStatus},
		{"Tokens", testTokens},
		{"RevokeAgentTokens", testRevokeAgentTokens},
		{"AgentByToken", testAgentByToken},
		// Calls, CallsTx (calls.go).
		{"Lifecycles", testLifecycles},
		{"Calls", testCalls},
		{"TextWithNUL", testTextWithNUL},
		{"IdempotencyKeys", testIdempotencyKeys},
		{"CallQueries", testCallQueries},
		{"AgentOpenCalls", testAgentOpenCalls},
		{"RequestedBeforeApproval", testRequestedBeforeApproval},
		{"RevokeCredentials", testRevokeCredentials},
		// Approvals, CallsTx.Approval (approvals.go).
		{"Approvals", testApprovals},
		// CallsTx.CallCounts (counts.go).
		{"CallCounts", testCallCounts},
		{"CallUsage", testCallUsage},
		{"CallMinutes", testCallMinutes},
		// People, PeopleTx (people.go).
		{"Users", testUsers},
		{"SetupTokens", testSetupTokens},
		{"UserTokens", testUserTokens},
		{"Passkeys", testPasskeys},
		{"ChatLinks", testChatLinks},
		{"Sessions", testSessions},
		{"EndLocalPasswords", testEndLocalPasswords},
		{"Groups", testGroups},
		{"Failures", testFailures},
		// Outbox, OutboxTx (outbox.go).
		{"Outbox", testOutbox},
		// Settings, SettingsTx (settings.go).
		{"Checkpoints", testCheckpoints},
		{"Meta", testMeta},
		// Update (update.go).
		{"Atomicity", testAtomicity},
		{"GroupCommit", testGroupCommit},
		{"Serializable", testSerializable},
		{"ReadsDuringWrites", testReadsDuringWrites},
		{"CancelledContext", testCancelledContext},
		{"Close", testClose},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.test(t, open(t)) })
	}
}

// t0 has nanoseconds on purpose: the store keeps the times of what the
// record does not hold (people, tokens, the outbox) to the nanosecond.
var t0 = time.Date(2025, 6, 1, 9, 30, 0, 123456789, time.UTC)

// th is the hour the calls of the fixtures are made in. Times in the state
// are those of the entries, which the record keeps to the microsecond, so
// fixtures are made at whole microseconds (at); and they are recent, since
// the store remembers idempotency keys for a window of wall-clock time
// (a day by default).
var th = time.Now().UTC().Truncate(time.Hour).Add(-3 * time.Hour)

// at is th plus d and a fraction of a second, to the microsecond.
func at(d time.Duration) time.Time { return th.Add(d + 654321*time.Microsecond) }

// zone is not UTC on purpose: the store keeps the instant, not the location.
var zone = time.FixedZone("UTC+2", 2*60*60)

var errBoom = errors.New("storetest: update failed on purpose")

// update runs fn in an Update that must succeed.
func update(t *testing.T, s store.Store, fn func(tx store.Tx) error) {
	t.Helper()
	if err := s.Update(t.Context(), fn); err != nil {
		t.Fatalf("Update: %v", err)
	}
}

// errProbe ends the Updates that only read.
var errProbe = errors.New("storetest: probe")

// probe runs fn in an Update that only reads, and undoes itself.
func probe(t *testing.T, s store.Store, fn func(tx store.Tx) error) {
	t.Helper()
	err := s.Update(t.Context(), func(tx store.Tx) error {
		if err := fn(tx); err != nil {
			return err
		}
		return errProbe
	})
	if !errors.Is(err, errProbe) {
		t.Fatalf("probe Update: %v", err)
	}
}

// within fails the test when fn has not returned after d: a store must never
// leave a caller hanging.
func within(t *testing.T, d time.Duration, what string, fn func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn()
	}()
	select {
	case <-done:
	case <-time.After(d):
		t.Fatalf("%s did not return within %v", what, d)
	}
}

func newAgent(id string, created time.Time) *store.Agent {
	return &store.Agent{ID: id, Name: "agent " + id, Owner: "owner-" + id + "@example.com", Status: store.AgentActive,
		Manifest: []byte("name: " + id + "\nscope: []\n"), ManifestHash: "sha256:" + id, CreatedAt: created}
}

// insertAgents inserts agents' profiles, and appends nothing.
func insertAgents(t *testing.T, s store.Store, ids ...string) {
	t.Helper()
	update(t, s, func(tx store.Tx) error {
		for i, id := range ids {
			if err := tx.InsertAgent(newAgent(id, t0.Add(time.Duration(i)*time.Second))); err != nil {
				return err
			}
		}
		return nil
	})
}

// hire inserts agents' profiles and appends their agent.hired entries, as
// a hire does, in one Update.
func hire(t *testing.T, s store.Store, ids ...string) {
	t.Helper()
	update(t, s, func(tx store.Tx) error {
		for i, id := range ids {
			if err := hireIn(tx, newAgent(id, t0.Add(time.Duration(i)*time.Second))); err != nil {
				return err
			}
		}
		return nil
	})
}

func hireIn(tx store.Tx, a *store.Agent) error { return hireAt(tx, a, time.Time{}) }

// hireAt inserts a's profile and appends its agent.hired entry at t (now
// when zero).
func hireAt(tx store.Tx, a *store.Agent, t time.Time) error {
	if err := tx.InsertAgent(a); err != nil {
		return err
	}
	return tx.Append(record.AgentHired(a.ID, "admin:root", t, record.Hire{Name: a.Name, Owner: a.Owner,
		ManifestHash: a.ManifestHash, Connectors: []string{"crm"}, TokenID: "tok-" + a.ID}))
}

// The entries of the fixtures' calls: every call is a low-risk read of the
// crm connector, its idempotency key is key(call).

func ref(agent, call string) record.CallRef {
	return record.CallRef{Agent: agent, Call: call, Connector: "crm", Action: "account.read", Risk: "low"}
}

func key(call string) string { return "key-" + call }

func ask(call string) record.Ask {
	return record.Ask{DeclaredRisk: "low", Summary: "read account of " + call, IdempotencyKey: key(call)}
}

// ttl is how long the fixtures' credentials live.
const ttl = 5 * time.Minute

// issue is the entry of a call let through at once.
func issue(agent, call string, t time.Time) *record.Entry {
	return record.CredentialIssued(ref(agent, call), "agent:"+agent, t, ask(call), t.Add(ttl), "")
}

// refuse is the entry of a refused call.
func refuse(agent, call string, t time.Time) *record.Entry {
	return record.CredentialRefused(ref(agent, call), "agent:"+agent, t, ask(call), "manifest.connector_not_declared",
		"crm is not in the manifest")
}

// Approvers of the fixtures' approvals, and how long they have to decide.
var (
	approvers = []string{"dana@example.com"}
	delegates = []string{"lee@example.com"}
)

const decideWithin = time.Hour

// request is the entries of a call that waits for an approver: the call at
// t, its approval requested a millisecond later.
func request(agent, call string, t time.Time) []*record.Entry {
	r := ref(agent, call)
	return []*record.Entry{record.CallRequested(r, "agent:"+agent, t, ask(call)),
		record.ApprovalRequested(r, "agent:"+agent, t.Add(time.Millisecond), approvers, delegates, t.Add(decideWithin))}
}

// grant is the entries of an approver granting a call at t and the
// credential issued with it, valid for ttl.
func grant(agent, call string, t time.Time) []*record.Entry {
	r := ref(agent, call)
	return []*record.Entry{record.ApprovalGranted(r, "user:dana@example.com", t, "dana@example.com", "looks right"),
		record.CredentialIssued(r, "user:dana@example.com", t, ask(call), t.Add(ttl), "dana@example.com")}
}

func complete(agent, call string, t time.Time) *record.Entry {
	return record.CallCompleted(ref(agent, call), "agent:"+agent, t, record.Outcome{Outcome: "success", DurationMS: 42})
}

// askedCall is the call an ask of the fixtures makes at t, before its
// status and the fields that change with it are set.
func askedCall(agent, call string, t time.Time) store.Call {
	a := ask(call)
	return store.Call{ID: call, AgentID: agent, Connector: "crm", Action: "account.read", DeclaredRisk: a.DeclaredRisk,
		Risk: "low", IdempotencyKey: a.IdempotencyKey, Summary: a.Summary, CreatedAt: t}
}

// pendingApproval is the approval request made at t.
func pendingApproval(agent, call string, t time.Time) store.Approval {
	return store.Approval{CallID: call, AgentID: agent, Status: store.ApprovalPending,
		Approvers: append(append([]string(nil), approvers...), delegates...), RequestedAt: t.Add(time.Millisecond),
		ExpiresAt: t.Add(decideWithin)}
}

// appendAll returns an Update's function that appends es in order.
func appendAll(es ...*record.Entry) func(tx store.Tx) error {
	return func(tx store.Tx) error {
		for _, e := range es {
			if err := tx.Append(e); err != nil {
				return err
			}
		}
		return nil
	}
}

// cat concatenates lists of entries.
func cat(ls ...[]*record.Entry) []*record.Entry {
	var out []*record.Entry
	for _, l := range ls {
		out = append(out, l...)
	}
	return out
}

func mustNotFound(t *testing.T, what string, err error) {
	t.Helper()
	if !errors.Is(err, store.ErrNotFound) {
		t.Errorf("%s: got error %v, want store.ErrNotFound", what, err)
	}
}

func mustConflict(t *testing.T, what string, err error) {
	t.Helper()
	if !errors.Is(err, store.ErrConflict) {
		t.Errorf("%s: got error %v, want store.ErrConflict", what, err)
	}
}

// checkSame reports the fields in which got and want, structs of one type,
// differ.
func checkSame(t *testing.T, what string, got, want any) {
	t.Helper()
	if d := diff(got, want); len(d) > 0 {
		t.Errorf("%s differs:\n\t%s", what, strings.Join(d, "\n\t"))
	}
}

func diff(got, want any) []string {
	gv, wv := reflect.ValueOf(got), reflect.ValueOf(want)
	var out []string
	for i := range gv.NumField() {
		g, w := gv.Field(i).Interface(), wv.Field(i).Interface()
		if !same(g, w) {
			out = append(out, fmt.Sprintf("%s: got %s, want %s", gv.Type().Field(i).Name, show(g), show(w)))
		}
	}
	return out
}

// same compares times with Equal (a store may hand back another location,
// never another instant), and treats nil and empty bytes or lists alike.
func same(a, b any) bool {
	switch a := a.(type) {
	case time.Time:
		return a.Equal(b.(time.Time))
	case *time.Time:
		b := b.(*time.Time)
		if a == nil || b == nil {
			return a == nil && b == nil
		}
		return a.Equal(*b)
	case []byte:
		return bytes.Equal(a, b.([]byte))
	case []string:
		b := b.([]string)
		return len(a) == len(b) && (len(a) == 0 || reflect.DeepEqual(a, b))
	}
	return reflect.DeepEqual(a, b)
}

func show(v any) string {
	switch v := v.(type) {
	case *time.Time:
		if v != nil {
			return v.UTC().Format(time.RFC3339Nano)
		}
	case time.Time:
		return v.UTC().Format(time.RFC3339Nano)
	case []byte:
		return fmt.Sprintf("%q", v)
	case string:
		return fmt.Sprintf("%q", v)
	case []string:
		return fmt.Sprintf("%q", v)
	}
	return fmt.Sprintf("%v", v)
}

// render is a struct as one line, field by field, times in UTC: what the
// views of view.go compare.
func render(v any) string {
	rv := reflect.ValueOf(v)
	if rv.Kind() == reflect.Pointer {
		if rv.IsNil() {
			return "nil"
		}
		rv = rv.Elem()
	}
	var b strings.Builder
	b.WriteString("{")
	for i := range rv.NumField() {
		if i > 0 {
			b.WriteString(" ")
		}
		f := rv.Field(i).Interface()
		if s, ok := f.([]string); ok && len(s) == 0 {
			f = []string(nil)
		}
		fmt.Fprintf(&b, "%s:%s", rv.Type().Field(i).Name, show(f))
	}
	b.WriteString("}")
	return b.String()
}

// allEntries reads the whole log, a page at a time.
func allEntries(t *testing.T, s store.Store) []store.Entry {
	t.Helper()
	var all []store.Entry
	for {
		page, err := s.Entries(t.Context(), int64(len(all)), 100)
		if err != nil {
			t.Fatalf("Entries(%d, 100): %v", len(all), err)
		}
		all = append(all, page...)
		if len(page) < 100 {
			return all
		}
	}
}

// verify checks the whole log as an auditor would (canonical entries,
// contiguous indexes, every agent's chain, no problem from record.Verifier)
// and that the store's stored hashes give the same root. It returns the log.
func verify(t *testing.T, s store.Store) []store.Entry {
	t.Helper()
	ctx := t.Context()
	es := allEntries(t, s)
	var v record.Verifier
	for i, e := range es {
		if e.Index != int64(i) {
			t.Fatalf("entry at position %d has index %d", i, e.Index)
		}
		if leaf := record.LeafHash(e.Data); leaf != e.Leaf {
			t.Errorf("entry %d: Leaf %v, but the leaf hash of its data is %v", i, e.Leaf, leaf)
		}
		v.Add(e.Data)
	}
	size, err := s.TreeSize(ctx)
	if err != nil {
		t.Fatalf("TreeSize: %v", err)
	}
	if size != int64(len(es)) {
		t.Fatalf("TreeSize is %d, Entries returned %d", size, len(es))
	}
	var cp *record.Checkpoint
	if size > 0 {
		th, err := tlog.TreeHash(size, store.HashReader(ctx, s))
		if err != nil {
			t.Fatalf("tlog.TreeHash(%d) over ReadHashes: %v", size, err)
		}
		if root := v.Root(); th != root {
			t.Errorf("tlog.TreeHash(%d) over ReadHashes is %v, the entries hash to %v", size, th, root)
		}
		cp = &record.Checkpoint{Origin: "storetest", Size: uint64(size), Hash: th[:]}
	}
	for _, p := range v.Finish(cp) {
		t.Errorf("record.Verifier: %v", p)
	}
	checkChains(t, s, es)
	return es
}

// checkChains checks that AgentEntries returns each agent's entries of es,
// in order, each naming the leaf hash of the one before.
func checkChains(t *testing.T, s store.Store, es []store.Entry) {
	t.Helper()
	byAgent := map[string][]store.Entry{}
	for _, e := range es {
		byAgent[e.Agent] = append(byAgent[e.Agent], e)
	}
	for agent, want := range byAgent {
		got, err := s.AgentEntries(t.Context(), agent, -1, len(want)+1)
		if err != nil {
			t.Fatalf("AgentEntries(%q): %v", agent, err)
		}
		if len(got) != len(want) {
			t.Errorf("AgentEntries(%q) returned %d entries, the log has %d", agent, len(got), len(want))
			continue
		}
		prev := ""
		for i, e := range got {
			if e.Index != want[i].Index || !bytes.Equal(e.Data, want[i].Data) {
				t.Errorf("AgentEntries(%q)[%d] is entry %d, want entry %d", agent, i, e.Index, want[i].Index)
			}
			p, err := record.Parse(e.Data)
			if err != nil {
				t.Errorf("entry %d: %v", e.Index, err)
				continue
			}
			if p.Prev != prev {
				t.Errorf("entry %d of agent %q: prev %q, want %q", e.Index, agent, p.Prev, prev)
			}
			prev = record.HashString(e.Leaf)
		}
	}
}
