package state

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/arxsec/arx/internal/store"
	"github.com/arxsec/arx/record"
	"golang.org/x/mod/sumdb/tlog"
)

// loader is the store's tables in a test: what was flushed.
type loader struct {
	agents    map[string]*store.Agent
	calls     map[string]*store.Call
	approvals map[string]*store.Approval
	err       error // every read fails with it when set
}

func (l *loader) Agent(id string) (*store.Agent, error) {
	if l.err != nil {
		return nil, l.err
	}
	if a, ok := l.agents[id]; ok {
		cp := *a
		return &cp, nil
	}
	return nil, store.ErrNotFound
}

func (l *loader) Call(id string) (*store.Call, error) {
	if l.err != nil {
		return nil, l.err
	}
	if c, ok := l.calls[id]; ok {
		cp := *c
		return &cp, nil
	}
	return nil, store.ErrNotFound
}

func (l *loader) Approval(id string) (*store.Approval, error) {
	if l.err != nil {
		return nil, l.err
	}
	if a, ok := l.approvals[id]; ok {
		cp := *a
		return &cp, nil
	}
	return nil, store.ErrNotFound
}

var t0 = time.Date(2026, 12, 3, 9, 30, 0, 0, time.UTC)

// known is the tables of a deployment that hired agent a1.
func known() *loader {
	return &loader{agents: map[string]*store.Agent{"a1": {ID: "a1", Name: "a1", Status: store.AgentActive}}}
}

func ref(call string) record.CallRef {
	return record.CallRef{Agent: "a1", Call: call, Connector: "crm", Action: "account.read", Risk: "low"}
}

var ask = record.Ask{DeclaredRisk: "low", Summary: "acct 7", IdempotencyKey: "k-", RaisedBy: "user:lee@example.com"}

func askK(k string) record.Ask { a := ask; a.IdempotencyKey = k; return a }

// apply folds entries into a batch over s and commits it.
func apply(t *testing.T, s *State, l Loader, es ...*record.Entry) *Txn {
	t.Helper()
	txn := s.Begin(l)
	for _, e := range es {
		e.Index = txn.Size()
		b, err := e.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		if err := txn.Apply(e, record.LeafHash(b)); err != nil {
			t.Fatalf("Apply(%s): %v", e.Type, err)
		}
	}
	txn.Commit(t0)
	return txn
}

