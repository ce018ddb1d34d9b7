package salesmcp

import (
	"context"
	"crypto/subtle"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// Account and Opportunity are the demo CRM's records.
type Account struct {
	ID       string `json:"id"`
	Name     string `json:"name"`
	Industry string `json:"industry"`
	Country  string `json:"country"`
	Notes    string `json:"notes,omitempty"`
}

type Opportunity struct {
	ID     string `json:"id"`
	Stage  string `json:"stage"`
	Amount int    `json:"amount_eur"`
}

// DefaultAccounts are the accounts the agent researches.
var DefaultAccounts = []string{"0017", "0042", "0108"}

// CRM is the demo CRM as an MCP server: the kind of tool server an agent
// framework reaches its systems of record through. It knows nothing of ARX.
type CRM struct {
	mu            sync.Mutex
	accounts      map[string]Account
	opportunities map[string][]Opportunity
	deleted       []string
}

// NewCRM returns the CRM with its demo data.
func NewCRM() *CRM {
	return &CRM{
		accounts: map[string]Account{
			"0017": {ID: "0017", Name: "Nordwind Logistik GmbH", Industry: "logistics", Country: "DE"},
			"0042": {ID: "0042", Name: "Alba Renewables S.L.", Industry: "energy", Country: "ES"},
			"0108": {ID: "0108", Name: "Kestrel Health Ltd", Industry: "healthcare", Country: "GB"},
		},
		opportunities: map[string][]Opportunity{
			"0017": {{ID: "op-1", Stage: "proposal", Amount: 180000}},
			"0042": {{ID: "op-2", Stage: "discovery", Amount: 64000}, {ID: "op-3", Stage: "negotiation", Amount: 250000}},
			"0108": {},
		},
	}
}

type accountArgs struct {
	Account string `json:"account" jsonschema:"the account's id, e.g. 0017"`
}

type updateArgs struct {
	Account string `json:"account" jsonschema:"the account's id"`
	Notes   string `json:"notes" jsonschema:"research notes to store on the account"`
}

type opportunities struct {
	Opportunities []Opportunity `json:"opportunities"`
}

// Server returns the CRM's MCP server: account-read, opportunity-read,
// account-update and account-delete (which the reference agent's job
// description does not declare).
func (c *CRM) Server() *mcp.Server {
	s := mcp.NewServer(&mcp.Implementation{Name: "demo-crm", Version: "1"}, nil)
	mcp.AddTool(s, &mcp.Tool{Name: "account-read", Description: "Read an account"},
		func(_ context.Context, _ *mcp.CallToolRequest, a accountArgs) (*mcp.CallToolResult, Account, error) {
			acct, err := c.account(a.Account)
			return nil, acct, err
		})
	mcp.AddTool(s, &mcp.Tool{Name: "opportunity-read", Description: "List an account's open opportunities"},
		func(_ context.Context, _ *mcp.CallToolRequest, a accountArgs) (*mcp.CallToolResult, opportunities, error) {
			c.mu.Lock()
			defer c.mu.Unlock()
			ops, ok := c.opportunities[a.Account]
			if !ok {
				return nil, opportunities{}, fmt.Errorf("no account %q", a.Account)
			}
			return nil, opportunities{append([]Opportunity{}, ops...)}, nil
		})
	mcp.AddTool(s, &mcp.Tool{Name: "account-update", Description: "Write research notes to an account"},
		func(_ context.Context, _ *mcp.CallToolRequest, a updateArgs) (*mcp.CallToolResult, Account, error) {
			c.mu.Lock()
			defer c.mu.Unlock()
			acct, ok := c.accounts[a.Account]
			if !ok {
				return nil, Account{}, fmt.Errorf("no account %q", a.Account)
			}
			acct.Notes = a.Notes
			c.accounts[a.Account] = acct
			return nil, acct, nil
		})
	mcp.AddTool(s, &mcp.Tool{Name: "account-delete", Description: "Delete an account"},
		func(_ context.Context, _ *mcp.CallToolRequest, a accountArgs) (*mcp.CallToolResult, any, error) {
			c.mu.Lock()
			defer c.mu.Unlock()
			delete(c.accounts, a.Account)
			c.deleted = append(c.deleted, a.Account)
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "deleted " + a.Account}}}, nil, nil
		})
	return s
}

func (c *CRM) account(id string) (Account, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	a, ok := c.accounts[id]
	if !ok {
		return Account{}, fmt.Errorf("no account %q", id)
	}
	return a, nil
}

// Deleted lists the accounts deleted so far: none, when ARX governs the
// agent.
func (c *CRM) Deleted() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := append([]string{}, c.deleted...)
	sort.Strings(out)
	return out
}

// Notes returns an account's notes.
func (c *CRM) Notes(id string) string {
	a, _ := c.account(id)
	return a.Notes
}

// HTTPHandler serves the CRM over streamable HTTP to callers that send its
// API key as a bearer token: only ARX holds the key, so the agent cannot
// reach the CRM around it.
func (c *CRM) HTTPHandler(apiKey string) http.Handler {
	srv := c.Server()
	h := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return srv }, nil)
	want := []byte("Bearer " + apiKey)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if apiKey == "" || subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), want) != 1 {
			http.Error(w, "invalid API key", http.StatusUnauthorized)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// trim shortens text for one line of output.
func trim(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 120 {
		return s[:117] + "..."
	}
	return s
}
