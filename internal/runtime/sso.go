package runtime

import (
	"context"
	"crypto/subtle"
	"errors"
	"net/url"
	"strings"

	"github.com/google/uuid"

	"github.com/arxsec/arx/arxerr"
	"github.com/arxsec/arx/internal/sso"
	"github.com/arxsec/arx/internal/store"
	"github.com/arxsec/arx/record"
)

// Single sign-on: people sign in through the deployment's OpenID Connect
// identity provider (package sso). The provider says who someone is; ARX
// decides their role (sso.Decide), starts a session that names the
// provider's subject, and records every decision made in it with that
// subject. With local passwords off, the provider is the only way in: no
// password sign-in, setup link or reset, so no ARX admin can make
// themselves an approver's password.

// Entry types of single sign-on.
const (
	TypeLocalPasswordsOff = "people.local_passwords_off"
	TypeLocalPasswordsOn  = "people.local_passwords_on"
)

// metaLocalPasswords remembers, across restarts, whether local passwords
// were last off ("off") so that turning them off ends what they opened
// once, and turning them on again is recorded.
const metaLocalPasswords = "local_passwords"

// SSO is the deployment's identity provider, nil without one.
func (r *Runtime) SSO() *sso.Client { return r.sso }

// LocalPasswords says whether people may sign in with an ARX password.
func (r *Runtime) LocalPasswords() bool { return !r.noLocalPasswords }

// IdP names who the identity provider said a person is, for a principal
// signed in through it.
type IdP struct {
	Issuer  string `json:"issuer"`
	Subject string `json:"subject"`
}

func ssoRequired() *arxerr.Error {
	return arxerr.New(arxerr.SSORequired, "local passwords are turned off on this server")
}

// ApplyPasswordPolicy runs once at start. Turning local passwords off ends
// every session a password started and every person's API token (an API
// token may have come from a password), recorded as one entry; turning
// them on again is recorded too. Otherwise it does nothing.
func (r *Runtime) ApplyPasswordPolicy(ctx context.Context) error {
	now := r.now()
	changed := false
	err := r.store.Update(ctx, func(tx store.Tx) error {
		// Read in the transaction: replicas starting together record the
		// change once.
		last, err := tx.Meta(metaLocalPasswords)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
		if changed = (last == "off") != r.noLocalPasswords; !changed {
			return nil
		}
		if !r.noLocalPasswords {
			if err := tx.SetMeta(metaLocalPasswords, "on"); err != nil {
				return err
			}
			return tx.Append(&record.Entry{Type: TypeLocalPasswordsOn, Actor: "server", Time: now, Data: map[string]any{}})
		}
		sessions, tokens, err := tx.EndLocalPasswords(now)
		if err != nil {
			return err
		}
		if err := tx.SetMeta(metaLocalPasswords, "off"); err != nil {
			return err
		}
		d := map[string]any{"ended_sessions": sessions, "revoked_tokens": tokens}
		if r.sso != nil {
			d["issuer"] = r.sso.Issuer()
		}
		return tx.Append(&record.Entry{Type: TypeLocalPasswordsOff, Actor: "server", Time: now, Data: d})
	})
	if err != nil {
		return r.writeFailed("password policy", err)
	}
	if !changed {
		return nil
	}
	if r.noLocalPasswords {
		r.log.Info("local passwords turned off: password sessions ended and people's API tokens revoked")
	} else {
		r.log.Info("local passwords turned on again")
	}
	return nil
}

func (r *Runtime) ssoOn() error {
	if r.sso == nil {
		return arxerr.New(arxerr.SSONotOn, "this server has no identity provider")
	}
	return nil
}

// SSOStart begins a sign-in: the provider's URL to send the browser to,
// and the flow sealed for a cookie. next is the console page to return to;
// cli, for `arx login --sso`, where the browser goes at the end instead.
func (r *Runtime) SSOStart(ctx context.Context, next string, cli *sso.CLI) (authURL, sealed string, err error) {
	if err := r.ssoOn(); err != nil {
		return "", "", err
	}
	if cli != nil {
		if err := sso.CheckLoopback(cli.Redirect); err != nil {
			return "", "", arxerr.New(arxerr.BadRequest, "%s", err.Error())
		}
		if len(cli.Challenge) != 43 || len(cli.State) == 0 || len(cli.State) > 128 || record.TextProblem(cli.Label, 128) != "" {
			return "", "", arxerr.New(arxerr.BadRequest, "the CLI's sign-in needs a S256 challenge, a state and a label of at most 128 bytes")
		}
	}
	key := r.sso.Key()
	f := sso.NewFlow(next, cli, r.now())
	u, err := r.sso.AuthURL(ctx, f)
	if err != nil {
		r.log.Warn("sso: the identity provider cannot be reached", "err", err)
		e := arxerr.New(arxerr.SSOFailed, "the identity provider cannot be reached")
		e.Hint = "try again in a minute; the server's log says what failed"
		return "", "", e
	}
	return u, sso.Seal(key, "flow", f), nil
}

// SSOResult is a finished sign-in.
type SSOResult struct {
	User *store.User
	IdP  IdP
	Next string
	// CLIRedirect, for `arx login --sso`, is where the browser goes: the
	// CLI's loopback address with a code only the CLI can redeem.
	CLIRedirect string
}

