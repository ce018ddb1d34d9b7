package console_test

import (
	"context"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/arxsec/arx/agentvault"
	"github.com/arxsec/arx/internal/arxtest"
	"github.com/arxsec/arx/internal/console"
)

// testManifest names boss@example.com as the approver and
// deputy@example.com as a delegate; other managers are not named.
const testManifest = `apiVersion: arx.dev/v1
kind: JobDescription
agent:
  name: sales-research
  description: Researches accounts and keeps the CRM tidy.
  owner: dana@example.com
scope:
  connectors:
    crm:
      description: The sales CRM
      actions:
        account.read: {risk: low}
        account.update: {risk: medium, max_duration: 30s}
        account.delete: {risk: high}
    warehouse:
      actions:
        query: {risk: low, max_duration: 10s}
approval:
  approvers: [boss@example.com]
  delegates: [deputy@example.com]
  timeout: 10m
  on_timeout: deny
budget:
  calls_per_day: 5000
  max_call_duration: 1m
  max_concurrent: 8
termination:
  notify: [dana@example.com]
  revoke: all
`

// Password is every test person's password.
const Password = "correct horse battery staple"

// addPerson creates a person with the admin token and returns the setup
// link the API answers with.
func addPerson(t *testing.T, s *arxtest.Server, email, role string) (setupURL, setupToken string) {
	t.Helper()
	r := s.Do("POST", "/v1/users", s.AdminToken, map[string]any{"email": email, "role": role, "show_link": true})
	if r.Status != http.StatusCreated {
		t.Fatalf("add user %s: %d %s", email, r.Status, r.Body)
	}
	var out struct {
		SetupURL   string `json:"setup_url"`
		SetupToken string `json:"setup_token"`
	}
	r.JSON(t, &out)
	return out.SetupURL, out.SetupToken
}

// addManager creates a person and sets their password through the API.
func addManager(t *testing.T, s *arxtest.Server, email string) {
	t.Helper()
	_, token := addPerson(t, s, email, "manager")
	r := s.Do("POST", "/v1/auth/setup", "", map[string]string{"token": token, "password": Password})
	if r.Status != http.StatusOK {
		t.Fatalf("set password of %s: %d %s", email, r.Status, r.Body)
	}
}

// sdk is a Go SDK client for an agent.
func sdk(t *testing.T, s *arxtest.Server, token string) *agentvault.Client {
	t.Helper()
	c, err := agentvault.New(agentvault.Config{Token: token, BaseURL: s.BaseURL()})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// requestHighRisk makes a high-risk call that waits for approval, in a
// goroutine, and returns the call's id once it is pending, and a channel
// with Do's outcome.
type outcome struct {
	ran bool
	res string
	err error
}

func requestHighRisk(t *testing.T, ctx context.Context, s *arxtest.Server, c *agentvault.Client, summary string) <-chan outcome {
	t.Helper()
	done := make(chan outcome, 1)
	go func() {
		ran := false
		res, err := agentvault.Do(ctx, c, agentvault.Action{Connector: "crm", Action: "account.delete", Risk: agentvault.RiskHigh,
			Summary: summary}, func(ctx context.Context, cred agentvault.Credential) (string, error) {
			ran = true
			return "deleted", nil
		})
		done <- outcome{ran: ran, res: res, err: err}
	}()
	return done
}

// pendingCall waits until the server has a pending approval whose summary
// is summary, and returns its call id.
func pendingCall(t *testing.T, s *arxtest.Server, summary string) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		r := s.Do("GET", "/v1/approvals?status=pending", s.AdminToken, nil)
		var out struct {
			Approvals []struct {
				CallID string `json:"call_id"`
				Call   struct {
					Summary string `json:"summary"`
				} `json:"call"`
			} `json:"approvals"`
		}
		r.JSON(t, &out)
		for _, a := range out.Approvals {
			if a.Call.Summary == summary {
				return a.CallID
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no pending approval for %q", summary)
	return ""
}

// approvalStatus is an approval's status as the API sees it.
func approvalStatus(t *testing.T, s *arxtest.Server, callID string) string {
	t.Helper()
	r := s.Do("GET", "/v1/approvals/"+callID, s.AdminToken, nil)
	var out struct {
		Status string `json:"status"`
	}
	r.JSON(t, &out)
	return out.Status
}

// browser is a cookie-keeping HTTP client that does not follow redirects,
// sending the Origin a browser would.
type browser struct {
	t    *testing.T
	base string
	c    *http.Client
}

func newBrowser(t *testing.T, s *arxtest.Server) *browser {
	jar, _ := cookiejar.New(nil)
	return &browser{t: t, base: s.URL, c: &http.Client{Jar: jar, Timeout: 20 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

type page struct {
	Status int
	Header http.Header
	Body   string
}

func (p *page) Location() string { return p.Header.Get("Location") }

func (b *browser) do(req *http.Request) *page {
	b.t.Helper()
	resp, err := b.c.Do(req)
	if err != nil {
		b.t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return &page{Status: resp.StatusCode, Header: resp.Header, Body: string(body)}
}

func (b *browser) get(path string) *page {
	b.t.Helper()
	req, _ := http.NewRequest("GET", b.base+path, nil)
	req.Header.Set("Accept", "text/html")
	return b.do(req)
}

// post sends a form from this origin (set origin to "" for none, or to
// another origin).
func (b *browser) postFrom(origin, path string, form url.Values) *page {
	b.t.Helper()
	req, _ := http.NewRequest("POST", b.base+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "text/html")
	if origin != "" {
		req.Header.Set("Origin", origin)
	}
	return b.do(req)
}

func (b *browser) post(path string, form url.Values) *page {
	b.t.Helper()
	return b.postFrom(b.base, path, form)
}

func (b *browser) cookie(name string) *http.Cookie {
	u, _ := url.Parse(b.base + "/console/")
	for _, c := range b.c.Jar.Cookies(u) {
		if c.Name == name {
			return c
		}
	}
	return nil
}

var csrfField = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// csrf is the token in a page's forms.
func (p *page) csrf(t *testing.T) string {
	t.Helper()
	m := csrfField.FindStringSubmatch(p.Body)
	if m == nil {
		t.Fatalf("no csrf field in the page:\n%s", p.Body)
	}
	return m[1]
}

// login signs in through the login form.
func (b *browser) login(email, password string) *page {
	b.t.Helper()
	p := b.get("/console/login")
	if p.Status != http.StatusOK {
		b.t.Fatalf("login page: %d", p.Status)
	}
	return b.post("/console/login", url.Values{"csrf": {p.csrf(b.t)}, "email": {email}, "password": {password}, "next": {"/console/"}})
}

func (b *browser) mustLogin(email string) {
	b.t.Helper()
	p := b.login(email, Password)
	if p.Status != http.StatusSeeOther || p.Location() != "/console/" {
		b.t.Fatalf("login %s: %d %s %s", email, p.Status, p.Location(), p.Body)
	}
	if b.cookie(console.SessionCookie) == nil {
		b.t.Fatal("no session cookie after login")
	}
}
