package console_test

import (
	"context"
	"os"
	"strings"
	"testing"

	"github.com/arxsec/arx/agentvault"
	"github.com/arxsec/arx/internal/arxtest"
	"github.com/chromedp/chromedp"
)

// TestBrowserReviewAndTerminate acknowledges a performance event and
// terminates an agent through chromium, confirmation step included.
func TestBrowserReviewAndTerminate(t *testing.T) {
	browser := startChromium(t)
	s := arxtest.Start(t)
	agentID, agentToken := s.Hire(testManifest)
	addManager(t, s, "boss@example.com")
	client := sdk(t, s, agentToken)
	for _, a := range []agentvault.Action{
		{Connector: "crm", Action: "account.read", Summary: "account 0017"},
		{Connector: "crm", Action: "account.read", Summary: "account 0018"},
		{Connector: "crm", Action: "account.read", Summary: "account 0019"},
		{Connector: "warehouse", Action: "query", Summary: "pipeline by region"},
		{Connector: "warehouse", Action: "query", Summary: "pipeline by owner"},
		{Connector: "crm", Action: "account.update", Summary: "account 0017: industry"}, // declared low, rated medium
		{Connector: "crm", Action: "account.purge", Summary: "purge account 0042"},      // not in the job description
	} {
		if _, err := agentvault.Do(t.Context(), client, a, func(context.Context, agentvault.Credential) (int, error) { return 1, nil }); err != nil {
			t.Fatal(err)
		}
	}
	_, _ = agentvault.Do(t.Context(), client, agentvault.Action{Connector: "hubspot", Action: "contact.export"},
		func(context.Context, agentvault.Credential) (int, error) { return 1, nil })

	boss := newTab(t, browser, s)
	boss.login("boss@example.com")

	boss.do("open the review from the agent page",
		chromedp.Navigate(s.URL+"/console/agents/"+agentID),
		chromedp.Click(chromedp.CSS(`a[href$="/review"]`)),
		chromedp.WaitVisible(chromedp.CSS("#drift-h")),
	)
	if got := boss.text(".events"); !strings.Contains(got, "Outside the job description") || !strings.Contains(got, "Risk declared lower") {
		t.Errorf("events: %q", got)
	}
	if got := boss.eval(`String(document.querySelectorAll(".chart-bar").length) + "/" + document.querySelectorAll(".chart-mark").length`); got != "1/1" {
		t.Errorf("bars/marks: %s", got)
	}
	boss.screenshot("review")
	if os.Getenv("ARX_SCREENSHOTS") != "" {
		boss.do("phone width", chromedp.EmulateViewport(390, 844))
		boss.screenshot("review-phone")
		boss.do("desktop width", chromedp.EmulateViewport(1280, 860))
	}

	boss.do("acknowledge the newest event",
		chromedp.SendKeys(chromedp.CSS(".ack-form textarea"), "Known: the purge job is being added to the job description."),
		chromedp.Click(chromedp.CSS(".ack-form button[type=submit]")),
		chromedp.WaitVisible(chromedp.CSS(".alert-ok")),
	)
	if got := boss.text(".event-acked"); !strings.Contains(got, "Known: the purge job") || !strings.Contains(got, "boss@example.com") {
		t.Errorf("acknowledged event: %q", got)
	}
	boss.eval(`window.scrollTo(0, 0), ""`)
	boss.screenshot("review-acknowledged")

	boss.do("start a termination",
		chromedp.Navigate(s.URL+"/console/agents/"+agentID),
		chromedp.SendKeys(chromedp.CSS("#term-reason"), "Replaced by sales-research-v2."),
		chromedp.Click(chromedp.CSS(".terminate-form button[type=submit]")),
		chromedp.WaitVisible(chromedp.CSS("#confirm-h")),
	)
	if got := boss.text("#confirm-h"); got != "Terminate sales-research?" {
		t.Errorf("confirmation heading %q", got)
	}
	boss.do("a wrong name changes nothing",
		chromedp.SendKeys(chromedp.CSS("#confirm"), "sales"),
		chromedp.Click(chromedp.CSS(".confirm-buttons button[type=submit]")),
		chromedp.WaitVisible(chromedp.CSS("#refusal")),
	)
	if got := boss.text("#refusal"); !strings.Contains(got, "The name does not match") {
		t.Errorf("refusal: %q", got)
	}
	boss.screenshot("terminate-confirm")
	boss.do("confirm with the name",
		chromedp.Clear(chromedp.CSS("#confirm")),
		chromedp.SendKeys(chromedp.CSS("#confirm"), "sales-research"),
		chromedp.Click(chromedp.CSS(".confirm-buttons button[type=submit]")),
		chromedp.WaitVisible(chromedp.CSS(".termination")),
	)
	if got := boss.text("main h1"); !strings.Contains(got, "Terminated") {
		t.Errorf("agent heading after termination: %q", got)
	}
	if got := boss.text(".termination"); !strings.Contains(got, "Replaced by sales-research-v2.") || !strings.Contains(got, "1 token revoked") {
		t.Errorf("termination: %q", got)
	}
	boss.screenshot("agent-terminated")
}
