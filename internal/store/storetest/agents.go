package storetest

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/arxsec/arx/internal/store"
	"github.com/arxsec/arx/record"
)

// testAgents: profiles as inserted, read in and out of transactions,
// listed by creation time; an id is taken once.
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
}

// testAgentStatus: an agent's status is what its entries say: agent.hired
// makes a profile active, agent.terminated terminates it at the entry's
// time; nothing else of the profile changes.
func testAgentStatus(t *testing.T, s store.Store) {
	ctx := t.Context()
	check := func(what string, want store.Agent) {
		t.Helper()
		got, err := s.Agent(ctx, want.ID)
		if err != nil {
			t.Fatalf("%s: Agent(%s): %v", what, want.ID, err)
		}
		checkSame(t, what+": Agent("+want.ID+")", *got, want)
		as, err := s.Agents(ctx)
		if err != nil {
			t.Fatalf("Agents: %v", err)
		}
		i := slices.IndexFunc(as, func(a store.Agent) bool { return a.ID == want.ID })
		if i < 0 {
			t.Errorf("%s: Agents does not list %s", what, want.ID)
		} else {
			checkSame(t, what+": Agents()["+want.ID+"]", as[i], want)
		}
		probe(t, s, func(tx store.Tx) error {
			got, err := tx.Agent(want.ID)
			if err != nil {
				return fmt.Errorf("%s: tx.Agent(%s): %w", what, want.ID, err)
			}
			checkSame(t, what+": tx.Agent("+want.ID+")", *got, want)
			return nil
		})
	}
	hired := func(id string) *record.Entry {
		return record.AgentHired(id, "admin:root", time.Time{}, record.Hire{Name: "agent " + id, Connectors: []string{"crm"}})
	}

	// A profile, then its hire in a later Update.
	p := newAgent("p", t0)
	p.Status = store.AgentSuspended
	update(t, s, func(tx store.Tx) error { return tx.InsertAgent(p) })
	check("profile inserted", *p)
	update(t, s, appendAll(hired("p")))
	want := *p
	want.Status = store.AgentActive
	check("after agent.hired", want)

	// A profile and its hire in one Update, which reads its own append.
	q := newAgent("q", t0.Add(time.Second))
	q.Status = store.AgentSuspended
	update(t, s, func(tx store.Tx) error {
		if err := tx.InsertAgent(q); err != nil {
			return err
		}
		if err := tx.Append(hired("q")); err != nil {
			return err
		}
		got, err := tx.Agent("q")
		if err != nil || got.Status != store.AgentActive {
			t.Errorf("tx.Agent(q) after its agent.hired in the same Update = %+v, %v; want active", got, err)
		}
		return nil
	})
	wantQ := *q
	wantQ.Status = store.AgentActive
	check("profile and agent.hired in one Update", wantQ)

	// Terminated at the entry's time.
	term := at(time.Hour).In(zone)
	update(t, s, func(tx store.Tx) error {
		if err := tx.Append(record.AgentTerminated("p", "admin:root", term, record.Termination{Reason: "done"})); err != nil {
			return err
		}
		got, err := tx.Agent("p")
		if err != nil || got.Status != store.AgentTerminated || got.TerminatedAt == nil || !got.TerminatedAt.Equal(term) {
			t.Errorf("tx.Agent(p) after its agent.terminated in the same Update = %+v, %v", got, err)
		}
		return nil
	})
	want.Status, want.TerminatedAt = store.AgentTerminated, &term
	check("after agent.terminated", want)
	check("another agent after agent.terminated", wantQ)
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
		update(t, s, func(tx store.Tx) error { return tx.RevokeToken("a", "tok-a", at) })
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
	mustNotFound(t, "RevokeToken(unknown)", s.Update(ctx, func(tx store.Tx) error { return tx.RevokeToken("a", "nope", r1) }))
	// A token is revoked only in its agent's name: not another agent's,
	// not a person's or an operator's.
	insertAgents(t, s, "b")
	for _, id := range []string{"tok-a", "tok-user", "tok-admin"} {
		mustNotFound(t, "RevokeToken(b, "+id+")", s.Update(ctx, func(tx store.Tx) error { return tx.RevokeToken("b", id, r2) }))
	}
	if got, err := s.TokenByHash(ctx, userTok.Hash); err != nil || got.RevokedAt != nil {
		t.Errorf("a person's token was revoked in an agent's name: %+v, %v", got, err)
	}
}

