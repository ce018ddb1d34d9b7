package storetest

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/arxsec/arx/internal/store"
)

func testAgents(t *testing.T, s store.Store) {
	ctx := t.Context()
	if as, err := s.Agents(ctx); err != nil || len(as) != 0 {
		t.Fatalf("Agents on an empty store: %v, %v; want none", as, err)
	}

	// Inserted out of creation order; b and c share a creation time.
	terminated := t0.Add(time.Hour).In(zone)
	a := newAgent("a", t0.Add(2*time.Second))
	b := newAgent("b", t0.Add(time.Second).In(zone))
	c := newAgent("c", t0.Add(time.Second))
	d := newAgent("d", t0.Add(3*time.Second))
	d.Status, d.TerminatedAt = store.AgentTerminated, &terminated
	update(t, s, func(tx store.Tx) error {
		for _, x := range []*store.Agent{d, a, c, b} {
			if err := tx.InsertAgent(x); err != nil {
				return err
			}
		}
		got, err := tx.Agent("a")
		if err != nil {
			return fmt.Errorf("tx.Agent after InsertAgent in the same Update: %w", err)
		}
		checkSame(t, "tx.Agent(a)", *got, *a)
		return nil
	})
	for _, want := range []*store.Agent{a, b, c, d} {
		got, err := s.Agent(ctx, want.ID)
		if err != nil {
			t.Fatalf("Agent(%q): %v", want.ID, err)
		}
		checkSame(t, "Agent("+want.ID+")", *got, *want)
	}

	// Agents lists by creation time, then id.
	as, err := s.Agents(ctx)
	if err != nil {
		t.Fatalf("Agents: %v", err)
	}
	var ids []string
	for _, x := range as {
		ids = append(ids, x.ID)
	}
	if want := []string{"b", "c", "a", "d"}; !slices.Equal(ids, want) {
		t.Errorf("Agents lists %q, want %q (by creation time, then id)", ids, want)
	}
	for i, want := range []*store.Agent{b, c, a, d} {
		if i < len(as) {
			checkSame(t, "Agents()["+want.ID+"]", as[i], *want)
		}
	}

	_, err = s.Agent(ctx, "nobody")
	mustNotFound(t, "Agent(nobody)", err)
	update(t, s, func(tx store.Tx) error {
		_, err := tx.Agent("nobody")
		mustNotFound(t, "tx.Agent(nobody)", err)
		return nil
	})

	dup := newAgent("a", t0)
	dup.Name = "impostor"
	mustConflict(t, "InsertAgent with a taken id", s.Update(ctx, func(tx store.Tx) error { return tx.InsertAgent(dup) }))
	if got, err := s.Agent(ctx, "a"); err != nil || got.Name != a.Name {
		t.Errorf("after a refused duplicate, Agent(a) = %+v, %v; want the original", got, err)
	}

	// Status changes; terminated_at is set by the first termination only.
	t1, t2 := t0.Add(2*time.Hour+1), t0.Add(3*time.Hour+2)
	for _, step := range []struct {
		status string
		at     time.Time
		term   *time.Time
	}{
		{store.AgentSuspended, t0.Add(time.Hour), nil},
		{store.AgentActive, t0.Add(90 * time.Minute), nil},
		{store.AgentTerminated, t1, &t1},
		{store.AgentTerminated, t2, &t1},
	} {
		update(t, s, func(tx store.Tx) error { return tx.SetAgentStatus("a", step.status, step.at) })
		got, err := s.Agent(ctx, "a")
		if err != nil {
			t.Fatalf("Agent(a): %v", err)
		}
		want := *a
		want.Status, want.TerminatedAt = step.status, step.term
		checkSame(t, fmt.Sprintf("Agent(a) after SetAgentStatus(%s, %v)", step.status, step.at), *got, want)
	}
	mustNotFound(t, "SetAgentStatus(nobody)", s.Update(ctx, func(tx store.Tx) error {
		return tx.SetAgentStatus("nobody", store.AgentTerminated, t1)
	}))
}

