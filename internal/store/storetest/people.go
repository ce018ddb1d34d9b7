package storetest

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/arxsec/arx/internal/store"
)

func testUsers(t *testing.T, s store.Store) {
	ctx := t.Context()
	if us, err := s.Users(ctx); err != nil || len(us) != 0 {
		t.Fatalf("Users on an empty store = %v, %v; want none", us, err)
	}
	disabled := t0.Add(time.Hour + 7).In(zone)
	alice := &store.User{ID: "u-alice", Email: "alice@example.com", Role: store.RoleManager,
		PasswordHash: "$argon2id$v=19$m=65536,t=3,p=2$c2FsdA$aGFzaA", CreatedAt: t0.In(zone)}
	bob := &store.User{ID: "u-bob", Email: "Bob@Example.com", Role: store.RoleAdmin, CreatedAt: t0.Add(1)}
	zed := &store.User{ID: "u-zed", Email: "Zed@example.com", Role: store.RoleManager, CreatedAt: t0.Add(2), DisabledAt: &disabled}
	update(t, s, func(tx store.Tx) error {
		for _, u := range []*store.User{zed, alice, bob} {
			if err := tx.InsertUser(u); err != nil {
				return err
			}
		}
		got, err := tx.User("u-bob")
		if err != nil {
			return fmt.Errorf("tx.User after InsertUser in the same Update: %w", err)
		}
		checkSame(t, "tx.User(u-bob)", *got, *bob)
		return nil
	})

	for _, want := range []*store.User{alice, bob, zed} {
		got, err := s.User(ctx, want.ID)
		if err != nil {
			t.Fatalf("User(%s): %v", want.ID, err)
		}
		checkSame(t, "User("+want.ID+")", *got, *want)
	}
	// Email lookups ignore ASCII case, in and out of transactions.
	for _, tc := range []struct{ email, id string }{
		{"alice@example.com", "u-alice"},
		{"ALICE@EXAMPLE.COM", "u-alice"},
		{"bob@example.com", "u-bob"},
		{"Bob@Example.com", "u-bob"},
		{"zed@EXAMPLE.com", "u-zed"},
	} {
		got, err := s.UserByEmail(ctx, tc.email)
		if err != nil || got.ID != tc.id {
			t.Errorf("UserByEmail(%q) = %+v, %v; want %s", tc.email, got, err, tc.id)
		}
		update(t, s, func(tx store.Tx) error {
			got, err := tx.UserByEmail(tc.email)
			if err != nil || got.ID != tc.id {
				t.Errorf("tx.UserByEmail(%q) = %+v, %v; want %s", tc.email, got, err, tc.id)
			}
			return nil
		})
	}
	_, err := s.UserByEmail(ctx, "carol@example.com")
	mustNotFound(t, "UserByEmail(unknown)", err)
	_, err = s.User(ctx, "nobody")
	mustNotFound(t, "User(nobody)", err)
	update(t, s, func(tx store.Tx) error {
		_, err := tx.User("nobody")
		mustNotFound(t, "tx.User(nobody)", err)
		_, err = tx.UserByEmail("carol@example.com")
		mustNotFound(t, "tx.UserByEmail(unknown)", err)
		return nil
	})

	// Users lists by email, ignoring case.
	us, err := s.Users(ctx)
	if err != nil {
		t.Fatalf("Users: %v", err)
	}
	var ids []string
	for _, u := range us {
		ids = append(ids, u.ID)
	}
	if want := []string{"u-alice", "u-bob", "u-zed"}; !slices.Equal(ids, want) {
		t.Errorf("Users lists %q, want %q (by email, ignoring case)", ids, want)
	}

	// An email is taken whatever its case; so is an id.
	for _, tc := range []struct {
		name string
		u    store.User
	}{
		{"taken email", store.User{ID: "u-other", Email: "alice@example.com", Role: store.RoleManager, CreatedAt: t0}},
		{"taken email in another case", store.User{ID: "u-other", Email: "ALICE@example.COM", Role: store.RoleManager, CreatedAt: t0}},
		{"taken id", store.User{ID: "u-alice", Email: "other@example.com", Role: store.RoleManager, CreatedAt: t0}},
	} {
		mustConflict(t, "InsertUser with a "+tc.name, s.Update(ctx, func(tx store.Tx) error { return tx.InsertUser(&tc.u) }))
	}
	_, err = s.User(ctx, "u-other")
	mustNotFound(t, "User(u-other) after refused inserts", err)

	// UpdateUser writes role, password and disabled time, and nothing else.
	upd := *alice
	upd.Role, upd.PasswordHash, upd.DisabledAt = store.RoleAdmin, "$argon2id$new", &disabled
	upd.Email, upd.CreatedAt = "changed@example.com", t0.Add(time.Hour) // not columns UpdateUser writes
	update(t, s, func(tx store.Tx) error { return tx.UpdateUser(&upd) })
	want := *alice
	want.Role, want.PasswordHash, want.DisabledAt = upd.Role, upd.PasswordHash, upd.DisabledAt
	if got, err := s.User(ctx, alice.ID); err != nil {
		t.Fatalf("User after UpdateUser: %v", err)
	} else {
		checkSame(t, "User after UpdateUser", *got, want)
	}
	upd.DisabledAt = nil
	update(t, s, func(tx store.Tx) error { return tx.UpdateUser(&upd) })
	if got, err := s.User(ctx, alice.ID); err != nil || got.DisabledAt != nil {
		t.Errorf("User after re-enabling = %+v, %v; want DisabledAt nil", got, err)
	}
	if got, err := s.User(ctx, bob.ID); err != nil {
		t.Fatalf("User(u-bob): %v", err)
	} else {
		checkSame(t, "another user after UpdateUser", *got, *bob)
	}
	ghost := store.User{ID: "ghost", Email: "ghost@example.com", Role: store.RoleManager, CreatedAt: t0}
	mustNotFound(t, "UpdateUser(unknown)", s.Update(ctx, func(tx store.Tx) error { return tx.UpdateUser(&ghost) }))
}

