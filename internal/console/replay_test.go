package console_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/arxsec/arx/internal/arxtest"
	"github.com/chromedp/chromedp"
)

// TestReplayPage tries job descriptions on an agent's record from the
// console: the one it was hired with changes nothing; one without an
// action it used says which calls would be refused; a broken one is shown
// with its line.
func TestReplayPage(t *testing.T) {
	s := arxtest.Start(t)
	agentID, token := s.Hire(testManifest)
	addManager(t, s, "boss@example.com")
	for i := range 3 {
		r := s.Do("POST", "/v1/calls", token, map[string]string{"connector": "crm", "action": "account.read", "idempotency_key": "k" + string(rune('a'+i))})
		if r.Status != http.StatusCreated {
			t.Fatalf("call: %d %s", r.Status, r.Body)
		}
	}
	b := newBrowser(t, s)
	b.mustLogin("boss@example.com")
	p := b.get("/console/agents/" + agentID + "/replay")
	if p.Status != http.StatusOK || !strings.Contains(p.Body, "account.read: {risk: low}") {
		t.Fatalf("replay page: %d\n%s", p.Status, p.Body)
	}
	csrf := p.csrf(t)
	post := func(yaml, days string) *page {
		return b.post("/console/agents/"+agentID+"/replay", url.Values{"csrf": {csrf}, "manifest": {yaml}, "days": {days}})
	}
	if p := post(testManifest, "30"); p.Status != http.StatusOK || !strings.Contains(p.Body, "Nothing would change") || !strings.Contains(p.Body, "3 calls decided again") {
		t.Errorf("the same job description:\n%s", p.Body)
	}
	changed := strings.Replace(testManifest, "        account.read: {risk: low}\n", "", 1) + "on_drift: refuse\n"
	if p := post(changed, "all"); p.Status != http.StatusOK || !strings.Contains(p.Body, "3 calls would have gone otherwise") ||
		!strings.Contains(p.Body, "3 calls would be refused (crm account.read: 3)") || !strings.Contains(p.Body, "refused (manifest.action_not_declared)") {
		t.Errorf("a job description without account.read:\n%s", p.Body)
	}
	if p := post("apiVersion: arx.dev/v1\nkind: JobDescription\nagent: {name: x}\n", "7"); p.Status != http.StatusUnprocessableEntity ||
		!strings.Contains(p.Body, "The job description is not valid") || !strings.Contains(p.Body, ":3:") {
		t.Errorf("a broken job description: %d\n%s", p.Status, p.Body)
	}
}

// TestBrowserReplay tries a job description from the agent's page in
// Chromium.
func TestBrowserReplay(t *testing.T) {
	browser := startChromium(t)
	s := arxtest.Start(t)
	agentID, token := s.Hire(testManifest)
	addManager(t, s, "boss@example.com")
	for i, a := range []string{"account.read", "account.read", "account.update"} {
		s.Do("POST", "/v1/calls", token, map[string]string{"connector": "crm", "action": a, "idempotency_key": "k" + string(rune('a'+i))})
	}
	boss := newTab(t, browser, s)
	boss.login("boss@example.com")
	changed := strings.Replace(testManifest, "        account.read: {risk: low}\n", "", 1) + "on_drift: require_approval\n"
	boss.do("try a changed job description",
		chromedp.Navigate(s.URL+"/console/agents/"+agentID),
		chromedp.Click(chromedp.CSS(`a[href$="/replay"]`)),
		chromedp.WaitVisible(chromedp.CSS("#manifest")),
		chromedp.SetValue(chromedp.CSS("#manifest"), changed),
		chromedp.Click(chromedp.CSS(`form[action$="/replay"] button[type=submit]`)),
		chromedp.WaitVisible(chromedp.CSS("#result")),
	)
	if got := boss.text("#result"); !strings.Contains(got, "3 calls would have gone otherwise") || !strings.Contains(got, "3 calls would wait for an approver") {
		t.Errorf("result: %q", got)
	}
	boss.screenshot("replay")
}

