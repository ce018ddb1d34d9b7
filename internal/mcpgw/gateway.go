// Package mcpgw is ARX as an MCP gateway (arx mcp). An agent that speaks the
// Model Context Protocol talks to the gateway instead of to its MCP servers;
// the gateway holds the servers' credentials and the agent's ARX token, and
// turns every tools/call into a governed call, with the Go SDK (agentvault):
//
//   - the connector is the upstream MCP server's name, the action the tool's
//     name (see ToolConfig), the risk the manifest's;
//   - the agent sees only the tools its manifest declares; a tool it calls
//     anyway is not forwarded, and the attempt is recorded (as drift or as a
//     refusal, as the manifest's on_drift says);
//   - a call that needs a named approver waits, and the agent is told with
//     MCP progress notifications while it does;
//   - the record gets the tool's name and a SHA-256 digest of its canonical
//     arguments (ArgumentsDigest), not the arguments, unless the tool's
//     action has a condition on them (when:) or says how the record keeps
//     them (record_args): then ARX gets the arguments, decides on them,
//     records them or their hash as record_args says, and the gateway
//     forwards exactly the arguments decided on;
//   - once the agent is terminated (or its token revoked) every session ends,
//     within about a second even when idle: the gateway long-polls ARX for the
//     agent's status.
//
// Resources and prompts of an upstream pass through only when the manifest
// declares the actions "resources.read" or "prompts.get" on its connector;
// each read and get is then a governed call too. Listing them is not.
//
// The gateway serves any MCP transport (stdio for a local agent, Serve) and
// streamable HTTP for a remote one (HTTPHandler). One gateway acts for one
// agent: every session it serves is that agent.
package mcpgw

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/arxsec/arx/agentvault"
	"github.com/arxsec/arx/internal/inert"
	"github.com/arxsec/arx/manifest"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// Defaults.
const (
	// DefaultProgressInterval is how often an agent waiting for an approver
	// is told so.
	DefaultProgressInterval = 5 * time.Second
	// DefaultStatusWait is how long one status long poll may last. A
	// termination ends it at once whatever its length; shorter polls only
	// cost requests.
	DefaultStatusWait = 25 * time.Second
	// DefaultSessionTimeout closes streamable HTTP sessions idle this long.
	DefaultSessionTimeout = 30 * time.Minute
)

// The actions that let resources and prompts of a connector through.
const (
	ActionReadResource = "resources.read"
	ActionGetPrompt    = "prompts.get"
)

// Meta keys the gateway adds to what the agent sees.
const (
	metaCode   = "arx.dev/code"    // the ARX error code of a refusal
	metaCallID = "arx.dev/call_id" // the governed call, for the record
	metaRisk   = "arx.dev/risk"    // a tool's effective risk
)

// ErrClosed is the error of a gateway that was closed.
var ErrClosed = errors.New("mcpgw: gateway closed")

// Config configures a Gateway.
type Config struct {
	// Agent is how the gateway reaches ARX as the agent: ARX_TOKEN,
	// ARX_BASE_URL, ... (agentvault.ConfigFromEnv). Local-only mode is not
	// supported.
	Agent agentvault.Config
	// Upstreams are the MCP servers, each named by its connector.
	Upstreams []Upstream
	// ProgressInterval: default DefaultProgressInterval.
	ProgressInterval time.Duration
	// StatusWait: default DefaultStatusWait.
	StatusWait time.Duration
	// ConnectTimeout bounds starting and initializing one upstream; default
	// 30s.
	ConnectTimeout time.Duration
	// Logger gets the gateway's lines; nil discards them. It never sees a
	// token, a credential or a tool's arguments.
	Logger *slog.Logger
	// Version is reported to agents as the MCP server's version.
	Version string
}

// Gateway is a running arx mcp.
type Gateway struct {
	cfg      Config
	log      *slog.Logger
	arx      *agentvault.Client
	api      *agentAPI
	agentID  string
	manifest *manifest.Manifest
	ups      []*upstream
	srv      *mcp.Server

	ctx    context.Context // done when the gateway ends; its cause says why
	cancel context.CancelCauseFunc
	wg     sync.WaitGroup

	applying sync.Mutex // held by applyTools
	mu       sync.Mutex
	exposed  map[string]*route // tools the agent sees, by the name it sees
	hidden   map[string]*route // tools upstreams offer that the agent does not see
	defs     map[string]string // JSON of each exposed tool's definition, to skip needless updates
	why      map[string]string // why each hidden tool is hidden, to log changes only

	progress progressRoutes
}

