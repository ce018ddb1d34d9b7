package api_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/arxsec/arx/internal/arxtest"
	"github.com/arxsec/arx/internal/chat"
	"github.com/arxsec/arx/internal/runtime"
	"github.com/arxsec/arx/internal/server"
	"github.com/arxsec/arx/internal/store"
)

// TestChatWebhook: the generic signed webhook decides as the person the
// chat account is linked to, once linked; unsigned, stale and Slack-named
// requests are refused; a denial needs a reason.
func TestChatWebhook(t *testing.T) {
	secret := []byte("a chat integration's secret")
	s := arxtest.StartWith(t, t.TempDir(), func(c *server.Config) { c.ChatSecret = secret })
	_, token := s.Hire(arxtest.Manifest)
	personToken(t, s, "boss@example.com")
	send := func(body map[string]any, key []byte, at time.Time) *arxtest.Response {
		t.Helper()
		b, _ := json.Marshal(body)
		ts := strconv.FormatInt(at.Unix(), 10)
		req, _ := http.NewRequest("POST", s.URL+"/v1/chat/interactions", bytes.NewReader(b))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-ARX-Request-Timestamp", ts)
		req.Header.Set("X-ARX-Signature", chat.Sign(chat.GenericVersion, key, ts, b))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var buf bytes.Buffer
		buf.ReadFrom(resp.Body)
		return &arxtest.Response{Status: resp.StatusCode, Body: buf.Bytes()}
	}
	r := request(s, token, "crm", "account.delete", "high", "h1")
	var c callJSON
	r.JSON(t, &c)
	decision := map[string]any{"provider": "teams", "subject": "29:boss", "name": "Boss", "call": c.ID, "decision": "approve"}

	if r := send(decision, []byte("wrong"), time.Now()); r.ErrorCode() != "chat.signature_invalid" {
		t.Errorf("wrong secret: %d %s", r.Status, r.Body)
	}
	if r := send(decision, secret, time.Now().Add(-10*time.Minute)); r.ErrorCode() != "chat.signature_invalid" {
		t.Errorf("stale: %d %s", r.Status, r.Body)
	}
	slack := map[string]any{"provider": "slack", "subject": "T1/U1", "call": c.ID, "decision": "approve"}
	if r := send(slack, secret, time.Now()); r.Status != http.StatusBadRequest {
		t.Errorf("provider slack on the generic webhook: %d %s", r.Status, r.Body)
	}
	// Unlinked: refused, with the link its owner opens.
	r = send(decision, secret, time.Now())
	var refused struct {
		Error struct {
			Code string `json:"code"`
		} `json:"error"`
		LinkURL string `json:"link_url"`
	}
	json.Unmarshal(r.Body, &refused)
	if r.Status != http.StatusForbidden || refused.Error.Code != "chat.not_linked" || !strings.Contains(refused.LinkURL, "/console/link?code=") {
		t.Fatalf("unlinked: %d %s", r.Status, r.Body)
	}
	u, _ := url.Parse(refused.LinkURL)
	boss, err := s.Runtime.Store().UserByEmail(t.Context(), "boss@example.com")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Runtime.LinkChat(t.Context(), &runtime.Principal{Kind: store.TokenUser, User: boss}, u.Query().Get("code")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Runtime.LinkChat(t.Context(), &runtime.Principal{Kind: store.TokenUser, User: boss}, u.Query().Get("code")+"x"); err == nil {
		t.Error("a tampered link code linked")
	}
	// Linked: decided.
	deny := map[string]any{"provider": "teams", "subject": "29:boss", "call": c.ID, "decision": "deny"}
	if r := send(deny, secret, time.Now()); r.Status != http.StatusBadRequest || !strings.Contains(string(r.Body), "reason") {
		t.Errorf("deny without a reason: %d %s", r.Status, r.Body)
	}
	r = send(decision, secret, time.Now())
	if r.Status != http.StatusOK || !strings.Contains(string(r.Body), `"decided_by":"boss@example.com"`) || !strings.Contains(string(r.Body), `"status":"granted"`) {
		t.Fatalf("linked: %d %s", r.Status, r.Body)
	}
	if r := send(decision, secret, time.Now()); r.ErrorCode() != "approval.already_decided" {
		t.Errorf("a second time: %d %s", r.Status, r.Body)
	}
	// Not configured: Slack's route says so.
	req, _ := http.NewRequest("POST", s.URL+"/v1/slack/interactions", strings.NewReader("payload={}"))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("Slack interactions without a secret: %d", resp.StatusCode)
	}
}
