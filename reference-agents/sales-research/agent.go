// Package salesresearch is ARX's reference agent: it researches accounts in
// a CRM before sales calls, making every call through ARX with the Go SDK.
// Its job description is manifests/job_description.yaml.
//
// The agent reads accounts and their opportunities (low-risk calls, each
// with a credential that lives for that call only) and, to show what a
// refusal looks like, also tries a connector its manifest does not declare.
package salesresearch

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/arxsec/arx/agentvault"
	"github.com/arxsec/arx/arxerr"
)

// Manifest is the agent's job description, as shipped beside it.
//
//go:embed manifests/job_description.yaml
var Manifest []byte

// Summary is what a run did.
type Summary struct {
	Calls    int // governed calls that completed
	Refusals int // calls ARX refused (and recorded)
	Failures int // calls that failed otherwise
}

// Agent does the research.
type Agent struct {
	ARX    *agentvault.Client
	CRMURL string       // the CRM's base URL
	HTTP   *http.Client // to reach the CRM
	Out    io.Writer    // progress, for people
}

// Run researches the given accounts.
func (a *Agent) Run(ctx context.Context, accountIDs []string) (Summary, error) {
	var s Summary
	if a.HTTP == nil {
		a.HTTP = &http.Client{Timeout: 10 * time.Second}
	}
	if a.Out == nil {
		a.Out = io.Discard
	}
	for _, id := range accountIDs {
		acct, err := a.fetchAccount(ctx, id)
		if err != nil {
			s.Failures++
			fmt.Fprintf(a.Out, "  account %s: %v\n", id, err)
			continue
		}
		s.Calls++
		ops, err := a.fetchOpportunities(ctx, id)
		if err != nil {
			s.Failures++
			fmt.Fprintf(a.Out, "  opportunities of %s: %v\n", id, err)
			continue
		}
		s.Calls++
		total := 0
		for _, o := range ops {
			total += o.Amount
		}
		fmt.Fprintf(a.Out, "  %-26s %-11s %d open opportunities, EUR %d\n", acct.Name, acct.Industry, len(ops), total)
	}

	// Enrich from a marketing tool the job description does not mention.
	// ARX refuses it and records the refusal; the agent carries on.
	_, err := agentvault.Do(ctx, a.ARX, agentvault.Action{Connector: "hubspot", Action: "contact.read", Risk: agentvault.RiskLow,
		Summary: "contacts of account 0017"}, func(ctx context.Context, cred agentvault.Credential) (struct{}, error) {
		return struct{}{}, errors.New("unreachable: ARX refuses this connector")
	})
	switch {
	case agentvault.IsCode(err, arxerr.ConnectorNotDeclared):
		s.Refusals++
		var ae *agentvault.Error
		errors.As(err, &ae)
		fmt.Fprintf(a.Out, "  hubspot refused as expected: %s (recorded as call %s)\n", ae.Code, ae.CallID)
	case err != nil:
		s.Failures++
		fmt.Fprintf(a.Out, "  hubspot: %v\n", err)
	default:
		return s, errors.New("ARX let an undeclared connector through")
	}
	if s.Failures > 0 {
		return s, fmt.Errorf("%d call(s) failed", s.Failures)
	}
	return s, nil
}

func (a *Agent) fetchAccount(ctx context.Context, id string) (Account, error) {
	return agentvault.Do(ctx, a.ARX, agentvault.Action{Connector: "salesforce", Action: "account.read", Risk: agentvault.RiskLow,
		Summary: "account " + id}, func(ctx context.Context, cred agentvault.Credential) (Account, error) {
		var acct Account
		return acct, a.get(ctx, cred, "/accounts/"+id, &acct)
	})
}

func (a *Agent) fetchOpportunities(ctx context.Context, id string) ([]Opportunity, error) {
	return agentvault.Do(ctx, a.ARX, agentvault.Action{Connector: "salesforce", Action: "opportunity.read", Risk: agentvault.RiskLow,
		Summary: "opportunities of account " + id}, func(ctx context.Context, cred agentvault.Credential) ([]Opportunity, error) {
		var ops []Opportunity
		return ops, a.get(ctx, cred, "/accounts/"+id+"/opportunities", &ops)
	})
}

// get calls the CRM with the call's credential, and nothing else.
func (a *Agent) get(ctx context.Context, cred agentvault.Credential, path string, out any) error {
	req, err := http.NewRequestWithContext(ctx, "GET", a.CRMURL+path, nil)
	if err != nil {
		return err
	}
	cred.SetAuthHeader(req)
	resp, err := a.HTTP.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("CRM answered %d: %s", resp.StatusCode, body)
	}
	return json.Unmarshal(body, out)
}

// DefaultAccounts are the accounts a run researches.
var DefaultAccounts = []string{"0017", "0042", "0108"}
