package agentvault_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/arxsec/arx/agentvault"
	"github.com/arxsec/arx/internal/arxtest"
	"github.com/arxsec/arx/internal/runtime"
	"github.com/arxsec/arx/internal/server"
)

const budgetManifest = `apiVersion: arx.dev/v1
kind: JobDescription
agent:
  name: spender
  owner: olga@example.com
scope:
  connectors:
    llm:
      actions:
        complete: {risk: low}
        search: {risk: low, cost: 0.40 USD}
approval:
  approvers: [dana@example.com]
budget:
  max_call_duration: 1m
  spend:
    per_day: 1 USD
    notify_at: 50%
  tokens:
    per_day: 100000
termination:
  notify: []
`

// TestE2EBudgetCaps: reported usage and declared costs add up to the day's
// spend; the owner is told at notify_at; at the cap the next call waits for
// an approver; the day's spend survives a restart.
func TestE2EBudgetCaps(t *testing.T) {
	var mu sync.Mutex
	var notices []map[string]any
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var p map[string]any
		b, _ := io.ReadAll(r.Body)
		if json.Unmarshal(b, &p) == nil {
			mu.Lock()
			notices = append(notices, p)
			mu.Unlock()
		}
	}))
	defer hook.Close()
	dir := t.TempDir()
	withHook := func(c *server.Config) { c.Webhooks = []runtime.Webhook{{URL: hook.URL, Format: "json"}} }
	s := arxtest.StartWith(t, dir, withHook)
	agentID, token := s.Hire(budgetManifest)
	client := func(s *arxtest.Server) *agentvault.Client {
		c, err := agentvault.New(agentvault.Config{Token: token, BaseURL: s.BaseURL(), AgentID: agentID})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	c := client(s)
	ctx := t.Context()

	// A model call reports what it used, twice.
	_, err := agentvault.Do(ctx, c, agentvault.Action{Connector: "llm", Action: "complete", Summary: "draft an email"},
		func(ctx context.Context, _ agentvault.Credential) (string, error) {
			if err := agentvault.ReportUsage(ctx, agentvault.Usage{Tokens: 700, Amount: "0.10 USD"}); err != nil {
				return "", err
			}
			return "ok", agentvault.ReportUsage(ctx, agentvault.Usage{Tokens: 500, Amount: "0.20 USD"})
		})
	if err != nil {
		t.Fatal(err)
	}
	if err := agentvault.ReportUsage(ctx, agentvault.Usage{Tokens: 1}); err == nil {
		t.Error("ReportUsage outside a governed call succeeded")
	}
	// A search costs what its action declares: 0.30 + 0.40 = 0.70, past
	// half the cap: the owner is told.
	search := func(c *agentvault.Client) (*agentvault.Call, error) {
		return c.Request(ctx, agentvault.Action{Connector: "llm", Action: "search", Summary: "accounts in Lyon"})
	}
	call, err := search(c)
	if err != nil || call.Credential == nil {
		t.Fatalf("first search: %+v, %v", call, err)
	}
	if _, err := c.Complete(ctx, call.ID, agentvault.Outcome{Outcome: "success", Usage: &agentvault.Usage{Amount: "5 USD", Tokens: 10}}); err != nil {
		t.Fatal(err) // its reported amount is recorded but not charged: the action declares its cost
	}
	// Another would take the day to 1.10: it waits for an approver.
	call, err = search(c)
	if err != nil || call.Status != "pending_approval" || call.Credential != nil {
		t.Fatalf("search past the cap: %+v, %v", call, err)
	}
	held := call.ID

	// The notice reached the webhook, naming the owner.
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		var got map[string]any
		for _, n := range notices {
			if n["event"] == "budget.threshold_reached" {
				got = n
			}
		}
		mu.Unlock()
		if got != nil {
			b, _ := got["budget"].(map[string]any)
			if got["to"] != "olga@example.com" || b["budget"] != "spend" || b["used_today"] != "0.70 USD" || b["limit"] != "1.00 USD" {
				t.Errorf("notice %v", got)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no budget notice; got %v", notices)
		}
		time.Sleep(20 * time.Millisecond)
	}

	// The record says what was used and charged, and why the call waits.
	rec := string(s.Do("GET", "/v1/agents/"+agentID+"/record", s.AdminToken, nil).Body)
	for _, want := range []string{`"tokens":1200`, `"amount":"0.30 USD"`, `"charged":"0.30 USD"`, `"cost":"0.40 USD"`, `"amount":"5.00 USD"`,
		`"type":"budget.threshold_reached"`, `"rule":"spend_per_day"`, `"spent_today":"0.70 USD"`} {
		if !strings.Contains(rec, want) {
			t.Errorf("record lacks %s", want)
		}
	}
	if strings.Count(rec, `"charged"`) != 1 || strings.Count(rec, `"type":"budget.threshold_reached"`) != 1 {
		t.Errorf("record charges or notices more than once:\n%s", rec)
	}

	// A report in another currency is not counted, and says so; the call
	// is closed all the same.
	call, err = c.Request(ctx, agentvault.Action{Connector: "llm", Action: "complete", Summary: "one more"})
	if err != nil {
		t.Fatal(err)
	}
	if done, err := c.Complete(ctx, call.ID, agentvault.Outcome{Outcome: "success", Usage: &agentvault.Usage{Amount: "0.01 EUR"}}); err != nil || done.Status != "completed" {
		t.Fatalf("completion in EUR: %+v, %v", done, err)
	}
	if rec := string(s.Do("GET", "/v1/agents/"+agentID+"/record", s.AdminToken, nil).Body); !strings.Contains(rec, `"usage_refused":"usage.amount is in EUR but this agent's spend cap is in USD"`) {
		t.Errorf("record lacks why the usage was not counted")
	}
	call, err = c.Request(ctx, agentvault.Action{Connector: "llm", Action: "complete", Summary: "and another"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Complete(ctx, call.ID, agentvault.Outcome{Outcome: "success", Usage: &agentvault.Usage{Amount: "0.01 USD"}}); err != nil {
		t.Fatal(err)
	}

	// After a restart the day's spend is what it was: the next search still waits.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = arxtest.StartWith(t, dir, withHook)
	c = client(s)
	call, err = search(c)
	if err != nil || call.Status != "pending_approval" {
		t.Fatalf("search after the restart: %+v, %v", call, err)
	}
	var agent struct {
		Usage struct {
			Spent  string `json:"spent_today"`
			Tokens int64  `json:"tokens_today"`
		} `json:"usage"`
	}
	s.Do("GET", "/v1/agents/"+agentID, s.AdminToken, nil).JSON(t, &agent)
	if agent.Usage.Spent != "0.71 USD" || agent.Usage.Tokens != 1210 {
		t.Errorf("agent's usage after the restart: %+v", agent.Usage)
	}
	// The approver lets one held search through: its cost is charged with
	// its credential (held calls cost nothing until then).
	dana := s.AddPerson("dana@example.com", "manager", "correct horse battery staple")
	if r := s.Do("POST", "/v1/approvals/"+held+"/approve", dana, map[string]string{"reason": "worth it"}); r.Status != http.StatusOK {
		t.Fatalf("approve: %d %s", r.Status, r.Body)
	}
	s.Do("GET", "/v1/agents/"+agentID, s.AdminToken, nil).JSON(t, &agent)
	if agent.Usage.Spent != "1.11 USD" {
		t.Errorf("agent's usage after the approval: %+v", agent.Usage)
	}
}
