package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/arxsec/arx/internal/store"
	"github.com/arxsec/arx/record"
	"golang.org/x/mod/sumdb/tlog"
)

func entry(agent, typ, call string, data map[string]any) *record.Entry {
	return &record.Entry{Agent: agent, Type: typ, Call: call, Connector: "crm", Action: "account.read", Risk: "low",
		Actor: "agent:" + agent, Data: data}
}

func treeSize(t *testing.T, s store.Store) int64 {
	t.Helper()
	n, err := s.TreeSize(t.Context())
	if err != nil {
		t.Fatalf("TreeSize: %v", err)
	}
	return n
}

// lastLeaf is the prev the agent's next entry must name.
func lastLeaf(t *testing.T, s store.Store, agent string) string {
	t.Helper()
	es, err := s.AgentEntries(t.Context(), agent, -1, 1<<20)
	if err != nil {
		t.Fatalf("AgentEntries(%q): %v", agent, err)
	}
	if len(es) == 0 {
		return ""
	}
	return record.HashString(es[len(es)-1].Leaf)
}

// checkEntries checks that got holds exactly the entries want, as Append
// left them, in their canonical encoding.
func checkEntries(t *testing.T, what string, got []store.Entry, want []*record.Entry) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%s returned %d entries, want %d", what, len(got), len(want))
		return
	}
	for i, e := range got {
		w := want[i]
		body, err := w.Marshal()
		if err != nil {
			t.Fatalf("Marshal: %v", err)
		}
		if e.Index != w.Index || e.Agent != w.Agent || e.Type != w.Type || e.Call != w.Call {
			t.Errorf("%s[%d] = {Index %d, Agent %q, Type %q, Call %q}, want {%d, %q, %q, %q}",
				what, i, e.Index, e.Agent, e.Type, e.Call, w.Index, w.Agent, w.Type, w.Call)
		}
		if !bytes.Equal(e.Data, body) {
			t.Errorf("%s[%d].Data =\n\t%s\nwant the canonical encoding\n\t%s", what, i, e.Data, body)
		}
		if e.Leaf != record.LeafHash(body) {
			t.Errorf("%s[%d].Leaf is not the RFC 6962 leaf hash of the entry", what, i)
		}
		if p, err := record.Parse(e.Data); err != nil {
			t.Errorf("%s[%d]: record.Parse: %v", what, i, err)
		} else if p.Index != e.Index {
			t.Errorf("%s[%d]: the entry says index %d, the store %d", what, i, p.Index, e.Index)
		}
	}
}

