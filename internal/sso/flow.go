package sso

import (
	"crypto/hmac"
	"crypto/rand"
	"errors"
	"net"
	"net/url"
	"time"

	"golang.org/x/oauth2"

	"github.com/arxsec/arx/internal/sealed"
)

// FlowTTL is how long a sign-in may take, from the button to the
// provider's answer.
const FlowTTL = 10 * time.Minute

// CodeTTL is how long `arx login --sso` has to redeem its code.
const CodeTTL = 2 * time.Minute

// Flow is one sign-in in progress: what the callback checks the
// provider's answer against. It travels sealed in a cookie.
type Flow struct {
	State    string `json:"s"`
	Nonce    string `json:"n"`
	Verifier string `json:"v"` // the PKCE code verifier
	Next     string `json:"x,omitempty"`
	CLI      *CLI   `json:"c,omitempty"`
	Expires  int64  `json:"e"`
}

// CLI is a sign-in that `arx login --sso` started: the browser is sent
// back to the CLI's loopback address with a code that only the holder of
// the challenge's verifier can redeem (RFC 8252, with PKCE).
type CLI struct {
	Redirect  string `json:"r"` // http://127.0.0.1:PORT/...
	State     string `json:"s"` // the CLI's own state, sent back to it
	Challenge string `json:"c"` // S256 of the CLI's verifier
	Label     string `json:"l,omitempty"`
}

// NewFlow starts a sign-in.
func NewFlow(next string, cli *CLI, now time.Time) *Flow {
	return &Flow{State: rand.Text(), Nonce: rand.Text(), Verifier: oauth2.GenerateVerifier(), Next: next, CLI: cli,
		Expires: now.Add(FlowTTL).Unix()}
}

// Code is what the CLI redeems for a personal token.
type Code struct {
	UserID    string `json:"u"`
	Issuer    string `json:"i"`
	Subject   string `json:"s"`
	Challenge string `json:"c"`
	Label     string `json:"l,omitempty"`
	Expires   int64  `json:"e"`
}

// Seal signs a Flow or a Code for one purpose ("flow", "code"): a value
// sealed for one purpose does not open for another.
func Seal(key []byte, purpose string, v any) string { return sealed.Seal(key, "sso "+purpose, v) }

// ErrExpired is Open's answer for a sealed value past its expiry.
var ErrExpired = errors.New("expired")

// expiring is what Open opens: a Flow or a Code.
type expiring interface{ expires() int64 }

func (f *Flow) expires() int64 { return f.Expires }
func (c *Code) expires() int64 { return c.Expires }

// Open checks what Seal made (constant-time) and decodes it into v; past
// v's expiry, ErrExpired.
func Open(key []byte, purpose, s string, v expiring, now time.Time) error {
	if err := sealed.Open(key, "sso "+purpose, s, 8192, v); err != nil {
		return err
	}
	if now.Unix() >= v.expires() {
		return ErrExpired
	}
	return nil
}

// Challenge is the PKCE S256 challenge of a verifier.
func Challenge(verifier string) string { return oauth2.S256ChallengeFromVerifier(verifier) }

// CheckVerifier says, in constant time, whether verifier is the one
// challenge was made from.
func CheckVerifier(challenge, verifier string) bool {
	return hmac.Equal([]byte(Challenge(verifier)), []byte(challenge))
}

// CheckLoopback accepts only a CLI redirect to this machine's loopback
// interface over http, with a port (RFC 8252 section 7.3): the browser
// hands the code to a process on the person's own machine.
func CheckLoopback(redirect string) error {
	u, err := url.Parse(redirect)
	if err != nil || u.Scheme != "http" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return errors.New("the CLI's redirect must be a plain http://127.0.0.1:PORT/path URL")
	}
	ip := net.ParseIP(u.Hostname())
	if ip == nil || !ip.IsLoopback() {
		return errors.New("the CLI's redirect must go to a loopback address (127.0.0.1 or [::1])")
	}
	if u.Port() == "" {
		return errors.New("the CLI's redirect must name a port")
	}
	return nil
}
