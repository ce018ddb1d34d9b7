package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/arxsec/arx/agentvault"
	"github.com/arxsec/arx/internal/inert"
	"github.com/arxsec/arx/internal/mcpgw"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/spf13/cobra"
)

// minMCPTokenLen is the shortest bearer token arx mcp accepts for its HTTP
// listener.
const minMCPTokenLen = 16

func mcpCmd() *cobra.Command {
	var (
		configFile, connector, upURL, prefix, listen, path string
		headers, envs, risks, actions                      []string
		progress                                           time.Duration
		logFormat, logLevel                                string
	)
	cmd := &cobra.Command{
		Use:   "mcp [flags] [-- COMMAND [ARG...]]",
		Short: "Serve MCP to an agent, with every tool call governed by ARX",
		Long: `Serve the Model Context Protocol to an agent in front of its MCP servers
(the upstreams), as the agent: every tools/call becomes a governed call
(connector: the upstream's name; action: the tool's name; risk: the
manifest's), the agent sees only the tools its manifest declares, high-risk
tools wait for a named approver (the agent gets progress notifications), and
the session ends as soon as the agent is terminated.

The upstreams' credentials (environment of a subprocess, headers of an HTTP
server) stay with arx mcp; the agent's ARX token comes from ARX_TOKEN,
ARX_BASE_URL and ARX_AGENT_ID, as for the SDK, and never reaches an upstream.

Upstreams come from a file (--config mcp.yaml), or for one upstream from flags:

  arx mcp --connector everything -- npx -y @modelcontextprotocol/server-everything
  arx mcp --connector crm --url https://crm.example.com/mcp --header 'Authorization=Bearer ${CRM_TOKEN}'

Without --listen, arx mcp speaks MCP on stdin and stdout (a local agent starts
it as its MCP server). With --listen ADDR it serves streamable HTTP at
http://ADDR/mcp to clients that send Authorization: Bearer $ARX_MCP_TOKEN.
Logs go to stderr.`,
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			log, err := newLogger(cmd.ErrOrStderr(), logFormat, logLevel)
			if err != nil {
				return err
			}
			var ucs []mcpgw.UpstreamConfig
			flagMode := connector != "" || upURL != "" || len(args) > 0 || prefix != "" ||
				len(headers)+len(envs)+len(risks)+len(actions) > 0
			switch {
			case configFile != "" && flagMode:
				return withHint(errors.New("--config and an upstream given by flags exclude each other"),
					"put every upstream in the file, or drop --config")
			case configFile != "":
				data, err := os.ReadFile(configFile)
				if err != nil {
					return err
				}
				ucs, err = mcpgw.ParseConfig(data)
				var ce *mcpgw.ConfigError
				if errors.As(err, &ce) {
					for _, p := range ce.Problems {
						inert.Fprintf(cmd.ErrOrStderr(), "%s:%s\n", configFile, p)
					}
					return exitError{code: 1}
				}
				if err != nil {
					return err
				}
			case flagMode:
				uc, err := upstreamFromFlags(connector, upURL, prefix, args, headers, envs, risks, actions)
				if err != nil {
					return err
				}
				ucs = []mcpgw.UpstreamConfig{uc}
			default:
				return withHint(errors.New("no upstream MCP server"),
					"arx mcp --config mcp.yaml, or arx mcp --connector NAME -- COMMAND [ARG...]")
			}
			var ups []mcpgw.Upstream
			for _, uc := range ucs {
				u, err := uc.Resolve(os.LookupEnv)
				if err != nil {
					return err
				}
				ups = append(ups, u)
			}
			agent, err := agentvault.ConfigFromEnv()
			if err != nil {
				return err
			}
			var token string
			if listen != "" {
				token = os.Getenv("ARX_MCP_TOKEN")
				if len(token) < minMCPTokenLen {
					return withHint(fmt.Errorf("--listen needs ARX_MCP_TOKEN, the bearer token MCP clients present, of at least %d characters", minMCPTokenLen),
						"export ARX_MCP_TOKEN=$(openssl rand -hex 32), and give the same token to the agent's MCP client")
				}
				if !strings.HasPrefix(path, "/") {
					return fmt.Errorf("--path %q does not start with /", path)
				}
			}

			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			g, err := mcpgw.New(ctx, mcpgw.Config{Agent: agent, Upstreams: ups, ProgressInterval: progress, Logger: log})
			if err != nil {
				return err
			}
			defer g.Close()
			if listen == "" {
				return mcpError(g.Serve(ctx, stdioTransport(cmd.InOrStdin(), cmd.OutOrStdout())))
			}
			return mcpError(serveMCPHTTP(ctx, cmd.ErrOrStderr(), g, listen, path, token))
		},
	}
	f := cmd.Flags()
	f.StringVar(&configFile, "config", os.Getenv("ARX_MCP_CONFIG"), "the upstreams file, mcp.yaml (env ARX_MCP_CONFIG)")
	f.StringVar(&connector, "connector", "", "one upstream from flags: its connector on the manifest")
	f.StringVar(&upURL, "url", "", "the upstream's streamable HTTP endpoint (instead of a command after --)")
	f.StringArrayVar(&headers, "header", nil, "NAME=VALUE header for the HTTP upstream; VALUE may use ${VAR} (repeatable)")
	f.StringArrayVar(&envs, "env", nil, "KEY=VALUE for the subprocess upstream, VALUE may use ${VAR}; KEY alone passes arx mcp's value (repeatable)")
	f.StringArrayVar(&risks, "risk", nil, "TOOL=low|medium|high: the risk declared for a tool; the manifest's applies when higher (repeatable)")
	f.StringArrayVar(&actions, "action", nil, "TOOL=ACTION: the tool's action on the manifest, when not its own name (repeatable)")
	f.StringVar(&prefix, "prefix", "", "put before the upstream's tool names as the agent sees them")
	f.StringVar(&listen, "listen", "", "serve streamable HTTP on this address instead of stdio (needs ARX_MCP_TOKEN)")
	f.StringVar(&path, "path", "/mcp", "the HTTP endpoint's path, with --listen")
	f.DurationVar(&progress, "progress-interval", mcpgw.DefaultProgressInterval, "how often an agent waiting for an approver is told so")
	f.StringVar(&logFormat, "log-format", envDefault("ARX_LOG_FORMAT", "text"), "log format on stderr: text or json (env ARX_LOG_FORMAT)")
	f.StringVar(&logLevel, "log-level", envDefault("ARX_LOG_LEVEL", "info"), "log level: debug, info, warn, error (env ARX_LOG_LEVEL)")
	return cmd
}

