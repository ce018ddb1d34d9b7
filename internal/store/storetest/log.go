package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
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

	fixed := time.Date(2025, 6, 1, 12, 0, 0, 987654321, zone)
	preset := entry("a", record.TypeCallCompleted, "call-1", map[string]any{"outcome": "ok", "duration_ms": 12})
	preset.Time = fixed
	// One and several entries per Update, three agents interleaved, and a
	// system entry with no agent, which has a chain of its own.
	groups := [][]*record.Entry{
		{entry("a", record.TypeAgentHired, "", map[string]any{"manifest": "sha256:a"})},
		{entry("b", record.TypeAgentHired, "", nil),
			entry("a", record.TypeCallRequested, "call-1", nil),
			entry("a", record.TypeCredentialIssued, "call-1", map[string]any{"ttl_s": 60})},
		{entry("", record.TypeTokenIssued, "", map[string]any{"kind": "admin"})},
		{entry("c", record.TypeAgentHired, "", nil), entry("b", record.TypeCallRequested, "call-2", nil)},
		{preset},
		{entry("b", record.TypeDriftDetected, "call-2",
			map[string]any{"reason": "off_hours", "detail": map[string]any{"list": []any{"x", 1, true, nil}, "é": "\n"}})},
		{entry("", record.TypeTokenRevoked, "", nil), entry("a", record.TypeAgentTerminated, "", nil)},
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
	err := s.Update(ctx, appendAll(entry("a", record.TypeCallRequested, "call-9", nil), &record.Entry{Agent: "a"}))
	if err == nil {
		t.Fatal("Update appending an entry with no type returned nil")
	}
	if got := treeSize(t, s); got != n {
		t.Errorf("after a failed Update, TreeSize = %d, want %d", got, n)
	}
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

// writeEverything makes one write of every kind, for an Update that then
// fails: none of them may survive. outboxID is an undone outbox item.
func writeEverything(tx store.Tx, x string, outboxID int64) error {
	for _, w := range []func() error{
		func() error { return tx.InsertAgent(newAgent(x, t0)) },
		func() error {
			return tx.InsertToken(&store.Token{ID: "tok-" + x, Hash: []byte("hash-" + x), Kind: store.TokenAdmin, CreatedAt: t0})
		},
		func() error { return tx.RevokeToken("tok-a", t0) },
		func() error { return tx.InsertCall(newCall("call-"+x, "a", "key-"+x, t0)) },
		func() error {
			c, err := tx.Call("call-0")
			if err != nil {
				return err
			}
			c.Status = store.CallCompleted
			return tx.UpdateCall(c)
		},
		func() error { return tx.SetAgentStatus("a", store.AgentTerminated, t0) },
		func() error { return tx.SetMeta("k", "v-"+x) },
		func() error {
			return tx.PutCheckpoint(&store.Checkpoint{Size: 1000, Signed: []byte("cp"), CreatedAt: t0})
		},
		func() error {
			return tx.InsertUser(&store.User{ID: "u-" + x, Email: x + "@example.com", Role: store.RoleManager, CreatedAt: t0})
		},
		func() error {
			u, err := tx.User("u0")
			if err != nil {
				return err
			}
			u.DisabledAt = &t0
			return tx.UpdateUser(u)
		},
		func() error {
			return tx.InsertSetupToken(&store.SetupToken{Hash: []byte("setup-" + x), UserID: "u0", ExpiresAt: t0.Add(time.Hour)})
		},
		func() error { _, err := tx.UseSetupToken([]byte("setup-0"), t0); return err },
		func() error {
			return tx.InsertSession(&store.Session{Hash: []byte("sess-" + x), UserID: "u0", CSRF: x, CreatedAt: t0, ExpiresAt: t0})
		},
		func() error { return tx.DeleteSession([]byte("sess-0")) },
		func() error { return tx.DeleteUserSessions("u0") },
		func() error {
			return tx.InsertApproval(&store.Approval{CallID: "call-" + x, AgentID: "a", Status: store.ApprovalPending,
				Approvers: []string{"u0@example.com"}, RequestedAt: t0, ExpiresAt: t0})
		},
		func() error {
			ap, err := tx.Approval("call-p")
			if err != nil {
				return err
			}
			ap.Status, ap.DecidedBy, ap.DecidedAt = store.ApprovalGranted, "user:u0@example.com", &t0
			return tx.UpdateApproval(ap)
		},
		func() error { return tx.Enqueue("webhook", []byte(x), t0) },
		func() error { return tx.FinishOutbox(outboxID, t0, "", t0) },
		func() error { return tx.CountCall("a", "2025-06-01") },
		func() error { _, err := tx.RevokeAgentTokens("a", t0); return err },
		func() error { return tx.Append(entry("a", record.TypeCallRequested, "call-"+x, nil)) },
		func() error { return tx.Append(entry("b", record.TypeCallRequested, "call-"+x, nil)) },
		func() error { return tx.Append(entry(x, record.TypeAgentHired, "", nil)) },
	} {
		if err := w(); err != nil {
			return err
		}
	}
	return nil
}

func testAtomicity(t *testing.T, s store.Store) {
	ctx := t.Context()
	insertAgents(t, s, "a", "b")
	tokA := &store.Token{ID: "tok-a", Hash: []byte("hash-a"), Kind: store.TokenAgent, AgentID: "a", CreatedAt: t0}
	update(t, s, func(tx store.Tx) error {
		if err := tx.InsertToken(tokA); err != nil {
			return err
		}
		if err := tx.InsertCall(newCall("call-0", "a", "k0", t0)); err != nil {
			return err
		}
		if err := tx.SetMeta("k", "v0"); err != nil {
			return err
		}
		if err := tx.PutCheckpoint(&store.Checkpoint{Size: 1, Signed: []byte("cp1"), CreatedAt: t0}); err != nil {
			return err
		}
		if err := tx.InsertUser(&store.User{ID: "u0", Email: "u0@example.com", Role: store.RoleManager, CreatedAt: t0}); err != nil {
			return err
		}
		if err := tx.InsertSetupToken(&store.SetupToken{Hash: []byte("setup-0"), UserID: "u0", ExpiresAt: t0.Add(time.Hour)}); err != nil {
			return err
		}
		if err := tx.InsertSession(&store.Session{Hash: []byte("sess-0"), UserID: "u0", CSRF: "c", CreatedAt: t0, ExpiresAt: t0}); err != nil {
			return err
		}
		pending := newCall("call-p", "a", "kp", t0)
		pending.Status = store.CallPending
		if err := tx.InsertCall(pending); err != nil {
			return err
		}
		if err := tx.InsertApproval(&store.Approval{CallID: "call-p", AgentID: "a", Status: store.ApprovalPending,
			Approvers: []string{"u0@example.com"}, RequestedAt: t0, ExpiresAt: t0.Add(time.Hour)}); err != nil {
			return err
		}
		if err := tx.Enqueue("webhook", []byte("item-0"), t0); err != nil {
			return err
		}
		return tx.Append(entry("a", record.TypeAgentHired, "", nil))
	})
	due, err := s.DueOutbox(ctx, t0, 10)
	if err != nil || len(due) != 1 {
		t.Fatalf("DueOutbox = %+v, %v; want one item", due, err)
	}
	outboxID := due[0].ID

	for i, tc := range []struct {
		name string
		fail func(tx store.Tx) error
		is   error // what Update's error must wrap; nil for any error
	}{
		{"error", func(store.Tx) error { return errBoom }, errBoom},
		{"wrapped error", func(store.Tx) error { return fmt.Errorf("storetest: %w", errBoom) }, errBoom},
		{"panic", func(store.Tx) error { panic("storetest: panic on purpose") }, nil},
		{"conflict", func(tx store.Tx) error { return tx.InsertCall(newCall("call-dup", "a", "k0", t0)) }, store.ErrConflict},
		{"bad entry", func(tx store.Tx) error { return tx.Append(&record.Entry{Agent: "a"}) }, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			size := treeSize(t, s)
			lastA, lastB := lastLeaf(t, s, "a"), lastLeaf(t, s, "b")
			x := fmt.Sprint("x", i)
			var setup error
			err := s.Update(ctx, func(tx store.Tx) error {
				if setup = writeEverything(tx, x, outboxID); setup != nil {
					return setup
				}
				return tc.fail(tx)
			})
			if setup != nil {
				t.Fatalf("a write before the failure failed: %v", setup)
			}
			if err == nil {
				t.Fatal("Update returned nil for a function that failed")
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("Update returned %v, want an error wrapping %v", err, tc.is)
			}

			// Nothing the function did survives.
			if got := treeSize(t, s); got != size {
				t.Errorf("TreeSize = %d, want %d", got, size)
			}
			if es, err := s.Entries(ctx, size, 10); err != nil || len(es) != 0 {
				t.Errorf("Entries past the tree = %d entries, %v", len(es), err)
			}
			if es, err := s.AgentEntries(ctx, x, -1, 10); err != nil || len(es) != 0 {
				t.Errorf("AgentEntries(%s) = %d entries, %v; want none", x, len(es), err)
			}
			_, err = s.Agent(ctx, x)
			mustNotFound(t, "Agent inserted by the failed Update", err)
			if a, err := s.Agent(ctx, "a"); err != nil || a.Status != store.AgentActive || a.TerminatedAt != nil {
				t.Errorf("Agent(a) = %+v, %v; want active, never terminated", a, err)
			}
			_, err = s.TokenByHash(ctx, []byte("hash-"+x))
			mustNotFound(t, "token inserted by the failed Update", err)
			if k, err := s.TokenByHash(ctx, tokA.Hash); err != nil || k.RevokedAt != nil {
				t.Errorf("token revoked by the failed Update: %+v, %v", k, err)
			}
			_, err = s.Call(ctx, "call-"+x)
			mustNotFound(t, "call inserted by the failed Update", err)
			if c, err := s.Call(ctx, "call-0"); err != nil || c.Status != store.CallApproved {
				t.Errorf("call updated by the failed Update: %+v, %v", c, err)
			}
			if v, err := s.Meta(ctx, "k"); err != nil || v != "v0" {
				t.Errorf("Meta(k) = %q, %v; want v0", v, err)
			}
			if cp, err := s.LatestCheckpoint(ctx); err != nil || cp.Size != 1 {
				t.Errorf("LatestCheckpoint = %+v, %v; want size 1", cp, err)
			}
			_, err = s.User(ctx, "u-"+x)
			mustNotFound(t, "user inserted by the failed Update", err)
			if u, err := s.User(ctx, "u0"); err != nil || u.DisabledAt != nil {
				t.Errorf("user updated by the failed Update: %+v, %v", u, err)
			}
			_, err = s.SessionByHash(ctx, []byte("sess-"+x))
			mustNotFound(t, "session inserted by the failed Update", err)
			if _, err := s.SessionByHash(ctx, []byte("sess-0")); err != nil {
				t.Errorf("session deleted by the failed Update: %v", err)
			}
			_, err = s.Approval(ctx, "call-"+x)
			mustNotFound(t, "approval inserted by the failed Update", err)
			if ap, err := s.Approval(ctx, "call-p"); err != nil || ap.Status != store.ApprovalPending || ap.DecidedAt != nil {
				t.Errorf("approval decided by the failed Update: %+v, %v", ap, err)
			}
			// Past any lease a shared store may have taken on the item.
			if due, err := s.DueOutbox(ctx, t0.Add(time.Duration(i+1)*2*store.OutboxLease), 10); err != nil ||
				len(due) != 1 || due[0].ID != outboxID || due[0].Attempts != 0 || due[0].DoneAt != nil {
				t.Errorf("outbox after the failed Update = %+v, %v; want the one undone item", due, err)
			}
			// Probes that read through a transaction, then undo themselves.
			probe := s.Update(ctx, func(tx store.Tx) error {
				_, err := tx.UseSetupToken([]byte("setup-"+x), t0)
				mustNotFound(t, "setup token inserted by the failed Update", err)
				if _, err := tx.UseSetupToken([]byte("setup-0"), t0); err != nil {
					t.Errorf("setup token used by the failed Update: %v", err)
				}
				if n, err := tx.CallsOn("a", "2025-06-01"); err != nil || n != 0 {
					t.Errorf("CallsOn after the failed Update = %d, %v; want 0", n, err)
				}
				return errBoom
			})
			if !errors.Is(probe, errBoom) {
				t.Errorf("probe Update = %v, want %v", probe, errBoom)
			}

			// The store goes on: the next entries take the next indexes and
			// name the last committed entries, not the undone ones.
			ea := entry("a", record.TypeCallRequested, "after-"+x, nil)
			eb := entry("b", record.TypeCallRequested, "after-"+x, nil)
			ex := entry(x, record.TypeAgentHired, "", nil)
			update(t, s, appendAll(ea, eb, ex))
			for _, c := range []struct {
				e     *record.Entry
				index int64
				prev  string
			}{{ea, size, lastA}, {eb, size + 1, lastB}, {ex, size + 2, ""}} {
				if c.e.Index != c.index || c.e.Prev != c.prev {
					t.Errorf("next entry of %q: index %d, prev %q; want %d, %q", c.e.Agent, c.e.Index, c.e.Prev, c.index, c.prev)
				}
			}
		})
	}
	verify(t, s)
}

