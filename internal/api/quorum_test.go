package api_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/arxsec/arx/internal/arxtest"
)

// TestQuorum: a job description that asks two approvers to grant; one
// grant is not enough, nobody counts twice, the second grant issues the
// credential, and a single denial ends another request.
func TestQuorum(t *testing.T) {
	s := arxtest.Start(t)
	m := strings.Replace(arxtest.Manifest, "  approvers: [boss@example.com]\n", "  approvers: [boss@example.com, ops@example.com]\n  delegates: [cfo@example.com]\n  quorum: 2\n", 1)
	_, token := s.Hire(m)
	boss, ops, cfo := personToken(t, s, "boss@example.com"), personToken(t, s, "ops@example.com"), personToken(t, s, "cfo@example.com")
	ask := func(key string) string {
		t.Helper()
		r := request(s, token, "crm", "account.delete", "high", key)
		var c callJSON
		r.JSON(t, &c)
		if r.Status != http.StatusAccepted {
			t.Fatalf("call: %d %s", r.Status, r.Body)
		}
		return c.ID
	}
	type approval struct {
		Status string   `json:"status"`
		Quorum int      `json:"quorum"`
		Grants []string `json:"grants"`
	}
	call := ask("q1")
	var a approval
	s.Do("POST", "/v1/approvals/"+call+"/approve", boss, map[string]string{"reason": "fine"}).JSON(t, &a)
	if a.Status != "pending" || a.Quorum != 2 || len(a.Grants) != 1 {
		t.Fatalf("after one grant: %+v", a)
	}
	var c callJSON
	s.Do("GET", "/v1/calls/"+call, token, nil).JSON(t, &c)
	if c.Status != "pending_approval" || c.Credential != nil {
		t.Fatalf("one grant of two gave: %+v", c)
	}
	if r := s.Do("POST", "/v1/approvals/"+call+"/approve", boss, map[string]string{"reason": "again"}); r.ErrorCode() != "approval.already_decided" ||
		!strings.Contains(string(r.Body), "already granted") {
		t.Errorf("the same person twice: %d %s", r.Status, r.Body)
	}
	a = approval{}
	s.Do("POST", "/v1/approvals/"+call+"/approve", cfo, map[string]string{"reason": "agreed"}).JSON(t, &a)
	if a.Status != "granted" || len(a.Grants) != 2 {
		t.Fatalf("after the delegate's grant: %+v", a)
	}
	c = callJSON{}
	s.Do("GET", "/v1/calls/"+call, token, nil).JSON(t, &c)
	if c.Status != "approved" || c.Credential == nil {
		t.Fatalf("two grants gave: %+v", c)
	}
	// One grant, then a denial: denied.
	call2 := ask("q2")
	s.Do("POST", "/v1/approvals/"+call2+"/approve", boss, map[string]string{"reason": "fine"})
	a = approval{}
	s.Do("POST", "/v1/approvals/"+call2+"/deny", ops, map[string]string{"reason": "not this one"}).JSON(t, &a)
	if a.Status != "denied" {
		t.Fatalf("grant then deny: %+v", a)
	}
	// A quorum larger than the people named is refused at hire.
	bad := strings.Replace(m, "quorum: 2", "quorum: 4", 1)
	bad = strings.Replace(bad, "name: test-agent", "name: test-agent-2", 1)
	if r := s.Do("POST", "/v1/agents", s.AdminToken, map[string]string{"manifest": bad}); r.Status != http.StatusUnprocessableEntity ||
		!strings.Contains(string(r.Body), "quorum 4 is more than the 3 approvers and delegates named") {
		t.Errorf("quorum 4 of 3: %d %s", r.Status, r.Body)
	}
}
