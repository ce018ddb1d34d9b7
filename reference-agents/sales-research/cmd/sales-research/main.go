// Command sales-research runs ARX's reference agent on its own, as a hired
// agent process would run: configured from ARX_* variables (for example by
// `arx run sales-research -- go run ./reference-agents/sales-research/cmd/sales-research`).
//
// Without CRM_URL it starts the demo CRM on loopback, checking credentials
// against the ARX server the agent uses.
package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"time"

	"github.com/arxsec/arx/agentvault"
	"github.com/arxsec/arx/credential"
	salesresearch "github.com/arxsec/arx/reference-agents/sales-research"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "sales-research: error: %s\n", agentvault.Inert(err.Error()))
		os.Exit(1)
	}
}

func run(ctx context.Context) error {
	arx, err := agentvault.FromEnv()
	if err != nil {
		return err
	}
	crmURL := os.Getenv("CRM_URL")
	if crmURL == "" {
		base := strings.TrimSuffix(os.Getenv("ARX_BASE_URL"), "/")
		if base == "" {
			base = agentvault.DefaultBaseURL
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		srv := &http.Server{Handler: salesresearch.NewCRM(credential.NewVerifier(base, nil)), ReadHeaderTimeout: 5 * time.Second}
		go srv.Serve(ln)
		defer srv.Close()
		crmURL = "http://" + ln.Addr().String()
		fmt.Printf("demo CRM on %s, checking credentials with %s\n", crmURL, base)
	}
	a := &salesresearch.Agent{ARX: arx, CRMURL: crmURL, Out: os.Stdout}
	s, err := a.Run(ctx, salesresearch.DefaultAccounts)
	fmt.Printf("done: %d governed calls, %d refused and recorded, %d failed\n", s.Calls, s.Refusals, s.Failures)
	return err
}
