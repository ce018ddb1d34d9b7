package api_test

import (
	"encoding/base64"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/arxsec/arx/internal/arxtest"
)

// personToken adds a manager and returns their API token.
func personToken(t *testing.T, s *arxtest.Server, email string) string {
	t.Helper()
	var person struct {
		SetupToken string `json:"setup_token"`
	}
	s.Do("POST", "/v1/users", s.AdminToken, map[string]any{"email": email, "role": "manager", "show_link": true}).JSON(t, &person)
	if r := s.Do("POST", "/v1/auth/setup", "", map[string]any{"token": person.SetupToken, "password": "correct horse battery"}); r.Status != 200 {
		t.Fatalf("setup: %d %s", r.Status, r.Body)
	}
	var login struct {
		Token string `json:"token"`
	}
	s.Do("POST", "/v1/auth/tokens", "", map[string]any{"email": email, "password": "correct horse battery", "label": "test"}).JSON(t, &login)
	return login.Token
}

// TestApprovalBoundToTheRequest: an approver approves one request (the
// call's args.request); the gateway forwards exactly that request under
// the call's credential and refuses any other, and an approved call that
// declared no request gets nothing through the gateway.
func TestApprovalBoundToTheRequest(t *testing.T) {
	up := newUpstream(t)
	s, _ := gatewayServer(t, up, "2s")
	agent, token := s.Hire(gatewayManifest)
	boss := personToken(t, s, "boss@example.com")
	approved := func(key string, args any) (string, string) {
		t.Helper()
		r := s.Do("POST", "/v1/calls", token, map[string]any{"connector": "crm", "action": "account.export", "risk": "high",
			"idempotency_key": key, "args": args})
		var c struct {
			ID string `json:"id"`
		}
		r.JSON(t, &c)
		if r.Status != http.StatusAccepted {
			t.Fatalf("call %s: %d %s", key, r.Status, r.Body)
		}
		if r := s.Do("POST", "/v1/approvals/"+c.ID+"/approve", boss, map[string]string{"reason": "ok"}); r.Status != 200 {
			t.Fatalf("approve: %d %s", r.Status, r.Body)
		}
		var got struct {
			Credential struct {
				Token string `json:"token"`
			} `json:"credential"`
		}
		s.Do("GET", "/v1/calls/"+c.ID, token, nil).JSON(t, &got)
		return c.ID, got.Credential.Token
	}
	send := func(cred, method, path, body string) (*http.Response, string) {
		t.Helper()
		var rd io.Reader
		if body != "" {
			rd = strings.NewReader(body)
		}
		resp := through(t, s, method, path, cred, rd, map[string]string{"Content-Type": "application/json"})
		return resp, string(readAll(t, resp))
	}

	_, cred := approved("export-1", map[string]any{"request": map[string]any{"method": "POST", "path": "/exports",
		"body": map[string]any{"format": "csv", "accounts": []int{17}}}})
	// The approved request goes through, its keys in any order.
	if resp, body := send(cred, "POST", "crm/exports", `{"accounts": [17], "format": "csv"}`); resp.StatusCode >= 300 {
		t.Fatalf("the approved request: %d %s", resp.StatusCode, body)
	}
	if in := up.last(); in == nil || in.URL.Path != "/api/exports" {
		t.Fatalf("upstream saw %v", in)
	}
	hits := up.hits.Load()
	// Another body, another path, another method: refused, not forwarded.
	for _, tc := range []struct{ method, path, body, part string }{
		{"POST", "crm/exports", `{"accounts": [17, 18], "format": "csv"}`, "body"},
		{"POST", "crm/upload", `{"accounts": [17], "format": "csv"}`, "path"},
		{"POST", "crm/exports?all=1", `{"accounts": [17], "format": "csv"}`, "query"},
		{"POST", "crm/exports", `not json`, "not JSON"},
	} {
		resp, body := send(cred, tc.method, tc.path, tc.body)
		if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "gateway.not_approved") || !strings.Contains(body, tc.part) {
			t.Errorf("%s %s %s: %d %s", tc.method, tc.path, tc.body, resp.StatusCode, body)
		}
		if strings.Contains(body, "17, 18") || strings.Contains(body, "[17,18]") || strings.Contains(body, "all=1") {
			t.Errorf("the refusal repeats the request: %s", body)
		}
	}
	if up.hits.Load() != hits {
		t.Errorf("a refused request reached the upstream")
	}
	// An approved call that declared no request is not bound (as before
	// arguments existed): any request its action allows goes through.
	_, cred2 := approved("export-2", nil)
	if resp, body := send(cred2, "POST", "crm/exports", `{"accounts": [17]}`); resp.StatusCode >= 300 {
		t.Errorf("approved without a declared request: %d %s", resp.StatusCode, body)
	}
	// A call that was not approved but declares its request is held to it.
	r := s.Do("POST", "/v1/calls", token, map[string]any{"connector": "crm", "action": "account.read", "idempotency_key": "read-1",
		"args": map[string]any{"request": map[string]any{"method": "GET", "path": "/accounts/0017"}}})
	var c struct {
		Credential struct {
			Token string `json:"token"`
		} `json:"credential"`
	}
	r.JSON(t, &c)
	if resp, _ := send(c.Credential.Token, "GET", "crm/accounts/0018", ""); resp.StatusCode != http.StatusForbidden {
		t.Errorf("another account than declared: %d", resp.StatusCode)
	}
	if resp, body := send(c.Credential.Token, "GET", "crm/accounts/0017", ""); resp.StatusCode >= 300 {
		t.Errorf("the declared request: %d %s", resp.StatusCode, body)
	}
	// The approval and the credential name the arguments' hash.
	granted := waitEntries(t, s, agent, "approval.granted", 2)
	if d := granted[0]["data"].(map[string]any); len(d["args_hash"].(string)) != 64 {
		t.Errorf("approval.granted: %v", granted[0])
	}
	payload, _ := base64.RawURLEncoding.DecodeString(strings.Split(cred, ".")[1])
	if !strings.Contains(string(payload), `"args":"`+granted[0]["data"].(map[string]any)["args_hash"].(string)+`"`) {
		t.Errorf("the credential does not name the approved arguments: %s", payload)
	}
	// The refusals are recorded, without the query or the body.
	refused := waitEntries(t, s, agent, "gateway.refused", 5)
	for _, e := range refused {
		if d := e["data"].(map[string]any); d["code"] != "gateway.not_approved" || strings.Contains(d["reason"].(string), "17,18") || strings.Contains(d["reason"].(string), "all=1") {
			t.Errorf("gateway.refused: %v", e)
		}
	}
}
