package console_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/arxsec/arx/audit"
	"github.com/arxsec/arx/internal/arxtest"
	"github.com/arxsec/arx/internal/publish"
	"github.com/arxsec/arx/internal/publish/file"
	"github.com/arxsec/arx/internal/server"
	"github.com/arxsec/arx/internal/store"
	"github.com/arxsec/arx/record"
	"github.com/arxsec/arx/record/passkeys"
	"github.com/chromedp/cdproto/webauthn"
	"github.com/chromedp/chromedp"
)

// TestBrowserPasskeyApproval registers a passkey in Chromium (its virtual
// authenticator, through the DevTools protocol), approves a high-risk call
// of an agent whose job description requires passkey-signed decisions,
// and checks the signature end to end: the console says it is signed, an
// unsigned decision through the API is refused, and an approval written
// behind ARX's back (straight into the store) is published like any other
// entry but caught by the auditor from the bucket alone.
func TestBrowserPasskeyApproval(t *testing.T) {
	browser := startChromium(t)
	// WebAuthn wants a host name, not an IP address: the console is
	// reached at http://localhost:PORT.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	bucketDir := filepath.Join(t.TempDir(), "bucket")
	bucket, err := file.New(bucketDir)
	if err != nil {
		t.Fatal(err)
	}
	public := fmt.Sprintf("http://localhost:%d", port)
	s := arxtest.StartWith(t, t.TempDir(), func(c *server.Config) {
		c.Listen = fmt.Sprintf("127.0.0.1:%d", port)
		c.PublicURL = public
		c.Publish = &publish.Config{Bucket: bucket, PublishInterval: 20 * time.Millisecond}
	})
	m := strings.Replace(testManifest, "  on_timeout: deny\n", "  on_timeout: deny\n  require_passkey: true\n", 1)
	agentID, agentToken := s.Hire(m)
	addManager(t, s, "boss@example.com")
	client := sdk(t, s, agentToken)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	first := requestHighRisk(t, ctx, s, client, "delete account 0017 (duplicate of 0016)")
	call := pendingCall(t, s, "delete account 0017 (duplicate of 0016)")

	boss := newTab(t, browser, s)
	boss.url = public
	boss.do("give the browser an authenticator", chromedp.Func(func(ctx context.Context, _ *chromedp.Target) error {
		if _, err := chromedp.Call(ctx, webauthn.Enable, webauthn.EnableParams{}); err != nil {
			return err
		}
		_, err := chromedp.Call(ctx, webauthn.AddVirtualAuthenticator, webauthn.AddVirtualAuthenticatorParams{Options: &webauthn.VirtualAuthenticatorOptions{
			Protocol: webauthn.AuthenticatorProtocolCtap2, Transport: webauthn.AuthenticatorTransportInternal, HasResidentKey: true,
			HasUserVerification: true, IsUserVerified: true, AutomaticPresenceSimulation: true}})
		return err
	}))
	boss.login("boss@example.com")

	boss.do("open the request before having a passkey",
		chromedp.Navigate(public+"/console/approvals/"+call),
		chromedp.WaitVisible(chromedp.CSS("#why-not")),
	)
	if got := boss.text("#why-not"); !strings.Contains(got, "signed with the approver's passkey") || !strings.Contains(got, "Add a passkey") {
		t.Errorf("why not: %q", got)
	}
	if got := boss.eval(`String(document.querySelector("#decision fieldset").disabled)`); got != "true" {
		t.Errorf("the decision form is usable without a passkey")
	}

	boss.do("add a passkey",
		chromedp.Click(chromedp.CSS(`#why-not a[href="/console/passkeys"]`)),
		chromedp.WaitVisible(chromedp.CSS("#passkey-name")),
		chromedp.SendKeys(chromedp.CSS("#passkey-name"), "Work laptop"),
		chromedp.Click(chromedp.CSS("form[data-passkey-register] button[type=submit]")),
		chromedp.WaitVisible(chromedp.CSS("#done")),
	)
	if got := boss.text("table"); !strings.Contains(got, "Work laptop") {
		t.Errorf("passkeys table: %q", got)
	}
	boss.screenshot("passkeys")

	boss.do("approve, signing with the passkey",
		chromedp.Navigate(public+"/console/approvals/"+call),
		chromedp.WaitVisible(chromedp.CSS("#passkey-note")),
		chromedp.SendKeys(chromedp.CSS("#reason"), "Duplicate confirmed with sales ops."),
		chromedp.Click(chromedp.CSS("button[value=approve]")),
		chromedp.WaitVisible(chromedp.CSS("#signed")),
	)
	if got := boss.text("#decision"); !strings.Contains(got, "Signed with passkey") || !strings.Contains(got, "Work laptop") {
		t.Errorf("decided request: %q", got)
	}
	boss.screenshot("approval-signed")
	if o := <-first; o.err != nil || !o.ran {
		t.Fatalf("the approved call did not run: %+v", o)
	}

	boss.do("the record names the approvers' passkeys and the signed decision",
		chromedp.Navigate(public+"/console/agents/"+agentID+"/record"),
		chromedp.WaitVisible(chromedp.CSS("#approver-keys-h")),
	)
	if got := boss.text(".approver-keys"); !strings.Contains(got, "boss@example.com") || !strings.Contains(got, "Work laptop") ||
		!strings.Contains(got, "deputy@example.com") || !strings.Contains(got, "No account here yet") {
		t.Errorf("approvers' passkeys: %q", got)
	}
	if got := boss.text(".table-record"); !strings.Contains(got, "signed with") {
		t.Errorf("the record does not show the signed decision: %q", got)
	}
	boss.screenshot("record-passkeys")

	// The entry carries the assertion, which verifies against the key the
	// log registered before it.
	entries, err := s.Runtime.Store().AgentEntries(t.Context(), agentID, -1, 100)
	if err != nil {
		t.Fatal(err)
	}
	var signed *record.Entry
	for _, se := range entries {
		e, err := record.Parse(se.Data)
		if err != nil {
			t.Fatal(err)
		}
		if e.Type == record.TypeApprovalGranted && e.Call == call {
			signed = e
		}
	}
	if signed == nil {
		t.Fatal("no approval.granted entry")
	}
	if sig, ok := record.SignatureOf(signed); !ok || sig == nil {
		t.Fatalf("the approval is not signed: %v", signed.Data)
	}

	// An unsigned decision (a person's API token) is refused for this agent.
	second := requestHighRisk(t, ctx, s, client, "delete account 0042")
	call2 := pendingCall(t, s, "delete account 0042")
	r := s.Do("POST", "/v1/auth/tokens", "", map[string]string{"email": "boss@example.com", "password": Password, "label": "script"})
	var tok struct {
		Token string `json:"token"`
	}
	r.JSON(t, &tok)
	if r := s.Do("POST", "/v1/approvals/"+call2+"/approve", tok.Token, map[string]string{"reason": "ok"}); r.Status != http.StatusForbidden || r.ErrorCode() != "approval.passkey_required" {
		t.Fatalf("unsigned approval by API: %d %s", r.Status, r.Body)
	}

	// Forged behind ARX's back: an approval entry appended straight to the
	// store, as someone holding the database could.
	c2, err := s.Runtime.Store().Call(t.Context(), call2)
	if err != nil {
		t.Fatal(err)
	}
	forgedAt := time.Now()
	ref2 := record.CallRef{Agent: agentID, Call: call2, Connector: c2.Connector, Action: c2.Action, Risk: c2.Risk}
	if err := s.Runtime.Store().Update(t.Context(), func(tx store.Tx) error {
		if err := tx.Append(record.ApprovalGranted(ref2, "user:boss@example.com", forgedAt, "boss@example.com", "forged")); err != nil {
			return err
		}
		return tx.Append(record.CredentialIssued(ref2, "user:boss@example.com", forgedAt,
			record.Ask{DeclaredRisk: c2.DeclaredRisk, Summary: c2.Summary, IdempotencyKey: c2.IdempotencyKey}, forgedAt.Add(time.Minute), "boss@example.com"))
	}); err != nil {
		t.Fatal(err)
	}
	// The runtime hands out no credential on it.
	if r := s.Do("GET", "/v1/calls/"+call2, agentToken, nil); r.ErrorCode() != "approval.passkey_required" || strings.Contains(string(r.Body), "credential\":") {
		t.Errorf("the agent asks for the credential of the forged approval: %d %s", r.Status, r.Body)
	}
	size, err := s.Runtime.Store().TreeSize(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var rep *audit.Report
	for deadline := time.Now().Add(15 * time.Second); ; {
		rep, err = audit.Verify(t.Context(), audit.Dir(bucketDir), audit.Options{LogKey: s.LogKey})
		if err != nil {
			t.Fatal(err)
		}
		if rep.Size >= size {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the bucket's checkpoint stays at %d entries, the log has %d", rep.Size, size)
		}
		time.Sleep(50 * time.Millisecond)
	}
	var kinds []string
	for _, p := range rep.Problems {
		kinds = append(kinds, p.Kind)
	}
	if len(rep.Problems) != 1 || rep.Problems[0].Kind != passkeys.KindUnsigned || rep.Problems[0].Agent != agentID {
		t.Fatalf("audit problems %v, want one %s about the forged approval: %+v", kinds, passkeys.KindUnsigned, rep.Problems)
	}
	if len(rep.Decisions) != 1 || rep.Decisions[0].Signed != 1 || rep.Decisions[0].Unsigned != 1 || !rep.Decisions[0].RequirePasskey {
		t.Errorf("decisions counted: %+v", rep.Decisions)
	}
	cancel()
	<-second
}
