package api_test

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/arxsec/arx/agentvault"
	"github.com/arxsec/arx/arxerr"
	"github.com/arxsec/arx/internal/arxtest"
	"github.com/arxsec/arx/internal/runtime"
	"github.com/arxsec/arx/internal/server"
)

const pw = "correct horse battery"

func pending(t *testing.T, s *arxtest.Server, token, key string) string {
	t.Helper()
	r := request(s, token, "crm", "account.delete", "high", key)
	if r.Status != http.StatusAccepted {
		t.Fatalf("high-risk request: %d %s", r.Status, r.Body)
	}
	var c callJSON
	r.JSON(t, &c)
	return c.ID
}

func decide(s *arxtest.Server, token, call, verb, reason string) *arxtest.Response {
	return s.Do("POST", "/v1/approvals/"+call+"/"+verb, token, map[string]string{"reason": reason})
}

func TestApprovalGrantIssuesCredential(t *testing.T) {
	s := arxtest.Start(t)
	agent, token := s.Hire(arxtest.Manifest)
	boss := s.AddPerson("boss@example.com", "manager", pw)
	call := pending(t, s, token, "k1")

	r := s.Do("GET", "/v1/approvals?status=pending", boss, nil)
	if r.Status != 200 || !strings.Contains(string(r.Body), call) {
		t.Fatalf("pending list: %d %s", r.Status, r.Body)
	}
	if r := decide(s, boss, call, "approve", "looks right"); r.Status != 200 || !strings.Contains(string(r.Body), `"status":"granted"`) {
		t.Fatalf("approve: %d %s", r.Status, r.Body)
	}
	var c callJSON
	s.Do("GET", "/v1/calls/"+call, token, nil).JSON(t, &c)
	if c.Status != "approved" || c.Credential == nil {
		t.Fatalf("after approval the agent gets no credential: %+v", c)
	}
	if r := decide(s, boss, call, "deny", "changed my mind"); r.ErrorCode() != "approval.already_decided" {
		t.Fatalf("second decision: %d %s", r.Status, r.Body)
	}
	es := entries(t, s, agent)
	if got, want := types(es), "agent.hired,call.requested,approval.requested,approval.granted,credential.issued"; got != want {
		t.Fatalf("record: %s, want %s", got, want)
	}
	if g := es[3]; g.Actor != "user:boss@example.com" || g.Data["reason"] != "looks right" {
		t.Fatalf("grant entry does not say who and why: %+v", g)
	}
}

func TestApprovalRefusals(t *testing.T) {
	s := arxtest.Start(t)
	agentID, token := s.Hire(arxtest.Manifest)
	boss := s.AddPerson("boss@example.com", "manager", pw)
	stranger := s.AddPerson("stranger@example.com", "manager", pw)
	call := pending(t, s, token, "k1")

	for _, tc := range []struct {
		name, token, verb, reason, code string
	}{
		{"a manager the manifest does not name", stranger, "approve", "", "approval.not_approver"},
		{"the operator token", s.AdminToken, "approve", "", "approval.not_approver"},
		{"the agent's own token", token, "approve", "", "approval.not_approver"},
		{"deny without a reason", boss, "deny", "", "request.invalid"},
		{"unknown approval", boss, "approve", "", "approval.not_found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := call
			if tc.code == "approval.not_found" {
				id = "00000000-0000-0000-0000-000000000000"
			}
			if r := decide(s, tc.token, id, tc.verb, tc.reason); r.ErrorCode() != tc.code {
				t.Fatalf("got %d %s, want %s", r.Status, r.Body, tc.code)
			}
		})
	}
	// Deny: the call never gets a credential.
	if r := decide(s, boss, call, "deny", "not during the audit"); r.Status != 200 {
		t.Fatalf("deny: %d %s", r.Status, r.Body)
	}
	var c callJSON
	s.Do("GET", "/v1/calls/"+call, token, nil).JSON(t, &c)
	if c.Status != "denied" || c.Credential != nil {
		t.Fatalf("denied call: %+v", c)
	}

	// Terminated agent: its pending approval cannot be granted.
	call2 := pending(t, s, token, "k2")
	if r := s.Do("POST", "/v1/agents/"+agentID+"/terminate", s.AdminToken, map[string]string{"reason": "replaced"}); r.Status != 200 {
		t.Fatalf("terminate: %d %s", r.Status, r.Body)
	}
	if r := decide(s, boss, call2, "approve", ""); r.ErrorCode() != "agent.terminated" {
		t.Fatalf("approval after termination: %d %s", r.Status, r.Body)
	}
}