func testAppend(t *testing.T, s store.Store) {
	ctx := t.Context()
	if n := treeSize(t, s); n != 0 {
		t.Fatalf("TreeSize of an empty store = %d", n)
	}
	if es, err := s.Entries(ctx, 0, 10); err != nil || len(es) != 0 {
		t.Fatalf("Entries on an empty store = %v, %v", es, err)
	}
	insertAgents(t, s, "a", "b", "c")
	if n := treeSize(t, s); n != 0 {
		t.Fatalf("InsertAgent appended: TreeSize %d", n)
	}

	hired := func(agent string) *record.Entry {
		return record.AgentHired(agent, "admin:root", time.Time{}, record.Hire{Name: "agent " + agent, Connectors: []string{"crm"}})
	}
	var zero time.Time
	fixed := time.Date(2025, 6, 1, 12, 0, 0, 987654000, zone)
	preset := record.ApprovalGranted(ref("a", "call-1"), "user:dana@example.com", fixed, "dana@example.com", "ok")
	// One and several entries per Update, three agents interleaved, and
	// system entries with no agent, which have a chain of their own.
	groups := [][]*record.Entry{
		{hired("a")},
		{hired("b"), record.CallRequested(ref("a", "call-1"), "agent:a", zero, ask("call-1")),
			record.ApprovalRequested(ref("a", "call-1"), "agent:a", zero, approvers, delegates, at(time.Hour))},
		{record.TokenIssued("", "admin:root", zero, "tok-1", store.TokenAdmin, "operator")},
		{hired("c"), record.CredentialIssued(ref("b", "call-2"), "agent:b", zero, ask("call-2"), at(time.Hour), "")},
		{preset},
		{record.DriftDetected(ref("b", "call-2"), "system", zero,
			map[string]any{"reason": "off_hours", "detail": map[string]any{"list": []any{"x", 1, true, nil}, "é": "\n"}})},
		{record.TokenRevoked("", "admin:root", zero, "tok-1"), record.AgentTerminated("a", "admin:root", zero, record.Termination{Reason: "done"})},
	}
	var want []*record.Entry
	last := map[string]string{}
	for _, g := range groups {
		before := time.Now()
		update(t, s, appendAll(g...))
		after := time.Now()
		for _, e := range g {
			if e.Index != int64(len(want)) {
				t.Errorf("Append set Index %d, want %d", e.Index, len(want))
			}
			if e.Prev != last[e.Agent] {
				t.Errorf("entry %d of agent %q: Append set Prev %q, want %q", e.Index, e.Agent, e.Prev, last[e.Agent])
			}
			if e == preset {
				if !e.Time.Equal(fixed) {
					t.Errorf("Append changed a set Time %v to %v", fixed, e.Time)
				}
			} else if e.Time.Before(before.Add(-time.Minute)) || e.Time.After(after.Add(time.Minute)) {
				t.Errorf("Append set Time %v, want about now (%v)", e.Time, before)
			}
			body, err := e.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			last[e.Agent] = record.HashString(record.LeafHash(body))
			want = append(want, e)
		}
	}

	n := int64(len(want))
	if got := treeSize(t, s); got != n {
		t.Errorf("TreeSize = %d, want %d", got, n)
	}
	for _, w := range []struct {
		start int64
		limit int
	}{{0, 100}, {0, int(n)}, {2, 3}, {0, 1}, {n - 1, 5}, {n, 5}, {n + 10, 5}} {
		got, err := s.Entries(ctx, w.start, w.limit)
		if err != nil {
			t.Fatalf("Entries(%d, %d): %v", w.start, w.limit, err)
		}
		lo, hi := min(w.start, n), min(w.start+int64(w.limit), n)
		checkEntries(t, fmt.Sprintf("Entries(%d, %d)", w.start, w.limit), got, want[lo:hi])
	}
	for _, agent := range []string{"a", "b", "c", "", "nobody"} {
		var mine []*record.Entry
		for _, e := range want {
			if e.Agent == agent {
				mine = append(mine, e)
			}
		}
		got, err := s.AgentEntries(ctx, agent, -1, 100)
		if err != nil {
			t.Fatalf("AgentEntries(%q): %v", agent, err)
		}
		checkEntries(t, fmt.Sprintf("AgentEntries(%q, -1, 100)", agent), got, mine)
		if len(mine) < 3 {
			continue
		}
		got, err = s.AgentEntries(ctx, agent, mine[0].Index, 1)
		if err != nil {
			t.Fatalf("AgentEntries(%q): %v", agent, err)
		}
		checkEntries(t, fmt.Sprintf("AgentEntries(%q, %d, 1)", agent, mine[0].Index), got, mine[1:2])
		got, err = s.AgentEntries(ctx, agent, mine[1].Index-1, 100) // after an index that is not the agent's
		if err != nil {
			t.Fatalf("AgentEntries(%q): %v", agent, err)
		}
		checkEntries(t, fmt.Sprintf("AgentEntries(%q, %d, 100)", agent, mine[1].Index-1), got, mine[1:])
		got, err = s.AgentEntries(ctx, agent, mine[len(mine)-1].Index, 100)
		if err != nil {
			t.Fatalf("AgentEntries(%q): %v", agent, err)
		}
		checkEntries(t, fmt.Sprintf("AgentEntries(%q) after its last entry", agent), got, nil)
	}
	verify(t, s)

	// An entry that cannot be encoded fails its Update, and takes the good
	// entry before it along.
	err := s.Update(ctx, appendAll(issue("b", "call-9", at(0)), &record.Entry{Agent: "b"}))
	if err == nil {
		t.Fatal("Update appending an entry with no type returned nil")
	}
	if got := treeSize(t, s); got != n {
		t.Errorf("after a failed Update, TreeSize = %d, want %d", got, n)
	}
	_, err = s.Call(ctx, "call-9")
	mustNotFound(t, "Call of the failed Update", err)
}