func testTokens(t *testing.T, s store.Store) {
	ctx := t.Context()
	insertAgents(t, s, "a")
	agentTok := &store.Token{ID: "tok-a", Hash: []byte("hash-of-agent-token-0123456789ab"), Kind: store.TokenAgent,
		AgentID: "a", IssuedBy: "admin:root", Label: "ARX_TOKEN", CreatedAt: t0.In(zone)}
	adminTok := &store.Token{ID: "tok-admin", Hash: []byte("hash-of-admin-token-0123456789ab"), Kind: store.TokenAdmin,
		Label: "operator", CreatedAt: t0.Add(time.Second)}
	userTok := &store.Token{ID: "tok-user", Hash: []byte("hash-of-user-token-0123456789abc"), Kind: store.TokenUser,
		UserID: "u1", IssuedBy: "user:alice@example.com", Label: "arx login", CreatedAt: t0.Add(2 * time.Second)}
	update(t, s, func(tx store.Tx) error {
		if err := tx.InsertUser(&store.User{ID: "u1", Email: "alice@example.com", Role: store.RoleManager, CreatedAt: t0}); err != nil {
			return err
		}
		for _, k := range []*store.Token{agentTok, adminTok, userTok} {
			if err := tx.InsertToken(k); err != nil {
				return err
			}
		}
		return nil
	})
	for _, want := range []*store.Token{agentTok, adminTok, userTok} {
		got, err := s.TokenByHash(ctx, want.Hash)
		if err != nil {
			t.Fatalf("TokenByHash(%s): %v", want.ID, err)
		}
		checkSame(t, "TokenByHash("+want.ID+")", *got, *want)
	}
	_, err := s.TokenByHash(ctx, []byte("no such hash"))
	mustNotFound(t, "TokenByHash(unknown)", err)

	for _, tc := range []struct {
		name string
		tok  store.Token
	}{
		{"taken hash", store.Token{ID: "tok-b", Hash: agentTok.Hash, Kind: store.TokenAdmin, CreatedAt: t0}},
		{"taken id", store.Token{ID: "tok-a", Hash: []byte("another hash"), Kind: store.TokenAdmin, CreatedAt: t0}},
	} {
		mustConflict(t, "InsertToken with a "+tc.name, s.Update(ctx, func(tx store.Tx) error { return tx.InsertToken(&tc.tok) }))
	}
	if got, err := s.TokenByHash(ctx, []byte("another hash")); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("a refused token is stored: %+v, %v", got, err)
	}

	// Revoking keeps the first revocation time.
	r1, r2 := t0.Add(time.Hour+1), t0.Add(2*time.Hour)
	for _, at := range []time.Time{r1, r2} {
		update(t, s, func(tx store.Tx) error { return tx.RevokeToken("tok-a", at) })
		got, err := s.TokenByHash(ctx, agentTok.Hash)
		if err != nil {
			t.Fatalf("TokenByHash: %v", err)
		}
		want := *agentTok
		want.RevokedAt = &r1
		checkSame(t, fmt.Sprintf("token after RevokeToken(%v)", at), *got, want)
	}
	if got, err := s.TokenByHash(ctx, adminTok.Hash); err != nil || got.RevokedAt != nil {
		t.Errorf("revoking one token touched another: %+v, %v", got, err)
	}
	mustNotFound(t, "RevokeToken(unknown)", s.Update(ctx, func(tx store.Tx) error { return tx.RevokeToken("nope", r1) }))
}

