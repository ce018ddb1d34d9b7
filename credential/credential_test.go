package credential

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

func testIssuer(t *testing.T) *Issuer {
	i, _ := testIssuerKey(t)
	return i
}

func testIssuerKey(t *testing.T) (*Issuer, ed25519.PrivateKey) {
	t.Helper()
	k, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	i, err := NewIssuer("arx.test/origin", k)
	if err != nil {
		t.Fatal(err)
	}
	return i, k
}

func claims(now time.Time) Claims {
	return Claims{AgentID: "agent-1", CallID: "call-1", Connector: "crm", Action: "account.read", Risk: "low",
		IssuedAt: now, Expiry: now.Add(time.Minute)}
}

// sign makes a token with arbitrary headers and claims.
func sign(t *testing.T, alg jose.SignatureAlgorithm, key any, kid string, w any) string {
	t.Helper()
	opts := (&jose.SignerOptions{}).WithType("JWT")
	if kid != "" {
		opts = opts.WithHeader(jose.HeaderKey("kid"), kid)
	}
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: key}, opts)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jwt.Signed(s).Claims(w).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestKeySetVerify(t *testing.T) {
	now := time.Now()
	iss, selfKey := testIssuerKey(t)
	ks := iss.KeySet()
	good, err := iss.Sign(claims(now))
	if err != nil {
		t.Fatal(err)
	}
	if c, err := ks.Verify(good, now); err != nil || c.CallID != "call-1" || c.Connector != "crm" {
		t.Fatalf("good credential: %+v %v", c, err)
	}
	if err := (&Claims{Connector: "crm", Action: "account.read"}).Require("crm", "account.update"); !errors.Is(err, ErrMismatch) {
		t.Fatalf("Require: %v", err)
	}

	// Crafted tokens with the issuer's own key but wrong claims.
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	other, _ := NewIssuer("arx.test/origin", priv)
	base := func() wireClaims {
		return wireClaims{Claims: jwt.Claims{Issuer: "arx.test/origin", Subject: "agent-1", ID: "call-1",
			Audience: jwt.Audience{AudiencePrefix + "crm"}, IssuedAt: jwt.NewNumericDate(now), NotBefore: jwt.NewNumericDate(now),
			Expiry: jwt.NewNumericDate(now.Add(time.Minute))}, Connector: "crm", Action: "account.read"}
	}
	wrongAud := base()
	wrongAud.Audience = jwt.Audience{AudiencePrefix + "hr"}
	noExp := base()
	noExp.Expiry = nil
	expired := base()
	expired.Expiry = jwt.NewNumericDate(now.Add(-time.Second))
	future := base()
	future.NotBefore = jwt.NewNumericDate(now.Add(time.Minute))
	foreignIss := base()
	foreignIss.Issuer = "evil.example"
	hsKey := []byte(strings.Repeat("k", 32))

	kid := KeyID(selfKey.Public().(ed25519.PublicKey))
	for _, tc := range []struct {
		name string
		tok  string
		want error
	}{
		{"garbage", "not.a.jwt", ErrInvalid},
		{"too many parts", good + ".x", ErrInvalid},
		{"alg none", strings.Join([]string{"eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0", strings.Split(good, ".")[1], ""}, "."), ErrInvalid},
		{"HS256", sign(t, jose.HS256, hsKey, kid, base()), ErrInvalid},
		{"another key, same kid", sign(t, jose.EdDSA, priv, kid, base()), ErrInvalid},
		{"another issuer's key", mustSign(t, other, claims(now)), ErrInvalid},
		{"audience of another connector", sign(t, jose.EdDSA, selfKey, kid, wrongAud), ErrInvalid},
		{"no expiry", sign(t, jose.EdDSA, selfKey, kid, noExp), ErrInvalid},
		{"wrong issuer", sign(t, jose.EdDSA, selfKey, kid, foreignIss), ErrInvalid},
		{"expired", sign(t, jose.EdDSA, selfKey, kid, expired), ErrExpired},
		{"not yet valid", sign(t, jose.EdDSA, selfKey, kid, future), ErrExpired},
		{"tampered", good[:len(good)-6] + "AAAAAA", ErrInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := ks.Verify(tc.tok, now); !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
}

func mustSign(t *testing.T, i *Issuer, c Claims) string {
	tok, err := i.Sign(c)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestCallSecret(t *testing.T) {
	a, b := testIssuer(t), testIssuer(t)
	s1, s2 := a.CallSecret("pw", "call-1"), a.CallSecret("pw", "call-1")
	if s1 != s2 || len(s1) < 40 {
		t.Fatalf("not deterministic or too short: %q %q", s1, s2)
	}
	if s1 == a.CallSecret("pw", "call-2") || s1 == a.CallSecret("other", "call-1") || s1 == b.CallSecret("pw", "call-1") {
		t.Fatal("secrets collide across calls, purposes or keys")
	}
}
