package console_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/arxsec/arx/internal/arxtest"
	"github.com/arxsec/arx/internal/server"
	"github.com/arxsec/arx/internal/sso"
	"github.com/arxsec/arx/record"
	"github.com/chromedp/chromedp"
)

// oidcProvider starts the OpenID provider .ci/setup-oidc.sh builds
// ($ARX_TEST_OIDC_PROVIDER) on a free port of this machine, with users
// (id → the provider's user fields) and one web client, "web" with secret
// "secret", whose redirect URIs are redirects. It returns the issuer URL.
// Without the provider the test skips (fails in CI).
func oidcProvider(t *testing.T, users map[string]map[string]any, redirects ...string) string {
	t.Helper()
	bin := os.Getenv("ARX_TEST_OIDC_PROVIDER")
	if bin == "" {
		msg := "ARX_TEST_OIDC_PROVIDER is not set: the single sign-on tests need an OpenID provider; `source .ci/setup-oidc.sh` builds one"
		if os.Getenv("ARX_TEST_REQUIRE_SERVERS") == "1" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	port := freePort(t)
	usersFile := filepath.Join(t.TempDir(), "users.json")
	b, _ := json.Marshal(users)
	if err := os.WriteFile(usersFile, b, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin)
	// Only what it needs: no credentials of this process.
	cmd.Env = []string{"PORT=" + fmt.Sprint(port), "USERS_FILE=" + usersFile, "REDIRECT_URI=" + strings.Join(redirects, ",")}
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("OpenID provider's output:\n%s", out.String())
		}
	})
	issuer := fmt.Sprintf("http://localhost:%d/", port)
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get(issuer + ".well-known/openid-configuration")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return issuer
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the OpenID provider did not start: %v\n%s", err, out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// idpLogin signs in at the provider's own page, wherever the tab is sent.
func idpLogin(username, password string) []chromedp.Action[chromedp.Void] {
	return []chromedp.Action[chromedp.Void]{
		chromedp.WaitVisible(chromedp.CSS("input#username")),
		chromedp.SendKeys(chromedp.CSS("input#username"), username),
		chromedp.SendKeys(chromedp.CSS("input#password"), password),
		chromedp.Click(chromedp.CSS("button[type=submit]")),
	}
}

