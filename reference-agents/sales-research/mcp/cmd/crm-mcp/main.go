// Command crm-mcp is the demo CRM as an MCP server, on stdin and stdout (or
// streamable HTTP with --listen). It stands for a third-party MCP server
// that holds a credential of its own: it refuses to start without
// CRM_API_KEY, and over HTTP it serves only callers that present that key.
// Under arx mcp, only ARX has the key.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"time"

	salesmcp "github.com/arxsec/arx/reference-agents/sales-research/mcp"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

func main() {
	listen := flag.String("listen", "", "serve streamable HTTP on this address instead of stdio")
	flag.Parse()
	key := os.Getenv("CRM_API_KEY")
	if key == "" {
		fmt.Fprintln(os.Stderr, "crm-mcp: error: CRM_API_KEY is not set (hint: the CRM's credential; arx mcp gives it from mcp.yaml)")
		os.Exit(1)
	}
	crm := salesmcp.NewCRM()
	if *listen == "" {
		if err := crm.Server().Run(context.Background(), &mcp.StdioTransport{}); err != nil && !errors.Is(err, mcp.ErrConnectionClosed) {
			fmt.Fprintln(os.Stderr, "crm-mcp:", err)
			os.Exit(1)
		}
		return
	}
	srv := &http.Server{Addr: *listen, Handler: crm.HTTPHandler(key), ReadHeaderTimeout: 10 * time.Second}
	fmt.Fprintf(os.Stderr, "crm-mcp: serving MCP at http://%s/\n", *listen)
	if err := srv.ListenAndServe(); err != nil {
		fmt.Fprintln(os.Stderr, "crm-mcp:", err)
		os.Exit(1)
	}
}
