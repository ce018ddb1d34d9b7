package api_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/arxsec/arx/internal/arxtest"
	"github.com/arxsec/arx/internal/store"
	"github.com/arxsec/arx/manifest"
)

func TestAgentSelf(t *testing.T) {
	s := arxtest.Start(t)
	id, token := s.Hire(arxtest.Manifest)

	r := s.Do("GET", "/v1/agent", token, nil)
	if r.Status != http.StatusOK {
		t.Fatalf("GET /v1/agent: %d %s", r.Status, r.Body)
	}
	var self struct {
		Agent struct {
			ID     string `json:"id"`
			Name   string `json:"name"`
			Status string `json:"status"`
		} `json:"agent"`
		Manifest *manifest.Manifest `json:"manifest"`
	}
	r.JSON(t, &self)
	if self.Agent.ID != id || self.Agent.Name != "test-agent" || self.Agent.Status != "active" {
		t.Errorf("agent: %+v", self.Agent)
	}
	if a, ok := self.Manifest.Action("crm", "account.delete"); !ok || a.Risk != manifest.RiskHigh {
		t.Errorf("manifest does not round-trip: %+v", self.Manifest)
	}
	if self.Manifest.Approval.Timeout != 10*time.Minute {
		t.Errorf("approval timeout %s", self.Manifest.Approval.Timeout)
	}

	for _, tc := range []struct {
		name, token, path, code string
	}{
		{"the operator's token", s.AdminToken, "/v1/agent", "auth.forbidden"},
		{"no token", "", "/v1/agent", "auth.unauthenticated"},
		{"an unknown token", "arxa_nope", "/v1/agent/status", "auth.invalid_token"},
		{"a bad wait", token, "/v1/agent/status?wait=soon", "request.invalid"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if r := s.Do("GET", tc.path, tc.token, nil); r.ErrorCode() != tc.code {
				t.Errorf("%d %s, want %s", r.Status, r.Body, tc.code)
			}
		})
	}
}

