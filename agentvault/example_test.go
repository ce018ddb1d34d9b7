package agentvault_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/arxsec/arx/agentvault"
	"github.com/arxsec/arx/arxerr"
)

func ExampleDo() {
	// A stand-in for the ARX runtime and for Salesforce, so that the example
	// runs; an agent would call agentvault.FromEnv() instead of New.
	srv := startStandIn()
	defer srv.Close()
	arx, err := agentvault.New(agentvault.Config{Token: "arxa_example", BaseURL: srv.URL + "/v1"})
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()

	accountID := "0017"
	account, err := agentvault.Do(ctx, arx, agentvault.Action{
		Connector: "salesforce",
		Action:    "account.read",
		Risk:      agentvault.RiskLow,
		Summary:   "account " + accountID,
	}, func(ctx context.Context, cred agentvault.Credential) (string, error) {
		fmt.Println("running with", cred) // printing a credential never shows its token
		req, err := http.NewRequestWithContext(ctx, "GET", srv.URL+"/salesforce/accounts/"+accountID, nil)
		if err != nil {
			return "", err
		}
		cred.SetAuthHeader(req)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return string(b), err
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("account:", account)

	// A connector the agent's manifest does not declare is refused, and the
	// function is not run.
	_, err = agentvault.Do(ctx, arx, agentvault.Action{Connector: "hubspot", Action: "contact.read"},
		func(ctx context.Context, cred agentvault.Credential) (string, error) {
			panic("not reached")
		})
	fmt.Println(agentvault.IsCode(err, arxerr.ConnectorNotDeclared))
	// Output:
	// running with Credential{call=0f8e7c52, connector=salesforce, action=account.read, token=REDACTED}
	// account: Acme Corp
	// true
}

// startStandIn answers the three agent requests of docs/api.md for the
// salesforce connector, and plays Salesforce behind it.
func startStandIn() *httptest.Server {
	const credential = "eyJhbGciOiJFZERTQSJ9.stand-in.credential"
	mux := http.NewServeMux()
	reply := func(w http.ResponseWriter, status int, v any) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(v)
	}
	mux.HandleFunc("POST /v1/calls", func(w http.ResponseWriter, r *http.Request) {
		var req struct{ Connector, Action string }
		_ = json.NewDecoder(r.Body).Decode(&req)
		if req.Connector != "salesforce" {
			reply(w, http.StatusForbidden, map[string]any{"error": map[string]string{
				"code": "manifest.connector_not_declared", "message": "connector " + req.Connector + " is not on the manifest", "call_id": "5e1d"}})
			return
		}
		exp := time.Now().Add(2 * time.Minute).UTC()
		reply(w, http.StatusCreated, map[string]any{"id": "0f8e7c52", "agent_id": "9a1d", "connector": req.Connector,
			"action": req.Action, "risk": "low", "status": "approved", "expires_at": exp,
			"credential": map[string]any{"token": credential, "type": "Bearer", "expires_at": exp}})
	})
	mux.HandleFunc("POST /v1/calls/{id}/complete", func(w http.ResponseWriter, r *http.Request) {
		reply(w, http.StatusOK, map[string]any{"id": r.PathValue("id"), "status": "completed"})
	})
	mux.HandleFunc("GET /salesforce/accounts/{id}", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+credential {
			http.Error(w, "no", http.StatusUnauthorized)
			return
		}
		fmt.Fprint(w, "Acme Corp")
	})
	return httptest.NewServer(mux)
}

// An account name from an upstream, printed for a person: it cannot clear
// the screen or reverse what follows.
func ExampleInert() {
	name := "ACME\x1b[2J\u202eCorp"
	fmt.Println("account:", agentvault.Inert(name))
	// Output: account: ACME\x1b[2J\u202eCorp
}
