package storetest

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/arxsec/arx/internal/store"
	"github.com/arxsec/arx/record"
)

// RunReopen runs the tests of what a store keeps when it is closed and
// opened again: the log (its entries and hashes; each agent's chain goes
// on), the state of every agent, call and approval, the counts, the
// idempotency keys, and what the record does not hold; changes made right
// before Close included. open returns a fresh, empty store and closes it
// with t.Cleanup; reopen closes s and opens the same storage again (and
// closes what it opens with t.Cleanup).
func RunReopen(t *testing.T, open func(t *testing.T) store.Store, reopen func(t *testing.T, s store.Store) store.Store) {
	for _, tc := range []struct {
		name string
		test func(t *testing.T, open func() store.Store, reopen func(store.Store) store.Store)
	}{
		{"Everything", testReopenEverything},
		{"RightBeforeClose", testReopenRightBeforeClose},
		{"UpdatesRacingClose", testReopenRacingClose},
		{"CallsWithoutKey", testReopenCallsWithoutKey},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.test(t, func() store.Store { return open(t) }, func(s store.Store) store.Store { return reopen(t, s) })
		})
	}
}

// lifecycleIndex is the index of a lifecycle by name.
func lifecycleIndex(t *testing.T, name string) int {
	i := slices.IndexFunc(lifecycles, func(lc lifecycle) bool { return lc.name == name })
	if i < 0 {
		t.Fatalf("no lifecycle %q", name)
	}
	return i
}

// dueOutbox renders the outbox items due at t.
func dueOutbox(t *testing.T, s store.Store, at time.Time) []string {
	t.Helper()
	due, err := s.DueOutbox(t.Context(), at, 100)
	if err != nil {
		t.Fatalf("DueOutbox: %v", err)
	}
	var out []string
	for _, o := range due {
		o.NextAt = time.Time{} // a store shared by replicas leases what it lists (OutboxLease)
		out = append(out, render(o))
	}
	return out
}

