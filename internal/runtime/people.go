package runtime

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"net/mail"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/arxsec/arx/arxerr"
	"github.com/arxsec/arx/internal/store"
	"github.com/arxsec/arx/record"
	"github.com/google/uuid"
	"golang.org/x/crypto/argon2"
)

// People: managers and admins, their passwords (argon2id), console
// sessions and API tokens.

const (
	userTokenPrefix  = "arxu_"
	SessionLifetime  = 12 * time.Hour
	SetupLifetime    = 24 * time.Hour
	MinPasswordBytes = 12
)

// argon2id parameters: RFC 9106's second recommended option, scaled to a
// login taking tens of milliseconds.
const (
	argonTime    = 2
	argonMemory  = 19 * 1024
	argonThreads = 1
	argonKeyLen  = 32
)

func hashPassword(pw string) string {
	salt := make([]byte, 16)
	rand.Read(salt)
	key := argon2.IDKey([]byte(pw), salt, argonTime, argonMemory, argonThreads, argonKeyLen)
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, argonMemory, argonTime, argonThreads,
		base64.RawStdEncoding.EncodeToString(salt), base64.RawStdEncoding.EncodeToString(key))
}

// dummyHash is checked against when the user does not exist, so a login
// takes as long for an unknown email as for a known one. It is made on
// first use: every arx command would otherwise pay for it at start.
var dummyHash = sync.OnceValue(func() string { return hashPassword("arx-dummy-password-for-timing") })

func checkPassword(phc, pw string) bool {
	var v, m, t int
	var p uint8
	parts := strings.Split(phc, "$")
	if len(parts) != 6 || parts[1] != "argon2id" {
		return false
	}
	if _, err := fmt.Sscanf(parts[2], "v=%d", &v); err != nil || v != argon2.Version {
		return false
	}
	if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &m, &t, &p); err != nil || m <= 0 || m > 1<<20 || t <= 0 || t > 10 || p == 0 {
		return false
	}
	salt, err1 := base64.RawStdEncoding.DecodeString(parts[4])
	want, err2 := base64.RawStdEncoding.DecodeString(parts[5])
	if err1 != nil || err2 != nil || len(want) == 0 {
		return false
	}
	got := argon2.IDKey([]byte(pw), salt, uint32(t), uint32(m), p, uint32(len(want)))
	return subtle.ConstantTimeCompare(got, want) == 1
}

func normalizeEmail(e string) (string, error) {
	e = strings.TrimSpace(e)
	a, err := mail.ParseAddress(e)
	if err != nil || a.Address != e || len(e) > 254 || !strings.Contains(e, "@") {
		return "", arxerr.New(arxerr.BadRequest, "%q is not an email address", truncate(e, 64))
	}
	return strings.ToLower(e), nil
}

func randomToken(prefix string) (string, []byte) { return newToken(prefix) }