func testGroupCommit(t *testing.T, s store.Store) {
	ctx := t.Context()
	const ops = 200
	agents := []string{"g0", "g1", "g2", "g3", "g4"}
	insertAgents(t, s, agents...)

	// Every 7th Update fails after its writes, half of those by panicking;
	// every other one appends two entries.
	type result struct {
		err     error
		entries []*record.Entry
	}
	results := make([]result, ops)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range ops {
		wg.Go(func() {
			<-start
			r := &results[i]
			agent := agents[i%len(agents)]
			r.err = s.Update(ctx, func(tx store.Tx) error {
				r.entries = nil
				id := fmt.Sprintf("gc-%03d", i)
				if err := tx.InsertCall(newCall(id, agent, id, t0.Add(time.Duration(i)*time.Millisecond))); err != nil {
					return err
				}
				for j := range 1 + i%2 {
					e := entry(agent, record.TypeCallRequested, id, map[string]any{"op": i, "step": j})
					if err := tx.Append(e); err != nil {
						return err
					}
					r.entries = append(r.entries, e)
				}
				switch {
				case i%14 == 0:
					panic("storetest: panic on purpose")
				case i%7 == 0:
					return errBoom
				}
				return nil
			})
		})
	}
	close(start)
	wg.Wait()

	es := verify(t, s)
	claimed := make([]string, len(es))
	want := 0
	for i, r := range results {
		id := fmt.Sprintf("gc-%03d", i)
		if i%7 == 0 {
			if r.err == nil {
				t.Errorf("Update %d failed on purpose but returned nil", i)
			} else if i%14 != 0 && !errors.Is(r.err, errBoom) {
				t.Errorf("Update %d returned %v, want %v", i, r.err, errBoom)
			}
			_, err := s.Call(ctx, id)
			mustNotFound(t, "call of a failed Update", err)
			continue
		}
		if r.err != nil {
			t.Errorf("Update %d: %v", i, r.err)
			continue
		}
		if _, err := s.Call(ctx, id); err != nil {
			t.Errorf("call of committed Update %d: %v", i, err)
		}
		// Each committed entry sits at the index Append gave it.
		for _, e := range r.entries {
			want++
			if e.Index < 0 || e.Index >= int64(len(es)) {
				t.Errorf("Update %d got index %d, the log has %d entries", i, e.Index, len(es))
				continue
			}
			if claimed[e.Index] != "" {
				t.Errorf("index %d was given to %s and %s", e.Index, claimed[e.Index], id)
			}
			claimed[e.Index] = id
			body, err := e.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			if got := es[e.Index]; !bytes.Equal(got.Data, body) || got.Call != id {
				t.Errorf("entry %d is\n\t%s\nUpdate %d appended\n\t%s", e.Index, got.Data, i, body)
			}
		}
	}
	if len(es) != want {
		t.Errorf("the log has %d entries, the committed Updates appended %d", len(es), want)
	}
}

