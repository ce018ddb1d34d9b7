package salesresearch

import (
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/arxsec/arx/credential"
)

// Account and Opportunity are the demo CRM's records.
type Account struct {
	ID       string `json:"id"`
	Name     string `json:"name"`
	Industry string `json:"industry"`
	Country  string `json:"country"`
}

type Opportunity struct {
	ID      string `json:"id"`
	Account string `json:"account"`
	Stage   string `json:"stage"`
	Amount  int    `json:"amount_eur"`
}

var accounts = map[string]Account{
	"0017": {ID: "0017", Name: "Nordwind Logistik GmbH", Industry: "logistics", Country: "DE"},
	"0042": {ID: "0042", Name: "Alba Renewables S.L.", Industry: "energy", Country: "ES"},
	"0108": {ID: "0108", Name: "Kestrel Health Ltd", Industry: "healthcare", Country: "GB"},
}

// Contact is a person at an account.
type Contact struct {
	Account string `json:"account"`
	Name    string `json:"name"`
	Role    string `json:"role"`
}

var contacts = map[string][]Contact{
	"0017": {{Account: "0017", Name: "Jana Weber", Role: "Head of Procurement"}},
	"0042": {{Account: "0042", Name: "Lucía Ortega", Role: "CFO"}},
	"0108": {},
}

var opportunities = map[string][]Opportunity{
	"0017": {{ID: "op-1", Account: "0017", Stage: "proposal", Amount: 180000}},
	"0042": {{ID: "op-2", Account: "0042", Stage: "discovery", Amount: 64000}, {ID: "op-3", Account: "0042", Stage: "negotiation", Amount: 250000}},
	"0108": {},
}

// AccessLogEntry is one request the CRM saw, as its own log records it.
type AccessLogEntry struct {
	Time    time.Time
	Method  string
	Path    string
	Status  int
	CallID  string
	AgentID string
}

// CRM is a small system of record standing in for a real CRM. It accepts
// only live ARX call credentials, checked through ARX's JWKS endpoint and
// introspection (package credential): it holds no secret of ARX's.
type CRM struct {
	handler http.Handler
	mu      sync.Mutex
	log     []AccessLogEntry
}

// NewCRM returns the demo CRM, verifying credentials with v (direct-verify
// mode: the CRM checks ARX credentials itself).
func NewCRM(v *credential.Verifier) *CRM {
	c := &CRM{}
	mux := http.NewServeMux()
	mux.Handle("GET /accounts/{id}", v.Middleware("salesforce", constant("account.read"), byAccount(accounts)))
	mux.Handle("GET /accounts/{id}/opportunities", v.Middleware("salesforce", constant("opportunity.read"), byAccount(opportunities)))
	mux.Handle("GET /accounts/{id}/contacts", v.Middleware("salesforce", constant("contact.read"), byAccount(contacts)))
	c.handler = mux
	return c
}

// NewGatewayCRM returns the demo CRM as a system of record behind the ARX
// gateway sees it: it knows nothing of ARX and accepts only its own API key,
// which only ARX holds (connector salesforce). It also has a bulk export
// that no action of the reference agent allows.
func NewGatewayCRM(apiKey string) *CRM {
	c := &CRM{}
	mux := http.NewServeMux()
	mux.Handle("GET /accounts/{id}", byAccount(accounts))
	mux.Handle("GET /accounts/{id}/opportunities", byAccount(opportunities))
	mux.Handle("GET /accounts/{id}/contacts", byAccount(contacts))
	mux.HandleFunc("GET /admin/export", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, accounts) })
	c.handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), []byte("Bearer "+apiKey)) != 1 {
			http.Error(w, `{"error":"invalid API key"}`, http.StatusUnauthorized)
			return
		}
		mux.ServeHTTP(w, r)
	})
	return c
}

// ConnectorsYAML is the server's connector configuration for the demo: the
// CRM behind the gateway with its key in the environment variable
// keyEnv, and, when warehouse (a postgres:// URL without password) is not
// empty, the warehouse with its administrator's password in passwordEnv.
func ConnectorsYAML(crmURL, keyEnv, warehouse, passwordEnv string) []byte {
	s := fmt.Sprintf(`connectors:
  salesforce:
    kind: http
    description: the demo CRM
    upstream: %s
    secret: env:%s
    auth: bearer
    timeout: 10s
    actions:
      account.read:
        allow: ["GET /accounts/*"]
      opportunity.read:
        allow: ["GET /accounts/*/opportunities"]
      account.update:
        allow: ["PATCH /accounts/*"]
      # The CRM lets contacts be read; the agent's job description does not
      # list it, so reading them is drift (the demo does it on purpose).
      contact.read:
        allow: ["GET /accounts/*/contacts"]
`, crmURL, keyEnv)
	if warehouse != "" {
		s += fmt.Sprintf(`  warehouse:
    kind: postgres
    description: the demo order warehouse
    upstream: %s
    secret: env:%s
    timeout: 10s
    actions:
      orders.query:
        grants: ["SELECT ON orders"]
`, warehouse, passwordEnv)
	}
	return []byte(s)
}

// WarehouseSchema creates and fills the demo warehouse's table (idempotent).
const WarehouseSchema = `CREATE TABLE IF NOT EXISTS orders (id text PRIMARY KEY, account text NOT NULL, amount_eur int NOT NULL);
INSERT INTO orders VALUES ('o-1', '0017', 42000), ('o-2', '0017', 18000), ('o-3', '0042', 97000), ('o-4', '0108', 5000)
ON CONFLICT (id) DO NOTHING;`

func constant(s string) func(*http.Request) string { return func(*http.Request) string { return s } }

// ServeHTTP serves the CRM and keeps its access log.
func (c *CRM) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
	c.handler.ServeHTTP(rec, r)
	e := AccessLogEntry{Time: time.Now(), Method: r.Method, Path: r.URL.Path, Status: rec.status}
	if cl, ok := rec.claims(); ok {
		e.CallID, e.AgentID = cl.CallID, cl.AgentID
	}
	c.mu.Lock()
	c.log = append(c.log, e)
	c.mu.Unlock()
}

// AccessLog returns what the CRM has served so far.
func (c *CRM) AccessLog() []AccessLogEntry {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]AccessLogEntry(nil), c.log...)
}

type statusRecorder struct {
	http.ResponseWriter
	status int
	cl     *credential.Claims
}

func (s *statusRecorder) WriteHeader(code int)               { s.status = code; s.ResponseWriter.WriteHeader(code) }
func (s *statusRecorder) claims() (*credential.Claims, bool) { return s.cl, s.cl != nil }

// byAccount serves the record of the path's account from m, or 404.
func byAccount[T any](m map[string]T) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		noteClaims(w, r)
		v, ok := m[r.PathValue("id")]
		if !ok {
			http.Error(w, `{"error":"no such account"}`, http.StatusNotFound)
			return
		}
		writeJSON(w, v)
	}
}

func noteClaims(w http.ResponseWriter, r *http.Request) {
	if rec, ok := w.(*statusRecorder); ok {
		rec.cl, _ = credential.FromContext(r.Context())
	}
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}
