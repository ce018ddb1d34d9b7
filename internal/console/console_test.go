package console_test

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/arxsec/arx/agentvault"
	"github.com/arxsec/arx/arxerr"
	"github.com/arxsec/arx/internal/arxtest"
	"github.com/arxsec/arx/internal/console"

	_ "modernc.org/sqlite"
)

func TestLoginAndLogout(t *testing.T) {
	s := arxtest.Start(t)
	addManager(t, s, "boss@example.com")
	b := newBrowser(t, s)

	// Not signed in: pages send you to the login page and back.
	p := b.get("/console/approvals")
	if p.Status != http.StatusSeeOther || p.Location() != "/console/login?next=%2Fconsole%2Fapprovals" {
		t.Fatalf("anonymous page: %d %q", p.Status, p.Location())
	}

	// Wrong password and unknown email read the same.
	for _, email := range []string{"boss@example.com", "nobody@example.com"} {
		p = b.login(email, "not the password at all")
		if p.Status != http.StatusUnauthorized || !strings.Contains(p.Body, "Wrong email or password.") {
			t.Fatalf("bad login %s: %d\n%s", email, p.Status, p.Body)
		}
		if b.cookie(console.SessionCookie) != nil {
			t.Fatal("a failed login set a session cookie")
		}
		if strings.Contains(p.Body, "not the password at all") {
			t.Fatal("the page echoes the password")
		}
	}

	p = b.login("boss@example.com", Password)
	if p.Status != http.StatusSeeOther || p.Location() != "/console/" {
		t.Fatalf("login: %d %q", p.Status, p.Location())
	}
	var set *http.Cookie
	for _, c := range (&http.Response{Header: p.Header}).Cookies() {
		if c.Name == console.SessionCookie {
			set = c
		}
	}
	if set == nil || !strings.HasPrefix(set.Value, "arxc_") || !set.HttpOnly || set.SameSite != http.SameSiteLaxMode ||
		set.Path != "/" || set.Secure {
		t.Fatalf("session cookie %+v", set)
	}
	if set.MaxAge <= 0 {
		t.Fatalf("session cookie has no lifetime: %+v", set)
	}

	p = b.get("/console/")
	if p.Status != http.StatusOK || !strings.Contains(p.Body, "boss@example.com") || !strings.Contains(p.Body, "<h1>Dashboard</h1>") {
		t.Fatalf("dashboard: %d\n%s", p.Status, p.Body)
	}
	// Already signed in: the login page moves on.
	if p := b.get("/console/login"); p.Status != http.StatusSeeOther {
		t.Fatalf("login page when signed in: %d", p.Status)
	}

	// Logout needs the token too.
	if p := b.post("/console/logout", url.Values{}); p.Status != http.StatusForbidden {
		t.Fatalf("logout without csrf: %d", p.Status)
	}
	if p := b.get("/console/"); p.Status != http.StatusOK {
		t.Fatalf("a refused logout ended the session: %d", p.Status)
	}
	csrf := b.get("/console/").csrf(t)
	old := b.cookie(console.SessionCookie).Value
	p = b.post("/console/logout", url.Values{"csrf": {csrf}})
	if p.Status != http.StatusSeeOther || p.Location() != "/console/login?out=1" {
		t.Fatalf("logout: %d %q", p.Status, p.Location())
	}
	if b.cookie(console.SessionCookie) != nil {
		t.Fatal("logout left the cookie")
	}
	if p := b.get("/console/login?out=1"); !strings.Contains(p.Body, "You are signed out.") {
		t.Fatal("no signed-out notice")
	}
	// The old cookie is dead on the server, not just forgotten by the browser.
	req, _ := http.NewRequest("GET", s.URL+"/console/", nil)
	req.AddCookie(&http.Cookie{Name: console.SessionCookie, Value: old})
	if p := b.do(req); p.Status != http.StatusSeeOther || !strings.HasPrefix(p.Location(), "/console/login") {
		t.Fatalf("old session after logout: %d %q", p.Status, p.Location())
	}
}