// AddUser creates a person with a one-time setup link for their password
// (valid SetupLifetime). The link goes to the person through the
// deployment's notification channel (the server's webhooks, as notices
// do); with show, and only then, it is returned to the admin instead, and
// the record says which. Without a channel and without show, nothing is
// done: the link must reach someone.
func (r *Runtime) AddUser(ctx context.Context, p *Principal, email, role string, to LinkTo) (*store.User, string, error) {
	if !p.IsAdmin() {
		return nil, "", arxerr.New(arxerr.Forbidden, "only an admin can add people")
	}
	email, err := normalizeEmail(email)
	if err != nil {
		return nil, "", err
	}
	if role != store.RoleManager && role != store.RoleAdmin {
		return nil, "", arxerr.New(arxerr.BadRequest, "role %q is not manager or admin", truncate(role, 16))
	}
	// With local passwords off there is no password to set: the person
	// signs in through the identity provider.
	link := record.LinkNone
	if !r.noLocalPasswords {
		if link, err = r.linkRoute(to.Show); err != nil {
			return nil, "", err
		}
	}
	now := r.now()
	u := &store.User{ID: uuid.NewString(), Email: email, Role: role, CreatedAt: now}
	setup, hash := randomToken("arxs_")
	err = r.store.Update(ctx, func(tx store.Tx) error {
		if _, err := tx.UserByEmail(email); err == nil {
			return arxerr.New(arxerr.UserExists, "%s already has an account", email)
		}
		if err := tx.InsertUser(u); err != nil {
			return err
		}
		if link != record.LinkNone {
			if err := tx.InsertSetupToken(&store.SetupToken{Hash: hash, UserID: u.ID, ExpiresAt: now.Add(SetupLifetime)}); err != nil {
				return err
			}
		}
		return tx.Append(record.UserAdded(p.Actor(), now, email, role, link))
	})
	if err != nil {
		return nil, "", r.writeFailed("add user", err)
	}
	if link == record.LinkNone {
		return u, "", nil
	}
	return u, r.handOver(ctx, u, to.url(setup), link, "an account was made for you"), nil
}

// LinkTo says where a setup link goes: to the caller (Show, which the
// record notes), or to the person; Base is the console's address the link
// starts with.
type LinkTo struct {
	Show bool
	Base string
}

func (to LinkTo) url(token string) string {
	return strings.TrimSuffix(to.Base, "/") + "/console/setup?token=" + url.QueryEscape(token)
}

// linkRoute says where a setup link goes: to the caller when they asked
// (show), else to the person through the server's webhooks; an error when
// neither is possible.
func (r *Runtime) linkRoute(show bool) (string, error) {
	if show {
		return record.LinkShown, nil
	}
	if len(r.webhooks) == 0 {
		e := arxerr.New(arxerr.BadRequest, "no notification channel is configured to send the setup link to the person")
		e.Hint = "start arx serve with --webhook or --slack-webhook, or pass --show-link (show_link) to hand the link over yourself; either is recorded"
		return "", e
	}
	return record.LinkSent, nil
}

// handOver sends a setup link to its person, or returns it to the caller
// (link == record.LinkShown). A link that could not be sent is withdrawn,
// and the failure logged: the caller resets again.
func (r *Runtime) handOver(ctx context.Context, u *store.User, url, link, why string) string {
	if link == record.LinkShown {
		return url
	}
	err := r.sendLink(ctx, u.Email, url, why)
	if err == nil {
		return ""
	}
	r.log.Warn("people: the setup link could not be sent; it is withdrawn", "user", u.Email, "err", err)
	if werr := r.store.Update(context.WithoutCancel(ctx), func(tx store.Tx) error { return tx.DeleteSetupTokens(u.ID) }); werr != nil {
		r.log.Error("people: could not withdraw a setup link that was not sent", "user", u.Email, "err", werr)
	}
	return ""
}

// ResetUser makes a new setup link for a person (their only one: older
// links die), ends their sessions and API tokens, and records who did it.
// The link goes as AddUser's does.
func (r *Runtime) ResetUser(ctx context.Context, p *Principal, email string, to LinkTo) (string, error) {
	if !p.IsAdmin() {
		return "", arxerr.New(arxerr.Forbidden, "only an admin can reset passwords")
	}
	if r.noLocalPasswords {
		return "", ssoRequired()
	}
	link, err := r.linkRoute(to.Show)
	if err != nil {
		return "", err
	}
	now := r.now()
	setup, hash := randomToken("arxs_")
	var user *store.User
	err = r.store.Update(ctx, func(tx store.Tx) error {
		u, err := r.userForChange(tx, email)
		if err != nil {
			return err
		}
		user = u
		if err := tx.InsertSetupToken(&store.SetupToken{Hash: hash, UserID: u.ID, ExpiresAt: now.Add(SetupLifetime)}); err != nil {
			return err
		}
		n, err := tx.RevokeUserTokens(u.ID, now)
		if err != nil {
			return err
		}
		if err := tx.DeleteUserSessions(u.ID); err != nil {
			return err
		}
		return tx.Append(record.UserReset(p.Actor(), now, u.Email, link, n))
	})
	if err != nil {
		return "", r.writeFailed("reset user", err)
	}
	return r.handOver(ctx, user, to.url(setup), link, "your password was reset"), nil
}