func testHashes(t *testing.T, s store.Store) {
	ctx := t.Context()
	// 33 entries from three agents, in Updates of one to four entries, so
	// that stored hashes are written across commits.
	const total = 33
	for n := 0; n < total; {
		var g []*record.Entry
		for range min(1+n%4, total-n) {
			g = append(g, entry(fmt.Sprint("agent-", n%3), record.TypeGatewayRequest, fmt.Sprint("call-", n/2),
				map[string]any{"n": n}))
			n++
		}
		update(t, s, appendAll(g...))
	}
	es := verify(t, s)
	if len(es) != total {
		t.Fatalf("the log has %d entries, want %d", len(es), total)
	}

	// The hashes tlog would store, computed from the entries alone.
	var mem []tlog.Hash
	memReader := tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) {
		out := make([]tlog.Hash, len(idx))
		for i, x := range idx {
			out[i] = mem[x]
		}
		return out, nil
	})
	for i, e := range es {
		hs, err := tlog.StoredHashes(int64(i), e.Data, memReader)
		if err != nil {
			t.Fatal(err)
		}
		mem = append(mem, hs...)
	}
	idx := make([]int64, len(mem))
	for i := range idx {
		idx[i] = int64(i)
	}
	got, err := s.ReadHashes(ctx, idx)
	if err != nil {
		t.Fatalf("ReadHashes of all %d stored hashes: %v", len(idx), err)
	}
	if len(got) != len(mem) {
		t.Fatalf("ReadHashes returned %d hashes for %d indexes", len(got), len(mem))
	}
	for i := range mem {
		if got[i] != mem[i] {
			level, n := tlog.SplitStoredHashIndex(int64(i))
			t.Errorf("ReadHashes: stored hash %d (level %d, node %d) = %v, tlog says %v", i, level, n, got[i], mem[i])
		}
	}
	// Out of order and repeated indexes are answered in the order asked.
	if got, err := s.ReadHashes(ctx, []int64{idx[len(idx)-1], 0, 5, 0}); err != nil ||
		len(got) != 4 || got[0] != mem[len(mem)-1] || got[1] != mem[0] || got[2] != mem[5] || got[3] != mem[0] {
		t.Errorf("ReadHashes(last, 0, 5, 0) = %v, %v", got, err)
	}
	// A hash the log has not stored is an error, never a zero hash.
	if got, err := s.ReadHashes(ctx, []int64{tlog.StoredHashIndex(0, total)}); err == nil {
		t.Errorf("ReadHashes beyond the tree = %v, want an error", got)
	}

	var tree record.Tree
	roots := map[int64]tlog.Hash{}
	for i, e := range es {
		tree.AppendLeaf(e.Leaf)
		roots[int64(i+1)] = tree.Root()
	}
	hr := store.HashReader(ctx, s)
	for _, size := range []int64{1, 2, 3, 4, 5, 6, 7, 8, 9, 15, 16, 17, 31, 32, 33} {
		th, err := tlog.TreeHash(size, hr)
		if err != nil {
			t.Fatalf("tlog.TreeHash(%d): %v", size, err)
		}
		if th != roots[size] {
			t.Errorf("tlog.TreeHash(%d) = %v, the entries hash to %v", size, th, roots[size])
		}
		for i := range size {
			p, err := tlog.ProveRecord(size, i, hr)
			if err != nil {
				t.Fatalf("tlog.ProveRecord(%d, %d): %v", size, i, err)
			}
			if err := tlog.CheckRecord(p, size, th, i, es[i].Leaf); err != nil {
				t.Errorf("tlog.CheckRecord(size %d, entry %d): %v", size, i, err)
			}
		}
		for _, old := range []int64{1, size / 2, size - 1} {
			if old < 1 {
				continue
			}
			p, err := tlog.ProveTree(size, old, hr)
			if err != nil {
				t.Fatalf("tlog.ProveTree(%d, %d): %v", size, old, err)
			}
			if err := tlog.CheckTree(p, size, th, old, roots[old]); err != nil {
				t.Errorf("tlog.CheckTree(%d, %d): %v", size, old, err)
			}
		}
	}
}