func TestLoginRateLimited(t *testing.T) {
	s := arxtest.Start(t)
	addManager(t, s, "boss@example.com")
	b := newBrowser(t, s)
	for i := 0; i < 5; i++ {
		if p := b.login("boss@example.com", "wrong password "+string(rune('a'+i))); p.Status != http.StatusUnauthorized {
			t.Fatalf("attempt %d: %d", i, p.Status)
		}
	}
	// Even the right password is refused now, with a clear message.
	p := b.login("boss@example.com", Password)
	if p.Status != http.StatusTooManyRequests || !strings.Contains(p.Body, "Too many sign-in attempts") {
		t.Fatalf("rate limited login: %d\n%s", p.Status, p.Body)
	}
	if b.cookie(console.SessionCookie) != nil {
		t.Fatal("a rate-limited login set a session")
	}
}

func TestLoginFormNeedsItsToken(t *testing.T) {
	s := arxtest.Start(t)
	addManager(t, s, "boss@example.com")
	b := newBrowser(t, s)
	form := url.Values{"email": {"boss@example.com"}, "password": {Password}}
	// No login cookie at all (a form posted from elsewhere).
	if p := b.post("/console/login", form); p.Status != http.StatusForbidden || !strings.Contains(p.Body, "auth.csrf") {
		t.Fatalf("login without token: %d\n%s", p.Status, p.Body)
	}
	token := b.get("/console/login").csrf(t)
	form.Set("csrf", token)
	if p := b.postFrom("http://evil.example", "/console/login", form); p.Status != http.StatusForbidden {
		t.Fatalf("login from another origin: %d", p.Status)
	}
	form.Set("csrf", flipLast(token))
	if p := b.post("/console/login", form); p.Status != http.StatusForbidden {
		t.Fatalf("login with a wrong token: %d", p.Status)
	}
	form.Set("csrf", token)
	if p := b.post("/console/login", form); p.Status != http.StatusSeeOther {
		t.Fatalf("login: %d", p.Status)
	}
}

func TestSetupPage(t *testing.T) {
	s := arxtest.Start(t)
	setupURL, _ := addPerson(t, s, "new@example.com", "manager")
	if !strings.HasPrefix(setupURL, s.URL+"/console/setup?token=") {
		t.Fatalf("setup url %q", setupURL)
	}
	path := strings.TrimPrefix(setupURL, s.URL)
	token, _ := url.QueryUnescape(strings.TrimPrefix(path, "/console/setup?token="))
	b := newBrowser(t, s)
	p := b.get(path)
	if p.Status != http.StatusOK || !strings.Contains(p.Body, `autocomplete="new-password"`) {
		t.Fatalf("setup page: %d\n%s", p.Status, p.Body)
	}
	csrf := p.csrf(t)
	for _, tc := range []struct {
		name, pw, confirm, want string
	}{
		{"differ", Password, Password + "!", "The two passwords are not the same."},
		{"short", "short", "short", "Choose a longer password"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := b.post("/console/setup", url.Values{"csrf": {csrf}, "token": {token}, "password": {tc.pw}, "confirm": {tc.confirm}})
			if p.Status != http.StatusBadRequest || !strings.Contains(p.Body, tc.want) {
				t.Fatalf("%d\n%s", p.Status, p.Body)
			}
		})
	}
	p = b.post("/console/setup", url.Values{"csrf": {csrf}, "token": {token}, "password": {Password}, "confirm": {Password}})
	if p.Status != http.StatusSeeOther || p.Location() != "/console/?welcome=1" {
		t.Fatalf("setup: %d %q\n%s", p.Status, p.Location(), p.Body)
	}
	if p := b.get("/console/?welcome=1"); !strings.Contains(p.Body, "Your password is set") {
		t.Fatalf("not signed in after setup: %d", p.Status)
	}
	// The link works once.
	b2 := newBrowser(t, s)
	csrf2 := b2.get(path).csrf(t)
	p = b2.post("/console/setup", url.Values{"csrf": {csrf2}, "token": {token}, "password": {Password}, "confirm": {Password}})
	if p.Status != http.StatusBadRequest || !strings.Contains(p.Body, "already used or expired") {
		t.Fatalf("setup link reused: %d\n%s", p.Status, p.Body)
	}
	// The password works on the login form.
	newBrowser(t, s).mustLogin("new@example.com")
}