// SSOFinish checks the provider's answer against the flow that started it
// (state, then the code redeemed with the flow's PKCE verifier and the ID
// token's nonce), decides who signs in (sso.Decide) and records what that
// changes (a person added, a role changed by the provider's groups).
// idpError is the provider's own error parameter, if it sent one.
func (r *Runtime) SSOFinish(ctx context.Context, sealed, state, code, idpError string) (*SSOResult, error) {
	if err := r.ssoOn(); err != nil {
		return nil, err
	}
	key := r.sso.Key()
	var f sso.Flow
	if err := sso.Open(key, "flow", sealed, &f, r.now()); err != nil {
		e := arxerr.New(arxerr.SSOFailed, "this sign-in is unknown or took too long")
		e.Hint = "start again from the sign-in page (a sign-in lasts 10 minutes, in the browser that started it)"
		return nil, e
	}
	if subtle.ConstantTimeCompare([]byte(state), []byte(f.State)) != 1 {
		e := arxerr.New(arxerr.SSOFailed, "the identity provider's answer is not for this sign-in")
		e.Hint = "start again from the sign-in page"
		return nil, e
	}
	if idpError != "" {
		r.log.Info("sso: the identity provider refused the sign-in", "error", ShownText(idpError, 200))
		return nil, arxerr.New(arxerr.SSOFailed, "the identity provider refused the sign-in (%s)", ShownText(idpError, 100))
	}
	id, err := r.sso.Exchange(ctx, &f, code)
	if err != nil {
		r.log.Warn("sso: sign-in failed", "err", err)
		return nil, arxerr.New(arxerr.SSOFailed, "the identity provider's answer could not be used")
	}
	u, err := r.ssoSignIn(ctx, id)
	if err != nil {
		return nil, err
	}
	res := &SSOResult{User: u, IdP: IdP{Issuer: id.Issuer, Subject: id.Subject}, Next: f.Next}
	if f.CLI != nil {
		c := sso.Code{UserID: u.ID, Issuer: id.Issuer, Subject: id.Subject, Challenge: f.CLI.Challenge, Label: f.CLI.Label,
			Expires: r.now().Add(sso.CodeTTL).Unix()}
		q := url.Values{"code": {sso.Seal(key, "code", c)}, "state": {f.CLI.State}}
		res.CLIRedirect = f.CLI.Redirect + "?" + q.Encode()
	}
	return res, nil
}

// ssoSignIn applies sso.Decide to the person the identity names (by
// email) and records what it changes.
func (r *Runtime) ssoSignIn(ctx context.Context, id *sso.Identity) (*store.User, error) {
	email, err := normalizeEmail(id.Email)
	if err != nil {
		return nil, arxerr.New(arxerr.SSOFailed, "the identity provider's email for you is not one ARX takes")
	}
	now := r.now()
	actor := "sso:" + id.Issuer
	var out *store.User
	var refused *arxerr.Error
	err = r.store.Update(ctx, func(tx store.Tx) error {
		refused = nil
		u, err := tx.UserByEmail(email)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
		var p sso.Person
		if u != nil {
			p = sso.Person{Exists: true, Role: u.Role, Disabled: u.DisabledAt != nil}
		}
		d := sso.Decide(r.sso.Roles(), *id, p)
		switch {
		case d.Refuse != "":
			refused = arxerr.New(d.Refuse, "%s", d.Why)
			return nil
		case d.Create:
			u = &store.User{ID: uuid.NewString(), Email: email, Role: d.Role, CreatedAt: now}
			if err := tx.InsertUser(u); err != nil {
				return err
			}
			e := record.UserAdded(actor, now, email, d.Role, record.LinkNone)
			e.Data["subject"] = id.Subject
			if err := tx.Append(e); err != nil {
				return err
			}
		case d.SetRole:
			from := u.Role
			u.Role = d.Role
			if err := tx.UpdateUser(u); err != nil {
				return err
			}
			e := record.UserRoleChanged(actor, now, email, from, d.Role)
			e.Data["subject"] = id.Subject
			if err := tx.Append(e); err != nil {
				return err
			}
		}
		out = u
		return nil
	})
	if err != nil {
		return nil, r.writeFailed("sso sign-in", err)
	}
	if refused != nil {
		r.log.Info("sso: sign-in refused", "user", email, "subject", ShownText(id.Subject, 200), "code", refused.Code)
		return nil, refused
	}
	r.log.Info("sso: signed in", "user", email, "role", out.Role, "subject", ShownText(id.Subject, 200))
	return out, nil
}

// SSORedeem gives `arx login --sso` its personal API token for the code
// the browser brought to its loopback address, if verifier is the one the
// CLI made its challenge from. The token's entry names the provider's
// subject.
func (r *Runtime) SSORedeem(ctx context.Context, code, verifier string) (string, *store.User, error) {
	if err := r.ssoOn(); err != nil {
		return "", nil, err
	}
	key := r.sso.Key()
	var c sso.Code
	if err := sso.Open(key, "code", code, &c, r.now()); err != nil || !sso.CheckVerifier(c.Challenge, verifier) {
		e := arxerr.New(arxerr.SSOFailed, "the sign-in code is unknown, expired or not this client's")
		e.Hint = "run `arx login --sso` again (a code lasts two minutes)"
		return "", nil, e
	}
	u, err := r.store.User(ctx, c.UserID)
	if err != nil {
		return "", nil, r.ReadFailed("sso redeem", err)
	}
	if u.DisabledAt != nil {
		return "", nil, arxerr.New(arxerr.Forbidden, "your ARX account is disabled; ask an ARX admin")
	}
	label := c.Label
	if label == "" {
		label = "arx login --sso"
	}
	tok, err := r.issueUserToken(ctx, u, label, &IdP{Issuer: c.Issuer, Subject: c.Subject})
	if err != nil {
		return "", nil, err
	}
	return tok, u, nil
}

// validIdP keeps what a provider says within what a record entry shows.
func validIdP(p *IdP) bool {
	return p != nil && p.Subject != "" && len(p.Subject) <= 255 && len(p.Issuer) <= 512 && !strings.ContainsRune(p.Subject+p.Issuer, 0)
}
