package console_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/arxsec/arx/agentvault"
	"github.com/arxsec/arx/arxerr"
	"github.com/arxsec/arx/internal/arxtest"
	"github.com/chromedp/chromedp"
)

// The browser tests drive Debian's chromium (headless) through the console
// of a real server, with a real SDK client asking for approval. They skip
// when chromium is missing, unless ARX_TEST_REQUIRE_SERVERS=1 (CI). With
// ARX_SCREENSHOTS=DIR they save screenshots of the main pages in DIR.

// chromiumPath finds the browser, or skips (fails in CI).
func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, p := range []string{os.Getenv("ARX_CHROMIUM"), "/usr/bin/chromium"} {
		if p == "" {
			continue
		}
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() {
			return p
		}
	}
	msg := "chromium not found at /usr/bin/chromium (or $ARX_CHROMIUM): the console's browser tests need Debian's chromium; install it with .ci/setup-chromium.sh"
	if os.Getenv("ARX_TEST_REQUIRE_SERVERS") == "1" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// startChromium starts one headless browser for the test.
func startChromium(t *testing.T) context.Context {
	t.Helper()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromiumPath(t)),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-default-apps", true),
		// Several tabs share the browser: none may be throttled as hidden.
		chromedp.Flag("disable-background-timer-throttling", true),
		chromedp.Flag("disable-backgrounding-occluded-windows", true),
		chromedp.Flag("disable-renderer-backgrounding", true),
		chromedp.Flag("password-store", "basic"),
		chromedp.Flag("force-color-profile", "srgb"),
		chromedp.Flag("lang", "en-GB"),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 860),
		// Only what it needs of the test's environment; its own temporary
		// directory, so the singleton socket it makes there goes with the
		// test rather than staying behind in /tmp.
		chromedp.NoInheritEnv,
		chromedp.Env("PATH="+os.Getenv("PATH"), "HOME="+t.TempDir(), "TMPDIR="+t.TempDir()),
	}
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancelAlloc)
	browser, cancel := chromedp.NewContext(alloc)
	t.Cleanup(cancel)
	if err := chromedp.Do(browser); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return browser
}

// tab is one person's browser: a browser context of its own (cookies
// included), one tab.
type tab struct {
	t   *testing.T
	ctx context.Context
	url string
}

func newTab(t *testing.T, browser context.Context, s *arxtest.Server) *tab {
	t.Helper()
	ctx, cancel := chromedp.NewContext(browser, chromedp.WithNewBrowserContext())
	t.Cleanup(cancel)
	if err := chromedp.Do(ctx); err != nil {
		t.Fatal(err)
	}
	return &tab{t: t, ctx: ctx, url: s.URL}
}

// do runs steps with a deadline.
func (b *tab) do(what string, steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 15*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		loc, _ := chromedp.Run(b.ctx, chromedp.Location())
		body, _ := chromedp.Run(b.ctx, chromedp.Evaluate[string](`document.body ? document.body.innerText : ""`))
		b.t.Fatalf("%s: %v (at %s)\n%s", what, err, loc, body)
	}
}

func (b *tab) text(sel string) string {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 15*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
	if err != nil {
		b.t.Fatalf("text of %s: %v", sel, err)
	}
	return s
}

func (b *tab) eval(js string) string {
	b.t.Helper()
	s, err := chromedp.Run(b.ctx, chromedp.Evaluate[string](js))
	if err != nil {
		b.t.Fatalf("eval %s: %v", js, err)
	}
	return s
}

func (b *tab) location() string {
	b.t.Helper()
	s, err := chromedp.Run(b.ctx, chromedp.Location())
	if err != nil {
		b.t.Fatal(err)
	}
	return s
}

