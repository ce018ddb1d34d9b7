// Package credential is the per-call credential ARX issues: a compact JWS
// (JWT) signed with Ed25519, bound to one agent, call, connector and action,
// and short-lived. ARX signs with an Issuer; a system of record verifies with
// the public keys ARX publishes at /.well-known/jwks.json (a KeySet), then
// asks ARX whether the call is still open (Verifier does both).
//
// Only EdDSA is accepted: a token naming any other algorithm, "none"
// included, is refused before its signature is looked at.
package credential

import (
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// AudiencePrefix starts the audience of every credential: the connector it
// is for follows.
const AudiencePrefix = "arx:connector:"

// MaxTokenSize bounds a credential presented for verification.
const MaxTokenSize = 4096

// Claims are what a credential asserts.
type Claims struct {
	Issuer    string // the ARX deployment
	AgentID   string // sub
	CallID    string // jti
	Connector string // cnr; aud is AudiencePrefix + Connector
	Action    string // act
	Risk      string // effective risk
	// ArgsHash is the SHA-256 (hex) of the call's arguments, as recorded
	// and approved ("args"; absent when it had none).
	ArgsHash string
	IssuedAt time.Time // iat and nbf
	Expiry   time.Time // exp
}

type wireClaims struct {
	jwt.Claims
	Connector string `json:"cnr"`
	Action    string `json:"act"`
	Risk      string `json:"risk"`
	ArgsHash  string `json:"args,omitempty"`
}

// Errors a verifier decides on.
var (
	ErrInvalid  = errors.New("credential: invalid")  // malformed, wrong algorithm, unknown key, bad signature, wrong issuer
	ErrExpired  = errors.New("credential: expired")  // exp has passed (or nbf not yet reached)
	ErrMismatch = errors.New("credential: mismatch") // valid, but for another connector or action
)

// Issuer signs credentials.
type Issuer struct {
	name   string
	keyID  string
	key    ed25519.PrivateKey
	header string // the encoded protected header and its '.': the same for every token
	pub    ed25519.PublicKey
	derive []byte // key of CallSecret, derived from the signing key
}

// GenerateKey makes a new Ed25519 signing key.
func GenerateKey() (ed25519.PrivateKey, error) {
	_, k, err := ed25519.GenerateKey(rand.Reader)
	return k, err
}

// KeyID derives the stable key id of a public key: the first 16 bytes of its
// SHA-256, base64url.
func KeyID(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return base64.RawURLEncoding.EncodeToString(sum[:16])
}

// NewIssuer returns an Issuer named name (the iss claim) signing with key.
func NewIssuer(name string, key ed25519.PrivateKey) (*Issuer, error) {
	if len(key) != ed25519.PrivateKeySize {
		return nil, errors.New("credential: signing key is not an Ed25519 private key")
	}
	pub := key.Public().(ed25519.PublicKey)
	kid := KeyID(pub)
	dk := sha256.Sum256(append([]byte("arx call secret v1\x00"), key.Seed()...))
	key = append(ed25519.PrivateKey(nil), key...) // the caller's slice may change
	return &Issuer{name: name, keyID: kid, key: key, header: encodeHeader(kid) + ".", pub: pub, derive: dk[:]}, nil
}

// CallSecret derives a secret for one call and purpose, such as the password
// of the call's database role: 256 bits, base64url. It depends only on the
// signing key, so every replica and every retry derives the same one, and it
// is never stored.
func (i *Issuer) CallSecret(purpose, callID string) string {
	m := hmac.New(sha256.New, i.derive)
	m.Write([]byte(purpose))
	m.Write([]byte{0})
	m.Write([]byte(callID))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// Name is the issuer name.
func (i *Issuer) Name() string { return i.name }

// Sign returns the compact credential for c. Ed25519 is deterministic, so
// the same claims always give the same token: a call's credential can be
// handed out again (to a retried request) without minting a second one.
//
// Sign runs on every call, so it writes the JWS itself (see jws.go) rather
// than through go-jose, byte for byte the token go-jose would make.
// c.Issuer is not read: the iss claim is the Issuer's name. The error is
// always nil.
func (i *Issuer) Sign(c Claims) (string, error) {
	return i.sign(c), nil
}

// KeySet is the JWKS document of this issuer's public key.
func (i *Issuer) KeySet() *KeySet {
	return &KeySet{Issuer: i.name, set: jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{
		Key: i.pub, KeyID: i.keyID, Algorithm: string(jose.EdDSA), Use: "sig"}}}}
}