// upstreamFromFlags builds the one upstream the flags describe.
func upstreamFromFlags(connector, upURL, prefix string, command, headers, envs, risks, actions []string) (mcpgw.UpstreamConfig, error) {
	if connector == "" {
		return mcpgw.UpstreamConfig{}, withHint(errors.New("an upstream given by flags needs --connector"),
			"name the connector that declares its tools on the manifest: --connector NAME")
	}
	uc := mcpgw.UpstreamConfig{Name: connector, URL: upURL, Prefix: prefix, Tools: map[string]mcpgw.ToolConfig{}}
	if len(command) > 0 {
		uc.Command, uc.Args = command[0], command[1:]
	}
	if uc.Command != "" && len(headers) > 0 {
		return uc, withHint(errors.New("--header is for an HTTP upstream (--url)"), "give a subprocess its secrets with --env")
	}
	if uc.URL != "" && len(envs) > 0 {
		return uc, withHint(errors.New("--env is for a subprocess upstream (a command after --)"), "give an HTTP upstream its secrets with --header")
	}
	pairs := func(flag string, vs []string, set func(k, v string)) error {
		for _, s := range vs {
			k, v, ok := strings.Cut(s, "=")
			if !ok || k == "" {
				return withHint(fmt.Errorf("--%s %q is not NAME=VALUE", flag, s), "e.g. --"+flag+" NAME=VALUE")
			}
			set(k, v)
		}
		return nil
	}
	if len(headers) > 0 {
		uc.Headers = map[string]string{}
	}
	if err := pairs("header", headers, func(k, v string) { uc.Headers[k] = v }); err != nil {
		return uc, err
	}
	for _, e := range envs {
		k, v, ok := strings.Cut(e, "=")
		if !ok {
			uc.InheritEnv = append(uc.InheritEnv, k)
			continue
		}
		if uc.Env == nil {
			uc.Env = map[string]string{}
		}
		uc.Env[k] = v
	}
	if err := pairs("risk", risks, func(k, v string) {
		t := uc.Tools[k]
		t.Risk = v
		uc.Tools[k] = t
	}); err != nil {
		return uc, err
	}
	if err := pairs("action", actions, func(k, v string) {
		t := uc.Tools[k]
		t.Action = v
		uc.Tools[k] = t
	}); err != nil {
		return uc, err
	}
	return uc, nil
}

// stdioTransport speaks MCP over the command's stdin and stdout, which
// carry nothing else.
func stdioTransport(in io.Reader, out io.Writer) mcp.Transport {
	rc, ok := in.(io.ReadCloser)
	if !ok {
		rc = io.NopCloser(in)
	}
	return &mcp.IOTransport{Reader: rc, Writer: nopWriteCloser{out}}
}

type nopWriteCloser struct{ io.Writer }

func (nopWriteCloser) Close() error { return nil }

// serveMCPHTTP serves the gateway over streamable HTTP until ctx is done or
// the gateway ends (then every connection is cut at once).
func serveMCPHTTP(ctx context.Context, stderr io.Writer, g *mcpgw.Gateway, listen, path, token string) error {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle(path, g.HTTPHandler(token))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 64 << 10}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	inert.Fprintf(stderr, "arx mcp: serving MCP (streamable HTTP) at http://%s%s\n", ln.Addr(), path)
	select {
	case err := <-served:
		return err
	case <-g.Done():
		srv.Close() // the agent can no longer act: no stream lingers
		return g.Err()
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		g.Close() // ends the sessions, so that their streams let Shutdown finish
		if err := srv.Shutdown(sctx); err != nil {
			srv.Close()
		}
		return nil
	}
}

// mcpError says why the gateway stopped, in the CLI's words.
func mcpError(err error) error {
	var ae *agentvault.Error
	switch {
	case err == nil, errors.Is(err, mcpgw.ErrClosed):
		return nil
	case errors.As(err, &ae):
		e := fmt.Errorf("the agent can no longer act, so the MCP session ended: %s (%s)", ae.Message, ae.Code)
		if ae.Hint != "" {
			return withHint(e, ae.Hint)
		}
		return e
	}
	return err
}
