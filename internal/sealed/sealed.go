// Package sealed signs a small JSON value that makes a round trip through
// a client (a link code, a cookie, a redirect) and checks it when it comes
// back: base64url(JSON) "." base64url(HMAC-SHA256(key, "arx " purpose NUL
// payload)). A value sealed for one purpose does not open for another.
// Expiry is the caller's: it is a field of the value.
package sealed

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
)

// ErrInvalid is Open's answer for anything that is not a value this key
// sealed for this purpose.
var ErrInvalid = errors.New("sealed: malformed or not signed with this key for this purpose")

// Seal encodes v and signs it.
func Seal(key []byte, purpose string, v any) string {
	body, _ := json.Marshal(v)
	payload := base64.RawURLEncoding.EncodeToString(body)
	return payload + "." + base64.RawURLEncoding.EncodeToString(mac(key, purpose, payload))
}

// Open checks s (at most max bytes; constant-time) and decodes it into v.
func Open(key []byte, purpose, s string, max int, v any) error {
	payload, sig, ok := strings.Cut(s, ".")
	if !ok || len(s) > max {
		return ErrInvalid
	}
	got, err := base64.RawURLEncoding.DecodeString(sig)
	if err != nil || !hmac.Equal(got, mac(key, purpose, payload)) {
		return ErrInvalid
	}
	body, err := base64.RawURLEncoding.DecodeString(payload)
	if err != nil || json.Unmarshal(body, v) != nil {
		return ErrInvalid
	}
	return nil
}

func mac(key []byte, purpose, payload string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte("arx " + purpose + "\x00" + payload))
	return m.Sum(nil)
}
