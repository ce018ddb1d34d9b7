// Package salesmcp is the MCP variant of ARX's reference agent: the same
// sales research, done by an agent that reaches the CRM through an MCP tool
// server, as agent frameworks do, with no ARX code in it. ARX governs it
// from the outside: the agent is pointed at `arx mcp` instead of at the CRM's
// MCP server, and every tool call becomes a governed call.
//
//	go run ./reference-agents/sales-research/mcp/cmd/sales-research-mcp -- \
//	    arx mcp --config reference-agents/sales-research/mcp/mcp.yaml
//
// Its job description is manifests/job_description.yaml: the MCP server is
// connector crm, its tools are actions. The agent reads accounts and their
// opportunities (low risk), tries account-delete, which the job description
// does not declare (hidden from it, refused and recorded), and asks for
// account-update (high risk: it waits for a named approver, and hears so
// through MCP progress notifications).
package salesmcp

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/arxsec/arx/agentvault"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// Manifest is the agent's job description.
//
//go:embed manifests/job_description.yaml
var Manifest []byte

// Summary is what a run did.
type Summary struct {
	Calls     int  // tool calls that answered
	Refusals  int  // tool calls ARX refused (and recorded)
	Progress  int  // progress notifications heard while waiting for an approver
	Updated   bool // account-update ran, after an approver said yes
	Withdrawn bool // account-update was given up after ApprovalWait
}

// Agent does the research over one MCP session.
type Agent struct {
	MCP *mcp.ClientSession
	Out io.Writer // progress, for people
	// ApprovalWait bounds the wait for an approver of account-update; 0
	// skips the update.
	ApprovalWait time.Duration
	// Progress receives the progress notifications of the session (wire it
	// to mcp.ClientOptions.ProgressNotificationHandler).
	Progress chan *mcp.ProgressNotificationParams
}

// Run researches the given accounts.
func (a *Agent) Run(ctx context.Context, accounts []string) (Summary, error) {
	var s Summary
	if a.Out == nil {
		a.Out = io.Discard
	}
	var names []string
	for t, err := range a.MCP.Tools(ctx, nil) {
		if err != nil {
			return s, err
		}
		names = append(names, t.Name)
	}
	fmt.Fprintf(a.Out, "tools: %s\n", agentvault.Inert(strings.Join(names, ", ")))

	for _, id := range accounts {
		var acct Account
		if err := a.call(ctx, "account-read", map[string]any{"account": id}, &acct); err != nil {
			return s, fmt.Errorf("account %s: %w", id, err)
		}
		var ops opportunities
		if err := a.call(ctx, "opportunity-read", map[string]any{"account": id}, &ops); err != nil {
			return s, fmt.Errorf("opportunities of %s: %w", id, err)
		}
		s.Calls += 2
		total := 0
		for _, o := range ops.Opportunities {
			total += o.Amount
		}
		fmt.Fprintf(a.Out, "  %-26s %-11s %d open opportunities, EUR %d\n", agentvault.Inert(acct.Name), agentvault.Inert(acct.Industry), len(ops.Opportunities), total)
	}

	// A tool the job description does not declare: the agent does not see
	// it, and calling it anyway is refused and recorded.
	err := a.call(ctx, "account-delete", map[string]any{"account": "0108"}, nil)
	var je *jsonrpc.Error
	if !errors.As(err, &je) {
		return s, fmt.Errorf("account-delete was not refused: %v", err)
	}
	s.Refusals++
	fmt.Fprintf(a.Out, "  account-delete refused as expected: %s\n", agentvault.Inert(trim(je.Message)))

	if a.ApprovalWait <= 0 {
		return s, nil
	}
	// A high-risk tool: it waits for a named approver.
	wctx, cancel := context.WithTimeout(ctx, a.ApprovalWait)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		p := &mcp.CallToolParams{Name: "account-update", Arguments: map[string]any{"account": "0017", "notes": "met at the logistics fair; wants a pilot"}}
		p.SetProgressToken("account-update")
		res, err := a.MCP.CallTool(wctx, p)
		if err == nil && res.IsError {
			err = errors.New(trim(text(res)))
		}
		done <- err
	}()
	for {
		select {
		case p := <-a.Progress:
			s.Progress++
			if s.Progress == 1 {
				fmt.Fprintf(a.Out, "  account-update: %s\n", agentvault.Inert(p.Message))
			}
		case err := <-done:
			switch {
			case err == nil:
				s.Updated, s.Calls = true, s.Calls+1
				fmt.Fprintf(a.Out, "  account-update approved and done (%d progress notifications while waiting)\n", s.Progress)
			case wctx.Err() != nil:
				s.Withdrawn = true
				fmt.Fprintf(a.Out, "  account-update: no decision within %s; the request is withdrawn\n", a.ApprovalWait)
			default:
				s.Refusals++
				fmt.Fprintf(a.Out, "  account-update: %s\n", agentvault.Inert(err.Error()))
			}
			return s, nil
		}
	}
}

// call calls a tool and decodes its structured result into out.
func (a *Agent) call(ctx context.Context, tool string, args map[string]any, out any) error {
	res, err := a.MCP.CallTool(ctx, &mcp.CallToolParams{Name: tool, Arguments: args})
	if err != nil {
		return err
	}
	if res.IsError {
		return errors.New(trim(text(res)))
	}
	if out == nil {
		return nil
	}
	b, err := json.Marshal(res.StructuredContent)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, out)
}

func text(res *mcp.CallToolResult) string {
	var b strings.Builder
	for _, c := range res.Content {
		if t, ok := c.(*mcp.TextContent); ok {
			b.WriteString(t.Text)
		}
	}
	return b.String()
}
