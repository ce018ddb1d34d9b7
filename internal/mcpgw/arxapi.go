package mcpgw

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/arxsec/arx/agentvault"
	"github.com/arxsec/arx/arxerr"
	"github.com/arxsec/arx/manifest"
)

// agentAPI reaches the two agent-side endpoints about the agent itself
// (internal/api/agent.go) that the SDK has no call for: GET /agent (who am
// I, under which manifest) and GET /agent/status (long poll: am I still
// allowed to act). Governed calls go through the SDK.
type agentAPI struct {
	base  string // ARX_BASE_URL, without a trailing slash
	token string
	hc    *http.Client
}

func newAgentAPI(cfg agentvault.Config) (*agentAPI, error) {
	base := strings.TrimRight(cfg.BaseURL, "/")
	if base == "" {
		base = agentvault.DefaultBaseURL
	}
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil {
		return nil, errors.New("ARX base URL is not an absolute http or https URL without credentials (hint: set ARX_BASE_URL, e.g. http://127.0.0.1:8080/v1)")
	}
	hc := cfg.HTTPClient
	if hc == nil {
		hc = &http.Client{
			Transport: &http.Transport{
				Proxy:               http.ProxyFromEnvironment,
				DialContext:         (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
				TLSHandshakeTimeout: 10 * time.Second,
				IdleConnTimeout:     90 * time.Second,
			},
			// The token goes only to the configured server.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
	return &agentAPI{base: base, token: cfg.Token, hc: hc}, nil
}

// self is the answer of GET /agent.
type self struct {
	Agent struct {
		ID     string `json:"id"`
		Name   string `json:"name"`
		Status string `json:"status"`
	} `json:"agent"`
	Manifest *manifest.Manifest `json:"manifest"`
}

// self fetches the agent and its manifest.
func (a *agentAPI) self(ctx context.Context) (*self, error) {
	var s self
	if err := a.get(ctx, "/agent", 30*time.Second, &s); err != nil {
		var ae *agentvault.Error
		if errors.As(err, &ae) && ae.Code == arxerr.NotFound {
			return nil, fmt.Errorf("%w (hint: this ARX server predates arx mcp; upgrade it)", err)
		}
		return nil, err
	}
	if s.Manifest == nil || s.Agent.ID == "" {
		return nil, errors.New("GET /agent: the answer holds no agent or manifest (hint: check that ARX_BASE_URL points at an ARX server)")
	}
	return &s, nil
}

// status long-polls GET /agent/status: nil while the agent may act, an
// *agentvault.Error (agent.terminated, auth.invalid_token, ...) once it may
// not, another error when ARX cannot be asked.
func (a *agentAPI) status(ctx context.Context, wait time.Duration) error {
	var v struct {
		Status string `json:"status"`
	}
	return a.get(ctx, "/agent/status?wait="+url.QueryEscape(wait.String()), wait+15*time.Second, &v)
}

func (a *agentAPI) get(ctx context.Context, path string, timeout time.Duration, v any) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.base+path, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+a.token)
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "arx-mcp/1")
	resp, err := a.hc.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // url.Error repeats the URL; the error names the path instead
		}
		return fmt.Errorf("GET %s: %w", strings.SplitN(path, "?", 2)[0], err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("GET %s: %w", path, err)
	}
	if resp.StatusCode != http.StatusOK {
		var env struct {
			Error *struct {
				Code    arxerr.Code `json:"code"`
				Message string      `json:"message"`
				Hint    string      `json:"hint"`
			} `json:"error"`
		}
		if json.Unmarshal(body, &env) == nil && env.Error != nil && env.Error.Code != "" {
			return &agentvault.Error{Code: env.Error.Code, Message: a.scrub(env.Error.Message), Hint: a.scrub(env.Error.Hint), Status: resp.StatusCode}
		}
		return fmt.Errorf("GET %s: ARX answered HTTP %d without an ARX error (hint: check ARX_BASE_URL)", strings.SplitN(path, "?", 2)[0], resp.StatusCode)
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("GET %s: malformed answer: %v", strings.SplitN(path, "?", 2)[0], err)
	}
	return nil
}

func (a *agentAPI) scrub(s string) string {
	if a.token != "" {
		s = strings.ReplaceAll(s, a.token, "REDACTED")
	}
	return s
}

// ends reports whether an ARX refusal means the agent can no longer act at
// all, so that its MCP sessions end.
func ends(err error) bool {
	var ae *agentvault.Error
	if !errors.As(err, &ae) {
		return false
	}
	switch ae.Code {
	case arxerr.AgentTerminated, arxerr.InvalidToken, arxerr.Unauthenticated:
		return true
	}
	return false
}