func insertUsers(t *testing.T, s store.Store, ids ...string) {
	t.Helper()
	update(t, s, func(tx store.Tx) error {
		for i, id := range ids {
			if err := tx.InsertUser(&store.User{ID: id, Email: id + "@example.com", Role: store.RoleManager,
				CreatedAt: t0.Add(time.Duration(i))}); err != nil {
				return err
			}
		}
		return nil
	})
}

func testSetupTokens(t *testing.T, s store.Store) {
	ctx := t.Context()
	insertUsers(t, s, "u1", "u2")
	exp := t0.Add(time.Hour).In(zone)
	toks := []*store.SetupToken{
		{Hash: []byte("setup-1"), UserID: "u1", ExpiresAt: exp},
		{Hash: []byte("setup-2"), UserID: "u1", ExpiresAt: exp},
		{Hash: []byte("setup-3"), UserID: "u2", ExpiresAt: exp},
	}
	update(t, s, func(tx store.Tx) error {
		for _, k := range toks {
			if err := tx.InsertSetupToken(k); err != nil {
				return err
			}
		}
		return nil
	})
	mustConflict(t, "InsertSetupToken with a taken hash", s.Update(ctx, func(tx store.Tx) error {
		return tx.InsertSetupToken(&store.SetupToken{Hash: []byte("setup-1"), UserID: "u2", ExpiresAt: exp})
	}))

	use := func(hash string, at time.Time) (*store.SetupToken, error) {
		var got *store.SetupToken
		err := s.Update(ctx, func(tx store.Tx) error {
			var err error
			got, err = tx.UseSetupToken([]byte(hash), at)
			return err
		})
		return got, err
	}
	// A token is good strictly before its expiry, once.
	at := exp.Add(-1)
	got, err := use("setup-1", at)
	if err != nil {
		t.Fatalf("UseSetupToken(setup-1) a nanosecond before its expiry: %v", err)
	}
	want := *toks[0]
	want.UsedAt = &at
	checkSame(t, "UseSetupToken(setup-1)", *got, want)
	_, err = use("setup-1", at)
	mustNotFound(t, "UseSetupToken(setup-1) a second time", err)
	_, err = use("setup-2", exp)
	mustNotFound(t, "UseSetupToken(setup-2) at its expiry", err)
	_, err = use("unknown", t0)
	mustNotFound(t, "UseSetupToken(unknown)", err)

	// A failed Update leaves the token unused.
	if err := s.Update(ctx, func(tx store.Tx) error {
		if _, err := tx.UseSetupToken([]byte("setup-3"), t0); err != nil {
			return err
		}
		return errBoom
	}); !errors.Is(err, errBoom) {
		t.Fatalf("Update = %v, want %v", err, errBoom)
	}
	if got, err := use("setup-3", t0.Add(time.Minute)); err != nil {
		t.Errorf("UseSetupToken(setup-3) after a failed Update used it: %v", err)
	} else if got.UserID != "u2" || got.UsedAt == nil || !got.UsedAt.Equal(t0.Add(time.Minute)) {
		t.Errorf("UseSetupToken(setup-3) = %+v", got)
	}
}

