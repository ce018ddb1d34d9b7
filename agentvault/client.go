package agentvault

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
)

// DefaultBaseURL is the agent API of the hosted ARX service. ARX_BASE_URL
// overrides it; like it, an override ends in /v1.
const DefaultBaseURL = "https://api.arxsec.io/v1"

// DefaultLocalRecordDir is where local-only mode writes its records.
const DefaultLocalRecordDir = "arx-records"

// The environment variables read by ConfigFromEnv.
const (
	envToken          = "ARX_TOKEN"
	envBaseURL        = "ARX_BASE_URL"
	envAgentID        = "ARX_AGENT_ID"
	envLocalRecordDir = "ARX_LOCAL_RECORD_DIR"
	envLocalMode      = "ARX_LOCAL_MODE"
	envManifest       = "ARX_MANIFEST"
	envLocalApprove   = "ARX_LOCAL_APPROVE"
)

// Config configures a Client. The zero value of every field but Token has a
// default; ConfigFromEnv fills it from the ARX_* environment variables.
//
// Printing a Config (fmt, log/slog) shows Token as REDACTED.
type Config struct {
	// Token is the agent's bearer token (ARX_TOKEN), shown once when the
	// agent was hired. Required unless LocalMode.
	Token string
	// BaseURL is the agent API (ARX_BASE_URL), ending in /v1.
	// Default DefaultBaseURL.
	BaseURL string
	// AgentID is the hired agent's id (ARX_AGENT_ID). Informational: the
	// server knows the agent from the token.
	AgentID string
	// LocalRecordDir is where local-only mode keeps its records
	// (ARX_LOCAL_RECORD_DIR). Default DefaultLocalRecordDir.
	LocalRecordDir string
	// LocalMode runs without a server (ARX_LOCAL_MODE): the SDK checks the
	// manifest itself and records every call under LocalRecordDir (see
	// local.go).
	LocalMode bool
	// Manifest is the job description local-only mode checks calls against
	// (ARX_MANIFEST). Default DefaultManifest.
	Manifest string
	// LocalApprove is what local-only mode does with a call that needs an
	// approver (ARX_LOCAL_APPROVE): LocalApproveAllow, LocalApproveDeny or
	// LocalApprovePrompt (the default: ask on the terminal, deny without one).
	LocalApprove string
	// HTTPClient sends the requests. Default: a client with connection,
	// TLS and idle timeouts and a keep-alive pool sized for many concurrent
	// calls. If it has a Timeout, long polls are kept shorter than it.
	HTTPClient *http.Client
	// Logger receives debug and warning lines; nil discards them. It never
	// sees a token or a credential.
	Logger *slog.Logger
}

// Format prints the Config with its token redacted, for every verb.
func (c Config) Format(f fmt.State, verb rune) {
	tok := ""
	if c.Token != "" {
		tok = redacted
	}
	fmt.Fprintf(f, "Config{BaseURL=%s, AgentID=%s, LocalMode=%t, LocalRecordDir=%s, Token=%s}",
		c.BaseURL, c.AgentID, c.LocalMode, c.LocalRecordDir, tok)
}

// LogValue logs the Config with its token redacted.
func (c Config) LogValue() slog.Value {
	tok := ""
	if c.Token != "" {
		tok = redacted
	}
	return slog.GroupValue(
		slog.String("base_url", c.BaseURL),
		slog.String("agent_id", c.AgentID),
		slog.Bool("local_mode", c.LocalMode),
		slog.String("local_record_dir", c.LocalRecordDir),
		slog.String("token", tok),
	)
}

// ConfigFromEnv reads ARX_TOKEN, ARX_BASE_URL, ARX_AGENT_ID,
// ARX_LOCAL_RECORD_DIR and ARX_LOCAL_MODE. Empty or unset variables take
// their defaults. ARX_LOCAL_MODE is one of 1, true, yes, on or 0, false, no,
// off (any case); anything else is an error. The values are checked by New.
func ConfigFromEnv() (Config, error) {
	get := func(name string) string { return strings.TrimSpace(os.Getenv(name)) }
	cfg := Config{
		Token:          get(envToken),
		BaseURL:        get(envBaseURL),
		AgentID:        get(envAgentID),
		LocalRecordDir: get(envLocalRecordDir),
		Manifest:       get(envManifest),
		LocalApprove:   strings.ToLower(get(envLocalApprove)),
	}
	if cfg.BaseURL == "" {
		cfg.BaseURL = DefaultBaseURL
	}
	if cfg.LocalRecordDir == "" {
		cfg.LocalRecordDir = DefaultLocalRecordDir
	}
	switch v := get(envLocalMode); strings.ToLower(v) {
	case "1", "true", "yes", "on":
		cfg.LocalMode = true
	case "0", "false", "no", "off", "":
	default:
		return Config{}, fmt.Errorf("agentvault: %s=%q is not a boolean (hint: set %s to 1 or 0)", envLocalMode, v, envLocalMode)
	}
	return cfg, nil
}

