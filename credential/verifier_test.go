package credential_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/arxsec/arx/credential"
	"github.com/arxsec/arx/internal/arxtest"
)

// These tests run the direct-verify middleware, as a system of record runs
// it, against a real ARX server.

func call(t *testing.T, s *arxtest.Server, token, conn, action, key string) (string, string) {
	t.Helper()
	r := s.Do("POST", "/v1/calls", token, map[string]string{"connector": conn, "action": action, "idempotency_key": key, "risk": "medium"})
	if r.Status != http.StatusCreated {
		t.Fatalf("call: %d %s", r.Status, r.Body)
	}
	var c struct {
		ID         string `json:"id"`
		Credential struct {
			Token string `json:"token"`
		} `json:"credential"`
	}
	r.JSON(t, &c)
	return c.ID, c.Credential.Token
}

func TestMiddlewareAgainstARX(t *testing.T) {
	s := arxtest.Start(t)
	agent, token := s.Hire(arxtest.Manifest)
	v := credential.NewVerifier(s.URL+"/v1", nil).RequireIssuer(s.Runtime.Origin())
	sor := httptest.NewServer(v.Middleware("crm", func(r *http.Request) string { return "account.read" },
		http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			c, ok := credential.FromContext(r.Context())
			if !ok {
				http.Error(w, "no claims", 500)
				return
			}
			w.Write([]byte(c.CallID))
		})))
	defer sor.Close()
	get := func(cred string) (int, string) {
		req, _ := http.NewRequest("GET", sor.URL+"/accounts/1", nil)
		if cred != "" {
			req.Header.Set("Authorization", "Bearer "+cred)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var e struct {
			Error struct {
				Code string `json:"code"`
			} `json:"error"`
		}
		json.NewDecoder(resp.Body).Decode(&e)
		return resp.StatusCode, e.Error.Code
	}

	id, read := call(t, s, token, "crm", "account.read", "r")
	if st, _ := get(read); st != 200 {
		t.Fatalf("live credential refused: %d", st)
	}
	_, export := call(t, s, token, "crm", "account.export", "e")

	other := arxtest.Start(t) // another deployment: its keys are not these
	_, otherToken := other.Hire(arxtest.Manifest)
	_, foreign := call(t, other, otherToken, "crm", "account.read", "f")

	for _, tc := range []struct {
		name, cred string
		status     int
		code       string
	}{
		{"no credential", "", 401, "auth.unauthenticated"},
		{"forged", read[:len(read)-5] + "AAAAA", 401, "credential.invalid"},
		{"another deployment", foreign, 401, "credential.invalid"},
		{"another action", export, 403, "credential.scope_mismatch"},
	} {
		if st, code := get(tc.cred); st != tc.status || code != tc.code {
			t.Errorf("%s: %d %s, want %d %s", tc.name, st, code, tc.status, tc.code)
		}
	}

	// A credential for crm presented to a system of record for db.
	if _, err := v.Verify(t.Context(), read, "db", "query"); err == nil {
		t.Error("a credential of another connector verifies")
	} else if ve, ok := err.(*credential.VerifyError); !ok || ve.Code != "credential.scope_mismatch" {
		t.Errorf("another connector: %v", err)
	}

	// Revocation: completed, then terminated.
	if r := s.Do("POST", "/v1/calls/"+id+"/complete", token, map[string]any{"outcome": "success"}); r.Status != 200 {
		t.Fatal(r.Status)
	}
	if st, code := get(read); st != 401 || code != "credential.call_closed" {
		t.Errorf("completed call: %d %s", st, code)
	}
	_, read2 := call(t, s, token, "crm", "account.read", "r2")
	if r := s.Do("POST", "/v1/agents/"+agent+"/terminate", s.AdminToken, map[string]string{"reason": "test"}); r.Status != 200 {
		t.Fatal(r.Status)
	}
	if st, code := get(read2); st != 401 && st != 403 || code != "credential.call_closed" && code != "agent.terminated" {
		t.Errorf("terminated agent: %d %s", st, code)
	}

	// Expiry (the manifest's 1s for db query), checked without ARX's help.
	_, tok2 := call(t, other, otherToken, "db", "query", "q")
	time.Sleep(1100 * time.Millisecond)
	if _, err := credential.NewVerifier(other.URL, nil).Verify(t.Context(), tok2, "db", "query"); err == nil {
		t.Error("an expired credential verifies")
	} else if ve, ok := err.(*credential.VerifyError); !ok || ve.Code != "credential.expired" {
		t.Errorf("expired: %v", err)
	}

	// The wrong issuer is refused even with the right keys.
	strict := credential.NewVerifier(other.URL, nil).RequireIssuer("someone.else/origin")
	_, tok3 := call(t, other, otherToken, "crm", "account.read", "x")
	if _, err := strict.Verify(t.Context(), tok3, "crm", "account.read"); err == nil {
		t.Error("a credential of another issuer verifies")
	}

	// ARX unreachable: fail closed with 503.
	s.Close()
	v2 := credential.NewVerifier(s.URL, &http.Client{Timeout: time.Second})
	sor2 := httptest.NewServer(v2.Middleware("crm", func(*http.Request) string { return "account.read" }, http.NotFoundHandler()))
	defer sor2.Close()
	req, _ := http.NewRequest("GET", sor2.URL, nil)
	req.Header.Set("Authorization", "Bearer "+read)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("ARX down: %d, want 503", resp.StatusCode)
	}
}
