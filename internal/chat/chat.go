// Package chat is the wire side of decisions made in chat tools: Slack's
// request signatures, interaction payloads, messages and the two Web API
// calls ARX makes (answering through an interaction's response_url, and
// views.open for the reason a denial asks for), and the same signature
// scheme for the generic signed webhook other chat tools use. What a
// decision does is the runtime's (runtime.ChatDecide).
package chat

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strconv"
	"strings"
	"time"
)

// MaxSkew is how far a signed request's timestamp may be from the
// server's clock: older requests are replays.
const MaxSkew = 5 * time.Minute

// Signature versions: Slack's ("v0") and the generic webhook's ("v1").
const (
	SlackVersion   = "v0"
	GenericVersion = "v1"
)

// ErrSignature is returned for a request whose signature or timestamp
// does not verify; the message says which, never the expected value.
var ErrSignature = errors.New("chat: the request's signature does not verify")

// Sign is the signature of body sent at ts (Unix seconds, as text):
// version "=" hex HMAC-SHA256(secret, version ":" ts ":" body), the scheme
// Slack uses with version v0.
func Sign(version string, secret []byte, ts string, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(version + ":" + ts + ":"))
	m.Write(body)
	return version + "=" + hex.EncodeToString(m.Sum(nil))
}

// Verify checks a request's signature and its timestamp's age at now, in
// constant time; a pure decision.
func Verify(version string, secret []byte, ts, sig string, body []byte, now time.Time) error {
	if len(secret) == 0 {
		return errors.New("chat: no signing secret")
	}
	t, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || len(ts) > 12 {
		return errors.Join(ErrSignature, errors.New("the timestamp is not a number of seconds"))
	}
	if d := now.Sub(time.Unix(t, 0)); d > MaxSkew || d < -MaxSkew {
		return errors.Join(ErrSignature, errors.New("the timestamp is more than five minutes from the server's clock"))
	}
	if !strings.HasPrefix(sig, version+"=") {
		return errors.Join(ErrSignature, errors.New("the signature is not of version "+version))
	}
	if !hmac.Equal([]byte(sig), []byte(Sign(version, secret, ts, body))) {
		return ErrSignature
	}
	return nil
}
