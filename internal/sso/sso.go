// Package sso signs people in through an OpenID Connect identity provider:
// the authorization code flow with PKCE (RFC 7636) for the console, and the
// same flow ended on a loopback redirect for `arx login --sso`.
//
// A person is who the identity provider says: its ID token, checked with
// github.com/coreos/go-oidc (issuer, audience, expiry, signature from the
// provider's published keys, the nonce of this sign-in), names a subject
// and a verified email; a groups claim, where the server maps groups to
// roles, gives the person's role (Decide). The flow's state travels in a
// cookie sealed with the deployment's key (Seal, Open), so that any replica
// can finish a sign-in another started.
package sso

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"
)

// Config is the server's identity provider.
type Config struct {
	Issuer       string // the provider's issuer URL, as its discovery document says it
	ClientID     string
	ClientSecret string
	RedirectURL  string // this server's callback: PUBLIC_URL/console/sso/callback
	Name         string // how the sign-in button names the provider ("Okta"); "single sign-on" if empty
	Roles        Roles
	HTTPClient   *http.Client // nil: a client with a 10s timeout
}

// Identity is a person as the identity provider vouches for them.
type Identity struct {
	Issuer  string
	Subject string
	Email   string // verified by the provider
	Name    string
	Groups  []string
}

// Client talks to one identity provider. Its discovery document is read
// on first use (and again after a failure), so that the server starts
// while the provider is down.
type Client struct {
	cfg  Config
	hc   *http.Client
	mu   sync.Mutex
	prov *oidc.Provider
}

// New checks cfg.
func New(cfg Config) (*Client, error) {
	u, err := url.Parse(cfg.Issuer)
	if err != nil || u.Host == "" || (u.Scheme != "https" && !(u.Scheme == "http" && loopback(u.Hostname()))) {
		return nil, fmt.Errorf("the OIDC issuer %q must be an https URL (http only on this machine: localhost, 127.0.0.1)", cfg.Issuer)
	}
	if cfg.ClientID == "" {
		return nil, errors.New("the OIDC client id is empty")
	}
	if cfg.ClientSecret == "" {
		return nil, errors.New("the OIDC client secret is empty")
	}
	if r, err := url.Parse(cfg.RedirectURL); err != nil || r.Host == "" || (r.Scheme != "https" && r.Scheme != "http") {
		return nil, fmt.Errorf("single sign-on needs the server's public URL (arx serve --public-url): the provider sends people back to it")
	}
	if cfg.Name == "" {
		cfg.Name = "single sign-on"
	}
	hc := cfg.HTTPClient
	if hc == nil {
		hc = &http.Client{Timeout: 10 * time.Second}
	}
	return &Client{cfg: cfg, hc: hc}, nil
}

func loopback(host string) bool {
	return host == "localhost" || host == "127.0.0.1" || host == "::1"
}

// Key is the key sign-in flows and CLI codes are sealed with: derived from
// the client secret, which every replica has and the database does not,
// so that a copy of the database cannot forge a code that signs someone
// in.
func (c *Client) Key() []byte {
	m := hmac.New(sha256.New, []byte(c.cfg.ClientSecret))
	m.Write([]byte("arx sso sealing key\x00" + c.cfg.Issuer + "\x00" + c.cfg.ClientID))
	return m.Sum(nil)
}

// Name is how the console names the provider.
func (c *Client) Name() string { return c.cfg.Name }

// Issuer is the provider's issuer URL.
func (c *Client) Issuer() string { return c.cfg.Issuer }

// Roles is the server's mapping of groups to roles.
func (c *Client) Roles() Roles { return c.cfg.Roles }

func (c *Client) ctx(ctx context.Context) context.Context {
	return oidc.ClientContext(ctx, c.hc)
}

func (c *Client) provider(ctx context.Context) (*oidc.Provider, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.prov != nil {
		return c.prov, nil
	}
	p, err := oidc.NewProvider(c.ctx(ctx), c.cfg.Issuer)
	if err != nil {
		return nil, fmt.Errorf("read the identity provider's discovery document: %w", err)
	}
	c.prov = p
	return p, nil
}

func (c *Client) oauth(p *oidc.Provider) *oauth2.Config {
	return &oauth2.Config{ClientID: c.cfg.ClientID, ClientSecret: c.cfg.ClientSecret, RedirectURL: c.cfg.RedirectURL,
		Endpoint: p.Endpoint(), Scopes: []string{oidc.ScopeOpenID, "email", "profile"}}
}

// AuthURL is where a browser goes to sign in: the provider's authorization
// endpoint with this flow's state, nonce and PKCE challenge (S256).
func (c *Client) AuthURL(ctx context.Context, f *Flow) (string, error) {
	p, err := c.provider(ctx)
	if err != nil {
		return "", err
	}
	return c.oauth(p).AuthCodeURL(f.State, oidc.Nonce(f.Nonce), oauth2.S256ChallengeOption(f.Verifier)), nil
}

