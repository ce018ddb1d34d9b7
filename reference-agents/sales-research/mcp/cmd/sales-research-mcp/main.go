// Command sales-research-mcp runs the MCP variant of ARX's reference agent.
// It is a plain MCP client: it starts its MCP server from the command line
// after --, and knows nothing of ARX. Governed by ARX:
//
//	sales-research-mcp -- arx mcp --config reference-agents/sales-research/mcp/mcp.yaml
//
// Not governed (the CRM's own server, with its key in the agent's hands):
//
//	CRM_API_KEY=... sales-research-mcp -- go run ./reference-agents/sales-research/mcp/cmd/crm-mcp
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"time"

	"github.com/arxsec/arx/agentvault"
	salesmcp "github.com/arxsec/arx/reference-agents/sales-research/mcp"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

func main() {
	wait := flag.Duration("approval-wait", 2*time.Minute, "how long to wait for an approver of account-update (0: skip it)")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: sales-research-mcp [flags] -- MCP-SERVER-COMMAND [ARG...]\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() == 0 {
		flag.Usage()
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	progress := make(chan *mcp.ProgressNotificationParams, 16)
	client := mcp.NewClient(&mcp.Implementation{Name: "sales-research-mcp", Version: "1"}, &mcp.ClientOptions{
		ProgressNotificationHandler: func(_ context.Context, r *mcp.ProgressNotificationClientRequest) {
			select {
			case progress <- r.Params:
			default:
			}
		},
	})
	cmd := exec.Command(flag.Arg(0), flag.Args()[1:]...)
	cmd.Stderr = os.Stderr
	cs, err := client.Connect(ctx, &mcp.CommandTransport{Command: cmd}, nil)
	if err != nil {
		fmt.Fprintf(os.Stderr, "sales-research-mcp: error: starting the MCP server: %s\n", agentvault.Inert(err.Error()))
		os.Exit(1)
	}
	defer cs.Close()
	a := &salesmcp.Agent{MCP: cs, Out: os.Stdout, ApprovalWait: *wait, Progress: progress}
	s, err := a.Run(ctx, salesmcp.DefaultAccounts)
	fmt.Printf("done: %d tool calls, %d refused and recorded\n", s.Calls, s.Refusals)
	if err != nil {
		fmt.Fprintf(os.Stderr, "sales-research-mcp: error: %s\n", agentvault.Inert(err.Error()))
		os.Exit(1)
	}
}