// testUnknownSubjects: an entry about a call, approval or agent that does
// not exist (or an ask that would make a call that does) fails its Append
// and its whole Update, whether the function returns that error or not:
// the log and the state never disagree, so nothing of the Update is left
// (no entry, no state, no cold write).
func testUnknownSubjects(t *testing.T, s store.Store) {
	ctx := t.Context()
	hire(t, s, "a")
	update(t, s, appendAll(cat([]*record.Entry{issue("a", "open", at(0)), issue("a", "open2", at(time.Second))},
		request("a", "waiting", at(2*time.Second)))...))
	sc := scope{agents: []string{"a", "nobody"}, calls: []string{"open", "open2", "waiting", "new", "nope"},
		keys:  [][2]string{{"a", key("new")}, {"a", key("open")}, {"a", key("open2")}, {"a", key("nope")}, {"a", key("again")}},
		users: []string{"u-new"},
		meta:  []string{"k"}, at: at(time.Hour)}

	later := at(time.Minute)
	o := record.Outcome{Outcome: "success"}
	nope := ref("a", "nope")
	noApproval := ref("a", "open") // a call that exists, with no approval
	cases := []struct {
		name string
		e    *record.Entry
	}{
		{"call.completed of an unknown call", record.CallCompleted(nope, "agent:a", later, o)},
		{"call.expired of an unknown call", record.CallExpired(nope, later, at(0))},
		{"approval.requested for an unknown call", record.ApprovalRequested(nope, "agent:a", later, approvers, nil, at(time.Hour))},
		{"approval.granted of a call with no approval", record.ApprovalGranted(noApproval, "user:dana@example.com", later, "dana@example.com", "")},
		{"approval.granted of an unknown call", record.ApprovalGranted(nope, "user:dana@example.com", later, "dana@example.com", "")},
		{"approval.denied of an unknown call", record.ApprovalDenied(nope, "user:dana@example.com", later, "dana@example.com", "no")},
		{"approval.expired of a call with no approval", record.ApprovalExpired(noApproval, later, at(0), "deny")},
		{"approval.cancelled of an unknown call", record.ApprovalCancelled(nope, "admin:root", later, "agent terminated")},
		{"approval.withdrawn of a call with no approval", record.ApprovalWithdrawn(noApproval, "agent:a", later, o)},
		{"credential.issued on approval of an unknown call",
			record.CredentialIssued(nope, "user:dana@example.com", later, ask("nope"), at(time.Hour), "dana@example.com")},
		{"credential.revoked of a known and an unknown call",
			record.CredentialsRevoked("a", "admin:root", later, "agent terminated", []string{"open2", "nope"})},
		{"credential.issued for a new call with the id of an open call", issue("a", "open2", later)},
		{"call.requested for a new call with the id of an open call", record.CallRequested(ref("a", "waiting"), "agent:a", later, ask("again"))},
		{"credential.issued on approval of a call that is not pending",
			record.CredentialIssued(ref("a", "open2"), "user:dana@example.com", later, ask("open2"), at(time.Hour), "dana@example.com")},
		{"agent.hired of an agent with no profile", record.AgentHired("nobody", "admin:root", later, record.Hire{Name: "nobody"})},
		{"agent.terminated of an unknown agent", record.AgentTerminated("nobody", "admin:root", later, record.Termination{Reason: "r"})},
	}
	for _, mode := range []string{"returned", "ignored"} {
		for _, tc := range cases {
			t.Run(mode+"/"+tc.name, func(t *testing.T) {
				before := look(t, s, sc)
				var appendErr error
				err := s.Update(ctx, func(tx store.Tx) error {
					// Changes of every kind first: a cold write, a new call, a
					// closed one, a decided approval.
					if err := tx.SetMeta("k", tc.name); err != nil {
						return err
					}
					if err := tx.InsertUser(&store.User{ID: "u-new", Email: "new@example.com", Role: store.RoleManager, CreatedAt: t0}); err != nil {
						return err
					}
					es := cat([]*record.Entry{issue("a", "new", later), complete("a", "open", later)}, grant("a", "waiting", later))
					for _, e := range es {
						if err := tx.Append(e); err != nil {
							return err
						}
					}
					e := *tc.e
					appendErr = tx.Append(&e)
					if mode == "returned" {
						return appendErr
					}
					return nil // the function goes on as if the Append had worked
				})
				if appendErr == nil {
					t.Errorf("Append of %s returned nil", tc.name)
				}
				if err == nil {
					t.Fatalf("Update appending %s (its error %s) returned nil", tc.name, mode)
				}
				sameView(t, "after the failed Update", look(t, s, sc), before)
			})
		}
	}

	// The store goes on: chains continue from the last committed entries.
	update(t, s, appendAll(complete("a", "open", at(2*time.Minute))))
	if c, err := s.Call(ctx, "open"); err != nil || c.Status != store.CallCompleted {
		t.Errorf("Call(open) after a later completion = %+v, %v", c, err)
	}
	verify(t, s)
}

