package api_test

import (
	"fmt"
	"net/http"
	"testing"

	"github.com/arxsec/arx/internal/arxtest"
)

// TestRevokedTokenRemembered: an agent token answered from memory
// (asking for a call, completing one) is refused as soon as its
// revocation is answered, and so is every other request with it; the
// agent's other token goes on; a terminated agent's remembered token gets
// agent.terminated, as when the token is read.
func TestRevokedTokenRemembered(t *testing.T) {
	s := arxtest.Start(t)
	agentID, first := s.Hire(arxtest.Manifest)
	var second struct {
		ID    string `json:"token_id"`
		Token string `json:"token"`
	}
	s.Do("POST", "/v1/agents/"+agentID+"/tokens", s.AdminToken, map[string]string{"label": "second"}).JSON(t, &second)
	var open callJSON
	request(s, second.Token, "crm", "account.read", "low", "open").JSON(t, &open)
	for i := range 3 { // remembered
		if r := request(s, second.Token, "crm", "account.read", "low", fmt.Sprint("k", i)); r.Status != http.StatusCreated {
			t.Fatalf("call: %d %s", r.Status, r.Body)
		}
	}
	if r := s.Do("DELETE", "/v1/agents/"+agentID+"/tokens/"+second.ID, s.AdminToken, nil); r.Status != http.StatusOK {
		t.Fatalf("revoke: %d %s", r.Status, r.Body)
	}
	if r := request(s, second.Token, "crm", "account.read", "low", "after"); r.ErrorCode() != "auth.invalid_token" {
		t.Errorf("a call with the revoked token: %d %s", r.Status, r.Body)
	}
	if r := s.Do("POST", "/v1/calls/"+open.ID+"/complete", second.Token, map[string]any{"outcome": "success"}); r.ErrorCode() != "auth.invalid_token" {
		t.Errorf("completing with the revoked token: %d %s", r.Status, r.Body)
	}
	if r := request(s, first, "crm", "account.read", "low", "other"); r.Status != http.StatusCreated {
		t.Errorf("the other token: %d %s", r.Status, r.Body)
	}
	if r := s.Do("POST", "/v1/agents/"+agentID+"/terminate", s.AdminToken, map[string]string{"reason": "done"}); r.Status != http.StatusOK {
		t.Fatalf("terminate: %d %s", r.Status, r.Body)
	}
	if r := request(s, first, "crm", "account.read", "low", "terminated"); r.ErrorCode() != "agent.terminated" && r.ErrorCode() != "auth.invalid_token" {
		t.Errorf("a call after the termination: %d %s", r.Status, r.Body)
	}
}