func TestSelfApprovalRefused(t *testing.T) {
	s := arxtest.Start(t)
	agentID, _ := s.Hire(arxtest.Manifest)
	// boss is an admin and an approver: a token boss asks for (arx run)
	// raises requests that boss cannot decide.
	boss := s.AddPerson("boss@example.com", "admin", pw)
	r := s.Do("POST", "/v1/agents/"+agentID+"/tokens", boss, map[string]string{"label": "arx run"})
	var tok struct {
		Token string `json:"token"`
	}
	r.JSON(t, &tok)
	call := pending(t, s, tok.Token, "k1")
	if r := decide(s, boss, call, "approve", ""); r.ErrorCode() != "approval.self_approval" {
		t.Fatalf("self-approval: %d %s", r.Status, r.Body)
	}
}

func TestApprovalTimeout(t *testing.T) {
	s := arxtest.Start(t)
	agent, token := s.Hire(strings.Replace(arxtest.Manifest, "timeout: 10m", "timeout: 1s", 1))
	boss := s.AddPerson("boss@example.com", "manager", pw)
	call := pending(t, s, token, "k1")
	time.Sleep(1100 * time.Millisecond)
	if r := decide(s, boss, call, "approve", ""); r.ErrorCode() != "approval.expired" {
		t.Fatalf("decision after timeout: %d %s", r.Status, r.Body)
	}
	var c callJSON
	s.Do("GET", "/v1/calls/"+call, token, nil).JSON(t, &c)
	if c.Status != "expired" || c.Credential != nil {
		t.Fatalf("timed-out call: %+v", c)
	}
	if !strings.Contains(types(entries(t, s, agent)), "approval.expired") {
		t.Fatalf("no approval.expired entry: %s", types(entries(t, s, agent)))
	}
}

// TestSDKResumesOnApproval: an SDK call waiting for approval resumes when
// the decision commits, and fails with call.denied when denied.
func TestSDKResumesOnApproval(t *testing.T) {
	s := arxtest.Start(t)
	_, token := s.Hire(arxtest.Manifest)
	boss := s.AddPerson("boss@example.com", "manager", pw)
	c, err := agentvault.New(agentvault.Config{Token: token, BaseURL: s.BaseURL()})
	if err != nil {
		t.Fatal(err)
	}
	for _, verb := range []string{"approve", "deny"} {
		t.Run(verb, func(t *testing.T) {
			done := make(chan error, 1)
			ran := make(chan time.Time, 1)
			go func() {
				_, err := agentvault.Do(t.Context(), c, agentvault.Action{Connector: "crm", Action: "account.delete", Risk: agentvault.RiskHigh,
					Summary: "delete account 9"}, func(ctx context.Context, cred agentvault.Credential) (int, error) {
					ran <- time.Now()
					return 1, nil
				})
				done <- err
			}()
			var call string
			for deadline := time.Now().Add(5 * time.Second); call == "" && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
				var out struct {
					Approvals []struct {
						CallID string `json:"call_id"`
					} `json:"approvals"`
				}
				s.Do("GET", "/v1/approvals?status=pending", boss, nil).JSON(t, &out)
				if len(out.Approvals) > 0 {
					call = out.Approvals[0].CallID
				}
			}
			if call == "" {
				t.Fatal("the SDK's request never showed up as pending")
			}
			decided := time.Now()
			if r := decide(s, boss, call, verb, "reason "+verb); r.Status != 200 {
				t.Fatalf("%s: %d %s", verb, r.Status, r.Body)
			}
			err := <-done
			if verb == "approve" {
				if err != nil {
					t.Fatal(err)
				}
				if d := (<-ran).Sub(decided); d > 2*time.Second {
					t.Fatalf("the SDK resumed %v after the decision: it polls instead of waiting", d)
				}
			} else {
				if !agentvault.IsCode(err, arxerr.CallDenied) {
					t.Fatalf("denied call: %v", err)
				}
				select {
				case <-ran:
					t.Fatal("the function ran after a denial")
				default:
				}
			}
		})
	}
}