func TestAgentStatusLongPoll(t *testing.T) {
	s := arxtest.Start(t)
	id, token := s.Hire(arxtest.Manifest)

	r := s.Do("GET", "/v1/agent/status", token, nil)
	if r.Status != http.StatusOK || string(r.Body) != `{"agent_id":"`+id+`","status":"active"}`+"\n" {
		t.Fatalf("status: %d %s", r.Status, r.Body)
	}
	start := time.Now()
	if r := s.Do("GET", "/v1/agent/status?wait=300ms", token, nil); r.Status != http.StatusOK || time.Since(start) < 300*time.Millisecond {
		t.Fatalf("an active agent's long poll answered %d after %s", r.Status, time.Since(start))
	}

	// A termination ends the long poll at once.
	done := make(chan *arxtest.Response, 1)
	go func() { done <- s.Do("GET", "/v1/agent/status?wait=30s", token, nil) }()
	time.Sleep(200 * time.Millisecond)
	start = time.Now()
	if r := s.Do("POST", "/v1/agents/"+id+"/terminate", s.AdminToken, map[string]string{"reason": "test"}); r.Status != http.StatusOK {
		t.Fatalf("terminate: %d %s", r.Status, r.Body)
	}
	select {
	case r := <-done:
		if r.ErrorCode() != "agent.terminated" {
			t.Fatalf("after termination the long poll answered %d %s", r.Status, r.Body)
		}
		if d := time.Since(start); d > 1500*time.Millisecond {
			t.Errorf("the long poll saw the termination after %s", d)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the long poll did not end with the termination")
	}
}

func TestAgentStatusSeesRevokedToken(t *testing.T) {
	s := arxtest.Start(t)
	id, _ := s.Hire(arxtest.Manifest)
	r := s.Do("POST", "/v1/agents/"+id+"/tokens", s.AdminToken, map[string]string{"label": "mcp"})
	if r.Status != http.StatusCreated {
		t.Fatalf("issue token: %d %s", r.Status, r.Body)
	}
	var tok struct {
		ID    string `json:"token_id"`
		Token string `json:"token"`
	}
	r.JSON(t, &tok)

	done := make(chan *arxtest.Response, 1)
	go func() { done <- s.Do("GET", "/v1/agent/status?wait=30s", tok.Token, nil) }()
	time.Sleep(200 * time.Millisecond)
	start := time.Now()
	if r := s.Do("DELETE", "/v1/agents/"+id+"/tokens/"+tok.ID, s.AdminToken, nil); r.Status/100 != 2 {
		t.Fatalf("revoke: %d %s", r.Status, r.Body)
	}
	select {
	case r := <-done:
		if r.ErrorCode() != "auth.invalid_token" {
			t.Fatalf("after revocation the long poll answered %d %s", r.Status, r.Body)
		}
		if d := time.Since(start); d > 2500*time.Millisecond {
			t.Errorf("the long poll saw the revocation after %s", d)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the long poll did not end with the revocation")
	}
}

// TestHireNameOnStaff: hiring a name already on staff is refused with
// agent.name_taken and nothing is written; with replace, the agent on staff
// is terminated (its token dies, the record says why) and the new one
// hired in one step; a terminated agent's name is free again.
func TestHireNameOnStaff(t *testing.T) {
	s := arxtest.Start(t)
	oldID, oldToken := s.Hire(arxtest.Manifest)

	r := s.Do("POST", "/v1/agents", s.AdminToken, map[string]any{"manifest": arxtest.Manifest})
	if r.Status != http.StatusConflict || !strings.Contains(string(r.Body), `"agent.name_taken"`) || !strings.Contains(string(r.Body), "--replace") {
		t.Fatalf("second hire of the same name: %d %s", r.Status, r.Body)
	}
	var list struct {
		Agents []struct{ ID, Status string } `json:"agents"`
	}
	s.Do("GET", "/v1/agents", s.AdminToken, nil).JSON(t, &list)
	if len(list.Agents) != 1 {
		t.Fatalf("a refused hire left agents: %+v", list.Agents)
	}

	r = s.Do("POST", "/v1/agents", s.AdminToken, map[string]any{"manifest": arxtest.Manifest, "replace": true})
	if r.Status != http.StatusCreated {
		t.Fatalf("hire with replace: %d %s", r.Status, r.Body)
	}
	var hired struct {
		Agent struct{ ID string } `json:"agent"`
		Token string              `json:"token"`
	}
	r.JSON(t, &hired)
	if got := s.Do("GET", "/v1/agent", oldToken, nil); got.Status != http.StatusUnauthorized && got.Status != http.StatusForbidden {
		t.Errorf("the replaced agent's token still works: %d %s", got.Status, got.Body)
	}
	rec := s.Do("GET", "/v1/agents/"+oldID+"/record", s.AdminToken, nil)
	if !strings.Contains(string(rec.Body), `"agent.terminated"`) || !strings.Contains(string(rec.Body), "replaced by a new hire of the same name ("+hired.Agent.ID+")") {
		t.Errorf("the replaced agent's record does not say it was replaced:\n%s", rec.Body)
	}

	// Terminated: the name is free again.
	if r := s.Do("POST", "/v1/agents/"+hired.Agent.ID+"/terminate", s.AdminToken, map[string]string{"reason": "done"}); r.Status != http.StatusOK {
		t.Fatalf("terminate: %d %s", r.Status, r.Body)
	}
	s.Hire(arxtest.Manifest)
}

// TestWrongTokenHints: each kind of wrong token is told its own way out.
func TestWrongTokenHints(t *testing.T) {
	s := arxtest.Start(t)
	for _, tc := range []struct{ token, hint string }{
		{"arxa_" + strings.Repeat("x", 43), "hire the agent again"},
		{"arxk_" + strings.Repeat("x", 43), "admin.token"},
		{"arxu_" + strings.Repeat("x", 43), "arx login"},
		{"sk-" + strings.Repeat("x", 40), "arxa_ (agents), arxu_ (people) or arxk_ (operators)"},
	} {
		r := s.Do("GET", "/v1/agents", tc.token, nil)
		if r.Status != http.StatusUnauthorized || !strings.Contains(string(r.Body), "auth.invalid_token") || !strings.Contains(string(r.Body), tc.hint) {
			t.Errorf("%s...: %d %s, want a hint with %q", tc.token[:5], r.Status, r.Body, tc.hint)
		}
	}
}

// TestBudgetRequired: a job description without an approval policy or a
// runtime budget is refused at hire, each with what to add; an agent hired
// before they were required keeps its manifest readable, with the defaults
// it was hired with.
func TestBudgetRequired(t *testing.T) {
	s := arxtest.Start(t)
	legacy := strings.NewReplacer("approval:\n  approvers: [boss@example.com]\n  timeout: 10m\n", "",
		"budget:\n  max_call_duration: 1m\n", "").Replace(arxtest.Manifest)
	legacy = strings.ReplaceAll(legacy, "        account.delete: {risk: high}\n", "")
	if strings.Contains(legacy, "budget:") || strings.Contains(legacy, "approval:") {
		t.Fatalf("the test's manifest still has approval or budget:\n%s", legacy)
	}
	r := s.Do("POST", "/v1/agents", s.AdminToken, map[string]string{"manifest": legacy})
	if r.Status != 422 || !strings.Contains(string(r.Body), "manifest.invalid") ||
		!strings.Contains(string(r.Body), "budget: required field is missing (hint: add a budget section") ||
		!strings.Contains(string(r.Body), "approval: required field is missing (hint: add an approval section") {
		t.Fatalf("hire without approval and budget: %d %s", r.Status, r.Body)
	}
	m, err := s.Runtime.Manifest(&store.Agent{ID: "hired-earlier", Manifest: []byte(legacy), ManifestHash: manifest.Hash([]byte(legacy))})
	if err != nil {
		t.Fatalf("the manifest of an agent hired earlier: %v", err)
	}
	if m.Budget.MaxCallDuration != manifest.DefaultMaxCallDuration || m.Approval.Timeout != manifest.DefaultApprovalTimeout {
		t.Errorf("defaults of a manifest hired earlier: %+v %+v", m.Budget, m.Approval)
	}
}
