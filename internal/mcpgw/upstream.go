package mcpgw

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"os/exec"
	"strings"
	"sync"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// Upstream limits.
const (
	maxListed       = 10_000          // items taken from one upstream's list
	redialInterval  = time.Second     // between attempts to reach a lost upstream
	stopGrace       = 2 * time.Second // a subprocess gets this long to exit on its own
	refreshDebounce = 100 * time.Millisecond
)

// upstream is one MCP server the gateway reaches as a client. Its session
// is shared by every agent session: tool calls carry no session state.
type upstream struct {
	g      *Gateway
	cfg    Upstream
	client *mcp.Client
	log    *slog.Logger

	declared  bool // its connector is on the manifest
	resources bool // the manifest lets its resources through, and it has some
	prompts   bool // likewise its prompts

	mu       sync.Mutex
	cs       *mcp.ClientSession
	tools    []*mcp.Tool
	lastDial time.Time
	refresh  chan struct{}
}

func newUpstream(g *Gateway, cfg Upstream) *upstream {
	u := &upstream{g: g, cfg: cfg, log: g.log.With("upstream", cfg.Name), refresh: make(chan struct{}, 1)}
	_, u.declared = g.manifest.Connector(cfg.Name)
	u.client = mcp.NewClient(&mcp.Implementation{Name: "arx-mcp", Version: g.cfg.Version}, &mcp.ClientOptions{
		// No roots, sampling or elicitation: the upstream cannot reach
		// around the gateway to the agent.
		Capabilities:                &mcp.ClientCapabilities{},
		ToolListChangedHandler:      func(context.Context, *mcp.ToolListChangedRequest) { u.kick() },
		ProgressNotificationHandler: g.progress.relay,
		Logger:                      slog.New(minLevel{u.log.Handler(), slog.LevelWarn}),
	})
	return u
}

// start connects and lists the tools.
func (u *upstream) start(ctx context.Context) error {
	if !u.declared {
		u.log.Warn("the upstream's connector is not on the agent's manifest: all its tools are hidden, and calls to them are refused and recorded",
			"hint", "declare connector "+u.cfg.Name+" under scope.connectors, with the tools as actions")
	}
	cs, err := u.dial(ctx)
	if err != nil {
		return err
	}
	caps := cs.InitializeResult().Capabilities
	if caps != nil {
		_, res := u.g.manifest.Action(u.cfg.Name, ActionReadResource)
		_, pr := u.g.manifest.Action(u.cfg.Name, ActionGetPrompt)
		u.resources = res && caps.Resources != nil
		u.prompts = pr && caps.Prompts != nil
	}
	return u.list(ctx, cs)
}

// dial starts (or reaches) the MCP server and initializes a session.
func (u *upstream) dial(ctx context.Context) (*mcp.ClientSession, error) {
	var t mcp.Transport
	if u.cfg.Command != "" {
		cmd := exec.Command(u.cfg.Command, u.cfg.Args...)
		cmd.Env = append([]string{}, u.cfg.Env...) // never nil: nil would mean arx mcp's whole environment
		cmd.Dir = u.cfg.Dir
		cmd.Stderr = &stderrLog{u: u}
		dieWithParent(cmd)
		t = &mcp.CommandTransport{Command: cmd, TerminateDuration: stopGrace}
	} else {
		t = &mcp.StreamableClientTransport{Endpoint: u.cfg.URL, HTTPClient: &http.Client{
			Transport:     &headerTransport{base: http.DefaultTransport, header: u.cfg.Header},
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}}
	}
	cctx, cancel := context.WithTimeout(ctx, u.g.cfg.ConnectTimeout)
	defer cancel()
	cs, err := u.client.Connect(cctx, t, nil)
	if err != nil {
		return nil, fmt.Errorf("upstream %s: cannot start an MCP session: %s", u.cfg.Name, u.scrub(err.Error()))
	}
	u.mu.Lock()
	u.cs, u.lastDial = cs, time.Now()
	u.mu.Unlock()
	go func() {
		err := cs.Wait()
		u.mu.Lock()
		lost := u.cs == cs
		if lost {
			u.cs = nil
		}
		u.mu.Unlock()
		if lost && u.g.ctx.Err() == nil {
			msg := "session ended"
			if err != nil {
				msg = u.scrub(err.Error())
			}
			u.log.Warn("the upstream went away; it is started again at the next call", "reason", msg)
		}
	}()
	return cs, nil
}

// session returns the live session, reaching the upstream again when it
// was lost (at most once per redialInterval).
func (u *upstream) session(ctx context.Context) (*mcp.ClientSession, error) {
	u.mu.Lock()
	cs, last := u.cs, u.lastDial
	u.mu.Unlock()
	if cs != nil {
		return cs, nil
	}
	if u.g.ctx.Err() != nil {
		return nil, ErrClosed
	}
	if time.Since(last) < redialInterval {
		return nil, fmt.Errorf("upstream %s is unavailable", u.cfg.Name)
	}
	cs, err := u.dial(ctx)
	if err != nil {
		u.log.Warn("cannot reach the upstream again", "err", err.Error())
		return nil, fmt.Errorf("upstream %s is unavailable", u.cfg.Name)
	}
	u.kick() // its tools may have changed
	return cs, nil
}