func TestFold(t *testing.T) {
	exp := t0.Add(time.Minute)
	o := record.Outcome{Outcome: "error", Error: "boom", DurationMS: 12}
	for _, tc := range []struct {
		name     string
		entries  []*record.Entry
		call     string // want this call
		status   string
		approval string // and this approval status ("" for none)
		open     int
		check    func(t *testing.T, c store.Call, a store.Approval)
	}{
		{name: "issued at once", entries: []*record.Entry{
			record.CredentialIssued(ref("c1"), "agent:a1", t0, askK("k1"), exp, "")},
			call: "c1", status: store.CallApproved, open: 1, check: func(t *testing.T, c store.Call, _ store.Approval) {
				if !c.ExpiresAt.Equal(exp) || c.Summary != "acct 7" || c.RaisedBy != "user:lee@example.com" || c.IdempotencyKey != "k1" ||
					c.DeclaredRisk != "low" || c.Connector != "crm" || !c.CreatedAt.Equal(t0) {
					t.Errorf("call = %+v", c)
				}
			}},
		{name: "refused", entries: []*record.Entry{
			record.CredentialRefused(ref("c1"), "agent:a1", t0, askK("k1"), "manifest.connector_not_declared", "no")},
			call: "c1", status: store.CallRefused, check: func(t *testing.T, c store.Call, _ store.Approval) {
				if c.Refusal != "manifest.connector_not_declared" || c.CompletedAt == nil || !c.ExpiresAt.Equal(t0) {
					t.Errorf("call = %+v", c)
				}
			}},
		{name: "completed", entries: []*record.Entry{
			record.CredentialIssued(ref("c1"), "agent:a1", t0, askK("k1"), exp, ""),
			record.CallCompleted(ref("c1"), "agent:a1", t0.Add(time.Second), o)},
			call: "c1", status: store.CallFailed, check: func(t *testing.T, c store.Call, _ store.Approval) {
				if c.Outcome != "error" || c.Error != "boom" || c.DurationMS != 12 || !c.CompletedAt.Equal(t0.Add(time.Second)) {
					t.Errorf("call = %+v", c)
				}
			}},
		{name: "pending", entries: []*record.Entry{
			record.CallRequested(ref("c1"), "agent:a1", t0, askK("k1")),
			record.ApprovalRequested(ref("c1"), "agent:a1", t0, []string{"dana@x"}, []string{"lee@x"}, exp)},
			call: "c1", status: store.CallPending, approval: store.ApprovalPending, open: 1,
			check: func(t *testing.T, c store.Call, a store.Approval) {
				if !c.ExpiresAt.Equal(exp) || !a.ExpiresAt.Equal(exp) || fmt.Sprint(a.Approvers) != "[dana@x lee@x]" || a.AgentID != "a1" {
					t.Errorf("call = %+v, approval = %+v", c, a)
				}
			}},
		{name: "granted", entries: []*record.Entry{
			record.CallRequested(ref("c1"), "agent:a1", t0, askK("k1")),
			record.ApprovalRequested(ref("c1"), "agent:a1", t0, []string{"dana@x"}, nil, exp),
			record.ApprovalGranted(ref("c1"), "user:dana@x", t0.Add(time.Second), "dana@x", "ok"),
			record.CredentialIssued(ref("c1"), "user:dana@x", t0.Add(time.Second), askK("k1"), exp.Add(time.Hour), "dana@x")},
			call: "c1", status: store.CallApproved, approval: store.ApprovalGranted, open: 1,
			check: func(t *testing.T, c store.Call, a store.Approval) {
				if !c.ExpiresAt.Equal(exp.Add(time.Hour)) || a.DecidedBy != "user:dana@x" || a.Reason != "ok" || a.DecidedAt == nil {
					t.Errorf("call = %+v, approval = %+v", c, a)
				}
			}},
		{name: "denied", entries: []*record.Entry{
			record.CallRequested(ref("c1"), "agent:a1", t0, askK("k1")),
			record.ApprovalRequested(ref("c1"), "agent:a1", t0, []string{"dana@x"}, nil, exp),
			record.ApprovalDenied(ref("c1"), "user:dana@x", t0.Add(time.Second), "dana@x", "no")},
			call: "c1", status: store.CallDenied, approval: store.ApprovalDenied},
		{name: "approval expired", entries: []*record.Entry{
			record.CallRequested(ref("c1"), "agent:a1", t0, askK("k1")),
			record.ApprovalRequested(ref("c1"), "agent:a1", t0, []string{"dana@x"}, nil, exp),
			record.ApprovalExpired(ref("c1"), exp, exp, "deny")},
			call: "c1", status: store.CallExpired, approval: store.ApprovalExpired, check: func(t *testing.T, c store.Call, a store.Approval) {
				if a.DecidedBy != "system" || c.CompletedAt == nil {
					t.Errorf("call = %+v, approval = %+v", c, a)
				}
			}},
		{name: "withdrawn", entries: []*record.Entry{
			record.CallRequested(ref("c1"), "agent:a1", t0, askK("k1")),
			record.ApprovalRequested(ref("c1"), "agent:a1", t0, []string{"dana@x"}, nil, exp),
			record.ApprovalWithdrawn(ref("c1"), "agent:a1", t0.Add(time.Second), record.Outcome{Outcome: "cancelled"})},
			call: "c1", status: store.CallFailed, approval: store.ApprovalWithdrawn, check: func(t *testing.T, c store.Call, a store.Approval) {
				if c.Outcome != "cancelled" || a.DecidedBy != "agent:a1" {
					t.Errorf("call = %+v, approval = %+v", c, a)
				}
			}},
		{name: "cancelled", entries: []*record.Entry{
			record.CallRequested(ref("c1"), "agent:a1", t0, askK("k1")),
			record.ApprovalRequested(ref("c1"), "agent:a1", t0, []string{"dana@x"}, nil, exp),
			record.ApprovalCancelled(ref("c1"), "admin:x", t0.Add(time.Second), "agent terminated")},
			call: "c1", status: store.CallRevoked, approval: store.ApprovalCancelled},
		{name: "expired, then completed late", entries: []*record.Entry{
			record.CredentialIssued(ref("c1"), "agent:a1", t0, askK("k1"), exp, ""),
			record.CallExpired(ref("c1"), exp, exp)},
			call: "c1", status: store.CallExpired, check: func(t *testing.T, c store.Call, _ store.Approval) {
				if c.CompletedAt != nil {
					t.Errorf("an expired call has CompletedAt %v", c.CompletedAt)
				}
			}},
		{name: "revoked", entries: []*record.Entry{
			record.CredentialIssued(ref("c1"), "agent:a1", t0, askK("k1"), exp, ""),
			record.CredentialIssued(ref("c2"), "agent:a1", t0, askK("k2"), exp, ""),
			record.CredentialsRevoked("a1", "admin:x", t0.Add(time.Second), "agent terminated", []string{"c1", "c2"})},
			call: "c2", status: store.CallRevoked},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := New(Config{})
			apply(t, s, known(), tc.entries...)
			c, ok := s.Call(tc.call)
			if !ok {
				t.Fatalf("call %s not held", tc.call)
			}
			if c.Status != tc.status {
				t.Errorf("status = %s, want %s", c.Status, tc.status)
			}
			a, ok := s.Approval(tc.call)
			if ok != (tc.approval != "") || a.Status != tc.approval {
				t.Errorf("approval = %v %q, want %q", ok, a.Status, tc.approval)
			}
			txn := s.Begin(known())
			if n := txn.CountsOf("a1").Open; n != tc.open {
				t.Errorf("open calls = %d, want %d", n, tc.open)
			}
			if n := len(txn.OpenCalls("a1")); n != tc.open {
				t.Errorf("OpenCalls lists %d, want %d", n, tc.open)
			}
			if tc.check != nil {
				tc.check(t, c, a)
			}
		})
	}
}