// testReopenEverything: a store holding every kind of state shows the same
// after a reopen, and goes on from there: entries continue each chain, and
// calls and approvals change as their entries say, whether the store held
// them in memory or read them back.
func testReopenEverything(t *testing.T, open func() store.Store, reopen func(store.Store) store.Store) {
	ctx := t.Context()
	s := open()
	sc := scope{at: at(time.Hour), meta: []string{"log.origin", "other", "unset"},
		failures: [][]byte{failureKey("f1"), failureKey("f2")}}
	var ids []string
	for i := range lifecycles {
		ids = append(ids, fmt.Sprintf("r-%02d", i))
	}
	hire(t, s, append(slices.Clone(ids), "cnt", "term")...)
	prof := newAgent("prof", t0.Add(time.Minute))
	prof.Status = store.AgentSuspended
	update(t, s, func(tx store.Tx) error { return tx.InsertAgent(prof) })
	sc.agents = append(slices.Clone(ids), "cnt", "term", "prof", "nobody", "")

	// Every lifecycle, an Update per step.
	for i, lc := range lifecycles {
		a, c := ids[i], ids[i]+"-call"
		T := func(d time.Duration) time.Time { return at(time.Duration(i)*time.Minute + d) }
		for _, es := range lc.steps(a, c, T) {
			update(t, s, appendAll(es...))
		}
		sc.calls = append(sc.calls, c)
		sc.keys = append(sc.keys, [2]string{a, key(c)})
	}
	// Counts over several minutes and quarter hours, refused calls among them.
	for i := range 12 {
		T, c := th.Add(time.Duration(i)*7*time.Minute), fmt.Sprintf("cnt-%02d", i)
		e := issue("cnt", c, T)
		e.Data["cost"] = "0.25 USD" // charged with the credential
		if i%3 == 0 {
			e = refuse("cnt", c, T)
		}
		update(t, s, appendAll(e))
		if i%3 == 1 { // what the call reported using, charged with its completion
			update(t, s, appendAll(record.CallCompleted(ref("cnt", c), "agent:cnt", T.Add(time.Second),
				record.Outcome{Outcome: "success", Tokens: int64(100 * i), Amount: "0.013 USD", Charged: "0.013 USD"})))
		}
		sc.calls = append(sc.calls, c)
		sc.keys = append(sc.keys, [2]string{"cnt", key(c)})
	}
	// An agent terminated as a termination does it.
	update(t, s, appendAll(cat(one(issue("term", "term-1", at(0))), request("term", "term-2", at(0)))...))
	update(t, s, func(tx store.Tx) error {
		if _, err := tx.RevokeAgentTokens("term", at(time.Minute)); err != nil {
			return err
		}
		return appendAll(record.CredentialsRevoked("term", "admin:root", at(time.Minute), "agent terminated", []string{"term-1"}),
			record.ApprovalCancelled(ref("term", "term-2"), "admin:root", at(time.Minute), "agent terminated"),
			record.AgentTerminated("term", "admin:root", at(time.Minute), record.Termination{Reason: "done", RevokedCredentials: 1,
				CancelledApprovals: 1}))(tx)
	})
	sc.calls = append(sc.calls, "term-1", "term-2", "nope")
	sc.keys = append(sc.keys, [2]string{"term", key("term-1")}, [2]string{"term", key("term-2")}, [2]string{"cnt", "nope"})
	// What the record does not hold, and system entries.
	update(t, s, func(tx store.Tx) error {
		for _, k := range []*store.Token{
			{ID: "tok-r", Hash: []byte("hash-r"), Kind: store.TokenAgent, AgentID: ids[0], IssuedBy: "admin:root", Label: "hire", CreatedAt: t0},
			{ID: "tok-term", Hash: []byte("hash-term"), Kind: store.TokenAgent, AgentID: "term", CreatedAt: t0},
			{ID: "tok-adm", Hash: []byte("hash-adm"), Kind: store.TokenAdmin, Label: "operator", CreatedAt: t0.Add(1)},
		} {
			if err := tx.InsertToken(k); err != nil {
				return err
			}
		}
		if _, err := tx.RevokeAgentTokens("term", at(time.Minute)); err != nil {
			return err
		}
		if err := tx.InsertUser(&store.User{ID: "u1", Email: "u1@example.com", Role: store.RoleAdmin, PasswordHash: "$argon2id$x",
			CreatedAt: t0}); err != nil {
			return err
		}
		if err := tx.InsertSession(&store.Session{Hash: []byte("sess-1"), UserID: "u1", CSRF: "c", CreatedAt: t0, ExpiresAt: t0.Add(time.Hour)}); err != nil {
			return err
		}
		for k, v := range map[string]string{"log.origin": "arx.example.com/log", "other": ""} {
			if err := tx.SetMeta(k, v); err != nil {
				return err
			}
		}
		if err := tx.PutCheckpoint(&store.Checkpoint{Size: 3, Signed: []byte("signed 3"), CreatedAt: t0}); err != nil {
			return err
		}
		for i := range 3 {
			if _, err := tx.AddFailure(failureKey("f1"), t0.Add(time.Duration(i))); err != nil {
				return err
			}
		}
		if err := tx.Enqueue("webhook", []byte(`{"n":1}`), t0); err != nil {
			return err
		}
		return appendAll(record.TokenIssued("", "admin:root", at(0), "tok-adm", store.TokenAdmin, "operator"),
			record.UserAdded("admin:root", at(0), "u1@example.com", store.RoleAdmin, record.LinkShown))(tx)
	})
	sc.tokens = [][]byte{[]byte("hash-r"), []byte("hash-term"), []byte("hash-adm"), []byte("nope")}
	sc.users = []string{"u1", "nobody"}
	sc.sessions = [][]byte{[]byte("sess-1"), []byte("nope")}
	// The tables catch up (a list reads every committed change), and a
	// store may forget the closed calls it wrote (later Updates run).
	if _, err := s.Calls(ctx, ids[0], 10); err != nil {
		t.Fatal(err)
	}
	update(t, s, func(store.Tx) error { return nil })
	update(t, s, appendAll(entry("cnt", record.TypeGatewayRequest, "cnt-01", nil)))

	before := look(t, s, sc)
	outbox := dueOutbox(t, s, t0.Add(time.Hour))
	if len(before) == 0 || len(outbox) != 1 {
		t.Fatalf("view of %d reads, outbox %q", len(before), outbox)
	}
	s = reopen(s)
	sameView(t, "after a reopen", look(t, s, sc), before)
	if got := dueOutbox(t, s, t0.Add(time.Hour+2*store.OutboxLease)); !slices.Equal(got, outbox) {
		t.Errorf("DueOutbox after a reopen = %q, want %q", got, outbox)
	}
	verify(t, s)

	// The store goes on from where it was: each agent's next entry names
	// its last one, and calls and approvals change as their entries say.
	size := treeSize(t, s)
	last := map[string]string{}
	for _, a := range sc.agents {
		last[a] = lastLeaf(t, s, a)
	}
	lc := func(name string) (a, c string, T func(time.Duration) time.Time) {
		i := lifecycleIndex(t, name)
		return ids[i], ids[i] + "-call", func(d time.Duration) time.Time { return at(time.Duration(i)*time.Minute + d) }
	}
	var es []*record.Entry
	a, c, T := lc("issued")
	es = append(es, complete(a, c, T(time.Minute)))
	issued := askedCall(a, c, T(0))
	done := T(time.Minute)
	issued.Status, issued.ExpiresAt, issued.CompletedAt, issued.Outcome, issued.DurationMS = store.CallCompleted, T(ttl), &done, "success", 42
	a, c, T = lc("requested")
	es = append(es, grant(a, c, T(time.Minute))...)
	requested := askedCall(a, c, T(0))
	requested.Status, requested.ExpiresAt = store.CallApproved, T(time.Minute+ttl)
	a, c, T = lc("expired")
	es = append(es, record.CallCompleted(ref(a, c), "agent:"+a, T(ttl+time.Minute), record.Outcome{Outcome: "error", Late: true}))
	expired := askedCall(a, c, T(0))
	late := T(ttl + time.Minute)
	expired.Status, expired.ExpiresAt, expired.CompletedAt, expired.Outcome = store.CallFailed, T(ttl), &late, "error"
	a, c, T = lc("granted, credential not issued yet")
	es = append(es, grant(a, c, T(time.Second))[1])
	granted := askedCall(a, c, T(0))
	granted.Status, granted.ExpiresAt = store.CallApproved, T(time.Second+ttl)
	es = append(es, issue("cnt", "cnt-new", at(2*time.Hour)), entry("", record.TypeTokenRevoked, "", nil))
	update(t, s, appendAll(es...))
	seen := map[string]bool{}
	for i, e := range es {
		if e.Index != size+int64(i) {
			t.Errorf("entry %d after the reopen got index %d, want %d", i, e.Index, size+int64(i))
		}
		if !seen[e.Agent] && e.Prev != last[e.Agent] {
			t.Errorf("the first entry of %q after the reopen names %q, its last entry is %q", e.Agent, e.Prev, last[e.Agent])
		}
		seen[e.Agent] = true
	}
	for _, want := range []store.Call{issued, requested, expired, granted} {
		got, err := s.Call(ctx, want.ID)
		if err != nil {
			t.Fatalf("Call(%s): %v", want.ID, err)
		}
		checkSame(t, "Call("+want.ID+") changed after the reopen", *got, want)
	}
	sc.calls = append(sc.calls, "cnt-new")
	sc.keys = append(sc.keys, [2]string{"cnt", key("cnt-new")})

	// And the same again across a second reopen.
	before = look(t, s, sc)
	s = reopen(s)
	sameView(t, "after a second reopen", look(t, s, sc), before)
	verify(t, s)
}