func testSessions(t *testing.T, s store.Store) {
	ctx := t.Context()
	insertUsers(t, s, "u1", "u2")
	sess := []*store.Session{
		{Hash: []byte("sess-1"), UserID: "u1", CSRF: "csrf-1", CreatedAt: t0.In(zone), ExpiresAt: t0.Add(12*time.Hour + 1)},
		{Hash: []byte("sess-2"), UserID: "u1", CSRF: "csrf-2", CreatedAt: t0.Add(1), ExpiresAt: t0.Add(time.Hour)},
		{Hash: []byte("sess-3"), UserID: "u2", CSRF: "csrf-3", CreatedAt: t0.Add(2), ExpiresAt: t0.Add(time.Hour)},
	}
	update(t, s, func(tx store.Tx) error {
		for _, x := range sess {
			if err := tx.InsertSession(x); err != nil {
				return err
			}
		}
		return nil
	})
	for _, want := range sess {
		got, err := s.SessionByHash(ctx, want.Hash)
		if err != nil {
			t.Fatalf("SessionByHash(%s): %v", want.Hash, err)
		}
		checkSame(t, fmt.Sprintf("SessionByHash(%s)", want.Hash), *got, *want)
	}
	_, err := s.SessionByHash(ctx, []byte("unknown"))
	mustNotFound(t, "SessionByHash(unknown)", err)
	mustConflict(t, "InsertSession with a taken hash", s.Update(ctx, func(tx store.Tx) error {
		return tx.InsertSession(&store.Session{Hash: []byte("sess-1"), UserID: "u2", CSRF: "x", CreatedAt: t0, ExpiresAt: t0})
	}))

	update(t, s, func(tx store.Tx) error { return tx.DeleteSession([]byte("sess-2")) })
	_, err = s.SessionByHash(ctx, []byte("sess-2"))
	mustNotFound(t, "SessionByHash after DeleteSession", err)
	update(t, s, func(tx store.Tx) error { return tx.DeleteSession([]byte("sess-2")) }) // gone already: no error

	update(t, s, func(tx store.Tx) error { return tx.InsertSession(sess[1]) })
	update(t, s, func(tx store.Tx) error { return tx.DeleteUserSessions("u1") })
	for _, h := range []string{"sess-1", "sess-2"} {
		_, err = s.SessionByHash(ctx, []byte(h))
		mustNotFound(t, "SessionByHash("+h+") after DeleteUserSessions(u1)", err)
	}
	if got, err := s.SessionByHash(ctx, []byte("sess-3")); err != nil || got.UserID != "u2" {
		t.Errorf("DeleteUserSessions(u1) touched u2's session: %+v, %v", got, err)
	}
	update(t, s, func(tx store.Tx) error { return tx.DeleteUserSessions("nobody") })
}