// A state-changing post without the session's CSRF token, or from another
// origin, is refused with auth.csrf and changes nothing.
func TestDecideNeedsCSRFAndOrigin(t *testing.T) {
	s := arxtest.Start(t)
	_, agentToken := s.Hire(testManifest)
	addManager(t, s, "boss@example.com")
	b := newBrowser(t, s)
	b.mustLogin("boss@example.com")

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := requestHighRisk(t, ctx, s, sdk(t, s, agentToken), "delete account 17")
	call := pendingCall(t, s, "delete account 17")
	page := b.get("/console/approvals/" + call)
	if page.Status != http.StatusOK {
		t.Fatalf("approval page: %d", page.Status)
	}
	csrf := page.csrf(t)
	path := "/console/approvals/" + call + "/decide"
	form := func(token string) url.Values {
		v := url.Values{"decision": {"approve"}, "reason": {"fine"}}
		if token != "" {
			v.Set("csrf", token)
		}
		return v
	}
	for _, tc := range []struct {
		name   string
		origin string
		form   url.Values
	}{
		{"no token", s.URL, form("")},
		{"wrong token", s.URL, form(flipLast(csrf))},
		{"another session's token", s.URL, form(otherSessionCSRF(t, s))},
		{"another origin", "http://evil.example", form(csrf)},
		{"no origin or referer", "", form(csrf)},
		{"null origin", "null", form(csrf)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := b.postFrom(tc.origin, path, tc.form)
			if p.Status != http.StatusForbidden || !strings.Contains(p.Body, "auth.csrf") {
				t.Fatalf("%d\n%s", p.Status, p.Body)
			}
			if st := approvalStatus(t, s, call); st != "pending" {
				t.Fatalf("a refused post changed the approval: %s", st)
			}
		})
	}
	// JSON clients get the API's error body.
	req, _ := http.NewRequest("POST", s.URL+path, strings.NewReader(form("").Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", s.URL)
	req.Header.Set("Accept", "application/json")
	if p := b.do(req); p.Status != http.StatusForbidden || !strings.Contains(p.Body, `"code":"auth.csrf"`) {
		t.Fatalf("json refusal: %d %s", p.Status, p.Body)
	}

	// A Referer from this origin stands in for a missing Origin.
	req, _ = http.NewRequest("POST", s.URL+path, strings.NewReader(form(csrf).Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Referer", s.URL+"/console/approvals/"+call)
	p := b.do(req)
	if p.Status != http.StatusSeeOther || p.Location() != "/console/approvals/"+call+"?done=approve" {
		t.Fatalf("approve: %d %q\n%s", p.Status, p.Location(), p.Body)
	}
	o := <-done
	if o.err != nil || !o.ran || o.res != "deleted" {
		t.Fatalf("the SDK call after approval: %+v", o)
	}
	if p := b.get("/console/approvals/" + call + "?done=approve"); !strings.Contains(p.Body, "You approved this request") ||
		!strings.Contains(p.Body, "fine") {
		t.Fatalf("decided page:\n%s", p.Body)
	}
}

// flipLast changes a token's last character.
func flipLast(s string) string {
	last := "A"
	if strings.HasSuffix(s, "A") {
		last = "B"
	}
	return s[:len(s)-1] + last
}

func otherSessionCSRF(t *testing.T, s *arxtest.Server) string {
	addManager(t, s, "someone@example.com")
	b := newBrowser(t, s)
	b.mustLogin("someone@example.com")
	return b.get("/console/").csrf(t)
}

func TestDecideRefusalsAreShown(t *testing.T) {
	s := arxtest.Start(t)
	_, agentToken := s.Hire(testManifest)
	addManager(t, s, "boss@example.com")
	addManager(t, s, "stranger@example.com")
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	c := sdk(t, s, agentToken)
	done := requestHighRisk(t, ctx, s, c, "delete account 18")
	call := pendingCall(t, s, "delete account 18")

	stranger := newBrowser(t, s)
	stranger.mustLogin("stranger@example.com")
	p := stranger.get("/console/approvals/" + call)
	if !regexp.MustCompile(`<fieldset disabled`).MatchString(p.Body) || !strings.Contains(p.Body, "you are not one of them") {
		t.Fatalf("the form is not shown inactive to a manager who is not named:\n%s", p.Body)
	}
	p = stranger.post("/console/approvals/"+call+"/decide", url.Values{"csrf": {p.csrf(t)}, "decision": {"approve"}, "reason": {"looks fine"}})
	if p.Status != http.StatusForbidden || !strings.Contains(p.Body, "You are not an approver of this agent") ||
		!strings.Contains(p.Body, string(arxerr.NotApprover)) {
		t.Fatalf("not an approver: %d\n%s", p.Status, p.Body)
	}
	if !strings.Contains(p.Body, "looks fine") {
		t.Fatal("the reason typed was lost")
	}

	boss := newBrowser(t, s)
	boss.mustLogin("boss@example.com")
	p = boss.get("/console/approvals/" + call)
	if strings.Contains(p.Body, "<fieldset disabled") {
		t.Fatal("the approver sees an inactive form")
	}
	csrf := p.csrf(t)
	// A denial needs a reason.
	p = boss.post("/console/approvals/"+call+"/decide", url.Values{"csrf": {csrf}, "decision": {"deny"}, "reason": {"  "}})
	if p.Status != http.StatusBadRequest || !strings.Contains(p.Body, "A denial needs a reason") {
		t.Fatalf("deny without reason: %d\n%s", p.Status, p.Body)
	}
	p = boss.post("/console/approvals/"+call+"/decide", url.Values{"csrf": {csrf}, "decision": {"deny"}, "reason": {"not this quarter"}})
	if p.Status != http.StatusSeeOther {
		t.Fatalf("deny: %d\n%s", p.Status, p.Body)
	}
	o := <-done
	if o.ran || !agentvault.IsCode(o.err, arxerr.CallDenied) {
		t.Fatalf("the SDK after a denial: %+v", o)
	}
	// A second decision is refused with its reason.
	p = boss.post("/console/approvals/"+call+"/decide", url.Values{"csrf": {csrf}, "decision": {"approve"}})
	if p.Status != http.StatusConflict || !strings.Contains(p.Body, "This request was already decided") {
		t.Fatalf("second decision: %d\n%s", p.Status, p.Body)
	}
	// The decided list says who, when and why.
	p = boss.get("/console/approvals")
	if !strings.Contains(p.Body, "not this quarter") || !strings.Contains(p.Body, "boss@example.com") || !strings.Contains(p.Body, "Denied") {
		t.Fatalf("decided list:\n%s", p.Body)
	}
}

func TestSecurityHeaders(t *testing.T) {
	s := arxtest.Start(t)
	addManager(t, s, "boss@example.com")
	id, _ := s.Hire(testManifest)
	b := newBrowser(t, s)
	anon := newBrowser(t, s)
	b.mustLogin("boss@example.com")
	dash := b.get("/console/")
	css := regexp.MustCompile(`href="(/console/static/[^"]+\.css)"`).FindStringSubmatch(dash.Body)
	js := regexp.MustCompile(`src="(/console/static/[^"]+\.js)"`).FindStringSubmatch(dash.Body)
	if css == nil || js == nil {
		t.Fatal("no stylesheet or script")
	}
	pages := map[string]*page{
		"login":     anon.get("/console/login"),
		"dashboard": dash,
		"approvals": b.get("/console/approvals"),
		"agents":    b.get("/console/agents"),
		"agent":     b.get("/console/agents/" + id),
		"record":    b.get("/console/agents/" + id + "/record"),
		"not found": b.get("/console/nothing-here"),
	}
	inlineScript := regexp.MustCompile(`<script(?:\s[^>]*)?>\s*[^<\s]`)
	for name, p := range pages {
		t.Run(name, func(t *testing.T) {
			h := p.Header
			csp := h.Get("Content-Security-Policy")
			for _, want := range []string{"script-src 'self'", "frame-ancestors 'none'", "default-src 'none'", "form-action 'self'"} {
				if !strings.Contains(csp, want) {
					t.Errorf("CSP %q lacks %q", csp, want)
				}
			}
			if strings.Contains(csp, "unsafe-inline") || strings.Contains(csp, "unsafe-eval") {
				t.Errorf("CSP allows inline code: %q", csp)
			}
			for k, want := range map[string]string{"X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff",
				"Referrer-Policy": "same-origin", "Cache-Control": "no-store"} {
				if got := h.Get(k); got != want {
					t.Errorf("%s = %q, want %q", k, got, want)
				}
			}
			if inlineScript.MatchString(p.Body) || strings.Contains(p.Body, " style=") || strings.Contains(p.Body, " onclick=") {
				t.Error("the page has inline script or style, which the CSP blocks")
			}
			if !strings.Contains(p.Body, `<main id="main"`) || !strings.Contains(p.Body, `lang="en"`) {
				t.Error("the page lacks its landmarks")
			}
		})
	}
	if pages["not found"].Status != http.StatusNotFound {
		t.Errorf("unknown page: %d", pages["not found"].Status)
	}
	for _, asset := range []string{css[1], js[1]} {
		p := anon.get(asset)
		if p.Status != http.StatusOK || p.Header.Get("Cache-Control") != "public, max-age=31536000, immutable" ||
			p.Header.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("%s: %d %v", asset, p.Status, p.Header)
		}
	}
	if p := anon.get("/console/static/0000/console.css"); p.Header.Get("Cache-Control") != "no-cache" {
		t.Errorf("an asset of another version is cached: %v", p.Header)
	}
	if p := anon.get("/console/static/" + strings.Split(css[1], "/")[3] + "/secret.txt"); p.Status != http.StatusNotFound {
		t.Errorf("unknown asset: %d", p.Status)
	}
}

func TestEventsNeedASession(t *testing.T) {
	s := arxtest.Start(t)
	_, agentToken := s.Hire(testManifest)
	addManager(t, s, "boss@example.com")
	anon := newBrowser(t, s)
	if p := anon.get("/console/events"); p.Status != http.StatusUnauthorized {
		t.Fatalf("events without a session: %d", p.Status)
	}
	b := newBrowser(t, s)
	b.mustLogin("boss@example.com")
	ctx, cancel := context.WithTimeout(t.Context(), 15*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", s.URL+"/console/events", nil)
	resp, err := b.c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("events: %d %v", resp.StatusCode, resp.Header)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Scan() // retry
	done := requestHighRisk(t, ctx, s, sdk(t, s, agentToken), "delete account 19")
	for sc.Scan() {
		if sc.Text() == "event: approval.requested" {
			cancel()
			<-done
			return
		}
	}
	t.Fatal("no approval.requested event")
}

func TestPagesShowTheAgent(t *testing.T) {
	s := arxtest.Start(t)
	id, agentToken := s.Hire(testManifest)
	addManager(t, s, "boss@example.com")
	b := newBrowser(t, s)
	b.mustLogin("boss@example.com")
	c := sdk(t, s, agentToken)
	for i := 0; i < 3; i++ {
		if _, err := agentvault.Do(t.Context(), c, agentvault.Action{Connector: "crm", Action: "account.read", Summary: "account 7"},
			func(context.Context, agentvault.Credential) (int, error) { return 1, nil }); err != nil {
			t.Fatal(err)
		}
	}
	p := b.get("/console/agents/" + id)
	for _, want := range []string{"sales-research", "Researches accounts", "dana@example.com", "account.delete", "High risk",
		"Medium risk", "deputy@example.com", "5000", "10 min, then deny", "30 s", "All connectors", "job_description.yaml",
		"Completed", "account 7", "You can decide", "<details"} {
		if !strings.Contains(p.Body, want) {
			t.Errorf("agent page lacks %q", want)
		}
	}
	if p := b.get("/console/agents/no-such-agent"); p.Status != http.StatusNotFound || !strings.Contains(p.Body, "agent.not_found") {
		t.Errorf("unknown agent: %d", p.Status)
	}
	p = b.get("/console/agents")
	if !strings.Contains(p.Body, "/console/agents/"+id) || !strings.Contains(p.Body, "Active") {
		t.Errorf("agents page:\n%s", p.Body)
	}
	if p := waitCheckpointCovers(t, b, id); !strings.Contains(p.Body, "agent.hired") || !strings.Contains(p.Body, "Chain unbroken</strong> over all 7 entries") {
		t.Errorf("record page:\n%s", p.Body)
	}
}

// waitCheckpointCovers waits for the record page to report the record
// intact and covered by a checkpoint.
func waitCheckpointCovers(t *testing.T, b *browser, id string) *page {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		p := b.get("/console/agents/" + id + "/record")
		if p.Status != http.StatusOK {
			t.Fatalf("record page: %d\n%s", p.Status, p.Body)
		}
		if strings.Contains(p.Body, "Verified: the record is intact") && strings.Contains(p.Body, "Covered by the latest checkpoint") {
			if !strings.Contains(p.Body, "signature checked with the log key") {
				t.Fatalf("record page:\n%s", p.Body)
			}
			return p
		}
		if time.Now().After(deadline) {
			t.Fatalf("the record is not verified and covered:\n%s", p.Body)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestRecordPagingAndTampering(t *testing.T) {
	s := arxtest.Start(t)
	id, agentToken := s.Hire(testManifest)
	addManager(t, s, "boss@example.com")
	b := newBrowser(t, s)
	b.mustLogin("boss@example.com")
	c := sdk(t, s, agentToken)
	for i := 0; i < 30; i++ { // two entries each: more than one page
		if _, err := agentvault.Do(t.Context(), c, agentvault.Action{Connector: "warehouse", Action: "query"},
			func(context.Context, agentvault.Credential) (int, error) { return 1, nil }); err != nil {
			t.Fatal(err)
		}
	}
	p := waitCheckpointCovers(t, b, id)
	if !strings.Contains(p.Body, "Page 1 of 2") || !strings.Contains(p.Body, "Older") || !strings.Contains(p.Body, "1–50 of 61") {
		t.Fatalf("first page:\n%s", p.Body)
	}
	p = b.get("/console/agents/" + id + "/record?page=2")
	if !strings.Contains(p.Body, "Page 2 of 2") || !strings.Contains(p.Body, "51–61 of 61") || !strings.Contains(p.Body, "agent.hired") {
		t.Fatalf("second page:\n%s", p.Body)
	}
	if p := b.get("/console/agents/" + id + "/record?page=x"); p.Status != http.StatusBadRequest {
		t.Fatalf("bad page number: %d", p.Status)
	}

	// Edit one entry of the log at rest, behind the runtime's back.
	hired, err := s.Runtime.Store().AgentEntries(t.Context(), id, -1, 1)
	if err != nil || len(hired) != 1 || hired[0].Type != "agent.hired" {
		t.Fatalf("the agent's first entry: %+v, %v", hired, err)
	}
	s.EditEntry(hired[0].Index, "dana@example.com", "evil@example.com")
	p = b.get("/console/agents/" + id + "/record")
	if !strings.Contains(p.Body, "Verification failed") || !strings.Contains(p.Body, "do not hash to the leaf") ||
		!strings.Contains(p.Body, "chain_broken") {
		t.Fatalf("tampered record:\n%s", p.Body)
	}
}

func TestSafeRedirectAfterLogin(t *testing.T) {
	s := arxtest.Start(t)
	addManager(t, s, "boss@example.com")
	for _, tc := range []struct{ next, want string }{
		{"/console/approvals", "/console/approvals"},
		{"/console/agents/x/record?page=2", "/console/agents/x/record?page=2"},
		{"https://evil.example/console/", "/console/"},
		{"//evil.example/console/", "/console/"},
		{"/\\evil.example", "/console/"},
		{"/v1/agents", "/console/"},
		{"/console/login", "/console/"},
	} {
		t.Run(tc.next, func(t *testing.T) {
			b := newBrowser(t, s)
			csrf := b.get("/console/login").csrf(t)
			p := b.post("/console/login", url.Values{"csrf": {csrf}, "email": {"boss@example.com"}, "password": {Password}, "next": {tc.next}})
			if p.Status != http.StatusSeeOther || p.Location() != tc.want {
				t.Fatalf("next %q: %d %q", tc.next, p.Status, p.Location())
			}
		})
	}
}

// An open console stream does not hold up a graceful shutdown.
func TestShutdownEndsEventStreams(t *testing.T) {
	var closing time.Time
	var body io.Closer
	t.Cleanup(func() { // runs last: after the server closed
		if d := time.Since(closing); d > 2*time.Second {
			t.Errorf("the shutdown waited %v for an open event stream", d)
		}
		if body != nil {
			body.Close()
		}
	})
	s := arxtest.Start(t)
	addManager(t, s, "boss@example.com")
	b := newBrowser(t, s)
	b.mustLogin("boss@example.com")
	req, _ := http.NewRequest("GET", s.URL+"/console/events", nil)
	resp, err := b.c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body = resp.Body
	t.Cleanup(func() { closing = time.Now() }) // runs first, just before the server closes
}

// TestAgentTextIsInert: a summary built to disguise itself (a right-to-left
// override that reverses what follows, zero-width characters, controls)
// shows on every page that quotes it with those characters escaped and
// visible, never as themselves.
func TestAgentTextIsInert(t *testing.T) {
	s := arxtest.Start(t)
	_, agentToken := s.Hire(testManifest)
	addManager(t, s, "boss@example.com")
	b := newBrowser(t, s)
	b.mustLogin("boss@example.com")
	c := sdk(t, s, agentToken)
	summary := "read one account \u202etnuocca yreve eteled\u202c\u200b\x1b[8m hidden\nsecond line"
	requestHighRisk(t, t.Context(), s, c, summary)
	id := pendingCall(t, s, summary)
	for _, path := range []string{"/console/approvals/" + id, "/console/approvals", "/console/"} {
		p := b.get(path)
		if p.Status != http.StatusOK {
			t.Fatalf("%s: HTTP %d", path, p.Status)
		}
		for _, r := range []string{"\u202e", "\u202c", "\u200b", "\x1b"} {
			if strings.Contains(p.Body, r) {
				t.Errorf("%s shows %U raw", path, []rune(r)[0])
			}
		}
		if !strings.Contains(p.Body, `read one account \u202etnuocca yreve eteled\u202c\u200b\x1b[8m hidden`) {
			t.Errorf("%s does not show the summary escaped:\n%s", path, p.Body)
		}
	}
}

// TestPeoplePage: an admin sees everyone, disables a manager (whose
// session ends at once) and enables them again; a manager has no such
// page; a crafted link cannot make the page claim a change.
func TestPeoplePage(t *testing.T) {
	s := arxtest.Start(t)
	_, tok := addPerson(t, s, "admin@example.com", "admin")
	if r := s.Do("POST", "/v1/auth/setup", "", map[string]string{"token": tok, "password": Password}); r.Status != http.StatusOK {
		t.Fatalf("setup: %d", r.Status)
	}
	addManager(t, s, "boss@example.com")
	admin, boss := newBrowser(t, s), newBrowser(t, s)
	admin.mustLogin("admin@example.com")
	boss.mustLogin("boss@example.com")

	if p := boss.get("/console/people"); p.Status != http.StatusForbidden {
		t.Errorf("a manager's people page: %d", p.Status)
	}
	if p := boss.get("/console/"); strings.Contains(p.Body, `href="/console/people"`) {
		t.Error("a manager's navigation links to the people page")
	}
	p := admin.get("/console/people?done=disable&who=boss%40example.com")
	if p.Status != http.StatusOK || !strings.Contains(p.Body, "boss@example.com") || !strings.Contains(p.Body, "Disable") {
		t.Fatalf("people page: %d\n%s", p.Status, p.Body)
	}
	if strings.Contains(p.Body, "is disabled") {
		t.Error("a crafted link made the page claim boss was disabled")
	}
	p = admin.post("/console/people/boss@example.com/disable", url.Values{"csrf": {p.csrf(t)}})
	if p.Status != http.StatusSeeOther {
		t.Fatalf("disable: %d %s", p.Status, p.Body)
	}
	p = admin.get(p.Location())
	if !strings.Contains(p.Body, "boss@example.com is disabled") || !strings.Contains(p.Body, "Enable") {
		t.Errorf("after disabling:\n%s", p.Body)
	}
	if q := boss.get("/console/approvals"); q.Status != http.StatusSeeOther || !strings.Contains(q.Location(), "/console/login") {
		t.Errorf("a disabled manager's session still works: %d %s", q.Status, q.Location())
	}
	p = admin.post("/console/people/boss@example.com/enable", url.Values{"csrf": {p.csrf(t)}})
	if p.Status != http.StatusSeeOther {
		t.Fatalf("enable: %d", p.Status)
	}
	boss.mustLogin("boss@example.com")
	// An admin cannot disable themselves.
	p = admin.get("/console/people")
	p = admin.post("/console/people/admin@example.com/disable", url.Values{"csrf": {p.csrf(t)}})
	if p.Status != http.StatusForbidden || !strings.Contains(p.Body, "Nothing was changed") {
		t.Errorf("self-disable: %d", p.Status)
	}
}

// TestAgentPageShowsUsage: the Budget card shows the day's spend and
// tokens against the caps, and what a call at a cap does.
func TestAgentPageShowsUsage(t *testing.T) {
	s := arxtest.Start(t)
	id, agentToken := s.Hire(strings.Replace(testManifest, "budget:\n", "budget:\n  spend:\n    per_day: 2 USD\n    notify_at: 75%\n  tokens:\n    per_day: 2000000\n  on_budget: refuse\n", 1))
	addManager(t, s, "boss@example.com")
	b := newBrowser(t, s)
	b.mustLogin("boss@example.com")
	c := sdk(t, s, agentToken)
	if _, err := agentvault.Do(t.Context(), c, agentvault.Action{Connector: "crm", Action: "account.read", Summary: "account 7"},
		func(ctx context.Context, _ agentvault.Credential) (int, error) {
			return 1, agentvault.ReportUsage(ctx, agentvault.Usage{Tokens: 1_250_000, Amount: "1.60 USD"})
		}); err != nil {
		t.Fatal(err)
	}
	p := b.get("/console/agents/" + id)
	for _, want := range []string{"Spent today", "1.60 USD <span class=\"muted\">of 2.00 USD", `low="75"`, `value="80"`,
		"Tokens today", "1,250,000 <span class=\"muted\">of 2,000,000", `value="62"`, "A call is refused"} {
		if !strings.Contains(p.Body, want) {
			t.Errorf("agent page lacks %q", want)
		}
	}
}