// testIgnoredTypes: entries of types the fold ignores append freely,
// whatever call or agent they name, and change no state.
func testIgnoredTypes(t *testing.T, s store.Store) {
	hire(t, s, "a")
	update(t, s, appendAll(issue("a", "open", at(0))))
	sc := scope{agents: []string{"a", "nobody"}, calls: []string{"open", "nope"},
		keys: [][2]string{{"a", key("open")}, {"nobody", key("nope")}}, at: at(time.Hour)}
	before := look(t, s, sc)
	size := treeSize(t, s)
	es := []*record.Entry{
		entry("a", record.TypeGatewayRequest, "nope", map[string]any{"method": "GET"}),
		record.DriftDetected(ref("nobody", "nope"), "system", at(time.Second), map[string]any{"rule": "off_hours"}),
		record.TokenIssued("nobody", "admin:root", at(time.Second), "tok-x", "", "extra"),
		record.TokenRevoked("nobody", "admin:root", at(time.Second), "tok-x"),
		record.DriftAcknowledged("nobody", "user:dana@example.com", at(time.Second), 12345, "seen"),
		record.TerminationNotified("nobody", at(time.Second), "owner@example.com", "email"),
		record.UserAdded("admin:root", at(time.Second), "new@example.com", store.RoleManager, record.LinkSent),
		entry("nobody", "storetest.custom", "nope", map[string]any{"x": 1}),
	}
	update(t, s, appendAll(es...))
	if got := treeSize(t, s); got != size+int64(len(es)) {
		t.Errorf("TreeSize = %d, want %d", got, size+int64(len(es)))
	}
	after := look(t, s, sc)
	for _, v := range []view{before, after} {
		for _, k := range []string{"TreeSize", "Entries", "Entries.Data", "AgentEntries(a)", "AgentEntries(nobody)"} {
			delete(v, k)
		}
	}
	sameView(t, "after entries the fold ignores", after, before)
	verify(t, s)
}

// testAskOfUnknownAgent: a call asked for by an agent the store holds no
// profile of. Append may refuse it (an entry about an agent that does not
// exist); if it does not, the call is committed and every read must show
// it, and what later Updates commit too: a store may not accept what it
// cannot show.
func testAskOfUnknownAgent(t *testing.T, s store.Store) {
	ctx := t.Context()
	hire(t, s, "a")
	size := treeSize(t, s)
	err := s.Update(ctx, appendAll(issue("ghost", "ghost-call", at(0))))
	if err != nil {
		if n := treeSize(t, s); n != size {
			t.Errorf("a refused ask left entries: TreeSize %d, want %d", n, size)
		}
		_, err := s.Call(ctx, "ghost-call")
		mustNotFound(t, "Call of a refused ask", err)
		return
	}
	update(t, s, appendAll(issue("a", "a-call", at(time.Second))))
	// Each read gets a few seconds: a store that cannot show the call may
	// also hang.
	read := func(what string, fn func(ctx context.Context) string) {
		t.Helper()
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		within(t, 10*time.Second, what, func() {
			if msg := fn(rctx); msg != "" {
				t.Errorf("%s: %s", what, msg)
			}
		})
	}
	read("Call(ghost-call)", func(ctx context.Context) string {
		if c, err := s.Call(ctx, "ghost-call"); err != nil || c.AgentID != "ghost" {
			return fmt.Sprintf("%+v, %v; want the committed call", c, err)
		}
		return ""
	})
	read("Calls(ghost)", func(ctx context.Context) string {
		if cs, err := s.Calls(ctx, "ghost", 10); err != nil || len(cs) != 1 {
			return fmt.Sprintf("%q, %v; want the committed call", callIDs(cs), err)
		}
		return ""
	})
	read("Calls(a)", func(ctx context.Context) string {
		if cs, err := s.Calls(ctx, "a", 10); err != nil || len(cs) != 1 {
			return fmt.Sprintf("%q, %v; want the call committed after it", callIDs(cs), err)
		}
		return ""
	})
	read("AgentEntries(a)", func(ctx context.Context) string {
		if es, err := s.AgentEntries(ctx, "a", -1, 10); err != nil || len(es) != 2 {
			return fmt.Sprintf("%d entries, %v; want 2", len(es), err)
		}
		return ""
	})
	if t.Failed() {
		t.Errorf("store bug: the store committed an ask of an agent it has no profile of, then could not show it " +
			"(nor what was committed after it): Append should refuse such an entry, or the store should show it")
	}
}

