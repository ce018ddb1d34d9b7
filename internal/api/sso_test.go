package api_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/arxsec/arx/internal/arxtest"
	"github.com/arxsec/arx/internal/runtime"
	"github.com/arxsec/arx/internal/server"
	"github.com/arxsec/arx/record"
)

// TestLocalPasswordsOff: a server restarted with local passwords off ends
// what passwords opened (console sessions, people's API tokens; not the
// agents' or the operator's), once, recorded; passwords, set-up links and
// resets are refused with auth.sso_required; turning them on again is
// recorded too. The identity provider is not reached for any of this
// (its discovery is lazy), so the server starts while it is down.
func TestLocalPasswordsOff(t *testing.T) {
	dir := t.TempDir()
	s := arxtest.StartIn(t, dir)
	_, agentToken := s.Hire(arxtest.Manifest)
	boss := s.AddPerson("boss@example.com", "manager", "correct horse battery")
	u, err := s.Runtime.Store().UserByEmail(t.Context(), "boss@example.com")
	if err != nil {
		t.Fatal(err)
	}
	cookie, _, err := s.Runtime.NewSession(t.Context(), u, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	off := func(c *server.Config) {
		c.SSO = server.SSOConfig{Issuer: "https://idp.invalid/", ClientID: "arx", ClientSecret: []byte("s3cret")}
		c.NoLocalPasswords = true
	}
	s = arxtest.StartWith(t, dir, off)
	if r := s.Do("GET", "/v1/auth/tokens", boss, nil); r.Status != http.StatusUnauthorized {
		t.Errorf("a person's token from before: %d %s", r.Status, r.Body)
	}
	if _, _, err := s.Runtime.Session(t.Context(), cookie); err == nil {
		t.Error("a password session from before still works")
	}
	if r := s.Do("GET", "/v1/agents", s.AdminToken, nil); r.Status != http.StatusOK {
		t.Errorf("the operator's token: %d %s", r.Status, r.Body)
	}
	if r := s.Do("POST", "/v1/calls", agentToken, map[string]any{"connector": "crm", "action": "account.read", "risk": "low",
		"idempotency_key": "k1"}); r.Status != http.StatusCreated {
		t.Errorf("the agent's token: %d %s", r.Status, r.Body)
	}
	for _, tc := range []struct {
		what, method, path, token string
		body                      any
	}{
		{"password login", "POST", "/v1/auth/tokens", "", map[string]string{"email": "boss@example.com", "password": "correct horse battery"}},
		{"reset link", "POST", "/v1/users/boss@example.com/reset", s.AdminToken, map[string]any{"show_link": true}},
		{"set-up link", "POST", "/v1/auth/setup", "", map[string]string{"token": "arxs_anything", "password": "another long password"}},
	} {
		if r := s.Do(tc.method, tc.path, tc.token, tc.body); r.Status != http.StatusForbidden || !strings.Contains(string(r.Body), `"auth.sso_required"`) {
			t.Errorf("%s: %d %s", tc.what, r.Status, r.Body)
		}
	}
	var info map[string]any
	s.Do("GET", "/v1/auth/sso", "", nil).JSON(t, &info)
	if info["enabled"] != true || info["local_passwords"] != false || info["start"] != "/console/sso/start" {
		t.Errorf("GET /v1/auth/sso: %v", info)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = arxtest.StartWith(t, dir, off) // again: nothing more to end, nothing recorded
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = arxtest.StartIn(t, dir)

	var kinds []string
	var ended map[string]any
	entries, err := s.Runtime.Store().Entries(t.Context(), 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	for _, se := range entries {
		e, err := record.Parse(se.Data)
		if err != nil {
			t.Fatal(err)
		}
		switch e.Type {
		case runtime.TypeLocalPasswordsOff:
			ended = e.Data
			fallthrough
		case runtime.TypeLocalPasswordsOn:
			kinds = append(kinds, e.Type)
		}
	}
	if strings.Join(kinds, ",") != runtime.TypeLocalPasswordsOff+","+runtime.TypeLocalPasswordsOn {
		t.Errorf("recorded %v, want off then on", kinds)
	}
	if fmt.Sprintf("%v %v %v", ended["ended_sessions"], ended["revoked_tokens"], ended["issuer"]) != "1 1 https://idp.invalid/" {
		t.Errorf("local_passwords_off entry: %v", ended)
	}
	if r := s.Do("POST", "/v1/auth/tokens", "", map[string]string{"email": "boss@example.com", "password": "correct horse battery"}); r.Status != http.StatusCreated {
		t.Errorf("password login with local passwords on again: %d %s", r.Status, r.Body)
	}
	if r := s.Do("POST", "/v1/auth/sso/tokens", "", map[string]string{"code": "a.b", "verifier": "c"}); r.Status != http.StatusNotFound ||
		!strings.Contains(string(r.Body), "auth.sso_not_configured") {
		t.Errorf("SSO redeem without a provider: %d %s", r.Status, r.Body)
	}
}