func testCalls(t *testing.T, s store.Store) {
	ctx := t.Context()
	insertAgents(t, s, "a", "b")
	completed := t0.Add(90*time.Second + 17)
	full := &store.Call{ID: "call-full", AgentID: "a", Connector: "salesforce", Action: "account.update",
		DeclaredRisk: "low", Risk: "high", Status: store.CallCompleted, IdempotencyKey: "idem-1",
		Summary: "update account 42 \"quoted\" ünïcode", Refusal: "manifest.risk_under_declared", RaisedBy: "user:alice@example.com",
		CreatedAt: t0.In(zone), ExpiresAt: t0.Add(5*time.Minute + 1), CompletedAt: &completed,
		Outcome: "error", Error: "upstream 503", DurationMS: 1234}
	minimal := newCall("call-min", "a", "idem-2", t0.Add(time.Second))
	update(t, s, func(tx store.Tx) error {
		if err := tx.InsertCall(full); err != nil {
			return err
		}
		return tx.InsertCall(minimal)
	})
	for _, want := range []*store.Call{full, minimal} {
		got, err := s.Call(ctx, want.ID)
		if err != nil {
			t.Fatalf("Call(%s): %v", want.ID, err)
		}
		checkSame(t, "Call("+want.ID+")", *got, *want)
		update(t, s, func(tx store.Tx) error {
			got, err := tx.Call(want.ID)
			if err != nil {
				return fmt.Errorf("tx.Call(%s): %w", want.ID, err)
			}
			checkSame(t, "tx.Call("+want.ID+")", *got, *want)
			got, err = tx.CallByIdempotencyKey(want.AgentID, want.IdempotencyKey)
			if err != nil {
				return fmt.Errorf("tx.CallByIdempotencyKey(%s, %s): %w", want.AgentID, want.IdempotencyKey, err)
			}
			checkSame(t, "tx.CallByIdempotencyKey("+want.IdempotencyKey+")", *got, *want)
			return nil
		})
	}

	_, err := s.Call(ctx, "nope")
	mustNotFound(t, "Call(nope)", err)
	update(t, s, func(tx store.Tx) error {
		_, err := tx.Call("nope")
		mustNotFound(t, "tx.Call(nope)", err)
		_, err = tx.CallByIdempotencyKey("a", "nope")
		mustNotFound(t, "tx.CallByIdempotencyKey(a, nope)", err)
		_, err = tx.CallByIdempotencyKey("b", "idem-1")
		mustNotFound(t, "tx.CallByIdempotencyKey(b, idem-1) (the key is a's)", err)
		return nil
	})

	// Idempotency keys are unique per agent, not across agents.
	update(t, s, func(tx store.Tx) error { return tx.InsertCall(newCall("call-b", "b", "idem-1", t0)) })
	for _, tc := range []struct {
		name string
		call *store.Call
	}{
		{"taken (agent, idempotency key)", newCall("call-other", "a", "idem-1", t0)},
		{"taken id", newCall("call-full", "b", "idem-9", t0)},
	} {
		mustConflict(t, "InsertCall with a "+tc.name, s.Update(ctx, func(tx store.Tx) error { return tx.InsertCall(tc.call) }))
	}
	_, err = s.Call(ctx, "call-other")
	mustNotFound(t, "Call(call-other) after a refused insert", err)
	if got, err := s.Call(ctx, "call-full"); err != nil {
		t.Fatalf("Call(call-full): %v", err)
	} else {
		checkSame(t, "Call(call-full) after a refused duplicate", *got, *full)
	}

	// UpdateCall writes the fields that change over a call's life.
	done := t0.Add(time.Minute + 3)
	upd := *minimal
	upd.Status, upd.Refusal, upd.ExpiresAt, upd.CompletedAt = store.CallFailed, "gateway.upstream_error", t0.Add(time.Hour+5), &done
	upd.Outcome, upd.Error, upd.DurationMS = "error", "connection reset", 987654321
	update(t, s, func(tx store.Tx) error { return tx.UpdateCall(&upd) })
	if got, err := s.Call(ctx, upd.ID); err != nil {
		t.Fatalf("Call after UpdateCall: %v", err)
	} else {
		checkSame(t, "Call after UpdateCall", *got, upd)
	}
	if got, err := s.Call(ctx, full.ID); err != nil {
		t.Fatalf("Call(call-full): %v", err)
	} else {
		checkSame(t, "another call after UpdateCall", *got, *full)
	}
	ghost := newCall("ghost", "a", "idem-ghost", t0)
	mustNotFound(t, "UpdateCall(unknown)", s.Update(ctx, func(tx store.Tx) error { return tx.UpdateCall(ghost) }))
	_, err = s.Call(ctx, "ghost")
	mustNotFound(t, "Call(ghost) after UpdateCall(ghost)", err)
}

