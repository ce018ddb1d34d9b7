// Package salesresearch is ARX's reference agent: it researches accounts in
// a CRM before sales calls, making every call through ARX with the Go SDK.
// Its job description is manifests/job_description.yaml.
//
// The agent reads accounts and their opportunities (low-risk calls, each
// with a credential that lives for that call only) and, to show what a
// refusal looks like, also tries a connector its manifest does not declare.
//
// With Gateway set it reaches the CRM through the ARX gateway (connector
// salesforce, kind http), which injects the CRM's real key: the agent never
// holds it. With Warehouse set it also queries the order history in
// PostgreSQL (connector warehouse, kind postgres) with a database role that
// exists for that one call.
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
	"github.com/jackc/pgx/v5"
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
	// GatewayRefusals are requests the gateway refused inside a call
	// (gateway mode only): the agent tries one path its role does not cover.
	GatewayRefusals int
	// Drift counts calls made, on purpose, outside the declared role: the
	// agent reads contacts, which its job description does not list.
	Drift int
}

// Agent does the research.
type Agent struct {
	ARX    *agentvault.Client
	CRMURL string       // the CRM's base URL, when the agent calls it directly (direct-verify mode)
	HTTP   *http.Client // to reach the CRM directly
	Out    io.Writer    // progress, for people
	// Gateway sends the CRM requests through the ARX gateway instead of to
	// CRMURL.
	Gateway bool
	// Warehouse also queries each account's orders (connector warehouse).
	Warehouse bool
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
			fmt.Fprintf(a.Out, "  account %s: %s\n", id, agentvault.Inert(err.Error()))
			continue
		}
		s.Calls++
		ops, err := a.fetchOpportunities(ctx, id)
		if err != nil {
			s.Failures++
			fmt.Fprintf(a.Out, "  opportunities of %s: %s\n", id, agentvault.Inert(err.Error()))
			continue
		}
		s.Calls++
		total := 0
		for _, o := range ops {
			total += o.Amount
		}
		// What the CRM returned is shown inert: it is not ours.
		fmt.Fprintf(a.Out, "  %-26s %-11s %d open opportunities, EUR %d\n", agentvault.Inert(acct.Name), agentvault.Inert(acct.Industry), len(ops), total)
		if a.Warehouse {
			n, sum, err := a.queryOrders(ctx, id)
			if err != nil {
				s.Failures++
				fmt.Fprintf(a.Out, "  orders of %s: %s\n", id, agentvault.Inert(err.Error()))
				continue
			}
			s.Calls++
			fmt.Fprintf(a.Out, "  %-26s %d orders in the warehouse, EUR %d (with a database role made for this call)\n", "", n, sum)
		}
	}
	if len(accountIDs) > 0 {
		// Contacts are not in the job description: ARX lets the call
		// through (on_drift: record) and writes a drift event for the
		// owner's review.
		id := accountIDs[0]
		cs, err := agentvault.Do(ctx, a.ARX, agentvault.Action{Connector: "salesforce", Action: "contact.read", Risk: agentvault.RiskLow,
			Summary: "contacts of account " + id + " (not in the job description)"}, func(ctx context.Context, cred agentvault.Credential) ([]Contact, error) {
			var cs []Contact
			return cs, a.get(ctx, cred, "/accounts/"+id+"/contacts", &cs)
		})
		if err != nil {
			s.Failures++
			fmt.Fprintf(a.Out, "  contacts of %s: %s\n", id, agentvault.Inert(err.Error()))
		} else {
			s.Calls++
			s.Drift++
			fmt.Fprintf(a.Out, "  contacts of %s read: %d (an action the job description does not list: recorded as drift)\n", id, len(cs))
		}
	}
	if a.Gateway {
		// Reading an account does not cover the CRM's bulk export: the
		// gateway refuses it (and records it), whatever the agent's code does.
		_, err := agentvault.Do(ctx, a.ARX, agentvault.Action{Connector: "salesforce", Action: "account.read", Risk: agentvault.RiskLow,
			Summary: "bulk export (outside the role)"}, func(ctx context.Context, cred agentvault.Credential) (struct{}, error) {
			var out any
			return struct{}{}, a.get(ctx, cred, "/admin/export", &out)
		})
		var ae *agentvault.Error
		if errors.As(err, &ae) && ae.Code == arxerr.GatewayPath {
			s.GatewayRefusals++
			fmt.Fprintf(a.Out, "  bulk export refused at the gateway as expected: %s\n", ae.Code)
		} else {
			s.Failures++
			fmt.Fprintf(a.Out, "  bulk export: the gateway did not refuse it: %s\n", agentvault.Inert(err.Error()))
		}
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
		fmt.Fprintf(a.Out, "  hubspot: %s\n", agentvault.Inert(err.Error()))
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

// get calls the CRM with the call's credential, and nothing else: through
// the gateway, or directly to a CRM that verifies ARX credentials itself.
func (a *Agent) get(ctx context.Context, cred agentvault.Credential, path string, out any) error {
	hc, url := a.HTTP, a.CRMURL+path
	if a.Gateway {
		hc, url = a.ARX.HTTPClient(cred), path
	}
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		return err
	}
	if !a.Gateway {
		cred.SetAuthHeader(req)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error *struct {
				Code    arxerr.Code `json:"code"`
				Message string      `json:"message"`
			} `json:"error"`
		}
		if json.Unmarshal(body, &e) == nil && e.Error != nil && e.Error.Code != "" {
			return &agentvault.Error{Code: e.Error.Code, Message: fmt.Sprintf("%.200s", e.Error.Message), Status: resp.StatusCode, CallID: cred.CallID}
		}
		return fmt.Errorf("CRM answered %d: %.200s", resp.StatusCode, body)
	}
	return json.Unmarshal(body, out)
}

// queryOrders reads an account's order history with the call's own
// database role (its DSN), which ARX drops when the call ends.
func (a *Agent) queryOrders(ctx context.Context, id string) (n, sum int, err error) {
	type result struct{ n, sum int }
	r, err := agentvault.Do(ctx, a.ARX, agentvault.Action{Connector: "warehouse", Action: "orders.query", Risk: agentvault.RiskMedium,
		Summary: "order history of account " + id}, func(ctx context.Context, cred agentvault.Credential) (result, error) {
		if cred.DSN == "" {
			return result{}, errors.New("ARX gave no database role (is the warehouse connector configured?)")
		}
		conn, err := pgx.Connect(ctx, cred.DSN)
		if err != nil {
			return result{}, err
		}
		defer conn.Close(ctx)
		var res result
		err = conn.QueryRow(ctx, `SELECT count(*), coalesce(sum(amount_eur), 0) FROM orders WHERE account = $1`, id).Scan(&res.n, &res.sum)
		return res, err
	})
	return r.n, r.sum, err
}

// DefaultAccounts are the accounts a run researches.
var DefaultAccounts = []string{"0017", "0042", "0108"}