// FromEnv returns a Client configured from the environment: New(ConfigFromEnv()).
func FromEnv() (*Client, error) {
	cfg, err := ConfigFromEnv()
	if err != nil {
		return nil, err
	}
	return New(cfg)
}

// Client talks to the agent API of an ARX server. It is safe for concurrent
// use by many goroutines; make one per process and share it.
type Client struct {
	// token is behind a pointer so that printing a Client (%v, %+v, %#v)
	// shows an address, never the secret.
	token     *string
	baseURL   string
	agentID   string
	localDir  string
	localMode bool
	local     *localMode // local-only mode's state
	hc        *http.Client
	log       *slog.Logger

	// Timings; tests shorten them.
	attemptTimeout time.Duration // one request, long polls excepted
	wait           time.Duration // asked of the server per long poll
	retry          backoff       // Request and Complete: bounded attempts
	waitRetry      backoff       // Wait: backoff between failed polls, unbounded attempts
}

// New checks cfg and returns a Client. The token is required unless
// cfg.LocalMode; BaseURL must be an absolute http or https URL (a trailing
// slash is dropped).
func New(cfg Config) (*Client, error) {
	if !cfg.LocalMode {
		if cfg.Token == "" {
			return nil, fmt.Errorf("agentvault: no agent token (hint: set %s to the token shown when the agent was hired, or %s=1 for local-only mode)", envToken, envLocalMode)
		}
	}
	for _, r := range cfg.Token {
		// Also keeps the token out of net/http's header errors.
		if r <= ' ' || r >= 0x7f {
			return nil, fmt.Errorf("agentvault: the agent token contains spaces or non-printable characters (hint: check %s; copy the token exactly as it was shown)", envToken)
		}
	}
	base := cfg.BaseURL
	if base == "" {
		base = DefaultBaseURL
	}
	u, err := url.Parse(base)
	switch {
	case err != nil:
		return nil, fmt.Errorf("agentvault: base URL is not a URL (hint: set %s to an address like %s)", envBaseURL, DefaultBaseURL)
	case u.User != nil:
		return nil, fmt.Errorf("agentvault: base URL %s carries credentials (hint: remove them from %s; the agent authenticates with %s)", u.Redacted(), envBaseURL, envToken)
	case (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
		return nil, fmt.Errorf("agentvault: base URL %q is not an absolute http or https URL (hint: set %s to an address like %s)", base, envBaseURL, DefaultBaseURL)
	case u.RawQuery != "" || u.Fragment != "":
		return nil, fmt.Errorf("agentvault: base URL %q has a query or fragment (hint: set %s to an address like %s)", base, envBaseURL, DefaultBaseURL)
	}
	c := &Client{
		token:          new(cfg.Token),
		baseURL:        strings.TrimRight(base, "/"),
		agentID:        cfg.AgentID,
		localDir:       cfg.LocalRecordDir,
		localMode:      cfg.LocalMode,
		hc:             cfg.HTTPClient,
		log:            cfg.Logger,
		attemptTimeout: 30 * time.Second,
		wait:           30 * time.Second,
		retry:          backoff{attempts: 5, base: 200 * time.Millisecond, max: 3 * time.Second},
		waitRetry:      backoff{base: 250 * time.Millisecond, max: 10 * time.Second},
	}
	if c.localDir == "" {
		c.localDir = DefaultLocalRecordDir
	}
	if c.localMode {
		if c.local, err = newLocalMode(cfg.Manifest, cfg.LocalApprove, c.localDir); err != nil {
			return nil, err
		}
	}
	if c.hc == nil {
		c.hc = defaultHTTPClient()
	}
	if t := c.hc.Timeout; t > 0 && t < 2*c.wait {
		// Ask the server to answer well before the client gives up.
		c.wait = max(t/2, time.Second)
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	return c, nil
}

// AgentID returns the agent id the Client was configured with (ARX_AGENT_ID),
// or "" when none was given.
func (c *Client) AgentID() string { return c.agentID }

// defaultHTTPClient pools connections for hundreds of concurrent calls to one
// server. It has no overall Timeout, since a long poll lasts tens of seconds:
// each request gets its own deadline instead. It does not follow redirects, so
// the bearer token goes only to the configured server.
func defaultHTTPClient() *http.Client {
	t := &http.Transport{
		Proxy: http.ProxyFromEnvironment,
		DialContext: (&net.Dialer{
			Timeout:   10 * time.Second,
			KeepAlive: 30 * time.Second,
		}).DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          256,
		MaxIdleConnsPerHost:   64,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
	return &http.Client{
		Transport: t,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

// drain reads what is left of a body (up to a bound) so that its connection
// can be reused.
func drain(r io.Reader) {
	_, _ = io.Copy(io.Discard, io.LimitReader(r, 64<<10))
}

// errNoClient guards against a nil *Client.
var errNoClient = errors.New("agentvault: nil *Client (hint: create one with agentvault.FromEnv or agentvault.New)")