func TestCounts(t *testing.T) {
	s := New(Config{})
	var es []*record.Entry
	at := t0.Add(-30 * time.Hour)
	for i := range 100 {
		r := ref(fmt.Sprintf("c%d", i))
		if i%10 == 0 {
			es = append(es, record.CredentialRefused(r, "agent:a1", at, askK(r.Call), "x", "y"))
		} else {
			es = append(es, record.CredentialIssued(r, "agent:a1", at, askK(r.Call), at.Add(time.Minute), ""))
		}
		at = at.Add(18 * time.Minute)
	}
	apply(t, s, known(), es...)
	c := s.Begin(known()).CountsOf("a1")
	// Calls at t0-30h + 18min*i; those at or after t0-6h are i >= 80.
	if n := c.Since(t0.Add(-6 * time.Hour)); n != 18 { // 80..99 minus the refused 80 and 90
		t.Errorf("Since(-6h) = %d, want 18", n)
	}
	last := (t0.Add(-30*time.Hour + 99*18*time.Minute)).Unix() / 60
	if n, earlier := c.Minute(last, last-59); n != 1 || earlier != 3 { // 97, 98 and 96 within the hour before
		t.Errorf("Minute = %d, %d, want 1, 3", n, earlier)
	}
	if c.Open != 90 {
		t.Errorf("Open = %d, want 90", c.Open)
	}
}

