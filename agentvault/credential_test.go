package agentvault

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/arxsec/arx/arxerr"
)

func TestCredentialRedaction(t *testing.T) {
	const secret = "eyJhbGciOiJFZERTQSJ9.eyJqdGkiOiJjMSJ9.SECRET-signature"
	cred := Credential{Token: secret, Type: "Bearer", CallID: "c1", AgentID: "a1", Connector: "salesforce",
		Action: "account.read", Risk: RiskLow, ExpiresAt: time.Date(2026, 11, 26, 7, 2, 0, 0, time.UTC)}
	call := Call{ID: "c1", Status: "approved", Credential: &cred}
	const want = "Credential{call=c1, connector=salesforce, action=account.read, token=REDACTED}"
	if got := fmt.Sprint(cred); got != want {
		t.Errorf("fmt.Sprint(cred) = %q, want %q", got, want)
	}

	var out []string
	for _, v := range []any{cred, &cred, call, &call, []Credential{cred}, map[string]*Credential{"k": &cred},
		struct{ C Credential }{cred}} {
		for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%d"} {
			out = append(out, fmt.Sprintf(verb, v))
		}
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, string(b))
		var buf bytes.Buffer
		slog.New(slog.NewTextHandler(&buf, nil)).Info("msg", "cred", v)
		slog.New(slog.NewJSONHandler(&buf, nil)).Info("msg", "cred", v)
		out = append(out, buf.String())
	}
	for _, s := range out {
		if strings.Contains(s, "SECRET") {
			t.Errorf("token printed: %s", s)
		}
	}
	if !strings.Contains(out[0], "REDACTED") {
		t.Errorf("%q does not say the token was redacted", out[0])
	}
}

func TestClientAndConfigRedaction(t *testing.T) {
	cfg := Config{Token: "arxa_SECRET", BaseURL: "http://127.0.0.1:8080/v1"}
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []any{cfg, &cfg, c, *c} {
		for _, verb := range []string{"%v", "%+v", "%#v", "%s"} {
			if s := fmt.Sprintf(verb, v); strings.Contains(s, "SECRET") {
				t.Errorf("%s of %T prints the token: %s", verb, v, s)
			}
		}
		var buf bytes.Buffer
		slog.New(slog.NewJSONHandler(&buf, nil)).Info("msg", "v", v)
		if strings.Contains(buf.String(), "SECRET") {
			t.Errorf("slog of %T logs the token: %s", v, buf.String())
		}
	}
}

func TestErrorString(t *testing.T) {
	e := &Error{Code: arxerr.CallDenied, Message: "call c1 was denied", CallID: "c1", Status: 403}
	if got, want := e.Error(), "arx: call.denied: call c1 was denied"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	e.Hint = "ask again"
	if got, want := e.Error(), "arx: call.denied: call c1 was denied (hint: ask again)"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	wrapped := fmt.Errorf("doing things: %w", e)
	if !IsCode(wrapped, arxerr.CallDenied) || IsCode(wrapped, arxerr.CallExpired) || IsCode(nil, arxerr.CallDenied) {
		t.Error("IsCode does not look through wrapping by code")
	}
}

// FuzzParseAnswer feeds arbitrary answers to the decoders: they must neither
// panic nor quote the agent token.
func FuzzParseAnswer(f *testing.F) {
	f.Add(201, []byte(`{"id":"c1","status":"approved","credential":{"token":"eyJ","type":"Bearer","expires_at":"2026-11-26T07:02:00Z"}}`))
	f.Add(403, []byte(`{"error":{"code":"manifest.connector_not_declared","message":"no","call_id":"c1"}}`))
	f.Add(502, []byte(`<html>502</html>`))
	f.Add(200, []byte(`{"id":1}`))
	f.Add(401, []byte(`{"error":{"code":"auth.invalid_token","message":"`+testToken+`"}}`))
	c, err := New(Config{Token: testToken, BaseURL: "http://127.0.0.1/v1"})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, status int, body []byte) {
		ans := &answer{status: status, header: map[string][]string{"Content-Type": {"text/html; x"}}, body: body}
		msgs := []string{c.apiError(ans, "").Error()}
		if call, err := c.parseCall(ans, "POST /calls"); err != nil {
			msgs = append(msgs, err.Error())
		} else {
			_ = decided(call)
		}
		for _, m := range msgs {
			if strings.Contains(m, testToken) {
				t.Errorf("token quoted: %s", m)
			}
		}
	})
}