// New connects to ARX as the agent, fetches its manifest, starts and
// initializes every upstream, and returns the gateway ready to serve. It
// fails when the agent cannot act (terminated, bad token) or an upstream
// cannot be reached.
func New(ctx context.Context, cfg Config) (*Gateway, error) {
	if len(cfg.Upstreams) == 0 {
		return nil, errors.New("no upstream MCP server (hint: name one in mcp.yaml, or give a command after --)")
	}
	seen := map[string]bool{}
	for _, u := range cfg.Upstreams {
		if seen[u.Name] {
			return nil, fmt.Errorf("upstream %s is named twice (hint: one upstream per connector)", u.Name)
		}
		seen[u.Name] = true
	}
	if cfg.Agent.LocalMode {
		return nil, errors.New("arx mcp needs an ARX server; local-only mode (ARX_LOCAL_MODE) is not supported")
	}
	if cfg.ProgressInterval <= 0 {
		cfg.ProgressInterval = DefaultProgressInterval
	}
	if cfg.StatusWait <= 0 {
		cfg.StatusWait = DefaultStatusWait
	}
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = 30 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Version == "" {
		cfg.Version = "dev"
	}
	cfg.Agent.Logger = cfg.Logger
	arx, err := agentvault.New(cfg.Agent)
	if err != nil {
		return nil, err
	}
	api, err := newAgentAPI(cfg.Agent)
	if err != nil {
		return nil, err
	}
	me, err := api.self(ctx)
	if err != nil {
		return nil, fmt.Errorf("asking ARX who the agent is: %w", err)
	}
	if cfg.Agent.AgentID != "" && cfg.Agent.AgentID != me.Agent.ID {
		return nil, fmt.Errorf("ARX_AGENT_ID is %s, but ARX_TOKEN is agent %s's (hint: take both from the same hire or arx run)", cfg.Agent.AgentID, me.Agent.ID)
	}
	g := &Gateway{cfg: cfg, log: cfg.Logger.With("agent", me.Agent.ID), arx: arx, api: api, agentID: me.Agent.ID,
		manifest: me.Manifest, exposed: map[string]*route{}, hidden: map[string]*route{}, defs: map[string]string{},
		why: map[string]string{}, progress: progressRoutes{m: map[string]*progressSink{}}}
	g.ctx, g.cancel = context.WithCancelCause(context.Background())

	for _, uc := range cfg.Upstreams {
		g.ups = append(g.ups, newUpstream(g, uc))
	}
	errs := make([]error, len(g.ups))
	var wg sync.WaitGroup
	for i, u := range g.ups {
		wg.Go(func() { errs[i] = u.start(ctx) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		g.Close()
		return nil, err
	}

	caps := &mcp.ServerCapabilities{Tools: &mcp.ToolCapabilities{ListChanged: true}}
	for _, u := range g.ups {
		if u.resources {
			caps.Resources = &mcp.ResourceCapabilities{}
		}
		if u.prompts {
			caps.Prompts = &mcp.PromptCapabilities{}
		}
	}
	g.srv = mcp.NewServer(&mcp.Implementation{Name: "arx-mcp", Title: "ARX MCP gateway", Version: cfg.Version},
		&mcp.ServerOptions{Capabilities: caps, Logger: slog.New(minLevel{cfg.Logger.Handler(), slog.LevelWarn})})
	g.srv.AddReceivingMiddleware(g.intercept)
	g.applyTools()
	for _, u := range g.ups {
		g.wg.Go(u.refreshLoop)
	}
	g.wg.Go(g.watch)
	g.log.Info("arx mcp ready", "agent_name", me.Agent.Name, "upstreams", len(g.ups), "tools", g.toolCount())
	return g, nil
}

// AgentID is the id of the agent the gateway acts for.
func (g *Gateway) AgentID() string { return g.agentID }

// Done is closed when the gateway ends: closed, or the agent can no longer
// act.
func (g *Gateway) Done() <-chan struct{} { return g.ctx.Done() }

// Err is nil while the gateway runs, ErrClosed after Close, and the ARX
// refusal (an *agentvault.Error: agent.terminated, auth.invalid_token) when
// the agent's sessions ended because it can no longer act.
func (g *Gateway) Err() error {
	if g.ctx.Err() == nil {
		return nil
	}
	return context.Cause(g.ctx)
}

// Serve serves one MCP session over t (mcp.StdioTransport for a local
// agent) until the client goes away, ctx is done or the gateway ends. It
// returns nil when the client or ctx ended the session, and Err when the
// gateway did.
func (g *Gateway) Serve(ctx context.Context, t mcp.Transport) error {
	if err := g.Err(); err != nil {
		return err
	}
	ss, err := g.srv.Connect(ctx, t, nil)
	if err != nil {
		return err
	}
	waited := make(chan error, 1)
	go func() { waited <- ss.Wait() }()
	select {
	case err = <-waited:
	case <-ctx.Done():
		ss.Close()
		err = <-waited
	case <-g.ctx.Done():
		ss.Close()
		err = <-waited
	}
	if gerr := g.Err(); gerr != nil {
		return gerr
	}
	if ctx.Err() != nil || errors.Is(err, io.EOF) || errors.Is(err, mcp.ErrConnectionClosed) {
		return nil
	}
	return err
}

// HTTPHandler serves MCP over streamable HTTP (one endpoint, any path the
// caller mounts it on) to clients that present "Authorization: Bearer
// token". Every session ends when the gateway does.
func (g *Gateway) HTTPHandler(token string) http.Handler {
	h := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return g.srv }, &mcp.StreamableHTTPOptions{
		SessionTimeout: DefaultSessionTimeout,
		Logger:         slog.New(minLevel{g.log.Handler(), slog.LevelWarn}),
	})
	want := []byte("Bearer " + token)
	protect := http.NewCrossOriginProtection()
	return protect.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got := []byte(r.Header.Get("Authorization"))
		if token == "" || len(got) != len(want) || subtle.ConstantTimeCompare(got, want) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="arx-mcp"`)
			http.Error(w, "arx mcp: send Authorization: Bearer $ARX_MCP_TOKEN", http.StatusUnauthorized)
			return
		}
		if err := g.Err(); err != nil {
			http.Error(w, "arx mcp: the gateway has ended: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		h.ServeHTTP(w, r)
	}))
}

// Close ends every session, stops the upstreams and waits for the
// gateway's goroutines.
func (g *Gateway) Close() error {
	g.end(ErrClosed)
	var wg sync.WaitGroup
	for _, u := range g.ups {
		wg.Go(u.close)
	}
	wg.Wait()
	g.wg.Wait()
	return nil
}

// end ends the gateway for cause: every session is closed and every call in
// flight is cancelled (their contexts follow g.ctx).
func (g *Gateway) end(cause error) {
	if g.ctx.Err() != nil {
		return
	}
	g.cancel(cause)
	if cause != ErrClosed {
		g.log.Warn("the agent can no longer act: ending every MCP session", "reason", cause.Error())
	}
	if g.srv != nil {
		for ss := range g.srv.Sessions() {
			go ss.Close()
		}
	}
}

// bind derives a context for work done on behalf of a request that also
// ends when the gateway does.
func (g *Gateway) bind(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancelCause(ctx)
	stop := context.AfterFunc(g.ctx, func() { cancel(context.Cause(g.ctx)) })
	return ctx, func() { stop(); cancel(nil) }
}

// watch long-polls ARX for the agent's status and ends the gateway as soon
// as the agent can no longer act. ARX answers a termination at once; a
// change no event announces (another replica, a revoked token) within a
// second.
func (g *Gateway) watch() {
	failures := 0
	for g.ctx.Err() == nil {
		start := time.Now()
		err := g.api.status(g.ctx, g.cfg.StatusWait)
		if g.ctx.Err() != nil {
			return
		}
		var ae *agentvault.Error
		switch {
		case err == nil:
			failures = 0
			if time.Since(start) < g.cfg.StatusWait/4 {
				sleep(g.ctx, time.Second) // ARX answered early (shutting down): do not spin
			}
			continue
		case ends(err):
			g.end(err)
			return
		case errors.As(err, &ae) && ae.Status == http.StatusNotFound:
			g.log.Warn("ARX has no agent status endpoint: a termination ends the sessions only at the next call (hint: upgrade ARX)")
			return
		}
		failures++
		if failures == 1 || failures%10 == 0 {
			g.log.Warn("cannot ask ARX for the agent's status; retrying", "attempt", failures, "err", err.Error())
		}
		sleep(g.ctx, min(time.Duration(1<<min(failures, 6))*250*time.Millisecond, 10*time.Second))
	}
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

func (g *Gateway) toolCount() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.exposed)
}

// minLevel drops records below a level: the MCP SDK's informational lines
// are not the operator's business.
type minLevel struct {
	slog.Handler
	level slog.Level
}

func (h minLevel) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.level && h.Handler.Enabled(ctx, l)
}

func (h minLevel) WithAttrs(as []slog.Attr) slog.Handler {
	return minLevel{h.Handler.WithAttrs(as), h.level}
}

func (h minLevel) WithGroup(name string) slog.Handler {
	return minLevel{h.Handler.WithGroup(name), h.level}
}

// truncateName makes a name an agent sent fit for messages and the record:
// shown inert (controls, NULs, bidi overrides escaped, as the CLI shows
// them) and cut to 128 bytes.
func truncateName(s string) string {
	s = inert.Text(s)
	if len(s) <= 128 {
		return s
	}
	s = s[:125]
	for !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s + "..."
}
