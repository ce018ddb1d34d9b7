package agentvault_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/arxsec/arx/agentvault"
	"github.com/arxsec/arx/arxerr"
	"github.com/arxsec/arx/credential"
	"github.com/arxsec/arx/internal/arxtest"
)

// These tests run the SDK against the real runtime (arxtest starts the same
// server as arx serve, on loopback) and a system of record that checks
// credentials through ARX's JWKS endpoint and introspection.

func realClient(t *testing.T) (*arxtest.Server, *agentvault.Client, string) {
	t.Helper()
	s := arxtest.Start(t)
	id, token := s.Hire(arxtest.Manifest)
	t.Setenv("ARX_TOKEN", token)
	t.Setenv("ARX_BASE_URL", s.BaseURL())
	t.Setenv("ARX_AGENT_ID", id)
	t.Setenv("ARX_LOCAL_MODE", "")
	c, err := agentvault.FromEnv()
	if err != nil {
		t.Fatal(err)
	}
	return s, c, id
}

func TestE2EDoAgainstTheRuntime(t *testing.T) {
	s, c, agentID := realClient(t)
	v := credential.NewVerifier(s.URL, nil)
	sor := httptest.NewServer(v.Middleware("crm", func(*http.Request) string { return "account.read" },
		http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) })))
	defer sor.Close()

	var kept agentvault.Credential
	got, err := agentvault.Do(t.Context(), c, agentvault.Action{Connector: "crm", Action: "account.read", Summary: "account 7"},
		func(ctx context.Context, cred agentvault.Credential) (string, error) {
			kept = cred
			if cred.AgentID != agentID || cred.Connector != "crm" {
				t.Errorf("credential %v", cred)
			}
			req, _ := http.NewRequestWithContext(ctx, "GET", sor.URL, nil)
			cred.SetAuthHeader(req)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return "", err
			}
			defer resp.Body.Close()
			return resp.Status, nil
		})
	if err != nil || got != "200 OK" {
		t.Fatalf("Do: %q %v", got, err)
	}
	// After Do the credential is dead at the system of record.
	req, _ := http.NewRequest("GET", sor.URL, nil)
	kept.SetAuthHeader(req)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("credential after Do: %d", resp.StatusCode)
	}
	// The record has the issue and the completion.
	r := s.Do("GET", "/v1/agents/"+agentID+"/record", s.AdminToken, nil)
	if !strings.Contains(string(r.Body), `"type":"credential.issued"`) || !strings.Contains(string(r.Body), `"outcome":"success"`) {
		t.Fatalf("record: %s", r.Body)
	}
}

func TestE2ERefusalAndFailures(t *testing.T) {
	s, c, agentID := realClient(t)
	ran := false
	_, err := agentvault.Do(t.Context(), c, agentvault.Action{Connector: "hubspot", Action: "contact.read"},
		func(ctx context.Context, cred agentvault.Credential) (int, error) { ran = true; return 0, nil })
	var ae *agentvault.Error
	if !errors.As(err, &ae) || ae.Code != arxerr.ConnectorNotDeclared || ae.CallID == "" || ran {
		t.Fatalf("undeclared connector: ran=%v err=%v", ran, err)
	}
	// An error in the work is recorded as the call's outcome.
	_, err = agentvault.Do(t.Context(), c, agentvault.Action{Connector: "crm", Action: "account.read"},
		func(ctx context.Context, cred agentvault.Credential) (int, error) {
			return 0, errors.New("crm said no")
		})
	if err == nil || !strings.Contains(err.Error(), "crm said no") {
		t.Fatalf("fn error: %v", err)
	}
	// A panic completes the call, then propagates.
	func() {
		defer func() {
			if recover() == nil {
				t.Fatal("panic swallowed")
			}
		}()
		agentvault.Do(t.Context(), c, agentvault.Action{Connector: "crm", Action: "account.read"},
			func(ctx context.Context, cred agentvault.Credential) (int, error) { panic("boom") })
	}()
	r := s.Do("GET", "/v1/agents/"+agentID+"/calls", s.AdminToken, nil)
	body := string(r.Body)
	if strings.Count(body, `"status":"failed"`) != 2 || !strings.Contains(body, "panic: boom") || !strings.Contains(body, `"status":"refused"`) {
		t.Fatalf("calls: %s", body)
	}
}

func TestE2ECancelWhileWaitingWithdraws(t *testing.T) {
	s, c, agentID := realClient(t)
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	_, err := agentvault.Do(ctx, c, agentvault.Action{Connector: "crm", Action: "account.delete", Risk: agentvault.RiskHigh},
		func(ctx context.Context, cred agentvault.Credential) (int, error) {
			t.Error("ran without approval")
			return 0, nil
		})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Do: %v", err)
	}
	r := s.Do("GET", "/v1/agents/"+agentID+"/record", s.AdminToken, nil)
	if !strings.Contains(string(r.Body), "approval.withdrawn") {
		t.Fatalf("no withdrawal recorded: %s", r.Body)
	}
}

func TestE2EConcurrentAgents(t *testing.T) {
	_, c, _ := realClient(t)
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for i := 0; i < 100; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := agentvault.Do(t.Context(), c, agentvault.Action{Connector: "crm", Action: "account.read"},
				func(ctx context.Context, cred agentvault.Credential) (string, error) { return cred.CallID, nil })
			if err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