// list fetches the upstream's tools.
func (u *upstream) list(ctx context.Context, cs *mcp.ClientSession) error {
	var tools []*mcp.Tool
	for t, err := range cs.Tools(ctx, nil) {
		if err != nil {
			return fmt.Errorf("upstream %s: listing tools: %s", u.cfg.Name, u.scrub(err.Error()))
		}
		if len(tools) == maxListed {
			u.log.Warn("the upstream lists too many tools; the rest are ignored", "limit", maxListed)
			break
		}
		tools = append(tools, t)
	}
	u.mu.Lock()
	u.tools = tools
	u.mu.Unlock()
	return nil
}

func (u *upstream) snapshot() []*mcp.Tool {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.tools
}

// kick asks refreshLoop to list the tools again.
func (u *upstream) kick() {
	select {
	case u.refresh <- struct{}{}:
	default:
	}
}

// refreshLoop lists the tools again when the upstream says they changed.
// It runs apart from the notification, which must not wait on a request
// over the same connection.
func (u *upstream) refreshLoop() {
	for {
		select {
		case <-u.g.ctx.Done():
			return
		case <-u.refresh:
		}
		sleep(u.g.ctx, refreshDebounce)
		u.mu.Lock()
		cs := u.cs
		u.mu.Unlock()
		if cs == nil || u.g.ctx.Err() != nil {
			continue
		}
		ctx, cancel := context.WithTimeout(u.g.ctx, 30*time.Second)
		err := u.list(ctx, cs)
		cancel()
		if err != nil {
			u.log.Warn("cannot list the upstream's tools again", "err", err.Error())
			continue
		}
		u.g.applyTools()
	}
}

// callTool calls one tool on the upstream. progressToken, when not empty,
// asks the upstream for progress notifications (relayed to the agent).
func (u *upstream) callTool(ctx context.Context, name string, args json.RawMessage, progressToken string) (*mcp.CallToolResult, error) {
	cs, err := u.session(ctx)
	if err != nil {
		return nil, err
	}
	if len(args) == 0 {
		args = json.RawMessage("{}")
	}
	p := &mcp.CallToolParams{Name: name, Arguments: args}
	if progressToken != "" {
		p.SetProgressToken(progressToken)
	}
	return cs.CallTool(ctx, p)
}

func (u *upstream) close() {
	u.mu.Lock()
	cs := u.cs
	u.cs = nil
	u.mu.Unlock()
	if cs != nil {
		cs.Close()
	}
}

// scrub removes the upstream's configured secrets (its env and header
// values) from text that came from it or about it.
func (u *upstream) scrub(s string) string {
	for _, kv := range u.cfg.Env {
		if _, v, ok := strings.Cut(kv, "="); ok && len(v) >= 6 && !isInherited(kv) {
			s = strings.ReplaceAll(s, v, "REDACTED")
		}
	}
	for _, vs := range u.cfg.Header {
		for _, v := range vs {
			if len(v) >= 6 {
				s = strings.ReplaceAll(s, v, "REDACTED")
			}
		}
	}
	return s
}

// isInherited reports variables like PATH whose values are no secret and
// appear in every message about programs.
func isInherited(kv string) bool {
	k, _, _ := strings.Cut(kv, "=")
	for _, d := range DefaultInheritEnv {
		if k == d {
			return true
		}
	}
	return false
}

// stderrLog logs what a subprocess upstream writes to its stderr, line by
// line, with its configured secrets removed.
type stderrLog struct {
	u   *upstream
	mu  sync.Mutex
	buf []byte
}

func (w *stderrLog) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	for {
		i := strings.IndexByte(string(w.buf), '\n')
		if i < 0 {
			if len(w.buf) > 4096 {
				w.line(string(w.buf))
				w.buf = w.buf[:0]
			}
			return len(p), nil
		}
		w.line(string(w.buf[:i]))
		w.buf = w.buf[i+1:]
	}
}

func (w *stderrLog) line(s string) {
	s = strings.TrimRight(s, "\r")
	if s == "" {
		return
	}
	w.u.log.Info("upstream stderr", "line", truncateName(w.u.scrub(s)))
}

// headerTransport adds an HTTP upstream's configured headers (its
// credentials) to every request.
type headerTransport struct {
	base   http.RoundTripper
	header http.Header
}

func (t *headerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	for k, vs := range t.header {
		r.Header[k] = append([]string(nil), vs...)
	}
	return t.base.RoundTrip(r)
}

// listAll collects the items of a paginated list, up to maxListed.
func listAll[T any](seq func(yield func(T, error) bool)) ([]T, error) {
	var out []T
	for item, err := range seq {
		if err != nil {
			return nil, err
		}
		if len(out) == maxListed {
			break
		}
		out = append(out, item)
	}
	return out, nil
}