func testApprovals(t *testing.T, s store.Store) {
	ctx := t.Context()
	insertAgents(t, s, "a", "b")
	var calls []*store.Call
	var aps []*store.Approval
	for i, x := range []struct {
		id, agent string
		expires   time.Time
	}{
		{"ap-1", "a", t0.Add(-time.Minute)},
		{"ap-2", "a", t0.Add(-1)},
		{"ap-3", "b", t0},
		{"ap-4", "b", t0.Add(time.Minute).In(zone)},
	} {
		c := newCall(x.id, x.agent, x.id, t0.Add(time.Duration(i)*time.Second))
		c.Status = store.CallPending
		calls = append(calls, c)
		aps = append(aps, &store.Approval{CallID: x.id, AgentID: x.agent, Status: store.ApprovalPending,
			Approvers: []string{"alice@example.com", "Bob@example.com"}, RequestedAt: t0.Add(time.Duration(i) * time.Second).In(zone),
			ExpiresAt: x.expires})
	}
	update(t, s, func(tx store.Tx) error {
		for i := range calls {
			if err := tx.InsertCall(calls[i]); err != nil {
				return err
			}
			if err := tx.InsertApproval(aps[i]); err != nil {
				return err
			}
		}
		got, err := tx.Approval("ap-1")
		if err != nil {
			return fmt.Errorf("tx.Approval after InsertApproval in the same Update: %w", err)
		}
		checkSame(t, "tx.Approval(ap-1)", *got, *aps[0])
		return nil
	})
	for _, want := range aps {
		got, err := s.Approval(ctx, want.CallID)
		if err != nil {
			t.Fatalf("Approval(%s): %v", want.CallID, err)
		}
		checkSame(t, "Approval("+want.CallID+")", *got, *want)
	}
	_, err := s.Approval(ctx, "nope")
	mustNotFound(t, "Approval(nope)", err)
	update(t, s, func(tx store.Tx) error {
		_, err := tx.Approval("nope")
		mustNotFound(t, "tx.Approval(nope)", err)
		return nil
	})
	mustConflict(t, "InsertApproval for a call that has one", s.Update(ctx, func(tx store.Tx) error {
		dup := *aps[0]
		dup.Status = store.ApprovalGranted
		return tx.InsertApproval(&dup)
	}))

	// Decide one: UpdateApproval writes status, decider, time and reason.
	decided := t0.Add(30*time.Second + 9)
	grant := *aps[2]
	grant.Status, grant.DecidedBy, grant.DecidedAt, grant.Reason = store.ApprovalGranted, "user:alice@example.com", &decided, "looks right"
	update(t, s, func(tx store.Tx) error { return tx.UpdateApproval(&grant) })
	if got, err := s.Approval(ctx, "ap-3"); err != nil {
		t.Fatalf("Approval(ap-3): %v", err)
	} else {
		checkSame(t, "Approval after UpdateApproval", *got, grant)
	}
	ghost := store.Approval{CallID: "ghost", AgentID: "a", Status: store.ApprovalDenied, RequestedAt: t0, ExpiresAt: t0}
	mustNotFound(t, "UpdateApproval(unknown)", s.Update(ctx, func(tx store.Tx) error { return tx.UpdateApproval(&ghost) }))

	// Approvals lists by status ("" for all), newest request first.
	for _, tc := range []struct {
		status string
		limit  int
		want   []string
	}{
		{"", 10, []string{"ap-4", "ap-3", "ap-2", "ap-1"}},
		{"", 2, []string{"ap-4", "ap-3"}},
		{store.ApprovalPending, 10, []string{"ap-4", "ap-2", "ap-1"}},
		{store.ApprovalPending, 1, []string{"ap-4"}},
		{store.ApprovalGranted, 10, []string{"ap-3"}},
		{store.ApprovalDenied, 10, nil},
	} {
		got, err := s.Approvals(ctx, tc.status, tc.limit)
		if err != nil {
			t.Fatalf("Approvals(%q, %d): %v", tc.status, tc.limit, err)
		}
		if ids := approvalIDs(got); !slices.Equal(ids, tc.want) {
			t.Errorf("Approvals(%q, %d) = %q, want %q", tc.status, tc.limit, ids, tc.want)
		}
	}
	if got, err := s.Approvals(ctx, store.ApprovalGranted, 1); err == nil && len(got) == 1 {
		checkSame(t, "Approvals(granted)[0]", got[0], grant)
	}

	// OverdueApprovals: pending, expiry strictly before t.
	for _, tc := range []struct {
		at   time.Time
		want []string
	}{
		{t0.Add(-time.Minute), nil},
		{t0.Add(-time.Minute + 1), []string{"ap-1"}},
		{t0, []string{"ap-1", "ap-2"}},
		{t0.Add(time.Hour), []string{"ap-1", "ap-2", "ap-4"}}, // ap-3 is decided
	} {
		got, err := s.OverdueApprovals(ctx, tc.at.In(zone), 10)
		if err != nil {
			t.Fatalf("OverdueApprovals(%v): %v", tc.at, err)
		}
		ids := approvalIDs(got)
		slices.Sort(ids)
		if !slices.Equal(ids, tc.want) {
			t.Errorf("OverdueApprovals(%v) = %q, want %q", tc.at, ids, tc.want)
		}
	}
	if got, err := s.OverdueApprovals(ctx, t0.Add(time.Hour), 2); err != nil || len(got) != 2 {
		t.Errorf("OverdueApprovals(limit 2) = %d approvals, %v; want 2", len(got), err)
	}
}

