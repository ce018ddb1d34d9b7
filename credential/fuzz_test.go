package credential

import (
	"testing"
	"time"
)

// FuzzVerify: no token, however malformed, panics the verifier or passes
// without a valid signature by the issuer's key.
func FuzzVerify(f *testing.F) {
	k, _ := GenerateKey()
	iss, _ := NewIssuer("arx.test", k)
	now := time.Now()
	tok, _ := iss.Sign(Claims{AgentID: "a", CallID: "c", Connector: "crm", Action: "read", Risk: "low", IssuedAt: now, Expiry: now.Add(time.Hour)})
	f.Add(tok)
	f.Add("eyJhbGciOiJub25lIn0.eyJzdWIiOiJhIn0.")
	f.Add("a.b.c")
	ks := iss.KeySet()
	f.Fuzz(func(t *testing.T, token string) {
		c, err := ks.Verify(token, now)
		if err == nil && token != tok {
			// Ed25519 signatures are not malleable in Go's implementation,
			// so only the issued token itself may verify.
			t.Fatalf("a different token verified: %q (%+v)", token, c)
		}
	})
}