func testCallQueries(t *testing.T, s store.Store) {
	ctx := t.Context()
	insertAgents(t, s, "a", "b", "c")
	all := []string{store.CallPending, store.CallApproved, store.CallCompleted, store.CallFailed,
		store.CallExpired, store.CallRefused, store.CallDenied, store.CallRevoked}
	var calls []*store.Call
	for i, st := range all {
		c := newCall("a-"+st, "a", "key-"+st, t0.Add(time.Duration(i)*time.Second))
		c.Status, c.ExpiresAt = st, t0.Add(time.Duration(i+1)*time.Minute)
		calls = append(calls, c)
	}
	bApproved := newCall("b-approved", "b", "k1", t0)
	bApproved.ExpiresAt = t0.Add(time.Hour)
	bPending := newCall("b-pending", "b", "k2", t0)
	bPending.Status = store.CallPending
	calls = append(calls, bApproved, bPending)
	// c's calls straddle t0, to the nanosecond.
	for _, x := range []struct {
		id     string
		status string
		expiry time.Time
	}{
		{"c-2m", store.CallApproved, t0.Add(-2 * time.Minute)},
		{"c-1m", store.CallApproved, t0.Add(-time.Minute).In(zone)},
		{"c-1ns", store.CallApproved, t0.Add(-1)},
		{"c-at", store.CallApproved, t0},
		{"c-later", store.CallApproved, t0.Add(time.Minute)},
		{"c-pending", store.CallPending, t0.Add(-5 * time.Minute)},
		{"c-completed", store.CallCompleted, t0.Add(-5 * time.Minute)},
	} {
		c := newCall(x.id, "c", "key-"+x.id, t0.Add(-time.Hour))
		c.Status, c.ExpiresAt = x.status, x.expiry
		calls = append(calls, c)
	}
	update(t, s, func(tx store.Tx) error {
		for _, c := range calls {
			if err := tx.InsertCall(c); err != nil {
				return err
			}
		}
		return nil
	})

	t.Run("OpenCalls", func(t *testing.T) {
		update(t, s, func(tx store.Tx) error {
			for agent, want := range map[string]int{"a": 2, "b": 2, "c": 6, "nobody": 0} {
				n, err := tx.OpenCalls(agent)
				if err != nil {
					return fmt.Errorf("OpenCalls(%s): %w", agent, err)
				}
				if n != want {
					t.Errorf("OpenCalls(%s) = %d, want %d (approved and pending only)", agent, n, want)
				}
			}
			return nil
		})
	})

	t.Run("Calls", func(t *testing.T) {
		newestFirst := make([]string, len(all))
		for i, st := range all {
			newestFirst[len(all)-1-i] = "a-" + st
		}
		for _, tc := range []struct {
			agent string
			limit int
			want  []string
		}{
			{"a", 100, newestFirst},
			{"a", len(all), newestFirst},
			{"a", 3, newestFirst[:3]},
			{"a", 1, newestFirst[:1]},
			{"nobody", 10, nil},
		} {
			got, err := s.Calls(ctx, tc.agent, tc.limit)
			if err != nil {
				t.Fatalf("Calls(%s, %d): %v", tc.agent, tc.limit, err)
			}
			if ids := callIDs(got); !slices.Equal(ids, tc.want) {
				t.Errorf("Calls(%s, %d) = %q, want %q (newest first)", tc.agent, tc.limit, ids, tc.want)
			}
		}
		got, err := s.Calls(ctx, "a", 1)
		if err != nil || len(got) != 1 {
			t.Fatalf("Calls(a, 1) = %v, %v", got, err)
		}
		checkSame(t, "Calls(a, 1)[0]", got[0], *calls[len(all)-1])
	})

	t.Run("OverdueCalls", func(t *testing.T) {
		for _, tc := range []struct {
			at   time.Time
			want []string
		}{
			{t0, []string{"c-1m", "c-1ns", "c-2m"}},
			{t0.Add(-2 * time.Minute), nil},
			{t0.Add(-2*time.Minute + 1), []string{"c-2m"}},
			{t0.Add(1), []string{"c-1m", "c-1ns", "c-2m", "c-at"}},
			{t0.Add(2 * time.Hour), []string{"a-approved", "b-approved", "c-1m", "c-1ns", "c-2m", "c-at", "c-later"}},
		} {
			got, err := s.OverdueCalls(ctx, tc.at.In(zone), 100)
			if err != nil {
				t.Fatalf("OverdueCalls(%v): %v", tc.at, err)
			}
			ids := callIDs(got)
			slices.Sort(ids)
			if !slices.Equal(ids, tc.want) {
				t.Errorf("OverdueCalls(%v) = %q, want %q (approved, expiry strictly before)", tc.at, ids, tc.want)
			}
		}
		got, err := s.OverdueCalls(ctx, t0, 2)
		if err != nil {
			t.Fatalf("OverdueCalls(t0, 2): %v", err)
		}
		if len(got) != 2 {
			t.Errorf("OverdueCalls(t0, 2) returned %d calls, want 2", len(got))
		}
		for _, c := range got {
			if !slices.Contains([]string{"c-1m", "c-1ns", "c-2m"}, c.ID) {
				t.Errorf("OverdueCalls(t0, 2) returned %s, which is not overdue", c.ID)
			}
		}
	})
}