// KeySet verifies credentials with published public keys.
type KeySet struct {
	// Issuer, when set, must equal the iss claim.
	Issuer string
	set    jose.JSONWebKeySet
}

// MarshalJSON renders the JWKS document.
func (k *KeySet) MarshalJSON() ([]byte, error) { return json.Marshal(k.set) }

// ParseKeySet reads a JWKS document. Only Ed25519 signing keys are kept.
func ParseKeySet(data []byte, issuer string) (*KeySet, error) {
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(data, &set); err != nil {
		return nil, fmt.Errorf("credential: jwks: %w", err)
	}
	ks := &KeySet{Issuer: issuer}
	for _, k := range set.Keys {
		if _, ok := k.Key.(ed25519.PublicKey); ok && (k.Use == "" || k.Use == "sig") {
			ks.set.Keys = append(ks.set.Keys, k)
		}
	}
	if len(ks.set.Keys) == 0 {
		return nil, errors.New("credential: jwks has no Ed25519 signing key")
	}
	return ks, nil
}

// Verify checks a credential's signature, issuer and time window at now,
// and returns its claims. It does not know whether the call is still open:
// ask ARX (Verifier.Check) for that.
func (k *KeySet) Verify(token string, now time.Time) (*Claims, error) {
	if len(token) > MaxTokenSize || strings.Count(token, ".") != 2 {
		return nil, fmt.Errorf("%w: not a compact JWS", ErrInvalid)
	}
	tok, err := jwt.ParseSigned(token, []jose.SignatureAlgorithm{jose.EdDSA})
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if len(tok.Headers) != 1 {
		return nil, fmt.Errorf("%w: want one signature", ErrInvalid)
	}
	keys := k.set.Key(tok.Headers[0].KeyID)
	if len(keys) == 0 {
		return nil, fmt.Errorf("%w: unknown key id", ErrInvalid)
	}
	var w wireClaims
	if err := tok.Claims(keys[0].Key, &w); err != nil {
		return nil, fmt.Errorf("%w: bad signature", ErrInvalid)
	}
	if w.Subject == "" || w.ID == "" || w.Connector == "" || w.Action == "" || w.Expiry == nil || w.NotBefore == nil {
		return nil, fmt.Errorf("%w: missing claims", ErrInvalid)
	}
	if k.Issuer != "" && w.Issuer != k.Issuer {
		return nil, fmt.Errorf("%w: issued by %q", ErrInvalid, w.Issuer)
	}
	if !w.Audience.Contains(AudiencePrefix + w.Connector) {
		return nil, fmt.Errorf("%w: audience does not match the connector", ErrInvalid)
	}
	c := &Claims{Issuer: w.Issuer, AgentID: w.Subject, CallID: w.ID, Connector: w.Connector, Action: w.Action,
		Risk: w.Risk, ArgsHash: w.ArgsHash, IssuedAt: w.NotBefore.Time(), Expiry: w.Expiry.Time()}
	if !now.Before(c.Expiry) {
		return c, ErrExpired
	}
	if now.Before(c.IssuedAt.Add(-leeway)) {
		return c, fmt.Errorf("%w: not valid yet", ErrExpired)
	}
	return c, nil
}

// leeway tolerates clock skew between ARX and a system of record on nbf.
const leeway = 5 * time.Second

// Require checks that c is for the given connector and, when action is not
// empty, that action.
func (c *Claims) Require(connector, action string) error {
	if c.Connector != connector {
		return fmt.Errorf("%w: credential is for connector %q", ErrMismatch, c.Connector)
	}
	if action != "" && c.Action != action {
		return fmt.Errorf("%w: credential is for action %q", ErrMismatch, c.Action)
	}
	return nil
}