// TestApprovalShowsArguments: the approver sees the call's arguments,
// indented, and inert (text an agent wrote).
func TestApprovalShowsArguments(t *testing.T) {
	s := arxtest.Start(t)
	_, token := s.Hire(testManifest)
	addManager(t, s, "boss@example.com")
	r := s.Do("POST", "/v1/calls", token, map[string]any{"connector": "crm", "action": "account.delete", "risk": "high", "idempotency_key": "d1",
		"args": map[string]any{"account": "0042", "note": "\u202eevil\x1b[31m", "amount": 12.5}})
	if r.Status != http.StatusAccepted {
		t.Fatalf("call: %d %s", r.Status, r.Body)
	}
	var c struct {
		ID string `json:"id"`
	}
	r.JSON(t, &c)
	b := newBrowser(t, s)
	b.mustLogin("boss@example.com")
	p := b.get("/console/approvals/" + c.ID)
	i := strings.Index(p.Body, `<pre class="args" id="call-args">`)
	if p.Status != http.StatusOK || i < 0 {
		t.Fatalf("approval page: %d\n%s", p.Status, p.Body)
	}
	args := p.Body[i : i+strings.Index(p.Body[i:], "</pre>")]
	if !strings.Contains(args, `&#34;account&#34;: &#34;0042&#34;`) || !strings.Contains(args, `\u202e`) || !strings.Contains(args, `\u001b`) ||
		strings.Contains(args, "\u202e") || strings.Contains(args, "\x1b") {
		t.Errorf("arguments shown: %q", args)
	}
}

// TestBrowserShadowRollout: an admin tries a stricter job description on
// live calls from the replay page, reads what it would change on the
// agent's page, and enforces it, in Chromium; a manager sees the shadow
// but cannot change it.
func TestBrowserShadowRollout(t *testing.T) {
	browser := startChromium(t)
	s := arxtest.Start(t)
	agentID, token := s.Hire(testManifest)
	addManager(t, s, "boss@example.com")
	_, setup := addPerson(t, s, "ops@example.com", "admin")
	if r := s.Do("POST", "/v1/auth/setup", "", map[string]string{"token": setup, "password": Password}); r.Status != http.StatusOK {
		t.Fatalf("admin password: %d %s", r.Status, r.Body)
	}
	ops := newTab(t, browser, s)
	ops.login("ops@example.com")
	strict := strings.Replace(testManifest, "        account.update: {risk: medium, max_duration: 30s}\n", "", 1) + "on_drift: refuse\n"
	if strict == testManifest+"on_drift: refuse\n" {
		t.Fatal("the test manifest has no account.update line to drop")
	}
	ops.do("try it in shadow",
		chromedp.Navigate(s.URL+"/console/agents/"+agentID+"/replay"),
		chromedp.WaitVisible(chromedp.CSS("#manifest")),
		chromedp.SetValue(chromedp.CSS("#manifest"), strict),
		chromedp.Click(chromedp.CSS(`form[action$="/replay"] button[type=submit]`)),
		chromedp.WaitVisible(chromedp.CSS("#result")),
		chromedp.Click(chromedp.CSS(`form[action$="/manifest"] button[value=shadow]`)),
		chromedp.WaitVisible(chromedp.CSS("#shadow-h")),
	)
	for i, a := range []string{"account.read", "account.update", "account.update"} {
		if r := s.Do("POST", "/v1/calls", token, map[string]string{"connector": "crm", "action": a, "risk": "medium", "idempotency_key": "k" + string(rune('a'+i))}); r.Status != http.StatusCreated {
			t.Fatalf("%s: %d %s", a, r.Status, r.Body)
		}
	}
	ops.do("read the shadow", chromedp.Navigate(s.URL+"/console/agents/"+agentID), chromedp.WaitVisible(chromedp.CSS("#shadow-h")))
	if got := ops.text(".card-shadow"); !strings.Contains(got, "2 calls of 3 would have gone otherwise") ||
		!strings.Contains(got, "2 calls would be refused (crm account.update: 2)") || !strings.Contains(got, "refused (manifest.action_not_declared)") {
		t.Errorf("shadow card: %q", got)
	}
	ops.screenshot("agent-shadow")

	boss := newTab(t, browser, s)
	boss.login("boss@example.com")
	boss.do("a manager's view", chromedp.Navigate(s.URL+"/console/agents/"+agentID), chromedp.WaitVisible(chromedp.CSS("#shadow-h")))
	if got := boss.text(".card-shadow"); strings.Contains(got, "Enforce it") {
		t.Errorf("a manager is offered to enforce the shadow: %q", got)
	}

	ops.do("enforce it",
		chromedp.Click(chromedp.CSS(`form[action$="/shadow/promote"] button`)),
		chromedp.WaitVisible(chromedp.CSS(".alert-ok")),
	)
	if got := ops.text(".alert-ok"); !strings.Contains(got, "is held to the new job description") {
		t.Errorf("after enforcing: %q", got)
	}
	if r := s.Do("POST", "/v1/calls", token, map[string]string{"connector": "crm", "action": "account.update", "risk": "medium", "idempotency_key": "kz"}); r.Status != http.StatusForbidden {
		t.Errorf("account.update once enforced: %d %s", r.Status, r.Body)
	}
}
