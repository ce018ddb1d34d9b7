package api_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/arxsec/arx/internal/arxtest"
	"github.com/arxsec/arx/record"
)

const conditionsManifest = `apiVersion: arx.dev/v1
kind: JobDescription
agent: {name: billing, owner: owner@example.com}
scope:
  connectors:
    payments:
      actions:
        refund.create:
          risk: medium
          when: 'args.amount <= 500 && args.currency == "EUR"'
          otherwise: require_approval
        refund.cancel:
          risk: low
          when: 'args.reason in ["duplicate", "fraud"]'
        card.lookup:
          risk: low
          when: 'args.last4.size() == 4'
          otherwise: drift
          record_args: hash
approval: {approvers: [boss@example.com]}
budget: {max_call_duration: 1m}
termination: {notify: []}
`

// TestConditionsOnArguments: a real server decides calls by their
// arguments as the job description's conditions say, records them (or
// their hash), and shows them to the approver.
func TestConditionsOnArguments(t *testing.T) {
	s := arxtest.Start(t)
	agentID, token := s.Hire(conditionsManifest)
	call := func(action, key string, args any) *arxtest.Response {
		return s.Do("POST", "/v1/calls", token, map[string]any{"connector": "payments", "action": action, "idempotency_key": key, "args": args})
	}
	type callView struct {
		ID       string          `json:"id"`
		Status   string          `json:"status"`
		Args     json.RawMessage `json:"args"`
		ArgsHash string          `json:"args_hash"`
	}
	var v callView
	// Within the condition: goes ahead at once.
	r := call("refund.create", "r1", map[string]any{"amount": 120.5, "currency": "EUR", "order": "A-1001"})
	v = callView{}
	r.JSON(t, &v)
	if r.Status != http.StatusCreated || v.Status != "approved" || string(v.Args) != `{"amount":120.5,"currency":"EUR","order":"A-1001"}` || len(v.ArgsHash) != 64 {
		t.Fatalf("within the condition: %d %s", r.Status, r.Body)
	}
	// The same idempotency key with other arguments is another call.
	if r := call("refund.create", "r1", map[string]any{"amount": 121, "currency": "EUR", "order": "A-1001"}); r.Status != http.StatusConflict {
		t.Errorf("a retry with other arguments: %d %s", r.Status, r.Body)
	}
	// Over it: held for an approver, who sees the arguments.
	r = call("refund.create", "r2", map[string]any{"amount": 9000, "currency": "EUR"})
	v = callView{}
	r.JSON(t, &v)
	if r.Status != http.StatusAccepted || v.Status != "pending_approval" {
		t.Fatalf("over the condition: %d %s", r.Status, r.Body)
	}
	ap := s.Do("GET", "/v1/approvals/"+v.ID, s.AdminToken, nil)
	if !strings.Contains(string(ap.Body), `"args":{"amount":9000,"currency":"EUR"}`) {
		t.Errorf("the approval does not show the arguments: %s", ap.Body)
	}
	// No arguments at all: the condition cannot hold (fails closed).
	if r := call("refund.create", "r3", nil); r.Status != http.StatusAccepted {
		t.Errorf("no arguments: %d %s", r.Status, r.Body)
	}
	// otherwise: refuse (the default): refused with the condition, and recorded.
	r = call("refund.cancel", "c1", map[string]any{"reason": "changed my mind"})
	if r.Status != http.StatusForbidden || r.ErrorCode() != "manifest.condition_not_met" || !strings.Contains(string(r.Body), `args.reason in [\"duplicate\", \"fraud\"]`) {
		t.Fatalf("refund.cancel refused: %d %s", r.Status, r.Body)
	}
	if r := call("refund.cancel", "c2", map[string]any{"reason": "fraud"}); r.Status != http.StatusCreated {
		t.Errorf("refund.cancel within: %d %s", r.Status, r.Body)
	}
	// otherwise: drift, and the arguments kept as a hash only.
	r = call("card.lookup", "l1", map[string]any{"last4": "12345"})
	v = callView{}
	r.JSON(t, &v)
	if r.Status != http.StatusCreated || v.Args != nil || len(v.ArgsHash) != 64 {
		t.Fatalf("card.lookup: %d %s", r.Status, r.Body)
	}
	// Bad arguments are a clear error, not a decision.
	if r := call("refund.create", "b1", []int{1, 2}); r.Status != http.StatusBadRequest || !strings.Contains(string(r.Body), "not a JSON object") {
		t.Errorf("args as a list: %d %s", r.Status, r.Body)
	}
	// The record: arguments with the call's first entry, the refusal with
	// its code, the drift with its rule, the hashed call without its
	// arguments.
	entries, err := s.Runtime.Store().AgentEntries(t.Context(), agentID, -1, 100)
	if err != nil {
		t.Fatal(err)
	}
	var sawArgs, sawRefusal, sawDrift, sawHashOnly bool
	for _, se := range entries {
		e, err := record.Parse(se.Data)
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case e.Type == record.TypeCallRequested && record.Str(e.Data, "args") == `{"amount":9000,"currency":"EUR"}`:
			sawArgs = true
		case e.Type == record.TypeCredentialRefused && record.Str(e.Data, "code") == "manifest.condition_not_met":
			sawRefusal = true
		case e.Type == record.TypeDriftDetected && record.Str(e.Data, "rule") == "condition_not_met":
			sawDrift = true
		case e.Type == record.TypeCredentialIssued && e.Action == "card.lookup":
			sawHashOnly = record.Str(e.Data, "args") == "" && len(record.Str(e.Data, "args_hash")) == 64 && !strings.Contains(string(se.Data), "12345")
		}
	}
	if !sawArgs || !sawRefusal || !sawDrift || !sawHashOnly {
		t.Errorf("record: args %v, refusal %v, drift %v, hash only %v", sawArgs, sawRefusal, sawDrift, sawHashOnly)
	}
	// A condition that does not compile is refused at hire, with its line.
	broken := strings.Replace(conditionsManifest, `'args.amount <= 500 && args.currency == "EUR"'`, `'args.amount <='`, 1)
	broken = strings.Replace(broken, "name: billing", "name: billing-2", 1)
	r = s.Do("POST", "/v1/agents", s.AdminToken, map[string]string{"manifest": broken})
	if r.Status != http.StatusUnprocessableEntity || !strings.Contains(string(r.Body), ":10:") || !strings.Contains(string(r.Body), "does not compile") {
		t.Errorf("hire with a broken condition: %d %s", r.Status, r.Body)
	}
}