// screenshot saves a full-page PNG in $ARX_SCREENSHOTS, if set.
func (b *tab) screenshot(name string) {
	b.t.Helper()
	dir := os.Getenv("ARX_SCREENSHOTS")
	if dir == "" {
		return
	}
	// Let countdowns and local times settle, and hide the caret.
	b.eval(`document.activeElement && document.activeElement.blur && document.activeElement.blur(), ""`)
	png, err := chromedp.Run(b.ctx, chromedp.FullScreenshot(100))
	if err != nil {
		b.t.Fatalf("screenshot %s: %v", name, err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644); err != nil {
		b.t.Fatal(err)
	}
}

func (b *tab) login(email string) {
	b.t.Helper()
	b.do("log in "+email,
		chromedp.Navigate(b.url+"/console/"),
		chromedp.WaitVisible(chromedp.CSS("#signin-h")),
		chromedp.SendKeys(chromedp.CSS("#email"), email),
		chromedp.SendKeys(chromedp.CSS("#password"), Password),
		chromedp.Click(chromedp.CSS("form button[type=submit]")),
		chromedp.WaitVisible(chromedp.CSS("body[data-live-state=on]")), // the dashboard, listening
	)
}

func TestBrowser(t *testing.T) {
	browser := startChromium(t)
	start := time.Now()
	s := arxtest.Start(t)
	agentID, agentToken := s.Hire(strings.Replace(testManifest, "budget:\n", "budget:\n  spend:\n    per_day: 25 USD\n  tokens:\n    per_day: 2000000\n", 1))
	setupURL, _ := addPerson(t, s, "boss@example.com", "manager")
	addManager(t, s, "stranger@example.com")
	client := sdk(t, s, agentToken)
	// Some history for the agent's page and record.
	for _, a := range []agentvault.Action{
		{Connector: "crm", Action: "account.read", Summary: "account 0017 (Acme GmbH)"},
		{Connector: "warehouse", Action: "query", Summary: "pipeline by region, Q3"},
		{Connector: "crm", Action: "account.update", Risk: agentvault.RiskMedium, Summary: "account 0017: industry to Manufacturing"},
	} {
		if _, err := agentvault.Do(t.Context(), client, a, func(ctx context.Context, _ agentvault.Credential) (int, error) {
			return 1, agentvault.ReportUsage(ctx, agentvault.Usage{Tokens: 412_000, Amount: "4.80 USD"})
		}); err != nil {
			t.Fatal(err)
		}
	}
	_, _ = agentvault.Do(t.Context(), client, agentvault.Action{Connector: "hubspot", Action: "contact.export"},
		func(context.Context, agentvault.Credential) (int, error) { return 1, nil })

	boss := newTab(t, browser, s)
	stranger := newTab(t, browser, s)

	t.Run("setup link and login", func(t *testing.T) {
		boss.t = t
		boss.do("set a password from the setup link",
			chromedp.Navigate(setupURL),
			chromedp.WaitVisible(chromedp.CSS("#setup-h")),
			chromedp.SendKeys(chromedp.CSS("#password"), Password),
			chromedp.SendKeys(chromedp.CSS("#confirm"), Password),
			chromedp.Click(chromedp.CSS("form button[type=submit]")),
			chromedp.WaitVisible(chromedp.CSS(".alert-ok")),
		)
		if got := boss.text("main h1"); got != "Dashboard" {
			t.Fatalf("after setup: %q", got)
		}
		stranger.t = t
		stranger.login("stranger@example.com")
		if got := stranger.text(".account-email"); got != "stranger@example.com" {
			t.Fatalf("signed in as %q", got)
		}
	})

	t.Run("a request appears live and is approved", func(t *testing.T) {
		boss.t = t
		boss.do("open the dashboard", chromedp.Navigate(s.URL+"/console/"), chromedp.WaitVisible(chromedp.CSS("body[data-live-state=on]")))
		boss.eval(`window.arxNoReload = "still here"`)
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		defer cancel()
		asked := time.Now()
		done := requestHighRisk(t, ctx, s, client, "delete account 0042 (duplicate of 0017)")
		boss.do("see the request arrive", chromedp.WaitVisible(chromedp.CSS("#pending .request")))
		t.Logf("the request showed up %v after the agent asked", time.Since(asked).Round(time.Millisecond))
		if got := boss.eval(`window.arxNoReload || "reloaded"`); got != "still here" {
			t.Fatal("the page reloaded to show the request")
		}
		item := boss.text("#pending .request")
		for _, want := range []string{"sales-research", "account.delete", "crm", "delete account 0042", "High risk", "Awaiting you", "left"} {
			if !strings.Contains(item, want) {
				t.Errorf("the pending request lacks %q:\n%s", want, item)
			}
		}
		if got := boss.text("#nav-pending"); !strings.Contains(got, "1") {
			t.Errorf("navigation count %q", got)
		}
		// The countdown counts.
		first := boss.text("#pending .countdown")
		for deadline := time.Now().Add(3 * time.Second); boss.text("#pending .countdown") == first; time.Sleep(100 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Errorf("the countdown stands still at %q", first)
				break
			}
		}
		boss.screenshot("dashboard")
		if os.Getenv("ARX_SCREENSHOTS") != "" {
			boss.do("phone width", chromedp.EmulateViewport(390, 844))
			boss.screenshot("dashboard-phone")
			boss.do("desktop width", chromedp.EmulateViewport(1280, 860))
		}

		boss.do("open the request",
			chromedp.Click(chromedp.CSS("#pending .request .btn")),
			chromedp.WaitVisible(chromedp.CSS("#decision-h")),
		)
		facts := boss.text(".facts")
		for _, want := range []string{"Declared risk", "High risk", "Effective risk", "delete account 0042", "Time left", "sales-research"} {
			if !strings.Contains(facts, want) {
				t.Errorf("the request page lacks %q:\n%s", want, facts)
			}
		}
		if got := boss.text(".people"); !strings.Contains(got, "boss@example.com (you)") || !strings.Contains(got, "deputy@example.com") {
			t.Errorf("approvers: %q", got)
		}
		boss.screenshot("approval")
		if os.Getenv("ARX_SCREENSHOTS") != "" {
			boss.do("phone width", chromedp.EmulateViewport(390, 844))
			boss.screenshot("approval-phone")
			boss.do("desktop width", chromedp.EmulateViewport(1280, 860))
		}
		select {
		case o := <-done:
			t.Fatalf("the SDK call finished before a decision: %+v", o)
		default:
		}
		boss.do("approve with a reason",
			chromedp.SendKeys(chromedp.CSS("#reason"), "Checked with Dana: a duplicate"),
			chromedp.Click(chromedp.CSS("button[value=approve]")),
			chromedp.WaitVisible(chromedp.CSS(".alert-ok")),
		)
		select {
		case o := <-done:
			if o.err != nil || !o.ran || o.res != "deleted" {
				t.Fatalf("the SDK call after approval: %+v", o)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the SDK call did not resume after the approval")
		}
		if got := boss.text("#decision"); !strings.Contains(got, "Approved") || !strings.Contains(got, "boss@example.com") ||
			!strings.Contains(got, "Checked with Dana") {
			t.Errorf("decision shown: %q", got)
		}
	})

	t.Run("deny", func(t *testing.T) {
		boss.t = t
		boss.do("open approvals", chromedp.Navigate(s.URL+"/console/approvals"), chromedp.WaitVisible(chromedp.CSS("body[data-live-state=on]")))
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		defer cancel()
		done := requestHighRisk(t, ctx, s, client, "delete account 0099")
		boss.do("see it and open it",
			chromedp.WaitVisible(chromedp.CSS("#pending .request")),
			chromedp.Click(chromedp.CSS("#pending .request .btn")),
			chromedp.WaitVisible(chromedp.CSS("#decision-h")),
		)
		// Deny needs a reason: said on the page before anything is sent.
		boss.do("deny without a reason",
			chromedp.Click(chromedp.CSS("button[value=deny]")),
			chromedp.WaitVisible(chromedp.CSS("#reason-error")),
		)
		if got := boss.eval(`document.activeElement.id`); got != "reason" {
			t.Errorf("focus after the missing reason: %q", got)
		}
		boss.do("deny with a reason",
			chromedp.SendKeys(chromedp.CSS("#reason"), "We keep this account until the audit"),
			chromedp.Click(chromedp.CSS("button[value=deny]")),
			chromedp.WaitVisible(chromedp.CSS(".alert-ok")),
		)
		select {
		case o := <-done:
			if o.ran || !agentvault.IsCode(o.err, arxerr.CallDenied) {
				t.Fatalf("the SDK after a denial: %+v", o)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the SDK call did not end after the denial")
		}
		boss.do("see it among the decided", chromedp.Navigate(s.URL+"/console/approvals"), chromedp.WaitVisible(chromedp.CSS("#decided table")))
		if got := boss.text("#decided"); !strings.Contains(got, "Denied") || !strings.Contains(got, "We keep this account until the audit") {
			t.Errorf("decided list: %q", got)
		}
		boss.screenshot("approvals")
		// On a phone, who decided is on screen, not off its right edge.
		boss.do("phone width", chromedp.EmulateViewport(390, 844))
		if got := boss.eval(`(() => { const c = document.querySelector("#decided .decided-by"); const r = c.getBoundingClientRect();
			return r.width > 0 && r.left >= 0 && r.right <= window.innerWidth && document.documentElement.scrollWidth <= window.innerWidth ? c.textContent.trim() : "off screen: " + r.left + "–" + r.right + " of " + window.innerWidth })()`); !strings.Contains(got, "boss@example.com") {
			t.Errorf("on a phone, who decided: %q", got)
		}
		boss.screenshot("approvals-phone")
		boss.do("desktop width", chromedp.EmulateViewport(1280, 860))
	})

	var strangerCall string
	waitCtx, cancelWait := context.WithCancel(context.Background())
	t.Cleanup(cancelWait)
	t.Run("a manager who is not named cannot decide", func(t *testing.T) {
		stranger.t = t
		// Pending until the end of the whole test: the next subtest forges a decision on it.
		requestHighRisk(t, waitCtx, s, client, "export every account")
		strangerCall = pendingCall(t, s, "export every account")
		stranger.do("open the request", chromedp.Navigate(s.URL+"/console/approvals/"+strangerCall), chromedp.WaitVisible(chromedp.CSS("#why-not")))
		if got := stranger.text("#why-not"); !strings.Contains(got, "you are not one of them") {
			t.Errorf("why not: %q", got)
		}
		if got := stranger.eval(`String(document.querySelector("#decision fieldset").disabled)`); got != "true" {
			t.Fatal("the form is active for a manager who is not named")
		}
		// Forcing the form open does not help: the runtime refuses.
		stranger.eval(`document.querySelector("#decision fieldset").disabled = false, ""`)
		stranger.do("submit anyway",
			chromedp.SendKeys(chromedp.CSS("#reason"), "looks fine to me"),
			chromedp.Click(chromedp.CSS("button[value=approve]")),
			chromedp.WaitVisible(chromedp.CSS("#refusal")),
		)
		if got := stranger.text("#refusal"); !strings.Contains(got, "You are not an approver of this agent") ||
			!strings.Contains(got, "stranger@example.com is not an approver of agent sales-research") {
			t.Errorf("refusal: %q", got)
		}
		if got := stranger.eval(`document.activeElement.id`); got != "refusal" {
			t.Errorf("the refusal does not get the focus: %q", got)
		}
		stranger.screenshot("refusal")
		if st := approvalStatus(t, s, strangerCall); st != "pending" {
			t.Fatalf("approval after a refused decision: %s", st)
		}
	})

	t.Run("a forged form is refused", func(t *testing.T) {
		boss.t = t
		// A page on another origin posts a form at the console.
		evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			fmt.Fprintf(w, `<!doctype html><title>win a prize</title><form method="post" action="%s/console/approvals/%s/decide">
				<input type="hidden" name="decision" value="approve"><input type="hidden" name="reason" value="prize">
				<button id="go">Claim</button></form>`, s.URL, strangerCall)
		}))
		defer evil.Close()
		boss.do("post from another origin",
			chromedp.Navigate(evil.URL),
			chromedp.Click(chromedp.CSS("#go")),
			chromedp.WaitVisible(chromedp.CSS(".error-card")),
		)
		if got := boss.text(".error-card"); !strings.Contains(got, "This form was refused") || !strings.Contains(got, "auth.csrf") {
			t.Errorf("cross-origin post: %q", got)
		}
		// The same form from a console page, without the token.
		boss.do("open the request", chromedp.Navigate(s.URL+"/console/approvals/"+strangerCall), chromedp.WaitVisible(chromedp.CSS("#decision-h")))
		boss.eval(`(function () {
			var f = document.createElement("form");
			f.method = "post";
			f.action = "/console/approvals/` + strangerCall + `/decide";
			f.innerHTML = '<input name="decision" value="approve"><input name="reason" value="forged">';
			document.body.appendChild(f);
			f.submit();
			return "";
		})()`)
		boss.do("see the refusal", chromedp.WaitVisible(chromedp.CSS(".error-card")))
		if got := boss.text(".error-card"); !strings.Contains(got, "auth.csrf") || !strings.Contains(got, "Nothing was changed") {
			t.Errorf("post without a token: %q", got)
		}
		boss.screenshot("csrf-refused")
		if st := approvalStatus(t, s, strangerCall); st != "pending" {
			t.Fatalf("a forged post changed the approval: %s", st)
		}
	})

	t.Run("a decision made elsewhere shows up live", func(t *testing.T) {
		stranger.t = t
		stranger.do("watch the request", chromedp.Navigate(s.URL+"/console/approvals/"+strangerCall), chromedp.WaitVisible(chromedp.CSS("body[data-live-state=on]")))
		stranger.eval(`window.arxNoReload = "still here"`)
		// The approver decides from a script, with a person's API token.
		r := s.Do("POST", "/v1/auth/tokens", "", map[string]string{"email": "boss@example.com", "password": Password, "label": "test"})
		var tok struct {
			Token string `json:"token"`
		}
		r.JSON(t, &tok)
		if r := s.Do("POST", "/v1/approvals/"+strangerCall+"/deny", tok.Token, map[string]string{"reason": "too broad"}); r.Status != http.StatusOK {
			t.Fatalf("deny by API: %d %s", r.Status, r.Body)
		}
		stranger.do("see the decision", chromedp.WaitVisible(chromedp.CSS("#decision dl.facts")))
		if got := stranger.text("#decision"); !strings.Contains(got, "Denied") || !strings.Contains(got, "too broad") {
			t.Errorf("decision shown: %q", got)
		}
		if got := stranger.text("#head-status"); !strings.Contains(got, "Denied") {
			t.Errorf("status shown: %q", got)
		}
		if got := stranger.eval(`window.arxNoReload || "reloaded"`); got != "still here" {
			t.Error("the page reloaded")
		}
	})

	t.Run("agent and record pages", func(t *testing.T) {
		boss.t = t
		if os.Getenv("ARX_SCREENSHOTS") != "" {
			boss.do("dashboard after some decisions", chromedp.Navigate(s.URL+"/console/"), chromedp.WaitVisible(chromedp.CSS("body[data-live-state=on]")))
			boss.screenshot("dashboard-later")
		}
		boss.do("open the agent", chromedp.Navigate(s.URL+"/console/agents/"+agentID), chromedp.WaitVisible(chromedp.CSS("#scope-h")))
		if got := boss.text(".connectors"); !strings.Contains(got, "account.delete") || !strings.Contains(got, "High risk") {
			t.Errorf("scope: %q", got)
		}
		boss.screenshot("agent")
		deadline := time.Now().Add(10 * time.Second)
		for {
			boss.do("open the record", chromedp.Navigate(s.URL+"/console/agents/"+agentID+"/record"), chromedp.WaitVisible(chromedp.CSS("#verify-h")))
			if strings.Contains(boss.text(".verify"), "Covered by the latest checkpoint") || time.Now().After(deadline) {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if got := boss.text(".verify"); !strings.Contains(got, "Verified: the record is intact") || !strings.Contains(got, "Covered by the latest checkpoint") {
			t.Errorf("verification: %q", got)
		}
		boss.screenshot("record")
	})

	t.Run("logout", func(t *testing.T) {
		boss.t = t
		boss.do("sign out",
			chromedp.Navigate(s.URL+"/console/"),
			chromedp.WaitVisible(chromedp.CSS(".logout button")),
			chromedp.Click(chromedp.CSS(".logout button")),
			chromedp.WaitVisible(chromedp.CSS("#signin-h")),
		)
		if got := boss.text(".alert"); !strings.Contains(got, "You are signed out") {
			t.Errorf("after sign-out: %q", got)
		}
		boss.screenshot("login")
		boss.do("try the dashboard again", chromedp.Navigate(s.URL+"/console/approvals"), chromedp.WaitVisible(chromedp.CSS("#signin-h")))
		if loc := boss.location(); !strings.Contains(loc, "/console/login?next=") {
			t.Errorf("after sign-out the console is at %s", loc)
		}
		if got := boss.eval(`document.cookie`); got != "" {
			t.Errorf("cookies readable by script: %q", got)
		}
	})
	t.Logf("browser tests took %v", time.Since(start).Round(time.Millisecond))
}