func testSerializable(t *testing.T, s store.Store) {
	ctx := t.Context()
	insertAgents(t, s, "a", "b")

	// Concurrent Updates see each other's writes as if run one at a time:
	// the idempotency check and the concurrency budget of the runtime rely
	// on it.
	t.Run("idempotency", func(t *testing.T) {
		const n = 20
		ids := make([]string, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				err := s.Update(ctx, func(tx store.Tx) error {
					c, err := tx.CallByIdempotencyKey("a", "same-key")
					switch {
					case err == nil:
						ids[i] = c.ID
						return nil
					case !errors.Is(err, store.ErrNotFound):
						return err
					}
					c = newCall(fmt.Sprint("idem-", i), "a", "same-key", t0)
					ids[i] = c.ID
					return tx.InsertCall(c)
				})
				if err != nil {
					t.Errorf("Update %d: %v", i, err)
				}
			})
		}
		wg.Wait()
		for i := range ids {
			if ids[i] != ids[0] {
				t.Fatalf("concurrent Updates created calls %s and %s for one idempotency key", ids[0], ids[i])
			}
		}
		if cs, err := s.Calls(ctx, "a", 100); err != nil || len(cs) != 1 {
			t.Errorf("Calls(a) = %d calls, %v; want 1", len(cs), err)
		}
	})

	t.Run("budget", func(t *testing.T) {
		const n, budget = 30, 5
		errFull := errors.New("storetest: budget spent")
		var ok, full atomic.Int32
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				err := s.Update(ctx, func(tx store.Tx) error {
					open, err := tx.OpenCalls("b")
					if err != nil {
						return err
					}
					if open >= budget {
						return errFull
					}
					c := newCall(fmt.Sprint("budget-", i), "b", fmt.Sprint("budget-", i), t0)
					c.Status = store.CallPending
					return tx.InsertCall(c)
				})
				switch {
				case err == nil:
					ok.Add(1)
				case errors.Is(err, errFull):
					full.Add(1)
				default:
					t.Errorf("Update %d: %v", i, err)
				}
			})
		}
		wg.Wait()
		if ok.Load() != budget || full.Load() != n-budget {
			t.Errorf("%d Updates got a slot and %d were refused, want %d and %d", ok.Load(), full.Load(), budget, n-budget)
		}
		if cs, err := s.Calls(ctx, "b", 100); err != nil || len(cs) != budget {
			t.Errorf("Calls(b) = %d calls, %v; want %d", len(cs), err, budget)
		}
	})
}