func approvalIDs(as []store.Approval) []string {
	var ids []string
	for _, a := range as {
		ids = append(ids, a.CallID)
	}
	return ids
}

// testOutbox asks DueOutbox for an item again only after FinishOutbox
// rescheduled it, or at a time OutboxLease past the last time it was
// handed out: a backend shared by replicas may lease the items it returns,
// so that only one replica delivers each.
func testOutbox(t *testing.T, s store.Store) {
	ctx := t.Context()
	if got, err := s.DueOutbox(ctx, t0.Add(100*time.Hour), 10); err != nil || len(got) != 0 {
		t.Fatalf("DueOutbox on an empty store = %v, %v", got, err)
	}
	update(t, s, func(tx store.Tx) error {
		if err := tx.Enqueue("webhook", []byte(`{"n":1}`), t0.In(zone)); err != nil {
			return err
		}
		return tx.Enqueue("webhook", []byte(`{"n":2}`), t0.Add(time.Second))
	})
	update(t, s, func(tx store.Tx) error { return tx.Enqueue("other", []byte(`{"n":3}`), t0.Add(2*time.Second)) })
	if err := s.Update(ctx, func(tx store.Tx) error {
		if err := tx.Enqueue("webhook", []byte(`{"n":"rolled back"}`), t0); err != nil {
			return err
		}
		return errBoom
	}); !errors.Is(err, errBoom) {
		t.Fatalf("Update = %v, want %v", err, errBoom)
	}

	// Due at t: next attempt at or before t, oldest first.
	got, err := s.DueOutbox(ctx, t0.Add(time.Second).In(zone), 10)
	if err != nil {
		t.Fatalf("DueOutbox: %v", err)
	}
	if len(got) != 2 {
		t.Fatalf("DueOutbox(t0+1s) returned %d items, want 2: %+v", len(got), got)
	}
	for i, want := range []store.OutboxItem{
		{Kind: "webhook", Payload: []byte(`{"n":1}`), CreatedAt: t0, NextAt: t0},
		{Kind: "webhook", Payload: []byte(`{"n":2}`), CreatedAt: t0.Add(time.Second), NextAt: t0.Add(time.Second)},
	} {
		want.ID = got[i].ID
		checkSame(t, fmt.Sprintf("DueOutbox(t0+1s)[%d]", i), got[i], want)
	}
	if got[0].ID >= got[1].ID {
		t.Errorf("DueOutbox returned ids %d, %d; want ascending", got[0].ID, got[1].ID)
	}
	first, second := got[0], got[1]

	// Done, and retried later with the error kept.
	done := t0.Add(3 * time.Second)
	next := t0.Add(time.Hour + 1)
	update(t, s, func(tx store.Tx) error {
		if err := tx.FinishOutbox(first.ID, done, "", time.Time{}); err != nil {
			return err
		}
		return tx.FinishOutbox(second.ID, done, "webhook answered HTTP 503", next)
	})
	mustNotFound(t, "FinishOutbox(unknown)", s.Update(ctx, func(tx store.Tx) error {
		return tx.FinishOutbox(first.ID+second.ID+1000, done, "", done)
	}))
	got, err = s.DueOutbox(ctx, next.Add(-1), 10)
	if err != nil {
		t.Fatalf("DueOutbox: %v", err)
	}
	if len(got) != 1 || string(got[0].Payload) != `{"n":3}` || got[0].Kind != "other" || got[0].Attempts != 0 {
		t.Fatalf("DueOutbox(before the retry) = %+v; want only the third item", got)
	}
	third := got[0]
	later := next.Add(store.OutboxLease)
	got, err = s.DueOutbox(ctx, later, 10)
	if err != nil {
		t.Fatalf("DueOutbox: %v", err)
	}
	if len(got) != 2 || got[0].ID != second.ID || got[1].ID != third.ID {
		t.Fatalf("DueOutbox(after the retry time) = %+v; want the second and third items", got)
	}
	want := second
	want.Attempts, want.NextAt, want.LastError = 1, next, "webhook answered HTTP 503"
	checkSame(t, "a rescheduled item", got[0], want)

	// Done after a retry; the error is cleared.
	update(t, s, func(tx store.Tx) error { return tx.FinishOutbox(second.ID, later, "", time.Time{}) })
	update(t, s, func(tx store.Tx) error { return tx.FinishOutbox(third.ID, later, "", time.Time{}) })
	if got, err := s.DueOutbox(ctx, later.Add(100*time.Hour), 10); err != nil || len(got) != 0 {
		t.Errorf("DueOutbox after every item is done = %+v, %v; want none", got, err)
	}

	// The limit holds.
	update(t, s, func(tx store.Tx) error {
		for i := range 5 {
			if err := tx.Enqueue("webhook", fmt.Appendf(nil, `{"batch":%d}`, i), later); err != nil {
				return err
			}
		}
		return nil
	})
	if got, err := s.DueOutbox(ctx, later, 3); err != nil || len(got) != 3 || string(got[0].Payload) != `{"batch":0}` {
		t.Errorf("DueOutbox(limit 3) = %+v, %v; want the three oldest", got, err)
	}
}

