package salesmcp_test

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/arxsec/arx/agentvault"
	"github.com/arxsec/arx/internal/arxtest"
	"github.com/arxsec/arx/internal/mcpgw"
	salesmcp "github.com/arxsec/arx/reference-agents/sales-research/mcp"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// The agent, unchanged, governed by arx mcp in front of the CRM's MCP server
// (over streamable HTTP, with the CRM's key held by the gateway alone).
func TestAgentThroughARX(t *testing.T) {
	s := arxtest.Start(t)
	agentID, token := s.Hire(string(salesmcp.Manifest))
	dana := s.AddPerson("dana@example.com", "manager", "correct horse battery")

	const crmKey = "crm-key-0123456789"
	crm := salesmcp.NewCRM()
	upstream := httptest.NewServer(crm.HTTPHandler(crmKey))
	t.Cleanup(upstream.Close)
	if resp, err := http.Post(upstream.URL, "application/json", strings.NewReader(`{}`)); err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("the CRM served a caller without its key: %v %v", err, resp)
	}

	up, err := mcpgw.UpstreamConfig{Name: "crm", URL: upstream.URL, Headers: map[string]string{"Authorization": "Bearer ${CRM_KEY}"}}.
		Resolve(func(k string) (string, bool) { return crmKey, k == "CRM_KEY" })
	if err != nil {
		t.Fatal(err)
	}
	g, err := mcpgw.New(t.Context(), mcpgw.Config{Agent: agentvault.Config{Token: token, BaseURL: s.BaseURL()},
		Upstreams: []mcpgw.Upstream{up}, ProgressInterval: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close() })

	st, ct := mcp.NewInMemoryTransports()
	go g.Serve(context.Background(), st)
	progress := make(chan *mcp.ProgressNotificationParams, 16)
	client := mcp.NewClient(&mcp.Implementation{Name: "sales-research-mcp", Version: "1"}, &mcp.ClientOptions{
		ProgressNotificationHandler: func(_ context.Context, r *mcp.ProgressNotificationClientRequest) {
			select {
			case progress <- r.Params:
			default:
			}
		},
	})
	cs, err := client.Connect(t.Context(), ct, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()

	// Dana approves the update when it comes.
	go func() {
		for t.Context().Err() == nil {
			var list struct {
				Approvals []struct {
					CallID string `json:"call_id"`
				} `json:"approvals"`
			}
			s.Do("GET", "/v1/approvals?status=pending", dana, nil).JSON(t, &list)
			for _, a := range list.Approvals {
				s.Do("POST", "/v1/approvals/"+a.CallID+"/approve", dana, map[string]string{"reason": "notes are fine"})
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()

	var out bytes.Buffer
	a := &salesmcp.Agent{MCP: cs, Out: &out, ApprovalWait: 20 * time.Second, Progress: progress}
	sum, err := a.Run(t.Context(), salesmcp.DefaultAccounts)
	if err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	if sum.Calls != 7 || sum.Refusals != 1 || !sum.Updated || sum.Progress == 0 {
		t.Errorf("summary %+v\n%s", sum, out.String())
	}
	if !strings.Contains(out.String(), "tools: account-read, account-update, opportunity-read") {
		t.Errorf("the agent saw more than its job description:\n%s", out.String())
	}
	if d := crm.Deleted(); len(d) != 0 {
		t.Errorf("the CRM deleted %v", d)
	}
	if crm.Notes("0017") == "" {
		t.Error("the approved update did not reach the CRM")
	}

	r := s.Do("GET", "/v1/agents/"+agentID+"/record?limit=1000", s.AdminToken, nil)
	for _, want := range []string{`"action":"account-delete"`, `"type":"drift.detected"`, `"type":"approval.granted"`, `"action":"account-update"`} {
		if !bytes.Contains(r.Body, []byte(want)) {
			t.Errorf("the record lacks %s", want)
		}
	}
	if bytes.Contains(r.Body, []byte("logistics fair")) || bytes.Contains(r.Body, []byte(crmKey)) {
		t.Error("the record holds a tool's arguments or the CRM's key")
	}
}