func TestLayers(t *testing.T) {
	s := New(Config{})
	l := known()
	exp := t0.Add(time.Minute)
	apply(t, s, l, record.CredentialIssued(ref("c1"), "agent:a1", t0, askK("k1"), exp, ""))

	batch := s.Begin(l)
	op := batch.Child()
	e := record.CallCompleted(ref("c1"), "agent:a1", t0, record.Outcome{Outcome: "success"})
	e.Index = op.Size()
	if err := op.Apply(e, tlog.Hash{1}); err != nil {
		t.Fatal(err)
	}
	// The op sees its change; the batch and the committed state do not.
	if c, _ := op.Call("c1"); c.Status != store.CallCompleted {
		t.Errorf("op sees %s", c.Status)
	}
	if c, _ := batch.Call("c1"); c.Status != store.CallApproved {
		t.Errorf("batch sees %s before the op commits", c.Status)
	}
	// A dropped op leaves nothing; a second op then sees the original.
	op2 := batch.Child()
	if c, _ := op2.Call("c1"); c.Status != store.CallApproved {
		t.Errorf("second op sees %s", c.Status)
	}
	if _, ok := op2.Head("a1"); !ok {
		t.Error("no head for a1")
	}
	e2 := record.CredentialIssued(ref("c2"), "agent:a1", t0, askK("k2"), exp, "")
	e2.Index = op2.Size()
	if err := op2.Apply(e2, tlog.Hash{2}); err != nil {
		t.Fatal(err)
	}
	op2.Commit(t0)
	if c, ok := s.Call("c2"); ok {
		t.Errorf("committed state holds %+v before the batch commits", c)
	}
	if id, ok := batch.CallByKey("a1", "k2"); !ok || id != "c2" {
		t.Errorf("batch: CallByKey = %q, %v", id, ok)
	}
	if h, _ := batch.Head("a1"); h.Hash != (tlog.Hash{2}) || h.Index != 1 {
		t.Errorf("batch head = %+v", h)
	}
	batch.Commit(t0)
	if c, ok := s.Call("c2"); !ok || c.Status != store.CallApproved {
		t.Errorf("after commit: %+v, %v", c, ok)
	}
	if c, _ := s.Call("c1"); c.Status != store.CallApproved {
		t.Errorf("the dropped op's change reached the state: %s", c.Status)
	}
	if s.Size() != 2 {
		t.Errorf("Size = %d, want 2", s.Size())
	}
}

func TestMissesAndErrors(t *testing.T) {
	s := New(Config{})
	exp := t0.Add(time.Minute)
	// A closed call that was flushed and evicted is read from the tables.
	done := t0
	l := &loader{calls: map[string]*store.Call{"old": {ID: "old", AgentID: "a1", Status: store.CallExpired, ExpiresAt: exp}},
		agents: map[string]*store.Agent{"a1": {ID: "a1", Name: "n"}}}
	apply(t, s, l, record.CallCompleted(ref("old"), "agent:a1", done, record.Outcome{Outcome: "success"}))
	if c, ok := s.Call("old"); !ok || c.Status != store.CallCompleted {
		t.Errorf("late completion: %+v, %v", c, ok)
	}
	// An entry about a call nobody has fails, naming the entry.
	txn := s.Begin(l)
	err := txn.Apply(record.CallCompleted(ref("nope"), "agent:a1", done, record.Outcome{Outcome: "success"}), tlog.Hash{})
	var ae *ApplyError
	if !errors.As(err, &ae) || !errors.Is(err, ErrNotApplicable) {
		t.Errorf("Apply of an unknown call: %v", err)
	}
	// A failing read fails the entry.
	boom := errors.New("disk on fire")
	txn = s.Begin(&loader{err: boom})
	if err := txn.Apply(record.CallCompleted(ref("other"), "agent:a1", done, record.Outcome{}), tlog.Hash{}); !errors.Is(err, boom) {
		t.Errorf("Apply with a failing loader: %v", err)
	}
	// Replay skips what it does not hold, but loads agents.
	txn = s.Replay(l)
	if err := txn.Apply(record.CallCompleted(ref("nope"), "agent:a1", done, record.Outcome{}), tlog.Hash{}); err != nil {
		t.Errorf("Replay: %v", err)
	}
	if err := txn.Apply(record.AgentTerminated("a1", "admin:x", done, record.Termination{Reason: "r"}), tlog.Hash{}); err != nil {
		t.Errorf("Replay: %v", err)
	}
	txn.Commit(t0)
	if a, ok := s.Agent("a1"); !ok || a.Status != store.AgentTerminated || a.TerminatedAt == nil {
		t.Errorf("agent after replayed termination: %+v, %v", a, ok)
	}
}