func testAgentOpenCalls(t *testing.T, s store.Store) {
	insertAgents(t, s, "a", "b")
	var want []*store.Call
	update(t, s, func(tx store.Tx) error {
		for i, st := range []string{store.CallCompleted, store.CallApproved, store.CallPending, store.CallDenied,
			store.CallRevoked, store.CallApproved, store.CallExpired, store.CallFailed, store.CallRefused} {
			// Inserted newest first; listed oldest first.
			c := newCall(fmt.Sprint("a-", i), "a", fmt.Sprint("k-", i), t0.Add(-time.Duration(i)*time.Second))
			c.Status = st
			if st == store.CallApproved || st == store.CallPending {
				want = append([]*store.Call{c}, want...)
			}
			if err := tx.InsertCall(c); err != nil {
				return err
			}
		}
		return tx.InsertCall(newCall("b-0", "b", "k", t0))
	})
	update(t, s, func(tx store.Tx) error {
		got, err := tx.AgentOpenCalls("a")
		if err != nil {
			return err
		}
		if len(got) != len(want) {
			t.Fatalf("AgentOpenCalls(a) = %q, want %d calls", callIDs(got), len(want))
		}
		for i := range got {
			checkSame(t, fmt.Sprintf("AgentOpenCalls(a)[%d]", i), got[i], *want[i])
		}
		if got, err := tx.AgentOpenCalls("nobody"); err != nil || len(got) != 0 {
			t.Errorf("AgentOpenCalls(nobody) = %q, %v", callIDs(got), err)
		}
		return nil
	})
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

func testCallCounts(t *testing.T, s store.Store) {
	insertAgents(t, s, "a", "b")
	count := func(agent, day string) {
		update(t, s, func(tx store.Tx) error { return tx.CountCall(agent, day) })
	}
	check := func(what string, want map[[2]string]int) {
		t.Helper()
		update(t, s, func(tx store.Tx) error {
			for k, n := range want {
				got, err := tx.CallsOn(k[0], k[1])
				if err != nil {
					return fmt.Errorf("CallsOn(%s, %s): %w", k[0], k[1], err)
				}
				if got != n {
					t.Errorf("%s: CallsOn(%s, %s) = %d, want %d", what, k[0], k[1], got, n)
				}
			}
			return nil
		})
	}
	check("before any call", map[[2]string]int{{"a", "2025-06-01"}: 0, {"nobody", "2025-06-01"}: 0})
	for range 3 {
		count("a", "2025-06-01")
	}
	count("a", "2025-06-02")
	count("b", "2025-06-01")
	// Counted and read in one Update, and several times in one Update.
	update(t, s, func(tx store.Tx) error {
		for range 2 {
			if err := tx.CountCall("b", "2025-06-01"); err != nil {
				return err
			}
		}
		if n, err := tx.CallsOn("b", "2025-06-01"); err != nil || n != 3 {
			t.Errorf("CallsOn(b) inside the Update that counted = %d, %v; want 3", n, err)
		}
		return nil
	})
	// A failed Update's counts are undone.
	if err := s.Update(t.Context(), func(tx store.Tx) error {
		if err := tx.CountCall("a", "2025-06-01"); err != nil {
			return err
		}
		return errBoom
	}); !errors.Is(err, errBoom) {
		t.Fatalf("Update = %v, want %v", err, errBoom)
	}
	check("after counting", map[[2]string]int{{"a", "2025-06-01"}: 3, {"a", "2025-06-02"}: 1, {"b", "2025-06-01"}: 3,
		{"b", "2025-06-02"}: 0})

	// Concurrent counts are not lost.
	const n = 40
	errs := make(chan error, n)
	for range n {
		go func() {
			errs <- s.Update(t.Context(), func(tx store.Tx) error { return tx.CountCall("a", "2025-06-03") })
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Fatalf("CountCall: %v", err)
		}
	}
	check("after concurrent counts", map[[2]string]int{{"a", "2025-06-03"}: n})
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
	term := t0.Add(time.Hour)
	update(t, s, func(tx store.Tx) error {
		if err := tx.SetAgentStatus("a", store.AgentTerminated, term); err != nil {
			return err
		}
		_, err := tx.RevokeAgentTokens("a", term)
		return err
	})
	k, ag, err := s.AgentByToken(ctx, live.Hash)
	if err != nil {
		t.Fatalf("AgentByToken after termination: %v", err)
	}
	if k.RevokedAt == nil || !k.RevokedAt.Equal(term) || ag.Status != store.AgentTerminated || ag.TerminatedAt == nil {
		t.Errorf("AgentByToken after termination = %+v, %+v; want the token revoked and the agent terminated", k, ag)
	}
}

func testRevokeAgentCredentials(t *testing.T, s store.Store) {
	ctx := t.Context()
	insertAgents(t, s, "a", "b")
	statuses := []string{store.CallApproved, store.CallPending, store.CallApproved, store.CallCompleted}
	update(t, s, func(tx store.Tx) error {
		for i, st := range statuses {
			c := newCall(fmt.Sprint("a-", i), "a", fmt.Sprint("k-", i), t0)
			c.Status = st
			if err := tx.InsertCall(c); err != nil {
				return err
			}
		}
		return tx.InsertCall(newCall("b-0", "b", "k", t0)) // approved, of another agent
	})
	at := t0.Add(time.Minute).In(zone)
	var n int
	update(t, s, func(tx store.Tx) (err error) {
		n, err = tx.RevokeAgentCredentials("a", at)
		return err
	})
	if n != 2 {
		t.Errorf("RevokeAgentCredentials(a) = %d, want 2 (its approved calls)", n)
	}
	for i, want := range []string{store.CallRevoked, store.CallPending, store.CallRevoked, store.CallCompleted} {
		c, err := s.Call(ctx, fmt.Sprint("a-", i))
		if err != nil {
			t.Fatal(err)
		}
		if c.Status != want {
			t.Errorf("call a-%d is %s, want %s", i, c.Status, want)
		}
		if want == store.CallRevoked && (c.CompletedAt == nil || !c.CompletedAt.Equal(at)) {
			t.Errorf("call a-%d completed at %s, want %s", i, show(c.CompletedAt), show(&at))
		}
	}
	if c, _ := s.Call(ctx, "b-0"); c.Status != store.CallApproved {
		t.Errorf("another agent's call is %s", c.Status)
	}
}