func testReadsDuringWrites(t *testing.T, s store.Store) {
	ctx := t.Context()
	const writers, perWriter, readers = 4, 20, 4
	agents := []string{"w0", "w1", "w2", "w3"}
	insertAgents(t, s, agents...)

	type sample struct {
		size int64
		root tlog.Hash
	}
	samples := make([][]sample, readers)
	stop := make(chan struct{})
	var rg, wg sync.WaitGroup
	for r := range readers {
		rg.Go(func() {
			hr := store.HashReader(ctx, s)
			for {
				select {
				case <-stop:
					return
				default:
				}
				n, err := s.TreeSize(ctx)
				if err != nil {
					t.Errorf("reader: TreeSize: %v", err)
					return
				}
				if n == 0 {
					continue
				}
				root, err := tlog.TreeHash(n, hr)
				if err != nil {
					t.Errorf("reader: TreeHash(%d) after TreeSize %d: %v", n, n, err)
					return
				}
				es, err := s.Entries(ctx, n-1, 1)
				if err != nil || len(es) != 1 || es[0].Index != n-1 {
					t.Errorf("reader: Entries(%d, 1) after TreeSize %d = %v, %v", n-1, n, es, err)
					return
				}
				samples[r] = append(samples[r], sample{n, root})
			}
		})
	}
	for w := range writers {
		wg.Go(func() {
			for i := range perWriter {
				id := fmt.Sprintf("w%d-%02d", w, i)
				err := s.Update(ctx, func(tx store.Tx) error {
					if err := tx.InsertCall(newCall(id, agents[w], id, t0)); err != nil {
						return err
					}
					return tx.Append(entry(agents[w], record.TypeCallRequested, id, nil))
				})
				if err != nil {
					t.Errorf("writer: Update: %v", err)
					return
				}
				// What a returned Update wrote is visible at once.
				if _, err := s.Call(ctx, id); err != nil {
					t.Errorf("writer: Call(%s) after its Update returned: %v", id, err)
				}
			}
		})
	}
	wg.Wait()
	close(stop)
	rg.Wait()

	es := verify(t, s)
	if len(es) != writers*perWriter {
		t.Fatalf("the log has %d entries, want %d", len(es), writers*perWriter)
	}
	// One writer's Updates are in the log in the order they returned.
	next := map[string]int{}
	for _, e := range es {
		if want := fmt.Sprintf("%s-%02d", e.Agent, next[e.Agent]); e.Call != want {
			t.Errorf("entry %d is for %s, want %s", e.Index, e.Call, want)
		}
		next[e.Agent]++
	}
	// Roots seen while the log grew are still its roots at those sizes.
	hr := store.HashReader(ctx, s)
	for _, ss := range samples {
		for _, x := range ss {
			if th, err := tlog.TreeHash(x.size, hr); err != nil || th != x.root {
				t.Errorf("a reader saw root %v at size %d, now it is %v, %v", x.root, x.size, th, err)
			}
		}
	}
}