// testReopenRightBeforeClose: each change, committed right before Close,
// is there after the reopen, as a twin store that was never closed shows
// it.
func testReopenRightBeforeClose(t *testing.T, open func() store.Store, reopen func(store.Store) store.Store) {
	s, twin := open(), open()
	T := func(d time.Duration) time.Time { return at(d) }
	sc := scope{agents: []string{"a", "b", "m"}, at: at(time.Hour), users: []string{"u1"}, meta: []string{"k"},
		tokens: [][]byte{[]byte("hash-a"), []byte("hash-b")}, sessions: [][]byte{[]byte("sess-1")},
		failures: [][]byte{failureKey("f1")}}
	for _, c := range []string{"a-1", "a-2", "a-3", "a-4", "b-1", "b-2"} {
		sc.calls = append(sc.calls, c)
		sc.keys = append(sc.keys, [2]string{c[:1], key(c)})
	}
	steps := []struct {
		name string
		fn   func(tx store.Tx) error
	}{
		{"hires", func(tx store.Tx) error {
			for i, id := range []string{"a", "b", "m"} {
				if err := hireAt(tx, newAgent(id, t0.Add(time.Duration(i))), T(0)); err != nil {
					return err
				}
			}
			for _, id := range []string{"a", "b"} {
				if err := tx.InsertToken(&store.Token{ID: "tok-" + id, Hash: []byte("hash-" + id), Kind: store.TokenAgent, AgentID: id,
					CreatedAt: t0}); err != nil {
					return err
				}
			}
			return nil
		}},
		{"asks", appendAll(cat(one(issue("a", "a-1", T(time.Second)), issue("a", "a-2", T(time.Second))),
			request("a", "a-3", T(time.Second)), one(refuse("a", "a-4", T(2*time.Second))))...)},
		{"a completion and a grant", appendAll(cat(one(complete("a", "a-1", T(time.Minute))), grant("a", "a-3", T(time.Minute)))...)},
		{"an expiry", appendAll(record.CallExpired(ref("a", "a-2"), T(ttl+time.Second), T(ttl+time.Second)))},
		{"a late completion", appendAll(record.CallCompleted(ref("a", "a-2"), "agent:a", T(ttl+time.Minute),
			record.Outcome{Outcome: "success", Late: true}))},
		{"a request and cold writes", func(tx store.Tx) error {
			if err := appendAll(request("b", "b-1", T(time.Second))...)(tx); err != nil {
				return err
			}
			if err := tx.InsertUser(&store.User{ID: "u1", Email: "u1@example.com", Role: store.RoleManager, CreatedAt: t0}); err != nil {
				return err
			}
			if err := tx.InsertSession(&store.Session{Hash: []byte("sess-1"), UserID: "u1", CSRF: "c", CreatedAt: t0, ExpiresAt: t0}); err != nil {
				return err
			}
			if err := tx.SetMeta("k", "v"); err != nil {
				return err
			}
			if err := tx.PutCheckpoint(&store.Checkpoint{Size: 9, Signed: []byte("cp 9"), CreatedAt: t0}); err != nil {
				return err
			}
			if _, err := tx.AddFailure(failureKey("f1"), t0); err != nil {
				return err
			}
			return tx.Enqueue("webhook", []byte("w"), t0)
		}},
		{"a termination", func(tx store.Tx) error {
			if err := tx.Append(issue("b", "b-2", T(time.Minute))); err != nil {
				return err
			}
			if _, err := tx.RevokeAgentTokens("b", T(2*time.Minute)); err != nil {
				return err
			}
			return appendAll(record.CredentialsRevoked("b", "admin:root", T(2*time.Minute), "agent terminated", []string{"b-2"}),
				record.ApprovalCancelled(ref("b", "b-1"), "admin:root", T(2*time.Minute), "agent terminated"),
				record.AgentTerminated("b", "admin:root", T(2*time.Minute), record.Termination{Reason: "r"}))(tx)
		}},
		{"many calls", func(tx store.Tx) error {
			for i := range 300 {
				e := issue("m", fmt.Sprintf("m-%03d", i), T(time.Duration(i)*time.Second))
				if i%4 == 0 {
					e = refuse("m", fmt.Sprintf("m-%03d", i), T(time.Duration(i)*time.Second))
				}
				if err := tx.Append(e); err != nil {
					return err
				}
			}
			return nil
		}},
		{"many completions", func(tx store.Tx) error {
			for i := range 300 {
				if i%4 != 0 && i%3 == 0 {
					if err := tx.Append(complete("m", fmt.Sprintf("m-%03d", i), T(time.Hour))); err != nil {
						return err
					}
				}
			}
			return tx.Append(record.TokenIssued("", "admin:root", T(time.Hour), "tok-x", store.TokenAdmin, ""))
		}},
		{"nothing", func(store.Tx) error { return nil }},
	}
	for i := range 300 {
		c := fmt.Sprintf("m-%03d", i)
		if i%10 == 0 {
			sc.calls = append(sc.calls, c)
		}
		sc.keys = append(sc.keys, [2]string{"m", key(c)})
	}
	for k, st := range steps {
		update(t, twin, st.fn)
		update(t, s, st.fn)
		s = reopen(s)
		sameView(t, "reopened right after "+st.name, look(t, s, sc), look(t, twin, sc))
		due := t0.Add(time.Duration(k) * 2 * store.OutboxLease) // past any lease a shared store took
		if got, want := dueOutbox(t, s, due), dueOutbox(t, twin, due); !slices.Equal(got, want) {
			t.Errorf("reopened right after %s: DueOutbox = %q, want %q", st.name, got, want)
		}
		if t.Failed() {
			t.FailNow()
		}
	}
	verify(t, s)
}

