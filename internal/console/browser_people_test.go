package console_test

import (
	"strings"
	"testing"

	"github.com/arxsec/arx/internal/arxtest"
	"github.com/chromedp/chromedp"
)

// TestBrowserPeople: an admin disables a manager from the People page in
// Chromium; the manager's open console session ends at once (the next
// page is the sign-in), their password no longer signs in, and enabling
// them again lets them back in.
func TestBrowserPeople(t *testing.T) {
	browser := startChromium(t)
	s := arxtest.Start(t)
	_, token := addPerson(t, s, "ada@example.com", "admin")
	if r := s.Do("POST", "/v1/auth/setup", "", map[string]string{"token": token, "password": Password}); r.Status != 200 {
		t.Fatalf("setup of the admin: %d %s", r.Status, r.Body)
	}
	addManager(t, s, "boss@example.com")
	addManager(t, s, "lee@example.com")
	addPerson(t, s, "new@example.com", "manager") // link not used yet

	boss := newTab(t, browser, s)
	boss.login("boss@example.com")
	admin := newTab(t, browser, s)
	admin.login("ada@example.com")

	admin.do("open People from the navigation",
		chromedp.Click(chromedp.CSS(`nav a[href="/console/people"]`)),
		chromedp.WaitVisible(chromedp.CSS("#people-h")),
	)
	rows := admin.text("main table tbody")
	for _, want := range []string{"ada@example.com", "You", "boss@example.com", "lee@example.com", "new@example.com", "Link pending", "Admin", "Manager"} {
		if !strings.Contains(rows, want) {
			t.Errorf("the people table lacks %q:\n%s", want, rows)
		}
	}
	if n := admin.eval(`String(document.querySelectorAll('form[action="/console/people/ada@example.com/disable"]').length)`); n != "0" {
		t.Error("an admin is offered to disable themselves")
	}
	admin.screenshot("people")

	// Each step's page says #done; the one before is taken away first, so
	// the wait is for the new page's.
	admin.eval(`document.querySelector("#done")?.remove(), ""`)
	admin.do("disable boss",
		chromedp.Click(chromedp.CSS(`form[action="/console/people/boss@example.com/disable"] button`)),
		chromedp.WaitVisible(chromedp.CSS("#done")),
	)
	if got := admin.text("#done"); !strings.Contains(got, "boss@example.com is disabled") {
		t.Errorf("confirmation: %q", got)
	}
	admin.screenshot("people-disabled")

	// boss's session ended: the next page is the sign-in.
	boss.do("boss's next page", chromedp.Navigate(s.URL+"/console/approvals"), chromedp.WaitVisible(chromedp.CSS("#signin-h")))
	boss.do("boss's password is refused",
		chromedp.SendKeys(chromedp.CSS("#email"), "boss@example.com"),
		chromedp.SendKeys(chromedp.CSS("#password"), Password),
		chromedp.Click(chromedp.CSS("form button[type=submit]")),
		chromedp.WaitVisible(chromedp.CSS("#form-error")),
	)
	if n := boss.eval(`String(document.querySelectorAll(".account-email").length)`); n != "0" {
		t.Error("a disabled person signed in")
	}

	admin.eval(`document.querySelector("#done")?.remove(), ""`)
	admin.do("enable boss again",
		chromedp.Click(chromedp.CSS(`form[action="/console/people/boss@example.com/enable"] button`)),
		chromedp.WaitVisible(chromedp.CSS("#done")),
	)
	if got := admin.text("#done"); !strings.Contains(got, "boss@example.com can sign in again") {
		t.Errorf("confirmation: %q", got)
	}
	boss.login("boss@example.com")
	if got := boss.text(".account-email"); got != "boss@example.com" {
		t.Errorf("after enabling, signed in as %q", got)
	}
	// Managers do not see the page.
	if n := boss.eval(`String(document.querySelectorAll('nav a[href="/console/people"]').length)`); n != "0" {
		t.Error("a manager's navigation offers People")
	}
}