// userForChange finds the person an admin changes.
func (r *Runtime) userForChange(tx store.Tx, email string) (*store.User, error) {
	u, err := tx.UserByEmail(strings.TrimSpace(email))
	if errors.Is(err, store.ErrNotFound) {
		return nil, arxerr.New(arxerr.UserNotFound, "no account for %s", truncate(email, 64))
	}
	return u, err
}

// SetRole changes a person's role, recorded with who did it. An admin
// cannot change their own.
func (r *Runtime) SetRole(ctx context.Context, p *Principal, email, role string) (*store.User, error) {
	if !p.IsAdmin() {
		return nil, arxerr.New(arxerr.Forbidden, "only an admin can change roles")
	}
	if role != store.RoleManager && role != store.RoleAdmin {
		return nil, arxerr.New(arxerr.BadRequest, "role %q is not manager or admin", truncate(role, 16))
	}
	now := r.now()
	var out *store.User
	err := r.store.Update(ctx, func(tx store.Tx) error {
		u, err := r.userForChange(tx, email)
		if err != nil {
			return err
		}
		if p.User != nil && p.User.ID == u.ID {
			return arxerr.New(arxerr.Forbidden, "you cannot change your own role")
		}
		if u.Role == role {
			out = u
			return nil
		}
		from := u.Role
		u.Role = role
		if err := tx.UpdateUser(u); err != nil {
			return err
		}
		out = u
		return tx.Append(record.UserRoleChanged(p.Actor(), now, u.Email, from, role))
	})
	if err != nil {
		return nil, r.writeFailed("set role", err)
	}
	return out, nil
}

// DisableUser disables a person: at once, on every replica, their sessions
// end, their API tokens are revoked and their setup link dies; they cannot
// log in or approve until enabled. Recorded with who did it. An admin
// cannot disable themselves.
func (r *Runtime) DisableUser(ctx context.Context, p *Principal, email string) (*store.User, error) {
	return r.setDisabled(ctx, p, email, true)
}

// EnableUser lets a disabled person log in again (with the password they
// had; reset it if it may be known).
func (r *Runtime) EnableUser(ctx context.Context, p *Principal, email string) (*store.User, error) {
	return r.setDisabled(ctx, p, email, false)
}

func (r *Runtime) setDisabled(ctx context.Context, p *Principal, email string, disable bool) (*store.User, error) {
	if !p.IsAdmin() {
		return nil, arxerr.New(arxerr.Forbidden, "only an admin can disable or enable people")
	}
	self := ""
	if p.User != nil {
		self = p.User.ID
	}
	return r.changeDisabled(ctx, p.Actor(), self, func(tx store.Tx) (*store.User, error) { return r.userForChange(tx, email) }, disable)
}