// testReopenRacingClose: Updates racing Close each end, committed or
// refused with ErrClosed; after a reopen, every committed one is there, and
// no refused one.
func testReopenRacingClose(t *testing.T, open func() store.Store, reopen func(store.Store) store.Store) {
	ctx := t.Context()
	s := open()
	insertAgents(t, s, "a")
	first := s
	const racers = 8
	var mu sync.Mutex
	var committed, refused []string
	var wg sync.WaitGroup
	for w := range racers {
		wg.Go(func() {
			for i := 0; ; i++ {
				id := fmt.Sprintf("race-%d-%04d", w, i)
				err := first.Update(ctx, appendAll(issue("a", id, at(time.Duration(i)*time.Millisecond))))
				mu.Lock()
				if err == nil {
					committed = append(committed, id)
				} else {
					refused = append(refused, id)
				}
				mu.Unlock()
				if err != nil {
					if !errors.Is(err, store.ErrClosed) {
						t.Errorf("Update racing Close returned %v, want nil or store.ErrClosed", err)
					}
					return
				}
			}
		})
	}
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		mu.Lock()
		n := len(committed)
		mu.Unlock()
		if n >= 4*racers {
			break
		}
	}
	s2 := reopen(s)
	within(t, 10*time.Second, "Updates racing Close", wg.Wait)
	if err := s.Update(ctx, func(store.Tx) error { return nil }); !errors.Is(err, store.ErrClosed) {
		t.Errorf("Update of the closed store = %v, want store.ErrClosed", err)
	}
	s = s2

	if n := treeSize(t, s); n != int64(len(committed)) {
		t.Errorf("after the reopen, TreeSize = %d; %d Updates committed an entry each", n, len(committed))
	}
	for _, id := range committed {
		if c, err := s.Call(ctx, id); err != nil || c.Status != store.CallApproved {
			t.Errorf("Call(%s) committed before Close = %+v, %v", id, c, err)
		}
	}
	for _, id := range refused {
		_, err := s.Call(ctx, id)
		mustNotFound(t, "Call("+id+") refused with ErrClosed", err)
	}
	probe(t, s, func(tx store.Tx) error {
		if n := tx.CallCounts("a").Open; n != len(committed) {
			t.Errorf("CallCounts(a).Open = %d, want %d", n, len(committed))
		}
		for _, id := range committed {
			if c, err := tx.CallByIdempotencyKey("a", key(id)); err != nil || c.ID != id {
				t.Errorf("CallByIdempotencyKey(a, %s) = %+v, %v", key(id), c, err)
			}
		}
		for _, id := range refused {
			_, err := tx.CallByIdempotencyKey("a", key(id))
			mustNotFound(t, "the key of "+id+", refused with ErrClosed", err)
		}
		return nil
	})
	verify(t, s)
}

