package credential

import (
	"crypto/ed25519"
	"encoding/base64"
	"strconv"
	"time"
	"unicode/utf8"
)

// The signing half of the compact JWS, written by hand: Sign is on every
// governed call's path, and go-jose's builder marshals the claims, decodes
// them into a map and marshals the map again (about 180 allocations, twice
// the time of the signature itself). The output is the token go-jose made,
// byte for byte (sign_test.go checks it against go-jose): the protected
// header and the claims are objects with their keys in sorted order, and
// strings are escaped as go-jose's json package escapes them. Verification
// stays with go-jose (KeySet.Verify).

var b64 = base64.RawURLEncoding

// encodeHeader is the encoded protected header of every token signed under
// key id kid: {"alg":"EdDSA","kid":kid,"typ":"JWT"}.
func encodeHeader(kid string) string {
	h := []byte(`{"alg":"EdDSA","kid":`)
	h = appendString(h, kid)
	h = append(h, `,"typ":"JWT"}`...)
	return b64.EncodeToString(h)
}

// sigLen is the length of an encoded Ed25519 signature.
var sigLen = b64.EncodedLen(ed25519.SignatureSize)

// sign makes the compact token for c: header.payload.signature.
func (i *Issuer) sign(c Claims) string {
	// Both buffers stay on the stack unless the claims are unusually long;
	// the returned string is then the one allocation.
	var pbuf [512]byte
	p := i.appendPayload(pbuf[:0], c)
	n := len(i.header) + b64.EncodedLen(len(p)) + 1 + sigLen
	var tbuf [1024]byte
	t := tbuf[:0]
	if n > cap(t) {
		t = make([]byte, 0, n)
	}
	t = append(t, i.header...)
	t = b64.AppendEncode(t, p)
	sig := ed25519.Sign(i.key, t)
	t = append(t, '.')
	t = b64.AppendEncode(t, sig)
	return string(t)
}

// appendPayload appends the JWT claims of c as go-jose marshals wireClaims:
// keys in sorted order, iss, sub and jti left out when empty, iat and nbf
// when IssuedAt is zero, exp when Expiry is zero, dates in whole seconds
// since the epoch (jwt.NewNumericDate), and aud a single string.
func (i *Issuer) appendPayload(b []byte, c Claims) []byte {
	b = append(b, `{"act":`...)
	b = appendString(b, c.Action)
	if c.ArgsHash != "" {
		b = append(b, `,"args":`...)
		b = appendString(b, c.ArgsHash)
	}
	b = append(b, `,"aud":`...)
	b = appendString2(b, AudiencePrefix, c.Connector)
	b = append(b, `,"cnr":`...)
	b = appendString(b, c.Connector)
	if !c.Expiry.IsZero() {
		b = append(b, `,"exp":`...)
		b = appendDate(b, c.Expiry)
	}
	if !c.IssuedAt.IsZero() {
		b = append(b, `,"iat":`...)
		b = appendDate(b, c.IssuedAt)
	}
	if i.name != "" {
		b = append(b, `,"iss":`...)
		b = appendString(b, i.name)
	}
	if c.CallID != "" {
		b = append(b, `,"jti":`...)
		b = appendString(b, c.CallID)
	}
	if !c.IssuedAt.IsZero() {
		b = append(b, `,"nbf":`...)
		b = appendDate(b, c.IssuedAt)
	}
	b = append(b, `,"risk":`...)
	b = appendString(b, c.Risk)
	if c.AgentID != "" {
		b = append(b, `,"sub":`...)
		b = appendString(b, c.AgentID)
	}
	return append(b, '}')
}

func appendDate(b []byte, t time.Time) []byte {
	return strconv.AppendInt(b, t.Unix(), 10)
}

// appendString appends s as a JSON string.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	b = appendEscaped(b, s)
	return append(b, '"')
}

// appendString2 appends the concatenation of s1 and s2 as a JSON string.
// s1 is ASCII text that needs no escaping.
func appendString2(b []byte, s1, s2 string) []byte {
	b = append(b, '"')
	b = append(b, s1...)
	b = appendEscaped(b, s2)
	return append(b, '"')
}

const hexDigits = "0123456789abcdef"

// appendEscaped appends the body of the JSON string s, escaped as go-jose's
// json package escapes it: '"' and '\\' with a backslash; '\n', '\r', '\t'
// by name; other control characters, '<', '>' and '&' as \u00XX; U+2028 and
// U+2029 as \u2028 and \u2029. A byte that is not valid UTF-8 becomes
// U+FFFD: go-jose writes \ufffd, decodes it, and writes the decoded U+FFFD
// as is, which is what the token carries.
func appendEscaped(b []byte, s string) []byte {
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(b, s[start:i]...)
			b = utf8.AppendRune(b, utf8.RuneError)
		case r == '\u2028' || r == '\u2029':
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	return append(b, s[start:]...)
}