func TestEventsAndWebhooks(t *testing.T) {
	var mu sync.Mutex
	var got []map[string]any
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var m map[string]any
		json.NewDecoder(r.Body).Decode(&m)
		mu.Lock()
		got = append(got, m)
		n := len(got)
		mu.Unlock()
		if n == 1 {
			w.WriteHeader(http.StatusServiceUnavailable) // the first delivery fails: it must be retried
		}
	}))
	defer hook.Close()
	s := arxtest.StartWith(t, t.TempDir(), func(c *server.Config) {
		c.Webhooks = []runtime.Webhook{{URL: hook.URL, Format: "json"}, {URL: hook.URL, Format: "slack"}}
	})
	_, token := s.Hire(arxtest.Manifest)
	boss := s.AddPerson("boss@example.com", "manager", pw)

	req, _ := http.NewRequestWithContext(t.Context(), "GET", s.URL+"/v1/events", nil)
	req.Header.Set("Authorization", "Bearer "+boss)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("events: %v %v", resp, err)
	}
	defer resp.Body.Close()
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	call := pending(t, s, token, "k1")
	waitLine(t, lines, "event: approval.requested")
	decide(s, boss, call, "approve", "<!channel> ok")
	waitLine(t, lines, "event: approval.decided")

	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		n := len(got)
		var text, events []string
		for _, m := range got {
			if s, ok := m["text"].(string); ok {
				text = append(text, s)
			}
			if e, ok := m["event"].(string); ok {
				events = append(events, e)
			}
		}
		mu.Unlock()
		if n >= 5 && len(text) >= 2 && strings.Contains(strings.Join(events, ","), "approval.decided") {
			all := strings.Join(text, "\n")
			if !strings.Contains(all, "account.delete") || !strings.Contains(all, "&lt;!channel&gt; ok") || strings.Contains(all, "<!channel>") {
				t.Fatalf("slack payloads (the reason must come escaped): %v", text)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("webhooks got %d deliveries: %v", n, got)
		}
		time.Sleep(50 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	b, _ := json.Marshal(got)
	if strings.Contains(string(b), token) || strings.Contains(string(b), "arxa_") {
		t.Fatal("a webhook carried a token")
	}
}

func waitLine(t *testing.T, lines <-chan string, want string) {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("stream ended before %q", want)
			}
			if l == want {
				return
			}
		case <-timeout:
			t.Fatalf("no %q within 5s", want)
		}
	}
}

func TestLoginRateLimited(t *testing.T) {
	s := arxtest.Start(t)
	s.AddPerson("boss@example.com", "manager", pw)
	codes := []string{}
	for i := 0; i < 7; i++ {
		r := s.Do("POST", "/v1/auth/tokens", "", map[string]string{"email": "boss@example.com", "password": "wrong password!"})
		codes = append(codes, r.ErrorCode())
	}
	if codes[0] != "auth.login_failed" || codes[6] != "request.rate_limited" {
		t.Fatalf("codes: %v", codes)
	}
	// Even the right password waits out the window.
	if r := s.Do("POST", "/v1/auth/tokens", "", map[string]string{"email": "boss@example.com", "password": pw}); r.ErrorCode() != "request.rate_limited" {
		t.Fatalf("after the limit: %d %s", r.Status, r.Body)
	}
	// An unknown email gets the same answer as a wrong password.
	r := s.Do("POST", "/v1/auth/tokens", "", map[string]string{"email": "nobody@example.com", "password": "whatever you like"})
	if r.ErrorCode() != "auth.login_failed" {
		t.Fatalf("unknown email: %d %s", r.Status, r.Body)
	}
}