// testReopenCallsWithoutKey: a call asked for without an idempotency key
// is not found by a key, the empty one included, before a reopen and after.
func testReopenCallsWithoutKey(t *testing.T, open func() store.Store, reopen func(store.Store) store.Store) {
	s := open()
	hire(t, s, "a")
	update(t, s, appendAll(
		record.CredentialIssued(ref("a", "no-key-1"), "agent:a", at(0), record.Ask{DeclaredRisk: "low"}, at(ttl), ""),
		record.CallRequested(ref("a", "no-key-2"), "agent:a", at(time.Second), record.Ask{DeclaredRisk: "low"}),
		record.ApprovalRequested(ref("a", "no-key-2"), "agent:a", at(time.Second), approvers, nil, at(time.Hour)),
		issue("a", "keyed", at(2*time.Second)),
		complete("a", "no-key-1", at(time.Minute))))
	sc := scope{agents: []string{"a"}, calls: []string{"no-key-1", "no-key-2", "keyed"},
		keys: [][2]string{{"a", ""}, {"a", key("keyed")}}, at: at(time.Hour)}
	before := look(t, s, sc)
	if got := before["tx.CallByIdempotencyKey(a, )"]; got != "not found" {
		t.Errorf("CallByIdempotencyKey(a, \"\") = %s, want not found", got)
	}
	s = reopen(s)
	sameView(t, "after a reopen", look(t, s, sc), before)
	if t.Failed() {
		t.Errorf("store bug: after a reopen, the store finds a call by the empty idempotency key: it remembers the keys of the calls " +
			"it loads, those made without one included")
	}
}
