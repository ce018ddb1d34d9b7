package storetest

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"sync"
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
	insertUsers(t, s, "u1", "u2", "u3")
	exp := t0.Add(time.Hour).In(zone)
	toks := []*store.SetupToken{
		{Hash: []byte("setup-0"), UserID: "u1", ExpiresAt: exp},
		{Hash: []byte("setup-1"), UserID: "u1", ExpiresAt: exp}, // replaces setup-0: one link per person
		{Hash: []byte("setup-2"), UserID: "u3", ExpiresAt: exp},
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
	want := *toks[1]
	want.UsedAt = &at
	checkSame(t, "UseSetupToken(setup-1)", *got, want)
	_, err = use("setup-0", at)
	mustNotFound(t, "UseSetupToken(setup-0), replaced by setup-1", err)
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
		t.Errorf("UseSetupToken(setup-3) after a failed Update used it (or the refused insert above removed it): %v", err)
	} else if got.UserID != "u2" || got.UsedAt == nil || !got.UsedAt.Equal(t0.Add(time.Minute)) {
		t.Errorf("UseSetupToken(setup-3) = %+v", got)
	}

	// DeleteSetupTokens removes a person's link, and only theirs.
	update(t, s, func(tx store.Tx) error {
		if err := tx.InsertSetupToken(&store.SetupToken{Hash: []byte("setup-4"), UserID: "u3", ExpiresAt: exp}); err != nil {
			return err
		}
		if err := tx.InsertSetupToken(&store.SetupToken{Hash: []byte("setup-5"), UserID: "u1", ExpiresAt: exp}); err != nil {
			return err
		}
		return tx.DeleteSetupTokens("u3")
	})
	_, err = use("setup-4", t0)
	mustNotFound(t, "UseSetupToken(setup-4) after DeleteSetupTokens(u3)", err)
	if _, err := use("setup-5", t0); err != nil {
		t.Errorf("DeleteSetupTokens(u3) removed u1's link: %v", err)
	}
}

// testUserTokens: a person's tokens are listed, newest first, and revoked
// only in their owner's name.
func testUserTokens(t *testing.T, s store.Store) {
	ctx := t.Context()
	insertUsers(t, s, "u1", "u2")
	insertAgents(t, s, "a")
	toks := []*store.Token{
		{ID: "t1", Hash: []byte("hash-t1"), Kind: store.TokenUser, UserID: "u1", IssuedBy: "user:u1@example.com", Label: "laptop", CreatedAt: t0.In(zone)},
		{ID: "t2", Hash: []byte("hash-t2"), Kind: store.TokenUser, UserID: "u1", IssuedBy: "user:u1@example.com", Label: "ci", CreatedAt: t0.Add(time.Second)},
		{ID: "t3", Hash: []byte("hash-t3"), Kind: store.TokenUser, UserID: "u2", CreatedAt: t0.Add(2 * time.Second)},
		{ID: "ta", Hash: []byte("hash-ta"), Kind: store.TokenAgent, AgentID: "a", CreatedAt: t0},
	}
	update(t, s, func(tx store.Tx) error {
		for _, k := range toks {
			if err := tx.InsertToken(k); err != nil {
				return err
			}
		}
		return nil
	})
	got, err := s.UserTokens(ctx, "u1")
	if err != nil || len(got) != 2 || got[0].ID != "t2" || got[1].ID != "t1" {
		t.Fatalf("UserTokens(u1) = %+v, %v; want t2, t1", got, err)
	}
	checkSame(t, "UserTokens(u1)[1]", got[1], *toks[0])
	r1 := t0.Add(time.Hour)
	for _, id := range []string{"t3", "ta", "nope"} {
		mustNotFound(t, "RevokeUserToken(u1, "+id+")", s.Update(ctx, func(tx store.Tx) error { return tx.RevokeUserToken("u1", id, r1) }))
	}
	update(t, s, func(tx store.Tx) error { return tx.RevokeUserToken("u1", "t1", r1) })
	var n int
	update(t, s, func(tx store.Tx) error {
		var err error
		n, err = tx.RevokeUserTokens("u1", r1.Add(time.Minute))
		return err
	})
	if n != 1 {
		t.Errorf("RevokeUserTokens(u1) = %d, want 1 (t2; t1 was revoked already)", n)
	}
	got, _ = s.UserTokens(ctx, "u1")
	for _, k := range got {
		if k.RevokedAt == nil {
			t.Errorf("token %s of u1 is live", k.ID)
		}
		if k.ID == "t1" && !k.RevokedAt.Equal(r1) {
			t.Errorf("t1 revoked at %v, want %v (the first revocation)", k.RevokedAt, r1)
		}
	}
	for _, h := range []string{"hash-t3", "hash-ta"} {
		if k, err := s.TokenByHash(ctx, []byte(h)); err != nil || k.RevokedAt != nil {
			t.Errorf("revoking u1's tokens touched %s: %+v, %v", h, k, err)
		}
	}
}