// testStateTimes: the times of the state are the times the log records,
// to the microsecond, whether Append set them (a zero Time) or the caller
// did with more precision: the state is a fold of the log, and is rebuilt
// from it after a crash.
func testStateTimes(t *testing.T, s store.Store) {
	ctx := t.Context()
	hire(t, s, "a", "b")
	var zero time.Time
	fine := at(0).Add(789 * time.Nanosecond).In(zone)
	update(t, s, appendAll(
		record.CredentialIssued(ref("a", "c1"), "agent:a", zero, ask("c1"), at(time.Hour), ""),
		record.CallRequested(ref("a", "c2"), "agent:a", fine, ask("c2")),
		record.ApprovalRequested(ref("a", "c2"), "agent:a", zero, approvers, delegates, at(time.Hour)),
	))
	update(t, s, appendAll(
		record.ApprovalDenied(ref("a", "c2"), "user:dana@example.com", fine.Add(time.Second), "dana@example.com", "no"),
		record.CallCompleted(ref("a", "c1"), "agent:a", zero, record.Outcome{Outcome: "success"}),
		record.AgentTerminated("b", "admin:root", zero, record.Termination{Reason: "r"}),
	))
	logged := map[string]time.Time{} // by type and call
	for _, e := range allEntries(t, s) {
		p, err := record.Parse(e.Data)
		if err != nil {
			t.Fatal(err)
		}
		logged[p.Type+" "+p.Call] = p.Time
	}
	check := func(what string, got *time.Time, want string) {
		t.Helper()
		w, ok := logged[want]
		if !ok {
			t.Fatalf("no %s entry", want)
		}
		if got == nil || !got.Equal(w) {
			t.Errorf("%s = %s, the %s entry records %s", what, show(got), want, show(w))
		}
	}
	checkAll := func(how string, c1, c2 *store.Call, ap *store.Approval, b *store.Agent) {
		t.Helper()
		check(how+" Call(c1).CreatedAt", &c1.CreatedAt, record.TypeCredentialIssued+" c1")
		check(how+" Call(c1).CompletedAt", c1.CompletedAt, record.TypeCallCompleted+" c1")
		check(how+" Call(c2).CreatedAt", &c2.CreatedAt, record.TypeCallRequested+" c2")
		check(how+" Call(c2).CompletedAt", c2.CompletedAt, record.TypeApprovalDenied+" c2")
		check(how+" Approval(c2).RequestedAt", &ap.RequestedAt, record.TypeApprovalRequested+" c2")
		check(how+" Approval(c2).DecidedAt", ap.DecidedAt, record.TypeApprovalDenied+" c2")
		check(how+" Agent(b).TerminatedAt", b.TerminatedAt, record.TypeAgentTerminated+" ")
	}
	c1, err1 := s.Call(ctx, "c1")
	c2, err2 := s.Call(ctx, "c2")
	ap, err3 := s.Approval(ctx, "c2")
	b, err4 := s.Agent(ctx, "b")
	if err := errors.Join(err1, err2, err3, err4); err != nil {
		t.Fatal(err)
	}
	checkAll("store:", c1, c2, ap, b)
	probe(t, s, func(tx store.Tx) error {
		c1, err1 := tx.Call("c1")
		c2, err2 := tx.Call("c2")
		ap, err3 := tx.Approval("c2")
		b, err4 := tx.Agent("b")
		if err := errors.Join(err1, err2, err3, err4); err != nil {
			return err
		}
		checkAll("tx:", c1, c2, ap, b)
		return nil
	})
	if t.Failed() {
		t.Errorf("store bug: the state keeps an entry's time as Append was given it (or set it: now), to the nanosecond, " +
			"where the log records it to the microsecond: the state and the log disagree, and a state rebuilt from the log " +
			"(recovery after a crash, a replica catching up) differs from the one the store kept")
	}
}
