package credential

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// Strings that need escaping, or that JSON, JavaScript or UTF-8 treat
// specially.
const (
	sQuotes  = `say "hi" ""`
	sBacksl  = `C:\path\to\"x\"\`
	sControl = "\x00\x01\b\f\n\r\t\x1b\x1f\x7f|"
	sUnicode = "résumé 日本語 🚀 \u00a0\ufeff"
	sLineSep = "line\u2028sep\u2029para"
	sHTML    = "<script>&amp;</script>"
	sFFFD    = "\ufffd"
	sInvalid = "bad\xffbyte\xed\xa0\x80end\xc3" // decodes with a U+FFFD for each bad byte
)

// valid is s as it decodes from a token: each byte that is not UTF-8 is a
// U+FFFD.
func valid(s string) string { return string([]rune(s)) }

type signCase struct {
	name   string
	issuer string
	c      Claims
	now    time.Time // when to verify; zero: IssuedAt, whole seconds
	want   error     // from KeySet.Verify at now
}

func signCases() []signCase {
	t0 := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	base := func(mod func(*Claims)) Claims {
		c := Claims{AgentID: "agt_1", CallID: "call_1", Connector: "crm", Action: "account.read", Risk: "low",
			IssuedAt: t0, Expiry: t0.Add(5 * time.Minute)}
		if mod != nil {
			mod(&c)
		}
		return c
	}
	all := func(s string) Claims {
		return base(func(c *Claims) { c.AgentID, c.CallID, c.Connector, c.Action, c.Risk = s, s+"1", s+"2", s+"3", s+"4" })
	}
	long := strings.Repeat("é\"<", 100) // past the on-stack buffers, under MaxTokenSize
	return []signCase{
		{name: "plain", issuer: "arx.test/origin", c: base(nil)},
		{name: "with arguments", issuer: "arx.test/origin", c: base(func(c *Claims) { c.ArgsHash = strings.Repeat("ab", 32) })},
		{name: "quotes", issuer: sQuotes, c: all(sQuotes)},
		{name: "backslashes", issuer: sBacksl, c: all(sBacksl)},
		{name: "control characters", issuer: sControl, c: all(sControl)},
		{name: "non-ASCII", issuer: sUnicode, c: all(sUnicode)},
		{name: "U+2028 and U+2029", issuer: sLineSep, c: all(sLineSep)},
		{name: "HTML", issuer: sHTML, c: all(sHTML)},
		{name: "U+FFFD", issuer: sFFFD, c: all(sFFFD)},
		// Not in the issuer name: its decoded form would not equal the
		// name KeySet.Verify compares it with.
		{name: "invalid UTF-8", issuer: "arx", c: all(sInvalid)},
		{name: "every special at once", issuer: "arx", c: all(sQuotes + sBacksl + sControl + sUnicode + sLineSep + sHTML + sInvalid)},
		{name: "long", issuer: "arx", c: base(func(c *Claims) { c.Action = long })},
		{name: "empty risk", issuer: "arx", c: base(func(c *Claims) { c.Risk = "" })},
		{name: "sub-second times truncate", issuer: "arx", c: base(func(c *Claims) {
			c.IssuedAt, c.Expiry = t0.Add(999999999), t0.Add(time.Minute+999999999)
		})},
		{name: "expiry one second on", issuer: "arx", c: base(func(c *Claims) { c.Expiry = t0.Add(time.Second) })},
		{name: "expiry in the same second", issuer: "arx", c: base(func(c *Claims) { c.Expiry = t0.Add(time.Second - 1) }), want: ErrExpired},
		{name: "expired", issuer: "arx", c: base(nil), now: t0.Add(5 * time.Minute), want: ErrExpired},
		{name: "within the nbf leeway", issuer: "arx", c: base(nil), now: t0.Add(-leeway)},
		{name: "before the nbf leeway", issuer: "arx", c: base(nil), now: t0.Add(-leeway - time.Second), want: ErrExpired},
		{name: "before 1970", issuer: "arx", c: base(func(c *Claims) {
			c.IssuedAt, c.Expiry = time.Unix(-86400, 500), time.Unix(-1, 999999999)
		})},
		{name: "far future", issuer: "arx", c: base(func(c *Claims) { c.Expiry = time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC) })},
		{name: "other time zone", issuer: "arx", c: base(func(c *Claims) {
			c.IssuedAt, c.Expiry = t0.In(time.FixedZone("X", 5*3600+1800)), t0.Add(time.Hour).In(time.FixedZone("Y", -7*3600))
		})},
		// Claims go-jose leaves out when empty: such tokens do not verify,
		// but Sign must still make the token go-jose made.
		{name: "no agent, call or issuer", issuer: "", c: base(func(c *Claims) { c.AgentID, c.CallID = "", "" }), want: ErrInvalid},
		{name: "zero times", issuer: "arx", c: base(func(c *Claims) { c.IssuedAt, c.Expiry = time.Time{}, time.Time{} }), want: ErrInvalid},
		{name: "empty", issuer: "", c: Claims{}, want: ErrInvalid},
	}
}

func testKey(t testing.TB) ed25519.PrivateKey {
	t.Helper()
	k, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func newTestIssuer(t testing.TB, name string, k ed25519.PrivateKey) *Issuer {
	t.Helper()
	i, err := NewIssuer(name, k)
	if err != nil {
		t.Fatal(err)
	}
	return i
}

// joseWire is what Issuer.Sign signed through go-jose before it wrote the
// token itself.
func joseWire(issuer string, c Claims) wireClaims {
	return wireClaims{
		Claims: jwt.Claims{
			Issuer:    issuer,
			Subject:   c.AgentID,
			Audience:  jwt.Audience{AudiencePrefix + c.Connector},
			ID:        c.CallID,
			IssuedAt:  jwt.NewNumericDate(c.IssuedAt),
			NotBefore: jwt.NewNumericDate(c.IssuedAt),
			Expiry:    jwt.NewNumericDate(c.Expiry),
		},
		Connector: c.Connector, Action: c.Action, Risk: c.Risk, ArgsHash: c.ArgsHash,
	}
}

// joseSign is the token go-jose makes for c.
func joseSign(t *testing.T, k ed25519.PrivateKey, issuer string, c Claims) string {
	return sign(t, jose.EdDSA, k, KeyID(k.Public().(ed25519.PublicKey)), joseWire(issuer, c))
}

func TestSignMatchesGoJose(t *testing.T) {
	k := testKey(t)
	for _, tc := range signCases() {
		t.Run(tc.name, func(t *testing.T) {
			got := mustSign(t, newTestIssuer(t, tc.issuer, k), tc.c)
			if want := joseSign(t, k, tc.issuer, tc.c); got != want {
				t.Fatalf("token differs from go-jose's\n got %s\nwant %s\n got payload %s\nwant payload %s",
					got, want, segment(t, got, 1), segment(t, want, 1))
			}
		})
	}
}

func TestSignVerifies(t *testing.T) {
	k := testKey(t)
	for _, tc := range signCases() {
		t.Run(tc.name, func(t *testing.T) {
			iss := newTestIssuer(t, tc.issuer, k)
			tok := mustSign(t, iss, tc.c)
			now := tc.now
			if now.IsZero() {
				now = time.Unix(tc.c.IssuedAt.Unix(), 0)
			}
			got, err := iss.KeySet().Verify(tok, now)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Verify: %v, want %v", err, tc.want)
			}
			if got == nil {
				return
			}
			want := Claims{Issuer: tc.issuer, AgentID: valid(tc.c.AgentID), CallID: valid(tc.c.CallID),
				Connector: valid(tc.c.Connector), Action: valid(tc.c.Action), Risk: valid(tc.c.Risk),
				IssuedAt: time.Unix(tc.c.IssuedAt.Unix(), 0), Expiry: time.Unix(tc.c.Expiry.Unix(), 0)}
			if !claimsEqual(*got, want) {
				t.Fatalf("Verify claims\n got %+v\nwant %+v", *got, want)
			}
		})
	}
}

func claimsEqual(a, b Claims) bool {
	return a.Issuer == b.Issuer && a.AgentID == b.AgentID && a.CallID == b.CallID && a.Connector == b.Connector &&
		a.Action == b.Action && a.Risk == b.Risk && a.IssuedAt.Equal(b.IssuedAt) && a.Expiry.Equal(b.Expiry)
}

// TestSignClaims decodes new tokens with go-jose itself, into the claims
// struct and into a map, and compares with the Claims signed.
func TestSignClaims(t *testing.T) {
	k := testKey(t)
	pub := k.Public().(ed25519.PublicKey)
	for _, tc := range signCases() {
		t.Run(tc.name, func(t *testing.T) {
			tok, err := jwt.ParseSigned(mustSign(t, newTestIssuer(t, tc.issuer, k), tc.c), []jose.SignatureAlgorithm{jose.EdDSA})
			if err != nil {
				t.Fatal(err)
			}
			var w wireClaims
			var m map[string]any
			if err := tok.Claims(pub, &w, &m); err != nil {
				t.Fatal(err)
			}
			c := tc.c
			c.AgentID, c.CallID, c.Connector, c.Action, c.Risk = valid(c.AgentID), valid(c.CallID), valid(c.Connector), valid(c.Action), valid(c.Risk)
			if want := joseWire(valid(tc.issuer), c); !reflect.DeepEqual(w, want) {
				t.Fatalf("claims\n got %+v\nwant %+v", w, want)
			}
			keys := []string{"act", "aud", "cnr", "risk"}
			for _, o := range []struct {
				key     string
				present bool
			}{{"iss", tc.issuer != ""}, {"sub", c.AgentID != ""}, {"jti", c.CallID != ""},
				{"iat", !c.IssuedAt.IsZero()}, {"nbf", !c.IssuedAt.IsZero()}, {"exp", !c.Expiry.IsZero()}, {"args", c.ArgsHash != ""}} {
				if o.present {
					keys = append(keys, o.key)
				}
			}
			slices.Sort(keys)
			var got []string
			for key, v := range m {
				got = append(got, key)
				switch key {
				case "iat", "nbf", "exp":
					if _, ok := v.(float64); !ok {
						t.Errorf("%s is %T, want a number", key, v)
					}
				default:
					if _, ok := v.(string); !ok {
						t.Errorf("%s is %T, want a string", key, v)
					}
				}
			}
			slices.Sort(got)
			if !slices.Equal(got, keys) {
				t.Fatalf("claim names %q, want %q", got, keys)
			}
		})
	}
}

// flip changes the character at i of a base64url string to another.
func flip(s string, i int) string {
	c := byte('A')
	if s[i] == c {
		c = 'B'
	}
	return s[:i] + string(c) + s[i+1:]
}

func segment(t *testing.T, tok string, n int) string {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("%q: not three segments", tok)
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[n])
	if err != nil {
		t.Fatalf("segment %d: %v", n, err)
	}
	return string(b)
}

func TestSignHeader(t *testing.T) {
	k := testKey(t)
	kid := KeyID(k.Public().(ed25519.PublicKey))
	tok := mustSign(t, newTestIssuer(t, "arx", k), claims(time.Now()))
	if got, want := segment(t, tok, 0), `{"alg":"EdDSA","kid":"`+kid+`","typ":"JWT"}`; got != want {
		t.Fatalf("header %s, want %s", got, want)
	}
	p, err := jwt.ParseSigned(tok, []jose.SignatureAlgorithm{jose.EdDSA})
	if err != nil {
		t.Fatal(err)
	}
	if h := p.Headers[0]; h.Algorithm != "EdDSA" || h.KeyID != kid || h.ExtraHeaders["typ"] != "JWT" {
		t.Fatalf("go-jose reads the header as %+v", h)
	}
}

// TestSignTampered: a token whose payload (or header) was changed after
// signing does not verify.
func TestSignTampered(t *testing.T) {
	now := time.Now()
	iss := testIssuer(t)
	ks := iss.KeySet()
	tok := mustSign(t, iss, claims(now))
	parts := strings.Split(tok, ".")
	payload := segment(t, tok, 1)
	enc := base64.RawURLEncoding.EncodeToString
	with := func(header, payload string) string { return header + "." + payload + "." + parts[2] }
	var m map[string]any
	if err := json.Unmarshal([]byte(payload), &m); err != nil {
		t.Fatal(err)
	}
	remarshal := func(mod func(map[string]any)) string { // as encoding/json writes it
		c := make(map[string]any, len(m))
		for k, v := range m {
			c[k] = v
		}
		mod(c)
		b, err := json.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		return enc(b)
	}
	for _, tc := range []struct{ name, tok string }{
		{"another action", with(parts[0], remarshal(func(m map[string]any) { m["act"] = "account.delete" }))},
		{"later expiry", with(parts[0], remarshal(func(m map[string]any) { m["exp"] = m["exp"].(float64) + 3600 }))},
		{"another connector", with(parts[0], remarshal(func(m map[string]any) { m["cnr"], m["aud"] = "hr", AudiencePrefix+"hr" }))},
		{"same claims, other spacing", with(parts[0], enc([]byte(strings.ReplaceAll(payload, ",", ", "))))},
		{"trailing space", with(parts[0], enc([]byte(payload+" ")))},
		{"one character", with(parts[0], flip(parts[1], len(parts[1])/2))},
		{"empty payload", with(parts[0], "")},
		{"header without typ", with(enc([]byte(`{"alg":"EdDSA","kid":"`+iss.keyID+`"}`)), parts[1])},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.tok == tok {
				t.Fatal("not altered")
			}
			if _, err := ks.Verify(tc.tok, now); !errors.Is(err, ErrInvalid) {
				t.Fatalf("got %v, want ErrInvalid", err)
			}
		})
	}
}

// FuzzSign: for any strings, Sign makes the token go-jose makes.
func FuzzSign(f *testing.F) {
	k := ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize))
	for _, tc := range signCases() {
		f.Add(tc.issuer, tc.c.AgentID, tc.c.Connector, tc.c.Action, tc.c.IssuedAt.UnixNano())
	}
	f.Fuzz(func(t *testing.T, issuer, agent, connector, action string, iat int64) {
		c := Claims{AgentID: agent, CallID: action + agent, Connector: connector, Action: action, Risk: issuer + connector,
			IssuedAt: time.Unix(0, iat), Expiry: time.Unix(0, iat).Add(time.Minute)}
		if got, want := mustSign(t, newTestIssuer(t, issuer, k), c), joseSign(t, k, issuer, c); got != want {
			t.Fatalf("token differs from go-jose's\n got %s\nwant %s", got, want)
		}
	})
}

var (
	benchTok string
	benchSig []byte
)

// BenchmarkSign measures Issuer.Sign and, in the same run, ed25519.Sign
// alone over the same signing input (header.payload), and reports the ratio
// as x-ed25519: what the JWS serialization costs on top of the signature.
func BenchmarkSign(b *testing.B) {
	benchSign(b, func(i *Issuer, c Claims) string {
		tok, err := i.Sign(c)
		if err != nil {
			b.Fatal(err)
		}
		return tok
	})
}

// BenchmarkSignGoJose is BenchmarkSign through go-jose, as Sign was.
func BenchmarkSignGoJose(b *testing.B) {
	var s jose.Signer
	benchSign(b, func(i *Issuer, c Claims) string {
		if s == nil {
			var err error
			s, err = jose.NewSigner(jose.SigningKey{Algorithm: jose.EdDSA, Key: i.key},
				(&jose.SignerOptions{}).WithType("JWT").WithHeader(jose.HeaderKey("kid"), i.keyID))
			if err != nil {
				b.Fatal(err)
			}
		}
		tok, err := jwt.Signed(s).Claims(joseWire(i.name, c)).Serialize()
		if err != nil {
			b.Fatal(err)
		}
		return tok
	})
}

func benchSign(b *testing.B, sign func(*Issuer, Claims) string) {
	k := ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize))
	iss := newTestIssuer(b, "https://arx.example/origin", k)
	now := time.Unix(1767225600, 0)
	c := Claims{AgentID: "agt_01JH8Z6Q4W8K2M5N7P9R3T5V7X", CallID: "call_01JH8Z7B2C4D6E8F0G2H4J6K8M",
		Connector: "salesforce-crm", Action: "account.read", Risk: "medium", IssuedAt: now, Expiry: now.Add(5 * time.Minute)}
	tok := sign(iss, c)
	input := []byte(tok[:strings.LastIndexByte(tok, '.')])

	b.ReportAllocs()
	for b.Loop() {
		benchTok = sign(iss, c)
	}
	per := float64(b.Elapsed()) / float64(b.N)

	// The timer is stopped once b.Loop is done: this loop is neither timed
	// nor counted in allocs/op.
	start := time.Now()
	for range b.N {
		benchSig = ed25519.Sign(k, input)
	}
	raw := float64(time.Since(start)) / float64(b.N)
	b.ReportMetric(raw, "ed25519-ns/op")
	b.ReportMetric(per/raw, "x-ed25519")
}