func testCancelledContext(t *testing.T, s store.Store) {
	insertAgents(t, s, "a")
	for _, tc := range []struct {
		name string
		ctx  func() (context.Context, context.CancelFunc)
	}{
		{"cancelled", func() (context.Context, context.CancelFunc) {
			ctx, cancel := context.WithCancel(t.Context())
			cancel()
			return ctx, cancel
		}},
		{"deadline passed", func() (context.Context, context.CancelFunc) {
			return context.WithDeadline(t.Context(), time.Now().Add(-time.Second))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for i := range 20 {
				ctx, cancel := tc.ctx()
				id := fmt.Sprintf("%s-%d", tc.name, i)
				err := s.Update(ctx, func(tx store.Tx) error {
					if err := tx.InsertCall(newCall(id, "a", id, t0)); err != nil {
						return err
					}
					return tx.Append(entry("a", record.TypeCallRequested, id, nil))
				})
				cancel()
				if !errors.Is(err, ctx.Err()) {
					t.Fatalf("Update with a done context returned %v, want %v", err, ctx.Err())
				}
				if n := treeSize(t, s); n != 0 {
					t.Fatalf("Update with a done context appended: TreeSize %d", n)
				}
				_, err = s.Call(t.Context(), id)
				mustNotFound(t, "call of an Update with a done context", err)
			}
		})
	}
	update(t, s, appendAll(entry("a", record.TypeAgentHired, "", nil)))
	verify(t, s)
}