// Exchange redeems the code the provider sent back for tokens, checks the
// ID token (signature, issuer, audience, expiry, the flow's nonce) and
// returns who it names. The email must be verified by the provider; where
// the ID token leaves claims out, the UserInfo endpoint is asked, and its
// subject must be the token's.
func (c *Client) Exchange(ctx context.Context, f *Flow, code string) (*Identity, error) {
	p, err := c.provider(ctx)
	if err != nil {
		return nil, err
	}
	oc := c.oauth(p)
	tok, err := oc.Exchange(c.ctx(ctx), code, oauth2.VerifierOption(f.Verifier))
	if err != nil {
		return nil, fmt.Errorf("redeem the authorization code: %w", err)
	}
	raw, ok := tok.Extra("id_token").(string)
	if !ok || raw == "" {
		return nil, errors.New("the provider's token response has no id_token")
	}
	idt, err := p.Verifier(&oidc.Config{ClientID: c.cfg.ClientID}).Verify(c.ctx(ctx), raw)
	if err != nil {
		return nil, fmt.Errorf("check the ID token: %w", err)
	}
	if subtle.ConstantTimeCompare([]byte(idt.Nonce), []byte(f.Nonce)) != 1 {
		return nil, errors.New("the ID token's nonce is not this sign-in's")
	}
	var cl claims
	if err := idt.Claims(&cl); err != nil {
		return nil, fmt.Errorf("read the ID token's claims: %w", err)
	}
	claim := ""
	if c.cfg.Roles.On() {
		claim = c.cfg.Roles.Claim
	}
	groups, err := groupsOf(idt.Claims, claim)
	if err != nil {
		return nil, err
	}
	if cl.Email == "" || cl.Verified == nil || (claim != "" && groups == nil) {
		ui, err := p.UserInfo(c.ctx(ctx), oauth2.StaticTokenSource(tok))
		if err != nil {
			return nil, fmt.Errorf("ask the provider's UserInfo endpoint: %w", err)
		}
		if ui.Subject != idt.Subject {
			return nil, errors.New("the UserInfo endpoint names another subject than the ID token")
		}
		var more claims
		if err := ui.Claims(&more); err != nil {
			return nil, fmt.Errorf("read the UserInfo claims: %w", err)
		}
		switch {
		case cl.Email == "":
			cl.Email, cl.Verified = more.Email, more.Verified
		case cl.Verified == nil && strings.EqualFold(more.Email, cl.Email):
			cl.Verified = more.Verified
		}
		if cl.Name == "" {
			cl.Name = more.Name
		}
		if groups == nil {
			if groups, err = groupsOf(ui.Claims, claim); err != nil {
				return nil, err
			}
		}
	}
	if cl.Email == "" {
		return nil, errors.New("the provider did not say the person's email (the client needs the email scope)")
	}
	if cl.Verified == nil || !bool(*cl.Verified) {
		return nil, fmt.Errorf("the provider has not verified the email %q", cl.Email)
	}
	return &Identity{Issuer: idt.Issuer, Subject: idt.Subject, Email: cl.Email, Name: cl.Name, Groups: groups}, nil
}

type claims struct {
	Email    string   `json:"email"`
	Verified *boolish `json:"email_verified"`
	Name     string   `json:"name"`
}

// boolish reads email_verified as a JSON boolean, or as the string "true"
// that some providers send.
type boolish bool

func (b *boolish) UnmarshalJSON(p []byte) error {
	switch strings.Trim(string(p), `"`) {
	case "true":
		*b = true
	case "false":
		*b = false
	default:
		return fmt.Errorf("email_verified is %s, not a boolean", p)
	}
	return nil
}

// groupsOf reads the groups claim (a list of strings, or one string); nil
// when the claim is absent or not asked for.
func groupsOf(read func(any) error, claim string) ([]string, error) {
	if claim == "" {
		return nil, nil
	}
	var all map[string]any
	if err := read(&all); err != nil {
		return nil, fmt.Errorf("read the claims: %w", err)
	}
	v, ok := all[claim]
	if !ok || v == nil {
		return nil, nil
	}
	switch g := v.(type) {
	case string:
		return []string{g}, nil
	case []any:
		out := make([]string, 0, len(g))
		for _, x := range g {
			s, ok := x.(string)
			if !ok {
				return nil, fmt.Errorf("the %q claim holds a %T, not strings", claim, x)
			}
			out = append(out, s)
		}
		return out, nil
	}
	return nil, fmt.Errorf("the %q claim is a %T, not a list of strings", claim, v)
}