func callIDs(cs []store.Call) []string {
	var ids []string
	for _, c := range cs {
		ids = append(ids, c.ID)
	}
	return ids
}

func testCheckpoints(t *testing.T, s store.Store) {
	ctx := t.Context()
	_, err := s.LatestCheckpoint(ctx)
	mustNotFound(t, "LatestCheckpoint on an empty store", err)
	cp := func(size int64) *store.Checkpoint {
		return &store.Checkpoint{Size: size, Signed: fmt.Appendf(nil, "storetest\n%d\nroot\n\n— sig\n", size),
			CreatedAt: t0.Add(-time.Duration(size) * time.Second).In(zone)} // the larger, the older
	}
	for _, tc := range []struct {
		put  []int64
		want int64
	}{
		{[]int64{3}, 3},
		{[]int64{10, 7}, 10}, // the highest size, not the latest put
		{[]int64{2}, 10},
		{[]int64{12}, 12},
	} {
		update(t, s, func(tx store.Tx) error {
			for _, size := range tc.put {
				if err := tx.PutCheckpoint(cp(size)); err != nil {
					return err
				}
			}
			return nil
		})
		got, err := s.LatestCheckpoint(ctx)
		if err != nil {
			t.Fatalf("LatestCheckpoint after putting %v: %v", tc.put, err)
		}
		checkSame(t, fmt.Sprintf("LatestCheckpoint after putting %v", tc.put), *got, *cp(tc.want))
	}
}

func testMeta(t *testing.T, s store.Store) {
	ctx := t.Context()
	_, err := s.Meta(ctx, "log.origin")
	mustNotFound(t, "Meta of an unset key", err)
	for _, step := range []struct{ key, value string }{
		{"log.origin", "arx.example.com/log"},
		{"other", "x"},
		{"log.origin", "arx.example.com/log2"}, // overwrites
		{"empty", ""},                          // set but empty is not unset
	} {
		update(t, s, func(tx store.Tx) error { return tx.SetMeta(step.key, step.value) })
		got, err := s.Meta(ctx, step.key)
		if err != nil || got != step.value {
			t.Errorf("Meta(%q) after SetMeta(%q) = %q, %v", step.key, step.value, got, err)
		}
	}
	if got, err := s.Meta(ctx, "other"); err != nil || got != "x" {
		t.Errorf("Meta(other) = %q, %v; want x", got, err)
	}
	if err := s.Ping(ctx); err != nil {
		t.Errorf("Ping: %v", err)
	}
}