// TestBrowserSSO signs a manager in through a real OpenID provider, in
// Chromium, on a server whose local passwords are off: the manager
// approves a pending call and the record names the provider's subject; a
// password gets nothing, even for an admin; `arx login --sso`'s loopback
// flow gives a working API token whose entry names the subject too; and a
// callback that is not the browser's own sign-in is refused.
func TestBrowserSSO(t *testing.T) {
	browser := startChromium(t)
	port := freePort(t)
	public := fmt.Sprintf("http://localhost:%d", port)
	issuer := oidcProvider(t, map[string]map[string]any{
		"idp-boss-7": {"ID": "idp-boss-7", "Username": "boss", "Password": "idp-password-1", "FirstName": "Bo", "LastName": "Ss",
			"Email": "boss@example.com", "EmailVerified": true, "PreferredLanguage": "en"},
		"idp-eve": {"ID": "idp-eve", "Username": "eve", "Password": "idp-password-2", "Email": "eve@example.com",
			"EmailVerified": false, "PreferredLanguage": "en"},
	}, public+"/console/sso/callback")

	s := arxtest.StartWith(t, t.TempDir(), func(c *server.Config) {
		c.Listen = fmt.Sprintf("127.0.0.1:%d", port)
		c.PublicURL = public
		c.SSO = server.SSOConfig{Issuer: issuer, ClientID: "web", ClientSecret: []byte("secret"), Name: "Example IdP"}
		c.NoLocalPasswords = true
	})
	agentID, agentToken := s.Hire(testManifest)
	// With local passwords off, adding a person makes no set-up link.
	r := s.Do("POST", "/v1/users", s.AdminToken, map[string]any{"email": "boss@example.com", "role": "manager"})
	if r.Status != http.StatusCreated || strings.Contains(string(r.Body), "setup") {
		t.Fatalf("add boss: %d %s", r.Status, r.Body)
	}
	if r := s.Do("POST", "/v1/auth/tokens", "", map[string]any{"email": "boss@example.com", "password": "anything at all"}); r.Status != http.StatusForbidden ||
		!strings.Contains(string(r.Body), "auth.sso_required") {
		t.Errorf("password login with local passwords off: %d %s", r.Status, r.Body)
	}
	if r := s.Do("POST", "/v1/users/boss@example.com/reset", s.AdminToken, map[string]any{"show_link": true}); r.Status != http.StatusForbidden ||
		!strings.Contains(string(r.Body), "auth.sso_required") {
		t.Errorf("an admin's reset link with local passwords off: %d %s", r.Status, r.Body)
	}

	client := sdk(t, s, agentToken)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	done := requestHighRisk(t, ctx, s, client, "delete account 0042 (merged)")
	call := pendingCall(t, s, "delete account 0042 (merged)")

	boss := newTab(t, browser, s)
	boss.url = public
	boss.do("open the console", chromedp.Navigate(public+"/console/approvals/"+call), chromedp.WaitVisible(chromedp.CSS("#sso")))
	if got := boss.eval(`document.querySelector("#password") ? "password form" : "no password form"`); got != "no password form" {
		t.Errorf("sign-in page with local passwords off shows a %s", got)
	}
	if got := boss.text("#sso"); got != "Sign in with Example IdP" {
		t.Errorf("button: %q", got)
	}
	boss.screenshot("sso-signin")
	boss.do("sign in through the provider", append([]chromedp.Action[chromedp.Void]{chromedp.Click(chromedp.CSS("#sso"))},
		idpLogin("boss", "idp-password-1")...)...)
	boss.do("back on the request", chromedp.WaitVisible(chromedp.CSS("button[value=approve]")))
	if loc := boss.location(); loc != public+"/console/approvals/"+call {
		t.Errorf("after sign-in at %s, want the page asked for", loc)
	}
	boss.do("approve",
		chromedp.SendKeys(chromedp.CSS("#reason"), "merged into 0041"),
		chromedp.Click(chromedp.CSS("button[value=approve]")),
		chromedp.WaitVisible(chromedp.CSS(".alert-ok")),
	)
	select {
	case o := <-done:
		if o.err != nil || !o.ran {
			t.Fatalf("the SDK call after approval: %+v", o)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the SDK call did not resume after the approval")
	}
	entries, err := s.Runtime.Store().AgentEntries(t.Context(), agentID, -1, 100)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, se := range entries {
		e, err := record.Parse(se.Data)
		if err != nil || e.Type != record.TypeApprovalGranted {
			continue
		}
		found = true
		idp, _ := e.Data["idp"].(map[string]any)
		if e.Actor != "user:boss@example.com" || idp["issuer"] != issuer || idp["subject"] != "idp-boss-7" {
			t.Errorf("approval entry: actor %s, idp %v; want boss and subject idp-boss-7 of %s", e.Actor, e.Data["idp"], issuer)
		}
	}
	if !found {
		t.Fatal("no approval.granted entry")
	}

	t.Run("arx login --sso", func(t *testing.T) {
		cli := newTab(t, browser, s)
		cli.url = public
		api := &http.Client{Timeout: 10 * time.Second}
		l := &sso.Login{Server: public, Label: "laptop", Call: func(ctx context.Context, method, path string, body, out any) error {
			r := s.Do(method, path, "", body)
			if r.Status/100 != 2 {
				return fmt.Errorf("%s %s: %d %s", method, path, r.Status, r.Body)
			}
			return json.Unmarshal(r.Body, out)
		}, Show: func(u string) {
			go cli.do("the browser opens the CLI's address", append([]chromedp.Action[chromedp.Void]{chromedp.Navigate(u)},
				idpLogin("boss", "idp-password-1")...)...)
		}}
		res, err := l.Run(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if res.Email != "boss@example.com" || res.Role != "manager" || !strings.HasPrefix(res.Token, "arxu_") {
			t.Errorf("CLI sign-in: %+v", res)
		}
		req, _ := http.NewRequest("GET", s.URL+"/v1/auth/tokens", nil)
		req.Header.Set("Authorization", "Bearer "+res.Token)
		resp, err := api.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("the CLI's token: HTTP %d", resp.StatusCode)
		}
		if got := cli.text("h1"); got != "You are signed in to ARX" {
			t.Errorf("the CLI's page in the browser: %q", got)
		}
		var log struct {
			Entries []struct {
				Data []byte `json:"data"`
			} `json:"entries"`
		}
		s.Do("GET", "/v1/log/entries?limit=10000", s.AdminToken, nil).JSON(t, &log)
		named := false
		for _, le := range log.Entries {
			e, err := record.Parse(le.Data)
			if err == nil && e.Type == record.TypeTokenIssued && e.Data["label"] == "laptop" {
				idp, _ := e.Data["idp"].(map[string]any)
				named = idp["subject"] == "idp-boss-7" && e.Actor == "user:boss@example.com"
			}
		}
		if !named {
			t.Error("no token.issued entry naming the provider's subject")
		}
		// The code the browser carried, redeemed with another verifier.
		if r := s.Do("POST", "/v1/auth/sso/tokens", "", map[string]string{"code": "x.y", "verifier": "z"}); r.Status != http.StatusUnauthorized ||
			!strings.Contains(string(r.Body), "auth.sso_failed") {
			t.Errorf("a forged code: %d %s", r.Status, r.Body)
		}
	})

	t.Run("an unverified email is refused", func(t *testing.T) {
		eve := newTab(t, browser, s)
		eve.url = public
		eve.do("sign in as eve", append([]chromedp.Action[chromedp.Void]{chromedp.Navigate(public + "/console/"), chromedp.WaitVisible(chromedp.CSS("#sso")),
			chromedp.Click(chromedp.CSS("#sso"))}, idpLogin("eve", "idp-password-2")...)...)
		eve.do("refused", chromedp.WaitVisible(chromedp.CSS("#form-error")))
		if got := eve.text("#form-error"); !strings.Contains(got, "could not be used") {
			t.Errorf("eve's error: %q", got)
		}
		eve.do("no session", chromedp.Navigate(public+"/console/approvals"), chromedp.WaitVisible(chromedp.CSS("#signin-h")))
	})

	t.Run("a callback that is not this browser's sign-in", func(t *testing.T) {
		resp, err := http.Get(public + "/console/sso/callback?state=guessed&code=stolen")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("callback without the flow's cookie: HTTP %d", resp.StatusCode)
		}
	})
}