func testRevokeAgentTokens(t *testing.T, s store.Store) {
	ctx := t.Context()
	insertAgents(t, s, "a", "b")
	early := t0.Add(-time.Hour)
	toks := []*store.Token{
		{ID: "a1", Hash: []byte("a1"), Kind: store.TokenAgent, AgentID: "a", CreatedAt: t0},
		{ID: "a2", Hash: []byte("a2"), Kind: store.TokenAgent, AgentID: "a", CreatedAt: t0},
		{ID: "a3", Hash: []byte("a3"), Kind: store.TokenAgent, AgentID: "a", CreatedAt: t0, RevokedAt: &early},
		{ID: "b1", Hash: []byte("b1"), Kind: store.TokenAgent, AgentID: "b", CreatedAt: t0},
		{ID: "adm", Hash: []byte("adm"), Kind: store.TokenAdmin, CreatedAt: t0},
	}
	update(t, s, func(tx store.Tx) error {
		for _, k := range toks {
			if err := tx.InsertToken(k); err != nil {
				return err
			}
		}
		return nil
	})
	at := t0.Add(time.Minute + 5).In(zone)
	var n int
	update(t, s, func(tx store.Tx) (err error) {
		n, err = tx.RevokeAgentTokens("a", at)
		return err
	})
	if n != 2 {
		t.Errorf("RevokeAgentTokens(a) = %d, want 2 (its live tokens)", n)
	}
	for _, tc := range []struct {
		id      string
		revoked *time.Time
	}{{"a1", &at}, {"a2", &at}, {"a3", &early}, {"b1", nil}, {"adm", nil}} {
		k, err := s.TokenByHash(ctx, []byte(tc.id))
		if err != nil {
			t.Fatalf("TokenByHash(%s): %v", tc.id, err)
		}
		if !same(k.RevokedAt, tc.revoked) {
			t.Errorf("token %s revoked at %s, want %s", tc.id, show(k.RevokedAt), show(tc.revoked))
		}
	}
	update(t, s, func(tx store.Tx) (err error) {
		n, err = tx.RevokeAgentTokens("a", at.Add(time.Hour))
		return err
	})
	if n != 0 {
		t.Errorf("RevokeAgentTokens(a) a second time = %d, want 0", n)
	}
	update(t, s, func(tx store.Tx) (err error) {
		n, err = tx.RevokeAgentTokens("nobody", at)
		return err
	})
	if n != 0 {
		t.Errorf("RevokeAgentTokens(nobody) = %d, want 0", n)
	}
}

func testAgentByToken(t *testing.T, s store.Store) {
	ctx := t.Context()
	insertAgents(t, s, "a")
	a, err := s.Agent(ctx, "a")
	if err != nil {
		t.Fatalf("Agent(a): %v", err)
	}
	revoked := t0.Add(time.Minute).In(zone)
	live := &store.Token{ID: "live", Hash: []byte("live-hash"), Kind: store.TokenAgent, AgentID: "a",
		IssuedBy: "admin:root", Label: "hire", CreatedAt: t0.Add(3)}
	dead := &store.Token{ID: "dead", Hash: []byte("dead-hash"), Kind: store.TokenAgent, AgentID: "a", CreatedAt: t0, RevokedAt: &revoked}
	admin := &store.Token{ID: "admin", Hash: []byte("admin-hash"), Kind: store.TokenAdmin, CreatedAt: t0}
	update(t, s, func(tx store.Tx) error {
		for _, k := range []*store.Token{live, dead, admin} {
			if err := tx.InsertToken(k); err != nil {
				return err
			}
		}
		return nil
	})
	for _, want := range []*store.Token{live, dead} {
		k, ag, err := s.AgentByToken(ctx, want.Hash)
		if err != nil {
			t.Fatalf("AgentByToken(%s): %v", want.ID, err)
		}
		checkSame(t, "AgentByToken("+want.ID+") token", *k, *want)
		checkSame(t, "AgentByToken("+want.ID+") agent", *ag, *a)
	}
	for _, h := range []string{"admin-hash", "unknown"} {
		_, _, err := s.AgentByToken(ctx, []byte(h))
		mustNotFound(t, "AgentByToken("+h+")", err)
	}
	// What termination changes shows at once.
	term := at(time.Hour)
	update(t, s, func(tx store.Tx) error {
		if _, err := tx.RevokeAgentTokens("a", term); err != nil {
			return err
		}
		return tx.Append(record.AgentTerminated("a", "admin:root", term, record.Termination{Reason: "r", RevokedTokens: 1}))
	})
	k, ag, err := s.AgentByToken(ctx, live.Hash)
	if err != nil {
		t.Fatalf("AgentByToken after termination: %v", err)
	}
	if k.RevokedAt == nil || !k.RevokedAt.Equal(term) || ag.Status != store.AgentTerminated || ag.TerminatedAt == nil || !ag.TerminatedAt.Equal(term) {
		t.Errorf("AgentByToken after termination = %+v, %+v; want the token revoked and the agent terminated", k, ag)
	}
}
