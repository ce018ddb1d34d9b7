package console_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/arxsec/arx/internal/arxtest"
	"github.com/arxsec/arx/internal/passkeytest"
	"github.com/arxsec/arx/internal/server"
	"github.com/arxsec/arx/record"
)

// startLocalhost starts a server whose public URL is
// http://localhost:PORT, so that it can be a WebAuthn relying party.
func startLocalhost(t *testing.T) (*arxtest.Server, string) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	public := fmt.Sprintf("http://localhost:%d", port)
	s := arxtest.StartWith(t, t.TempDir(), func(c *server.Config) {
		c.Listen = fmt.Sprintf("127.0.0.1:%d", port)
		c.PublicURL = public
	})
	return s, public
}

// TestPasskeyCeremonies runs the passkey ceremonies without a browser, with
// a software authenticator: registration through the console's steps, and
// decisions signed through the API (/challenge, then approve or deny with
// the signature), with what must be refused.
func TestPasskeyCeremonies(t *testing.T) {
	s, public := startLocalhost(t)
	m := strings.Replace(testManifest, "  on_timeout: deny\n", "  on_timeout: deny\n  require_passkey: true\n", 1)
	_, agentToken := s.Hire(m)
	addManager(t, s, "boss@example.com")
	b := newBrowser(t, s)
	b.mustLogin("boss@example.com")
	csrf := b.get("/console/passkeys").csrf(t)

	auth := passkeytest.New("localhost")
	auth.Origin = public
	register := func(a *passkeytest.Authenticator, name string) *page {
		t.Helper()
		p := b.post("/console/passkeys/begin", url.Values{"csrf": {csrf}, "name": {name}})
		if p.Status != http.StatusOK {
			t.Fatalf("begin: %d %s", p.Status, p.Body)
		}
		cred, err := a.Register([]byte(p.Body))
		if err != nil {
			t.Fatal(err)
		}
		return b.post("/console/passkeys/finish", url.Values{"csrf": {csrf}, "credential": {string(cred)}})
	}
	if p := register(auth, "Security key"); p.Status != http.StatusOK {
		t.Fatalf("finish: %d %s", p.Status, p.Body)
	}
	if p := b.post("/console/passkeys/finish", url.Values{"csrf": {csrf}, "credential": {"{}"}}); p.Status != http.StatusBadRequest ||
		!strings.Contains(p.Body, "approval.passkey_invalid") {
		t.Errorf("a finish without a begin: %d %s", p.Status, p.Body)
	}
	phish := passkeytest.New("localhost")
	phish.Origin = "http://localhost:1"
	if p := register(phish, "Elsewhere"); p.Status != http.StatusBadRequest {
		t.Errorf("a registration made for another origin: %d %s", p.Status, p.Body)
	}
	if p := b.get("/console/passkeys"); !strings.Contains(p.Body, "Security key") || strings.Contains(p.Body, "Elsewhere") {
		t.Errorf("passkeys page:\n%s", p.Body)
	}

	r := s.Do("POST", "/v1/auth/tokens", "", map[string]string{"email": "boss@example.com", "password": Password, "label": "script"})
	var tok struct {
		Token string `json:"token"`
	}
	r.JSON(t, &tok)
	client := sdk(t, s, agentToken)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()

	type challenge struct {
		PublicKey struct {
			Challenge string `json:"challenge"`
		} `json:"publicKey"`
		DecidedAt string `json:"decided_at"`
	}
	ask := func(call, decision, reason string) challenge {
		t.Helper()
		r := s.Do("POST", "/v1/approvals/"+call+"/challenge", tok.Token, map[string]string{"decision": decision, "reason": reason})
		if r.Status != http.StatusOK {
			t.Fatalf("challenge: %d %s", r.Status, r.Body)
		}
		var ch challenge
		r.JSON(t, &ch)
		return ch
	}
	sign := func(ch challenge) map[string]any {
		t.Helper()
		raw, err := base64.RawURLEncoding.DecodeString(ch.PublicKey.Challenge)
		if err != nil {
			t.Fatal(err)
		}
		at, _ := time.Parse(record.TimeFormat, ch.DecidedAt)
		return map[string]any{"decided_at": ch.DecidedAt, "credential": json.RawMessage(passkeytest.AssertionJSON(auth.SignChallenge(raw, at)))}
	}

	done := requestHighRisk(t, ctx, s, client, "delete account 0017")
	call := pendingCall(t, s, "delete account 0017")
	// Signed for a deny, sent as an approval; signed with another reason.
	if r := s.Do("POST", "/v1/approvals/"+call+"/approve", tok.Token, map[string]any{"reason": "no", "passkey": sign(ask(call, "deny", "no"))}); r.ErrorCode() != "approval.passkey_invalid" {
		t.Errorf("a signed deny sent as an approval: %d %s", r.Status, r.Body)
	}
	if r := s.Do("POST", "/v1/approvals/"+call+"/approve", tok.Token, map[string]any{"reason": "ok", "passkey": sign(ask(call, "approve", "fine"))}); r.ErrorCode() != "approval.passkey_invalid" {
		t.Errorf("signed with another reason: %d %s", r.Status, r.Body)
	}
	// Unsigned: refused for this agent.
	if r := s.Do("POST", "/v1/approvals/"+call+"/approve", tok.Token, map[string]any{"reason": "ok"}); r.ErrorCode() != "approval.passkey_required" {
		t.Errorf("unsigned: %d %s", r.Status, r.Body)
	}
	signed := sign(ask(call, "approve", "ok"))
	r = s.Do("POST", "/v1/approvals/"+call+"/approve", tok.Token, map[string]any{"reason": "ok", "passkey": signed})
	var ap struct {
		Status  string `json:"status"`
		Passkey string `json:"passkey"`
	}
	r.JSON(t, &ap)
	if r.Status != http.StatusOK || ap.Status != "granted" || ap.Passkey != record.EncodeID(auth.ID) {
		t.Fatalf("signed approval: %d %s", r.Status, r.Body)
	}
	if o := <-done; o.err != nil || !o.ran {
		t.Fatalf("the approved call: %+v", o)
	}

	// The same signature cannot decide another call.
	done2 := requestHighRisk(t, ctx, s, client, "delete account 0018")
	call2 := pendingCall(t, s, "delete account 0018")
	if r := s.Do("POST", "/v1/approvals/"+call2+"/approve", tok.Token, map[string]any{"reason": "ok", "passkey": signed}); r.ErrorCode() != "approval.passkey_invalid" {
		t.Errorf("a signature replayed on another call: %d %s", r.Status, r.Body)
	}
	// A removed passkey signs nothing.
	if p := b.post("/console/passkeys/"+record.EncodeID(auth.ID)+"/remove", url.Values{"csrf": {csrf}}); p.Status != http.StatusSeeOther {
		t.Fatalf("remove: %d %s", p.Status, p.Body)
	}
	r = s.Do("POST", "/v1/approvals/"+call2+"/challenge", tok.Token, map[string]string{"decision": "deny", "reason": "no"})
	if r.ErrorCode() != "approval.passkey_required" {
		t.Errorf("a challenge without a passkey: %d %s", r.Status, r.Body)
	}
	cancel()
	<-done2
}