func TestIdempotencyWindow(t *testing.T) {
	s := New(Config{IdempotencyWindow: time.Hour, IdempotencyKeys: 5})
	exp := t0.Add(time.Minute)
	for i := range 8 {
		r := ref(fmt.Sprintf("c%d", i))
		apply(t, s, known(), record.CredentialIssued(r, "agent:a1", t0, askK(fmt.Sprintf("k%d", i)), exp, ""))
	}
	txn := s.Begin(known())
	for i := range 8 {
		_, ok := txn.CallByKey("a1", fmt.Sprintf("k%d", i))
		if want := i >= 3; ok != want {
			t.Errorf("key k%d remembered = %v, want %v (the newest 5)", i, ok, want)
		}
	}
	if _, ok := txn.CallByKey("a2", "k7"); ok {
		t.Error("another agent's key matched")
	}
	// Past the window, keys are forgotten as the next batch commits.
	txn.Commit(t0.Add(2 * time.Hour))
	if _, ok := s.Begin(known()).CallByKey("a1", "k7"); ok {
		t.Error("a key older than the window is remembered")
	}
	_, _, keys := s.Held()
	if keys != 0 {
		t.Errorf("%d keys held", keys)
	}
}

func TestEvict(t *testing.T) {
	s := New(Config{})
	exp := t0.Add(time.Minute)
	txn := apply(t, s, known(),
		record.CredentialIssued(ref("c1"), "agent:a1", t0, askK("k1"), exp, ""),
		record.CredentialIssued(ref("c2"), "agent:a1", t0, askK("k2"), exp, ""),
		record.CallCompleted(ref("c2"), "agent:a1", t0, record.Outcome{Outcome: "success"}))
	s.Evict(txn.Calls, txn.Approvals)
	apply(t, s, known()) // evictions take effect with the next batch
	if _, ok := s.Call("c1"); !ok {
		t.Error("an open call was evicted")
	}
	if _, ok := s.Call("c2"); ok {
		t.Error("a closed, flushed call is still held")
	}
	// A call changed after the flush it was part of is kept.
	txn2 := apply(t, s, known(), record.CallCompleted(ref("c1"), "agent:a1", t0, record.Outcome{Outcome: "success"}))
	s.Evict(txn.Calls, nil)
	apply(t, s, known())
	if _, ok := s.Call("c1"); !ok {
		t.Error("a call changed since its flush was evicted")
	}
	s.Evict(txn2.Calls, nil)
	apply(t, s, known())
	if _, ok := s.Call("c1"); ok {
		t.Error("c1 still held after its last change was flushed")
	}
}

// TestRevocations: token.revoked entries are counted, by a layer as it
// applies them and by the committed state once committed, through
// batches, child layers and replays of other processes' entries; a loaded
// snapshot counts as one more (it may hold any).
func TestRevocations(t *testing.T) {
	s := New(Config{})
	if s.Revocations() != 0 {
		t.Fatalf("a new state: %d", s.Revocations())
	}
	revoke := func(id string) *record.Entry { return record.TokenRevoked("a1", "admin:root", t0, id) }
	txn := s.Begin(known())
	for i, e := range []*record.Entry{revoke("t1"), record.TokenIssued("a1", "admin:root", t0, "t2", "agent", ""), revoke("t2")} {
		e.Index = txn.Size()
		b, _ := e.Marshal()
		if err := txn.Apply(e, record.LeafHash(b)); err != nil {
			t.Fatal(err)
		}
		if want := []uint64{1, 1, 2}[i]; txn.Revocations() != want {
			t.Errorf("after %s, the layer counts %d, want %d", e.Type, txn.Revocations(), want)
		}
	}
	child := txn.Child()
	if child.Revocations() != 2 || s.Revocations() != 0 {
		t.Errorf("before the commit: child layer %d (want 2), committed %d (want 0)", child.Revocations(), s.Revocations())
	}
	txn.Commit(t0)
	if s.Revocations() != 2 || s.Begin(known()).Revocations() != 2 {
		t.Errorf("after the commit: committed %d, a new layer %d, want 2", s.Revocations(), s.Begin(known()).Revocations())
	}
	rp := s.Replay(known())
	e := revoke("t3")
	e.Index = rp.Size()
	b, _ := e.Marshal()
	if err := rp.Apply(e, record.LeafHash(b)); err != nil {
		t.Fatal(err)
	}
	rp.Commit(t0)
	if s.Revocations() != 3 {
		t.Errorf("after another process's revocation: %d, want 3", s.Revocations())
	}
	s.Load(&Snapshot{Size: 10})
	if s.Revocations() != 4 {
		t.Errorf("after a snapshot: %d, want 4", s.Revocations())
	}
}
