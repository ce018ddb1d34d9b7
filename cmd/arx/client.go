package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/arxsec/arx/arxerr"
	"github.com/spf13/cobra"
)

// DefaultServer is where operator verbs look for arx serve.
const DefaultServer = "http://127.0.0.1:8080"

// apiClient talks to arx serve for the operator verbs.
type apiClient struct {
	server string // scheme://host:port, no /v1
	token  string
	http   *http.Client
}

// serverFlags adds --server and --token (ARX_SERVER, ARX_ADMIN_TOKEN).
func serverFlags(cmd *cobra.Command) func() (*apiClient, error) {
	server := cmd.Flags().String("server", "", "ARX server URL (env ARX_SERVER, default "+DefaultServer+")")
	token := cmd.Flags().String("token", "", "operator or personal `TOKEN` (env ARX_ADMIN_TOKEN; else the one arx login stored)")
	return func() (*apiClient, error) {
		s := *server
		if s == "" {
			s = envDefault("ARX_SERVER", DefaultServer)
		}
		u, err := url.Parse(s)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, withHint(fmt.Errorf("server %q is not an http(s) URL", s), "pass --server http://HOST:PORT")
		}
		server := strings.TrimSuffix(u.String(), "/")
		t := *token
		if t == "" {
			t = strings.TrimSpace(envDefault("ARX_ADMIN_TOKEN", ""))
		}
		if t == "" {
			t = loadStoredToken(server)
		}
		if t == "" {
			return nil, withHint(errors.New("no token"),
				"pass --token, set ARX_ADMIN_TOKEN (arx serve wrote it to DATA_DIR/admin.token on first start), or run `arx login`")
		}
		return &apiClient{server: server, token: t,
			http: &http.Client{Timeout: 90 * time.Second}}, nil
	}
}

// do sends a request and decodes a JSON answer into out (nil: discard).
// Error answers become *arxerr.Error.
func (c *apiClient) do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.server+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	resp, err := c.http.Do(req)
	if err != nil {
		return withHint(fmt.Errorf("cannot reach ARX at %s: %v", c.server, errors.Unwrap(err)),
			"is `arx serve` running? pass --server or set ARX_SERVER")
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("reading the answer from %s: %w", c.server, err)
	}
	if resp.StatusCode >= 300 {
		var eb arxerr.Body
		if json.Unmarshal(data, &eb) == nil && eb.Error != nil {
			eb.Error.Status = resp.StatusCode
			return eb.Error
		}
		return fmt.Errorf("%s %s: HTTP %d", method, path, resp.StatusCode)
	}
	if out == nil {
		return nil
	}
	if s, ok := out.(*[]byte); ok {
		*s = data
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("%s %s: malformed answer: %w", method, path, err)
	}
	return nil
}

type agentJSON struct {
	ID           string     `json:"id"`
	Name         string     `json:"name"`
	Owner        string     `json:"owner"`
	Status       string     `json:"status"`
	ManifestHash string     `json:"manifest_hash"`
	ShadowHash   string     `json:"shadow_hash,omitempty"`
	CreatedAt    time.Time  `json:"created_at"`
	TerminatedAt *time.Time `json:"terminated_at"`
	Manifest     string     `json:"manifest,omitempty"`
}

// resolveAgent finds an agent by id, or by name when exactly one active
// agent has it.
func (c *apiClient) resolveAgent(ctx context.Context, ref string) (*agentJSON, error) {
	var list struct {
		Agents []agentJSON `json:"agents"`
	}
	if err := c.do(ctx, "GET", "/v1/agents", nil, &list); err != nil {
		return nil, err
	}
	var byName []agentJSON
	for _, a := range list.Agents {
		if a.ID == ref {
			return &a, nil
		}
		if a.Name == ref {
			byName = append(byName, a)
		}
	}
	if len(byName) > 1 {
		var active []agentJSON
		for _, a := range byName {
			if a.Status == "active" {
				active = append(active, a)
			}
		}
		byName = active
	}
	switch len(byName) {
	case 1:
		return &byName[0], nil
	case 0:
		return nil, withHint(fmt.Errorf("no agent %q", ref), "list agents with `arx agents`")
	default:
		return nil, withHint(fmt.Errorf("%d agents are named %q", len(byName), ref), "name the agent by its id (see `arx agents`)")
	}
}