func testSessions(t *testing.T, s store.Store) {
	ctx := t.Context()
	insertUsers(t, s, "u1", "u2")
	sess := []*store.Session{
		{Hash: []byte("sess-1"), UserID: "u1", CSRF: "csrf-1", CreatedAt: t0.In(zone), ExpiresAt: t0.Add(12*time.Hour + 1)},
		{Hash: []byte("sess-2"), UserID: "u1", CSRF: "csrf-2", CreatedAt: t0.Add(1), ExpiresAt: t0.Add(time.Hour)},
		{Hash: []byte("sess-3"), UserID: "u2", CSRF: "csrf-3", CreatedAt: t0.Add(2), ExpiresAt: t0.Add(time.Hour),
			IdPIssuer: "https://idp.example.com/", IdPSubject: "00u1 with spaces and ünïcode"},
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

// testEndLocalPasswords: turning local passwords off ends the sessions
// not started through the identity provider and revokes every person's
// API token, and nothing else (agents' and operators' tokens, sessions
// from the provider, other tables).
func testEndLocalPasswords(t *testing.T, s store.Store) {
	ctx := t.Context()
	insertUsers(t, s, "u1", "u2")
	insertAgents(t, s, "a")
	sess := []*store.Session{
		{Hash: []byte("pw-1"), UserID: "u1", CreatedAt: t0, ExpiresAt: t0.Add(time.Hour)},
		{Hash: []byte("pw-2"), UserID: "u2", CreatedAt: t0, ExpiresAt: t0.Add(time.Hour)},
		{Hash: []byte("sso-1"), UserID: "u1", CreatedAt: t0, ExpiresAt: t0.Add(time.Hour), IdPIssuer: "https://idp/", IdPSubject: "s1"},
	}
	toks := []*store.Token{
		{ID: "user-1", Hash: []byte("hash-user-1"), Kind: store.TokenUser, UserID: "u1", IssuedBy: "user:u1", CreatedAt: t0},
		{ID: "user-2", Hash: []byte("hash-user-2"), Kind: store.TokenUser, UserID: "u2", IssuedBy: "user:u2", CreatedAt: t0},
		{ID: "agent", Hash: []byte("hash-agent"), Kind: store.TokenAgent, AgentID: "a", IssuedBy: "admin:root", CreatedAt: t0},
		{ID: "admin", Hash: []byte("hash-admin"), Kind: store.TokenAdmin, CreatedAt: t0},
	}
	update(t, s, func(tx store.Tx) error {
		for _, x := range sess {
			if err := tx.InsertSession(x); err != nil {
				return err
			}
		}
		for _, k := range toks {
			if err := tx.InsertToken(k); err != nil {
				return err
			}
		}
		return tx.RevokeUserToken("u2", "user-2", t0) // revoked already: not counted again
	})
	var ns, nt int
	at := t0.Add(time.Minute)
	update(t, s, func(tx store.Tx) (err error) { ns, nt, err = tx.EndLocalPasswords(at); return err })
	if ns != 2 || nt != 1 {
		t.Errorf("EndLocalPasswords ended %d sessions and %d tokens, want 2 and 1", ns, nt)
	}
	for _, h := range []string{"pw-1", "pw-2"} {
		_, err := s.SessionByHash(ctx, []byte(h))
		mustNotFound(t, "SessionByHash("+h+") after EndLocalPasswords", err)
	}
	if got, err := s.SessionByHash(ctx, []byte("sso-1")); err != nil || got.IdPSubject != "s1" {
		t.Errorf("EndLocalPasswords ended the identity provider's session: %+v, %v", got, err)
	}
	for _, k := range toks {
		got, err := s.TokenByHash(ctx, k.Hash)
		if err != nil {
			t.Fatalf("TokenByHash(%s): %v", k.ID, err)
		}
		switch revoked := got.RevokedAt != nil; {
		case k.Kind == store.TokenUser && !revoked:
			t.Errorf("person's token %s not revoked", k.ID)
		case k.Kind != store.TokenUser && revoked:
			t.Errorf("%s token %s revoked", k.Kind, k.ID)
		case k.ID == "user-2" && !got.RevokedAt.Equal(t0):
			t.Errorf("token revoked before keeps its time: %v, want %v", got.RevokedAt, t0)
		}
	}
	update(t, s, func(tx store.Tx) (err error) { ns, nt, err = tx.EndLocalPasswords(at); return err })
	if ns != 0 || nt != 0 {
		t.Errorf("EndLocalPasswords again ended %d sessions and %d tokens, want none", ns, nt)
	}
}

// testGroups: groups are added, replaced (members sorted, without
// repeats), listed by name in and out of a transaction, deleted; a name
// is one group's only.
func testGroups(t *testing.T, s store.Store) {
	ctx := t.Context()
	if gs, err := s.Groups(ctx); err != nil || len(gs) != 0 {
		t.Fatalf("Groups of a new store: %v, %v", gs, err)
	}
	admins := &store.Group{ID: "g2", Name: "arx-admins", ExternalID: "okta-00g1", Members: []string{"u3", "u1", "u3"}, CreatedAt: t0.In(zone)}
	leads := &store.Group{ID: "g1", Name: "finance-leads", CreatedAt: t0.Add(time.Second)}
	update(t, s, func(tx store.Tx) error {
		if err := tx.PutGroup(admins); err != nil {
			return err
		}
		return tx.PutGroup(leads)
	})
	want := []store.Group{
		{ID: "g2", Name: "arx-admins", ExternalID: "okta-00g1", Members: []string{"u1", "u3"}, CreatedAt: t0},
		{ID: "g1", Name: "finance-leads", Members: []string{}, CreatedAt: t0.Add(time.Second)},
	}
	check := func(what string, got []store.Group, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if len(got) != len(want) {
			t.Fatalf("%s: %d groups, want %d: %+v", what, len(got), len(want), got)
		}
		for i := range want {
			if got[i].Members == nil {
				got[i].Members = []string{}
			}
			checkSame(t, fmt.Sprintf("%s[%d]", what, i), got[i], want[i])
		}
	}
	gs, err := s.Groups(ctx)
	check("Groups", gs, err)
	update(t, s, func(tx store.Tx) error {
		gs, err := tx.Groups()
		check("Tx.Groups", gs, err)
		return nil
	})

	renamed := *leads
	renamed.Name, renamed.Members = "finance-approvers", []string{"u2"}
	update(t, s, func(tx store.Tx) error { return tx.PutGroup(&renamed) })
	want[1] = store.Group{ID: "g1", Name: "finance-approvers", Members: []string{"u2"}, CreatedAt: t0.Add(time.Second)}
	gs, err = s.Groups(ctx)
	check("Groups after a replace", gs, err)

	mustConflict(t, "PutGroup with another group's name", s.Update(ctx, func(tx store.Tx) error {
		return tx.PutGroup(&store.Group{ID: "g3", Name: "arx-admins", CreatedAt: t0})
	}))
	update(t, s, func(tx store.Tx) error { return tx.DeleteGroup("g2") })
	mustNotFound(t, "DeleteGroup of a deleted group", s.Update(ctx, func(tx store.Tx) error { return tx.DeleteGroup("g2") }))
	want = want[1:]
	gs, err = s.Groups(ctx)
	check("Groups after a delete", gs, err)
}

// testFailures: failures are counted per key from a time on, in and out of
// a transaction; one can be taken back, old ones pruned; a failed Update's
// are undone; a check-then-add in one Update is atomic.
func testFailures(t *testing.T, s store.Store) {
	ctx := t.Context()
	key := func(s string) []byte { h := sha256.Sum256([]byte(s)); return h[:] }
	k1, k2, k3 := key("one"), key("two"), key("three")
	counts := func(what string, since time.Time, want map[string]int) {
		t.Helper()
		keys := map[string][]byte{"one": k1, "two": k2, "three": k3}
		for name, n := range want {
			got, err := s.Failures(ctx, keys[name], since)
			if err != nil || got != n {
				t.Errorf("%s: Failures(%s) = %d, %v; want %d", what, name, got, err, n)
			}
		}
		update(t, s, func(tx store.Tx) error {
			for name, n := range want {
				got, err := tx.Failures(keys[name], since)
				if err != nil || got != n {
					t.Errorf("%s: Tx.Failures(%s) = %d, %v; want %d", what, name, got, err, n)
				}
			}
			return nil
		})
	}
	counts("empty", t0.Add(-time.Hour), map[string]int{"one": 0, "two": 0})

	var ids []int64
	update(t, s, func(tx store.Tx) error {
		ids = nil
		for _, f := range []struct {
			key []byte
			at  time.Time
		}{{k1, t0.In(zone)}, {k1, t0.Add(time.Minute)}, {k2, t0}, {k1, t0.Add(2 * time.Minute)}} {
			id, err := tx.AddFailure(f.key, f.at)
			if err != nil {
				return err
			}
			ids = append(ids, id)
		}
		if n, err := tx.Failures(k1, t0); err != nil || n != 3 {
			t.Errorf("Failures inside the Update that added them = %d, %v; want 3", n, err)
		}
		return nil
	})
	if u := slices.Compact(slices.Sorted(slices.Values(ids))); len(u) != len(ids) {
		t.Fatalf("AddFailure ids are not distinct: %v", ids)
	}
	counts("added", t0.Add(-time.Hour), map[string]int{"one": 3, "two": 1, "three": 0})
	counts("since is inclusive, to the nanosecond", t0.Add(time.Minute), map[string]int{"one": 2, "two": 0})

	update(t, s, func(tx store.Tx) error {
		if err := tx.DeleteFailure(ids[1]); err != nil {
			return err
		}
		return tx.DeleteFailure(-1) // unknown: not an error
	})
	counts("one taken back", t0.Add(-time.Hour), map[string]int{"one": 2, "two": 1})

	update(t, s, func(tx store.Tx) error { return tx.PruneFailures(t0.Add(time.Second)) })
	counts("pruned", t0.Add(-time.Hour), map[string]int{"one": 1, "two": 0})

	if err := s.Update(ctx, func(tx store.Tx) error {
		if _, err := tx.AddFailure(k2, t0); err != nil {
			return err
		}
		return errBoom
	}); err == nil {
		t.Fatal("a failing Update succeeded")
	}
	counts("after a failed Update", t0.Add(-time.Hour), map[string]int{"two": 0})

	// A limit of 5 checked and taken in one Update holds under concurrency.
	const ops, limit = 30, 5
	var wg sync.WaitGroup
	for range ops {
		wg.Go(func() {
			if err := s.Update(ctx, func(tx store.Tx) error {
				n, err := tx.Failures(k3, t0)
				if err != nil || n >= limit {
					return err
				}
				_, err = tx.AddFailure(k3, t0.Add(time.Duration(n)))
				return err
			}); err != nil {
				t.Errorf("Update: %v", err)
			}
		})
	}
	wg.Wait()
	counts("a limit under concurrency", t0, map[string]int{"three": limit})
}

// testPasskeys: a person's passkeys are listed oldest first, their
// counter kept, a taken credential id refused, and removed only in their
// owner's name.
func testPasskeys(t *testing.T, s store.Store) {
	ctx := t.Context()
	insertUsers(t, s, "u1", "u2")
	used := t0.Add(time.Minute)
	keys := []*store.Passkey{
		{ID: []byte{1, 2, 3}, UserID: "u1", Name: "laptop", PublicKey: []byte("cose-1"), Algorithm: -7, Attestation: "none",
			AAGUID: make([]byte, 16), RPID: "arx.example.com", SignCount: 1, Flags: 0x1d, CreatedAt: t0.In(zone)},
		{ID: []byte{4, 5}, UserID: "u1", Name: "phone", PublicKey: []byte("cose-2"), Algorithm: -8, Attestation: "packed",
			AAGUID: []byte{9}, RPID: "arx.example.com", CreatedAt: t0.Add(time.Second), LastUsedAt: &used},
		{ID: []byte{6}, UserID: "u2", Name: "key", PublicKey: []byte("cose-3"), Algorithm: -257, Attestation: "none",
			AAGUID: []byte{}, RPID: "arx.example.com", CreatedAt: t0},
	}
	update(t, s, func(tx store.Tx) error {
		for _, k := range keys {
			if err := tx.InsertPasskey(k); err != nil {
				return err
			}
		}
		got, err := tx.UserPasskeys("u1")
		if err != nil || len(got) != 2 {
			return fmt.Errorf("tx.UserPasskeys(u1) in the same Update = %d keys, %v; want 2", len(got), err)
		}
		return nil
	})
	got, err := s.Passkeys(ctx, "u1")
	if err != nil || len(got) != 2 || got[0].Name != "laptop" || got[1].Name != "phone" {
		t.Fatalf("Passkeys(u1) = %+v, %v; want laptop, phone", got, err)
	}
	checkSame(t, "Passkeys(u1)[0]", got[0], *keys[0])
	checkSame(t, "Passkeys(u1)[1]", got[1], *keys[1])
	if err := s.Update(ctx, func(tx store.Tx) error {
		return tx.InsertPasskey(&store.Passkey{ID: []byte{6}, UserID: "u1", Name: "taken", PublicKey: []byte("x"), RPID: "r", CreatedAt: t0})
	}); err == nil {
		t.Error("InsertPasskey with u2's credential id succeeded")
	}
	later := t0.Add(time.Hour)
	update(t, s, func(tx store.Tx) error { return tx.UsePasskey([]byte{1, 2, 3}, 7, later) })
	mustNotFound(t, "UsePasskey(unknown)", s.Update(ctx, func(tx store.Tx) error { return tx.UsePasskey([]byte{8}, 1, later) }))
	got, _ = s.Passkeys(ctx, "u1")
	if got[0].SignCount != 7 || got[0].LastUsedAt == nil || !got[0].LastUsedAt.Equal(later) {
		t.Errorf("after UsePasskey: %+v", got[0])
	}
	mustNotFound(t, "DeletePasskey(u1, u2's key)", s.Update(ctx, func(tx store.Tx) error { return tx.DeletePasskey("u1", []byte{6}) }))
	update(t, s, func(tx store.Tx) error { return tx.DeletePasskey("u1", []byte{4, 5}) })
	if got, _ := s.Passkeys(ctx, "u1"); len(got) != 1 || got[0].Name != "laptop" {
		t.Errorf("after DeletePasskey(u1, phone): %+v", got)
	}
	if got, _ := s.Passkeys(ctx, "u2"); len(got) != 1 {
		t.Errorf("Passkeys(u2) = %+v, want its key untouched", got)
	}
}

// testChatLinks: a chat account links to one person at a time (a new link
// replaces the old); only its owner unlinks it.
func testChatLinks(t *testing.T, s store.Store) {
	ctx := t.Context()
	insertUsers(t, s, "u1", "u2")
	a := &store.ChatLink{Provider: "slack", Subject: "T1/U1", UserID: "u1", Name: "dana", CreatedAt: t0.In(zone)}
	b := &store.ChatLink{Provider: "teams", Subject: "29:abc", UserID: "u1", Name: "Dana B.", CreatedAt: t0.Add(time.Second)}
	update(t, s, func(tx store.Tx) error {
		if err := tx.LinkChat(a); err != nil {
			return err
		}
		return tx.LinkChat(b)
	})
	got, err := s.ChatLink(ctx, "slack", "T1/U1")
	if err != nil {
		t.Fatal(err)
	}
	checkSame(t, "ChatLink(slack, T1/U1)", *got, *a)
	if _, err := s.ChatLink(ctx, "slack", "T1/U2"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("ChatLink of an unlinked account: %v", err)
	}
	if l, err := s.ChatLinks(ctx, "u1"); err != nil || len(l) != 2 || l[0].Provider != "slack" || l[1].Provider != "teams" {
		t.Errorf("ChatLinks(u1) = %+v, %v", l, err)
	}
	// Linked again, by another person: theirs now.
	update(t, s, func(tx store.Tx) error {
		return tx.LinkChat(&store.ChatLink{Provider: "slack", Subject: "T1/U1", UserID: "u2", Name: "lee", CreatedAt: t0.Add(time.Minute)})
	})
	if got, err := s.ChatLink(ctx, "slack", "T1/U1"); err != nil || got.UserID != "u2" || got.Name != "lee" {
		t.Errorf("after the new link: %+v, %v", got, err)
	}
	if err := s.Update(ctx, func(tx store.Tx) error { return tx.UnlinkChat("u1", "slack", "T1/U1") }); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("unlinking another person's account: %v", err)
	}
	update(t, s, func(tx store.Tx) error { return tx.UnlinkChat("u2", "slack", "T1/U1") })
	if _, err := s.ChatLink(ctx, "slack", "T1/U1"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("after unlinking: %v", err)
	}
}