// changeDisabled disables or enables the person find returns, in actor's
// name (an admin, or the identity provider through SCIM); self, the
// acting person's id, cannot change themselves. Disabling ends the
// person's sessions, API tokens and set-up link at once, and their grants
// toward a quorum not yet reached stop counting (approval.grant_voided).
func (r *Runtime) changeDisabled(ctx context.Context, actor, self string, find func(store.Tx) (*store.User, error), disable bool) (*store.User, error) {
	var pending []store.Approval
	if disable {
		var err error
		if pending, err = r.store.Approvals(ctx, store.ApprovalPending, maxPendingScan); err != nil {
			return nil, r.ReadFailed("disable user", err)
		}
	}
	now := r.now()
	var out *store.User
	err := r.store.Update(ctx, func(tx store.Tx) error {
		u, err := find(tx)
		if err != nil {
			return err
		}
		if self != "" && self == u.ID {
			return arxerr.New(arxerr.Forbidden, "you cannot disable or enable yourself")
		}
		out = u
		if (u.DisabledAt != nil) == disable {
			return nil // already so
		}
		if !disable {
			u.DisabledAt = nil
			if err := tx.UpdateUser(u); err != nil {
				return err
			}
			return tx.Append(record.UserEnabled(actor, now, u.Email))
		}
		u.DisabledAt = &now
		if err := tx.UpdateUser(u); err != nil {
			return err
		}
		n, err := tx.RevokeUserTokens(u.ID, now)
		if err != nil {
			return err
		}
		if err := tx.DeleteUserSessions(u.ID); err != nil {
			return err
		}
		if err := tx.DeleteSetupTokens(u.ID); err != nil {
			return err
		}
		if err := tx.Append(record.UserDisabled(actor, now, u.Email, n)); err != nil {
			return err
		}
		for _, listed := range pending {
			ap, err := tx.Approval(listed.CallID)
			if errors.Is(err, store.ErrNotFound) {
				continue // decided and gone meanwhile
			} else if err != nil {
				return err
			}
			if ap.Status != store.ApprovalPending || !slices.ContainsFunc(ap.Grants, func(g string) bool { return strings.EqualFold(g, u.Email) }) {
				continue
			}
			c, err := tx.Call(ap.CallID)
			if err != nil {
				return err
			}
			if err := tx.Append(record.ApprovalGrantVoided(callRef(c), actor, now, u.Email, "the person was disabled")); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, r.writeFailed("disable user", err)
	}
	return out, nil
}

// maxPendingScan bounds the pending approvals a disable looks through for
// the person's grants.
const maxPendingScan = 10000

// UserTokens lists the caller's own API tokens.
func (r *Runtime) UserTokens(ctx context.Context, p *Principal) ([]store.Token, error) {
	if p.User == nil {
		return nil, arxerr.New(arxerr.Forbidden, "only a person has personal tokens")
	}
	ts, err := r.store.UserTokens(ctx, p.User.ID)
	if err != nil {
		return nil, r.ReadFailed("list tokens", err)
	}
	return ts, nil
}

// TokenExpiry is when a person's API token stops working.
func (r *Runtime) TokenExpiry(t *store.Token) time.Time { return t.CreatedAt.Add(r.userTokenLife) }

// RevokeUserToken revokes one of the caller's own API tokens; another's is
// not found.
func (r *Runtime) RevokeUserToken(ctx context.Context, p *Principal, id string) error {
	if p.User == nil {
		return arxerr.New(arxerr.Forbidden, "only a person has personal tokens")
	}
	now := r.now()
	err := r.store.Update(ctx, func(tx store.Tx) error {
		if err := tx.RevokeUserToken(p.User.ID, id, now); err != nil {
			return err
		}
		return tx.Append(record.TokenRevoked("", "user:"+p.User.Email, now, id))
	})
	if errors.Is(err, store.ErrNotFound) {
		return arxerr.New(arxerr.NotFound, "you have no token %s", truncate(id, 64))
	}
	if err != nil {
		return r.writeFailed("revoke token", err)
	}
	return nil
}

// SetPassword uses a setup token to set a person's password.
func (r *Runtime) SetPassword(ctx context.Context, setupToken, password string) (*store.User, error) {
	if r.noLocalPasswords {
		return nil, ssoRequired()
	}
	if len(password) < MinPasswordBytes || len(password) > 1024 {
		return nil, arxerr.New(arxerr.WeakPassword, "the password must have %d to 1024 characters", MinPasswordBytes)
	}
	phc := hashPassword(password)
	now := r.now()
	var user *store.User
	err := r.store.Update(ctx, func(tx store.Tx) error {
		st, err := tx.UseSetupToken(HashToken(setupToken), now)
		if errors.Is(err, store.ErrNotFound) {
			return arxerr.New(arxerr.SetupInvalid, "the link is unknown, used or expired")
		}
		if err != nil {
			return err
		}
		u, err := tx.User(st.UserID)
		if err != nil {
			return err
		}
		u.PasswordHash = phc
		if err := tx.UpdateUser(u); err != nil {
			return err
		}
		user = u
		return tx.DeleteUserSessions(u.ID)
	})
	if err != nil {
		return nil, r.writeFailed("set password", err)
	}
	return user, nil
}

// turns lets one holder at a time per key (an account's login attempts on
// this replica).
type turns struct {
	mu   sync.Mutex
	keys map[string]*turn
}

type turn struct {
	sync.Mutex
	users int
}

func (t *turns) lock(key string) (unlock func()) {
	t.mu.Lock()
	if t.keys == nil {
		t.keys = map[string]*turn{}
	}
	k := t.keys[key]
	if k == nil {
		k = &turn{}
		t.keys[key] = k
	}
	k.users++
	t.mu.Unlock()
	k.Lock()
	return func() {
		k.Unlock()
		t.mu.Lock()
		if k.users--; k.users == 0 {
			delete(t.keys, key)
		}
		t.mu.Unlock()
	}
}

// limiter bounds failed logins per key in a sliding window.
type limiter struct {
	mu     sync.Mutex
	fails  map[string][]time.Time
	max    int
	window time.Duration
}

func (l *limiter) blocked(key string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	kept := l.fails[key][:0]
	for _, t := range l.fails[key] {
		if now.Sub(t) < l.window {
			kept = append(kept, t)
		}
	}
	if len(kept) == 0 {
		delete(l.fails, key)
	} else {
		l.fails[key] = kept
	}
	return len(kept) >= l.max
}

func (l *limiter) fail(key string, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.fails) > 100000 { // bound memory under a flood of distinct keys
		l.fails = map[string][]time.Time{}
	}
	l.fails[key] = append(l.fails[key], now)
}

// Login limits, over 15 minutes, counted in the store so that replicas
// sharing one database limit together (an attacker gets no more guesses
// from a load balancer):
//
//   - per account and client address: LoginFailuresPerEmail failures, then
//     that address is refused for that account;
//   - per client address: LoginFailuresPerIP failures, then the address is
//     refused for every account;
//   - per account, from every address: past LoginFailuresPerEmail failures
//     each attempt waits (LoginSlowdown per failure over the limit, at most
//     LoginSlowdownMax) and the account's attempts take turns on each
//     replica. Guessing from many addresses is slowed to a crawl, and the
//     person, from an address of their own, still gets in: a stranger can
//     slow a login down, never lock a person out.
const (
	LoginFailuresPerEmail = 5
	LoginFailuresPerIP    = 20
	LoginWindow           = 15 * time.Minute
	LoginSlowdown         = time.Second
	LoginSlowdownMax      = 10 * time.Second
)

// loginDelay is how long an attempt on an account with failures failed
// logins in the window waits before its password is checked.
func loginDelay(failures int) time.Duration {
	over := failures - LoginFailuresPerEmail + 1
	if over <= 0 {
		return 0
	}
	return min(time.Duration(over)*LoginSlowdown, LoginSlowdownMax)
}

// loginKey is how a login limit's key is stored: hashed, so the database
// keeps no client address, nor an email that has no account, in clear.
func loginKey(kind, v string) []byte {
	h := sha256.Sum256([]byte("arx login " + kind + "\x00" + v))
	return h[:]
}

// CheckLogin verifies an email and password, rate limited per email and
// per client address.
//
// An attempt counts as a failure before its password is checked, in one
// transaction with the check of both limits, and a right password takes it
// back: concurrent attempts, on any replica, cannot all slip under a
// limit. A cheap read refuses first while a limit is reached, so a flood
// of refused attempts writes nothing.
func (r *Runtime) CheckLogin(ctx context.Context, email, password, clientIP string) (*store.User, error) {
	if r.noLocalPasswords {
		return nil, ssoRequired()
	}
	now := r.now()
	since := now.Add(-LoginWindow)
	norm := strings.ToLower(strings.TrimSpace(email))
	ekey := loginKey("email", norm)
	pkey := loginKey("pair", norm+"\x00"+clientIP)
	ikey := loginKey("ip", clientIP)
	limits := [...]struct {
		key []byte
		max int
	}{{pkey, LoginFailuresPerEmail}, {ikey, LoginFailuresPerIP}}
	limited := func() error {
		e := arxerr.New(arxerr.RateLimited, "too many failed logins from this address; wait a few minutes")
		e.Hint = "failed logins are limited per address; the account itself is not locked"
		return e
	}
	for _, l := range limits {
		n, err := r.store.Failures(ctx, l.key, since)
		if err != nil {
			return nil, r.ReadFailed("login", err)
		}
		if n >= l.max {
			return nil, limited()
		}
	}
	// The account's attempts take turns here, each after its delay.
	unlock := r.loginTurns.lock(norm)
	defer unlock()
	accountFailures, err := r.store.Failures(ctx, ekey, since)
	if err != nil {
		return nil, r.ReadFailed("login", err)
	}
	if d := loginDelay(accountFailures); d > 0 {
		select {
		case <-time.After(d):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	var over bool
	var ids []int64
	err = r.store.Update(ctx, func(tx store.Tx) error {
		over, ids = false, nil
		if err := tx.PruneFailures(since); err != nil {
			return err
		}
		for _, l := range limits {
			n, err := tx.Failures(l.key, since)
			if err != nil {
				return err
			}
			if n >= l.max {
				over = true
				return nil
			}
		}
		for _, key := range [][]byte{pkey, ikey, ekey} {
			id, err := tx.AddFailure(key, now)
			if err != nil {
				return err
			}
			ids = append(ids, id)
		}
		return nil
	})
	if err != nil {
		return nil, r.writeFailed("login", err)
	}
	if over {
		return nil, limited()
	}
	u, err := r.store.UserByEmail(ctx, strings.TrimSpace(email))
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return nil, r.ReadFailed("login", err)
	}
	ok := false
	if u != nil && u.PasswordHash != "" && u.DisabledAt == nil {
		ok = checkPassword(u.PasswordHash, password)
	} else {
		checkPassword(dummyHash(), password)
	}
	if !ok {
		return nil, arxerr.New(arxerr.LoginFailed, "wrong email or password")
	}
	err = r.store.Update(ctx, func(tx store.Tx) error {
		for _, id := range ids {
			if err := tx.DeleteFailure(id); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		// The login is right; it only keeps counting against the limits.
		r.log.Warn("login: the attempt stays counted as a failure", "err", err)
	}
	return u, nil
}

// NewSession starts a console session; the cookie value is returned once.
// idp names who the identity provider said signed in (nil: a password).
func (r *Runtime) NewSession(ctx context.Context, u *store.User, idp *IdP) (cookie string, s *store.Session, err error) {
	if idp == nil && r.noLocalPasswords {
		return "", nil, ssoRequired()
	}
	if idp != nil && !validIdP(idp) {
		return "", nil, arxerr.New(arxerr.SSOFailed, "the identity provider's subject for you is empty or too long")
	}
	cookie, hash := newToken("arxc_")
	now := r.now()
	// The CSRF token is derived from the cookie, not stored: the database
	// keeps no session secret in clear (SECURITY.md, stolen database copy).
	s = &store.Session{Hash: hash, UserID: u.ID, CreatedAt: now, ExpiresAt: now.Add(SessionLifetime)}
	if idp != nil {
		s.IdPIssuer, s.IdPSubject = idp.Issuer, idp.Subject
	}
	err = r.store.Update(ctx, func(tx store.Tx) error { return tx.InsertSession(s) })
	if err != nil {
		return "", nil, r.writeFailed("new session", err)
	}
	s.CSRF = sessionCSRF(cookie)
	return cookie, s, nil
}

// sessionCSRF is a session's synchronizer token: a hash of its cookie
// that is not the stored one (HashToken), so only the cookie's holder
// can compute it.
func sessionCSRF(cookie string) string {
	h := sha256.Sum256([]byte("arx session csrf\x00" + cookie))
	return base64.RawURLEncoding.EncodeToString(h[:])
}

// Session resolves a console cookie.
func (r *Runtime) Session(ctx context.Context, cookie string) (*Principal, *store.Session, error) {
	if !strings.HasPrefix(cookie, "arxc_") || len(cookie) > 128 {
		return nil, nil, arxerr.New(arxerr.Unauthenticated, "not logged in")
	}
	s, err := r.store.SessionByHash(ctx, HashToken(cookie))
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil, arxerr.New(arxerr.Unauthenticated, "not logged in")
	}
	if err != nil {
		return nil, nil, r.ReadFailed("session", err)
	}
	if !r.now().Before(s.ExpiresAt) {
		return nil, nil, arxerr.New(arxerr.Unauthenticated, "the session has expired")
	}
	u, err := r.store.User(ctx, s.UserID)
	if err != nil {
		return nil, nil, r.ReadFailed("session", err)
	}
	if u.DisabledAt != nil {
		return nil, nil, arxerr.New(arxerr.Unauthenticated, "the account is disabled")
	}
	if s.CSRF == "" { // sessions started before tokens were derived keep their stored one
		s.CSRF = sessionCSRF(cookie)
	}
	p := &Principal{Kind: store.TokenUser, User: u}
	if s.IdPSubject != "" {
		p.IdP = &IdP{Issuer: s.IdPIssuer, Subject: s.IdPSubject}
	} else if r.noLocalPasswords {
		return nil, nil, arxerr.New(arxerr.Unauthenticated, "the session was started with a password, and local passwords are off")
	}
	return p, s, nil
}

// EndSession logs out.
func (r *Runtime) EndSession(ctx context.Context, cookie string) error {
	return r.store.Update(ctx, func(tx store.Tx) error { return tx.DeleteSession(HashToken(cookie)) })
}

// IssueUserToken makes an API token for a person who scripts (arx login
// with a password).
func (r *Runtime) IssueUserToken(ctx context.Context, u *store.User, label string) (string, error) {
	if r.noLocalPasswords {
		return "", ssoRequired()
	}
	return r.issueUserToken(ctx, u, label, nil)
}

// issueUserToken makes a person's API token; idp, when the identity
// provider vouched for the person, is named in the token's entry.
func (r *Runtime) issueUserToken(ctx context.Context, u *store.User, label string, idp *IdP) (string, error) {
	if len(label) > 128 {
		return "", arxerr.New(arxerr.BadRequest, "label is longer than 128 characters")
	}
	token, hash := newToken(userTokenPrefix)
	id := uuid.NewString()
	err := r.store.Update(ctx, func(tx store.Tx) error {
		if err := tx.InsertToken(&store.Token{ID: id, Hash: hash, Kind: store.TokenUser, UserID: u.ID, IssuedBy: "user:" + u.Email,
			Label: label, CreatedAt: r.now()}); err != nil {
			return err
		}
		e := record.TokenIssued("", "user:"+u.Email, r.now(), id, store.TokenUser, label)
		if idp != nil {
			e.Data["idp"] = map[string]any{"issuer": idp.Issuer, "subject": idp.Subject}
		}
		return tx.Append(e)
	})
	if err != nil {
		return "", r.writeFailed("issue user token", err)
	}
	return token, nil
}