func testClose(t *testing.T, s store.Store) {
	ctx := t.Context()
	insertAgents(t, s, "a")

	// Updates racing Close each end, committed or refused with ErrClosed.
	const racers = 16
	var committed atomic.Int64
	var wg sync.WaitGroup
	for w := range racers {
		wg.Go(func() {
			for i := 0; ; i++ {
				err := s.Update(ctx, appendAll(entry("a", record.TypeGatewayRequest, fmt.Sprintf("close-%d-%d", w, i), nil)))
				if err != nil {
					if !errors.Is(err, store.ErrClosed) {
						t.Errorf("Update racing Close returned %v, want nil or store.ErrClosed", err)
					}
					return
				}
				committed.Add(1)
			}
		})
	}
	for deadline := time.Now().Add(10 * time.Second); committed.Load() < racers && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	within(t, 10*time.Second, "Close with Updates in flight", func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	within(t, 10*time.Second, "Updates racing Close", wg.Wait)

	for i := range 100 {
		within(t, 5*time.Second, "Update after Close", func() {
			ran := false
			err := s.Update(ctx, func(tx store.Tx) error { ran = true; return nil })
			if !errors.Is(err, store.ErrClosed) {
				t.Errorf("Update %d after Close returned %v, want store.ErrClosed", i, err)
			}
			if ran {
				t.Errorf("Update %d after Close ran its function", i)
			}
		})
	}
	within(t, 5*time.Second, "a second Close", func() { s.Close() })
}
