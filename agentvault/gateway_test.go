package agentvault_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/arxsec/arx/agentvault"
	"github.com/arxsec/arx/arxerr"
	"github.com/arxsec/arx/internal/arxtest"
	"github.com/arxsec/arx/internal/connector"
	"github.com/arxsec/arx/internal/connector/connectors"
	"github.com/arxsec/arx/internal/server"
)

// TestHTTPClientThroughTheGateway: the SDK's HTTPClient reaches the system
// of record through ARX with the call's credential; the system of record
// sees only the connector's secret; once Do returns, the client is dead.
func TestHTTPClientThroughTheGateway(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer upstream-secret" {
			http.Error(w, "no", http.StatusUnauthorized)
			return
		}
		body, _ := io.ReadAll(r.Body)
		json.NewEncoder(w).Encode(map[string]string{"path": r.URL.Path, "query": r.URL.RawQuery, "body": string(body)})
	}))
	defer up.Close()
	cfg, err := connector.Parse(fmt.Appendf(nil, `connectors:
  crm:
    kind: http
    upstream: %s
    secret: env:CRM
    actions:
      account.read: {allow: ["GET /accounts/*"]}
      account.export: {allow: ["POST /exports"]}
`, up.URL))
	if err != nil {
		t.Fatal(err)
	}
	cs, err := connectors.Open(cfg, func(connector.SecretRef) (string, error) { return "upstream-secret", nil })
	if err != nil {
		t.Fatal(err)
	}
	s := arxtest.StartWith(t, t.TempDir(), func(c *server.Config) { c.Connectors = cs })
	id, token := s.Hire(arxtest.Manifest)
	arx, err := agentvault.New(agentvault.Config{Token: token, BaseURL: s.BaseURL(), AgentID: id})
	if err != nil {
		t.Fatal(err)
	}

	var kept *http.Client
	got, err := agentvault.Do(t.Context(), arx, agentvault.Action{Connector: "crm", Action: "account.read"},
		func(ctx context.Context, cred agentvault.Credential) (map[string]string, error) {
			kept = arx.HTTPClient(cred)
			req, _ := http.NewRequestWithContext(ctx, "GET", "/accounts/0017?fields=name", nil)
			resp, err := kept.Do(req)
			if err != nil {
				return nil, err
			}
			defer resp.Body.Close()
			var out map[string]string
			return out, json.NewDecoder(resp.Body).Decode(&out)
		})
	if err != nil || got["path"] != "/accounts/0017" || got["query"] != "fields=name" {
		t.Fatalf("through the gateway: %v %v", got, err)
	}

	// The call is over: its client is refused.
	resp, err := kept.Get("http://ignored.example/accounts/0017")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(string(b), string(arxerr.CredentialClosed)) {
		t.Fatalf("after the call: %d %s", resp.StatusCode, b)
	}

	// A body goes through; a path the action does not allow does not.
	_, err = agentvault.Do(t.Context(), arx, agentvault.Action{Connector: "crm", Action: "account.export", Risk: agentvault.RiskMedium},
		func(ctx context.Context, cred agentvault.Credential) (struct{}, error) {
			hc := arx.HTTPClient(cred)
			resp, err := hc.Post("/exports", "text/plain", strings.NewReader("all of it"))
			if err != nil {
				return struct{}{}, err
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if !strings.Contains(string(b), `"body":"all of it"`) {
				return struct{}{}, fmt.Errorf("export: %s", b)
			}
			resp, err = hc.Get("/accounts/0017")
			if err != nil {
				return struct{}{}, err
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusForbidden {
				return struct{}{}, fmt.Errorf("another action's path: %d", resp.StatusCode)
			}
			u, err := arx.GatewayURL(cred, "/exports?x=1")
			if err != nil || u != s.BaseURL()+"/gateway/crm/exports?x=1" {
				return struct{}{}, fmt.Errorf("gateway URL %q %v", u, err)
			}
			return struct{}{}, nil
		})
	if err != nil {
		t.Fatal(err)
	}
}
