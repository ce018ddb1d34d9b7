package main

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/arxsec/arx/agentvault"
	"github.com/arxsec/arx/internal/inert"
	"github.com/arxsec/arx/internal/server"
	salesresearch "github.com/arxsec/arx/reference-agents/sales-research"
	"github.com/spf13/cobra"
)

func devCmd() *cobra.Command {
	var dataDir, listen, logLevel string
	var once bool
	var postgresURL string
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Everything on embedded defaults, for a first look",
		Long: `Start the runtime on a throwaway data directory (or --data DIR), hire the
reference agent (reference-agents/sales-research), run it against a demo CRM
that checks ARX credentials, and print what happened and where to look. The
runtime keeps running until Ctrl-C, unless --once. A throwaway data
directory is removed when arx dev ends, however it ends.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			out := cmd.OutOrStdout()
			defer collectorFloor()()
			inert.Fprintf(cmd.ErrOrStderr(), "arx dev: starting ARX on embedded defaults (SQLite, a bucket directory, a local witness) beside a demo CRM ...\n")
			if dataDir == "" {
				d, err := os.MkdirTemp("", "arx-dev-")
				if err != nil {
					return err
				}
				dataDir = d
				// The throwaway directory holds private keys and the admin
				// token: it goes on every way out (registered first, so it
				// runs after the server has closed).
				defer func() {
					if err := os.RemoveAll(d); err != nil {
						inert.Fprintf(cmd.ErrOrStderr(), "arx: warning: could not remove %s: %v\n", d, err)
						return
					}
					inert.Fprintf(cmd.ErrOrStderr(), "arx dev: removed %s\n", d)
				}()
			}
			log, err := newLogger(cmd.ErrOrStderr(), "text", logLevel)
			if err != nil {
				return err
			}
			// The demo systems of record, and their connectors (devconnectors.go).
			if !cmd.Flags().Changed("postgres") { // from the environment, not a flag default that --help shows: it has a password
				postgresURL = os.Getenv("ARX_DEV_POSTGRES")
			}
			demo, err := startDemoSystems(cmd.Context(), postgresURL)
			if err != nil {
				return err
			}
			defer demo.Close()
			// The log goes to a bucket directory, cosigned by a witness of
			// its own (devpublish.go), as arx serve --bucket --witness does.
			wit, err := listenDevWitness(dataDir, log)
			if err != nil {
				return err
			}
			defer wit.Close() // after the server's last publish
			pc, err := wit.publishConfig(dataDir)
			if err != nil {
				return err
			}
			srv, err := server.Open(cmd.Context(), server.Config{DataDir: dataDir, Listen: listen, Logger: log, Connectors: demo.connectors, Publish: pc,
				PublicURL: localhostURL(listen)})
			var opErr *net.OpError
			if errors.As(err, &opErr) && opErr.Op == "listen" {
				return withHint(err, "another process uses that address: pass --listen 127.0.0.1:0 for a free port")
			}
			if err != nil {
				return err
			}
			if err := wit.serve(srv.Runtime.Origin(), srv.LogKey); err != nil {
				srv.Close()
				return err
			}
			srv.Start()
			defer srv.Close()
			admin := srv.AdminToken
			if admin == "" {
				b, err := os.ReadFile(filepath.Join(dataDir, server.AdminTokenFile))
				if err != nil {
					return fmt.Errorf("reading the admin token: %w", err)
				}
				admin = strings.TrimSpace(string(b))
			}
			inert.Fprintf(out, "ARX is running at %s (data in %s)\n\n", srv.URL, dataDir)

			// Hire the reference agent through the API, as an operator would.
			c := &apiClient{server: srv.URL, token: admin, http: &http.Client{Timeout: 30 * time.Second}}
			var hired struct {
				Agent agentJSON `json:"agent"`
				Token string    `json:"token"`
			}
			if err := c.do(cmd.Context(), "POST", "/v1/agents", map[string]string{"manifest": string(salesresearch.Manifest)}, &hired); err != nil {
				return err
			}
			inert.Fprintf(out, "1. Hired %s (%s) from reference-agents/sales-research/manifests/job_description.yaml\n\n", hired.Agent.Name, hired.Agent.ID)

			arx, err := agentvault.New(agentvault.Config{Token: hired.Token, BaseURL: srv.URL + "/v1", AgentID: hired.Agent.ID})
			if err != nil {
				return err
			}
			inert.Fprintf(out, "2. The agent researches three accounts in the demo CRM (%s) through the ARX gateway, one governed call per read:\n", demo.crmURL)
			agent := &salesresearch.Agent{ARX: arx, Gateway: true, Warehouse: demo.warehouse, Out: out}
			sum, runErr := agent.Run(cmd.Context(), salesresearch.DefaultAccounts)
			inert.Fprintf(out, "\n   %d governed calls (%d outside the role, recorded as drift), %d refusal recorded, %d failures; the CRM served %d requests,\n   each with its API key, which ARX injected and the agent never held.\n",
				sum.Calls, sum.Drift, sum.Refusals, sum.Failures, len(demo.crm.AccessLog()))
			if !demo.warehouse {
				inert.Fprintf(out, "   (pass --postgres postgres://USER:PASSWORD@HOST/DB to add the warehouse: a database role per call)\n")
			}
			inert.Fprintln(out)
			if runErr != nil {
				return runErr
			}

			// Seal the log so verify covers every entry just written.
			if err := srv.Runtime.Checkpoint(cmd.Context()); err != nil {
				return err
			}
			inert.Fprintf(out, "3. The agent's personnel record (arx record show %s):\n\n", hired.Agent.Name)
			sub := []string{"--server", srv.URL, "--token", admin}
			if code := run(append([]string{"record", "show", hired.Agent.ID}, sub...), nil, indent(out), cmd.ErrOrStderr()); code != 0 {
				return exitError{code: code}
			}
			inert.Fprintf(out, "\n4. The whole log, verified (arx record verify --log-key %s):\n\n", filepath.Join(dataDir, server.LogPubFile))
			if code := run(append([]string{"record", "verify", "--log-key", filepath.Join(dataDir, server.LogPubFile)}, sub...), nil, indent(out), cmd.ErrOrStderr()); code != 0 {
				return exitError{code: code}
			}

			// Upload and cosign now rather than at the next interval, then
			// check the bucket as an auditor would: the log's key and the
			// witness's key, nothing from the runtime.
			if err := srv.Publisher.PublishNow(cmd.Context()); err != nil {
				return fmt.Errorf("publishing to %s: %w", srv.Publisher.Bucket(), err)
			}
			logPub, witPub := filepath.Join(dataDir, server.LogPubFile), filepath.Join(wit.dir, "witness.pub")
			audit := []string{"audit", "verify", "--bucket", srv.Publisher.Bucket(), "--log-key", logPub, "--witness-key", witPub}
			inert.Fprintf(out, "\n5. The log as published to the bucket, cosigned by a witness (%s at %s), checked as an auditor would,\n   with the log's and the witness's public keys only (arx %s):\n\n",
				devWitnessName, wit.url, strings.Join(audit, " "))
			if code := run(audit, nil, indent(out), cmd.ErrOrStderr()); code != 0 {
				return exitError{code: code}
			}
			inert.Fprintf(out, `
Where to look next:
  export ARX_SERVER=%s ARX_ADMIN_TOKEN=%s
  arx users add you@example.com --role admin --show-link  # then open the link: the console at %s/console
  arx agents                      # who is on staff
  arx record show sales-research  # the record above
  arx record verify               # check the whole log
  arx %s
  curl %s/metrics                 # Prometheus metrics
  curl %s/.well-known/jwks.json   # the keys systems of record use to check credentials
`, srv.URL, admin, cmp.Or(localhostURL(listen), srv.URL), strings.Join(audit, " "), srv.URL, srv.URL)
			if once {
				return nil
			}
			inert.Fprintf(out, "\nARX keeps running at %s; press Ctrl-C to stop.\n", srv.URL)
			stop := make(chan os.Signal, 1)
			signal.Notify(stop, os.Interrupt, syscall.SIGTERM)
			defer signal.Stop(stop)
			select {
			case <-stop:
			case err := <-srv.Err():
				return err
			case <-cmd.Context().Done():
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&dataDir, "data", envDefault("ARX_DATA_DIR", ""), "data directory to use or create (default: a new temporary one)")
	f.StringVar(&listen, "listen", envDefault("ARX_LISTEN", server.DefaultListen), "address to listen on")
	f.StringVar(&logLevel, "log-level", "warn", "log level of the runtime")
	f.BoolVar(&once, "once", false, "stop after the first look instead of running until Ctrl-C")
	f.StringVar(&postgresURL, "postgres", "", "a PostgreSQL (postgres://USER:PASSWORD@HOST/DB, USER with CREATEROLE) for the demo warehouse connector (env ARX_DEV_POSTGRES)")
	return cmd
}

// indent prefixes every line written through it with three spaces.
func indent(w io.Writer) io.Writer { return &indenter{w: w, bol: true} }

type indenter struct {
	w   io.Writer
	bol bool
}

func (i *indenter) Write(p []byte) (int, error) {
	var b []byte
	for _, c := range p {
		if i.bol && c != '\n' {
			b = append(b, "   "...)
		}
		b = append(b, c)
		i.bol = c == '\n'
	}
	if _, err := i.w.Write(b); err != nil {
		return 0, err
	}
	return len(p), nil
}

// localhostURL is http://localhost:PORT for a loopback listen address with
// a fixed port, so that the console can use passkeys (WebAuthn needs a host
// name); "" otherwise (the server then uses its listen address).
func localhostURL(listen string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil || port == "0" || port == "" {
		return ""
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return ""
	}
	return "http://localhost:" + port
}
