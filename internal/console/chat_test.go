package console_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/arxsec/arx/internal/arxtest"
	"github.com/arxsec/arx/internal/chat"
	"github.com/arxsec/arx/internal/runtime"
	"github.com/arxsec/arx/internal/server"
	"github.com/chromedp/chromedp"
)

// slackStandIn stands in for Slack: the incoming webhook approval
// messages go to, the response URLs of interactions, and views.open.
type slackStandIn struct {
	*httptest.Server
	mu       sync.Mutex
	posted   []map[string]any // to the incoming webhook
	answers  []map[string]any // to response URLs
	views    []map[string]any // views.open bodies
	badToken int
}

func newSlackStandIn(t *testing.T) *slackStandIn {
	s := &slackStandIn{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var m map[string]any
		b, _ := io.ReadAll(r.Body)
		json.Unmarshal(b, &m)
		s.mu.Lock()
		defer s.mu.Unlock()
		switch {
		case r.URL.Path == "/webhook":
			s.posted = append(s.posted, m)
		case strings.HasPrefix(r.URL.Path, "/hooks/"):
			s.answers = append(s.answers, m)
		case r.URL.Path == "/api/users.info":
			email := map[string]string{"U1": "boss@example.com", "U9": "mallory@example.com"}[r.URL.Query().Get("user")]
			if r.Header.Get("Authorization") != "Bearer xoxb-test" || email == "" {
				w.Write([]byte(`{"ok":false,"error":"user_not_found"}`))
				return
			}
			json.NewEncoder(w).Encode(map[string]any{"ok": true, "user": map[string]any{"profile": map[string]any{"email": email}}})
			return
		case r.URL.Path == "/api/views.open":
			if r.Header.Get("Authorization") != "Bearer xoxb-test" {
				s.badToken++
				w.Write([]byte(`{"ok":false,"error":"invalid_auth"}`))
				return
			}
			s.views = append(s.views, m)
			w.Write([]byte(`{"ok":true}`))
			return
		}
		w.Write([]byte("ok"))
	}))
	t.Cleanup(s.Close)
	return s
}

// wait returns the nth message of list (under the lock) once it is there.
func (s *slackStandIn) wait(t *testing.T, what string, list *[]map[string]any, n int) map[string]any {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		s.mu.Lock()
		if len(*list) > n {
			m := (*list)[n]
			s.mu.Unlock()
			return m
		}
		s.mu.Unlock()
	}
	t.Fatalf("no %s #%d", what, n+1)
	return nil
}

const slackSecret = "8f742231b10e8888abcd99yyyzzz85a5"

// click sends a Slack interaction, signed as Slack signs.
func click(t *testing.T, s *arxtest.Server, payload map[string]any, secret string, at time.Time) *http.Response {
	t.Helper()
	p, _ := json.Marshal(payload)
	body := "payload=" + url.QueryEscape(string(p))
	ts := strconv.FormatInt(at.Unix(), 10)
	req, _ := http.NewRequest("POST", s.URL+"/v1/slack/interactions", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("X-Slack-Request-Timestamp", ts)
	req.Header.Set("X-Slack-Signature", chat.Sign(chat.SlackVersion, []byte(secret), ts, []byte(body)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp
}

func button(slack *slackStandIn, user, action, call, hook string) map[string]any {
	return map[string]any{"type": "block_actions", "user": map[string]any{"id": user, "username": "dana", "team_id": "T1"},
		"trigger_id": "trigger-" + hook, "response_url": slack.URL + "/hooks/" + hook,
		"actions": []any{map[string]any{"action_id": action, "value": call}}}
}

var linkURL = regexp.MustCompile(`<(http[^|>]+/console/link\?code=[^|>]+)\|`)

// TestSlackApprovals: approval messages in Slack carry Approve and Deny;
// an unlinked account is sent a link, which its owner confirms in the
// console; then Approve decides as that person (the record names the
// Slack account), Deny asks for a reason in a modal, and the message is
// updated. Forged or replayed interactions are refused.
func TestSlackApprovals(t *testing.T) {
	slack := newSlackStandIn(t)
	s := arxtest.StartWith(t, t.TempDir(), func(c *server.Config) {
		c.Webhooks = []runtime.Webhook{{URL: slack.URL + "/webhook", Format: "slack"}}
		c.Slack = server.SlackConfig{SigningSecret: []byte(slackSecret), BotToken: "xoxb-test", API: slack.URL + "/api", Hooks: slack.URL + "/hooks/"}
	})
	_, token := s.Hire(testManifest)
	addManager(t, s, "boss@example.com")
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	c := sdk(t, s, token)
	first := requestHighRisk(t, ctx, s, c, "delete account 0042 <!channel>")
	call := pendingCall(t, s, "delete account 0042 <!channel>")

	// The message: escaped text, and the buttons for this call.
	msg := slack.wait(t, "approval message", &slack.posted, 0)
	b, _ := json.Marshal(msg)
	if !strings.Contains(msg["text"].(string), "&lt;!channel&gt;") || !strings.Contains(string(b), `"action_id":"arx.approve"`) ||
		!strings.Contains(string(b), `"value":"`+call+`"`) {
		t.Fatalf("approval message: %s", b)
	}
	// Slack makes no link of a URL or channel name in the agent's text, and
	// fetches no preview of one.
	if msg["unfurl_links"] != false || msg["unfurl_media"] != false || !strings.Contains(string(b), `"verbatim":true`) {
		t.Errorf("approval message without verbatim text or with previews: %s", b)
	}

	// Forged, replayed and unsigned clicks are refused.
	if r := click(t, s, button(slack, "U1", chat.ActionApprove, call, "x"), "not the secret", time.Now()); r.StatusCode != http.StatusUnauthorized {
		t.Errorf("forged click: %d", r.StatusCode)
	}
	if r := click(t, s, button(slack, "U1", chat.ActionApprove, call, "x"), slackSecret, time.Now().Add(-6*time.Minute)); r.StatusCode != http.StatusUnauthorized {
		t.Errorf("replayed click: %d", r.StatusCode)
	}

	// Not linked yet: the clicker gets a link, only they see.
	if r := click(t, s, button(slack, "U1", chat.ActionApprove, call, "a1"), slackSecret, time.Now()); r.StatusCode != http.StatusOK {
		t.Fatalf("click: %d", r.StatusCode)
	}
	ans := slack.wait(t, "answer", &slack.answers, 0)
	m := linkURL.FindStringSubmatch(ans["text"].(string))
	if ans["response_type"] != "ephemeral" || m == nil {
		t.Fatalf("answer to an unlinked account: %v", ans)
	}
	if approvalStatus(t, s, call) != "pending" {
		t.Fatal("an unlinked account decided")
	}
	// Another Slack account's link, forwarded to boss, does not link:
	// Slack says the account is someone else's.
	click(t, s, button(slack, "U9", chat.ActionApprove, call, "m1"), slackSecret, time.Now())
	ans9 := slack.wait(t, "answer", &slack.answers, 1)
	m9 := linkURL.FindStringSubmatch(ans9["text"].(string))
	b2 := newBrowser(t, s)
	b2.mustLogin("boss@example.com")
	p9 := b2.get(strings.ReplaceAll(strings.TrimPrefix(m9[1], s.URL), "&amp;", "&"))
	code9 := regexp.MustCompile(`name="code" value="([^"]+)"`).FindStringSubmatch(p9.Body)[1]
	if p := b2.post("/console/link", url.Values{"csrf": {p9.csrf(t)}, "code": {code9}}); p.Status != http.StatusBadRequest ||
		!strings.Contains(p.Body, "only your own Slack account") {
		t.Fatalf("linking another person's Slack account: %d\n%s", p.Status, p.Body)
	}
	// Its owner opens the link signed in, sees the account, confirms.
	link := strings.TrimPrefix(m[1], s.URL)
	p := b2.get(strings.ReplaceAll(link, "&amp;", "&"))
	if p.Status != http.StatusOK || !strings.Contains(p.Body, "T1/U1") || !strings.Contains(p.Body, "boss@example.com") {
		t.Fatalf("link page: %d\n%s", p.Status, p.Body)
	}
	code := regexp.MustCompile(`name="code" value="([^"]+)"`).FindStringSubmatch(p.Body)[1]
	if p := b2.post("/console/link", url.Values{"csrf": {p.csrf(t)}, "code": {code}}); p.Status != http.StatusSeeOther {
		t.Fatalf("confirm: %d %s", p.Status, p.Body)
	}
	if p := b2.get("/console/passkeys"); !strings.Contains(p.Body, "Chat accounts") || !strings.Contains(p.Body, "T1/U1") {
		t.Errorf("passkeys page lacks the chat account:\n%s", p.Body)
	}

	// Approve: decided as boss, the message updated, the work done.
	click(t, s, button(slack, "U1", chat.ActionApprove, call, "a2"), slackSecret, time.Now())
	ans = slack.wait(t, "answer", &slack.answers, 2)
	if ans["replace_original"] != true || !strings.Contains(ans["text"].(string), "boss@example.com approved") {
		t.Errorf("answer after approving: %v", ans)
	}
	if o := <-first; !o.ran || o.err != nil {
		t.Fatalf("the approved call: %+v", o)
	}
	rec := string(s.Do("GET", "/v1/agents/"+agentOf(t, s)+"/record", s.AdminToken, nil).Body)
	if !strings.Contains(rec, `"via":{"provider":"slack","subject":"T1/U1"}`) {
		t.Errorf("record lacks the Slack account: %s", rec)
	}

	// Deny: a modal asks why; no reason, no denial.
	second := requestHighRisk(t, ctx, s, c, "delete account 0043")
	call2 := pendingCall(t, s, "delete account 0043")
	click(t, s, button(slack, "U1", chat.ActionDeny, call2, "d1"), slackSecret, time.Now())
	view := slack.wait(t, "views.open", &slack.views, 0)
	v, _ := view["view"].(map[string]any)
	if view["trigger_id"] != "trigger-d1" || v["callback_id"] != chat.CallbackDeny {
		t.Fatalf("views.open: %v", view)
	}
	submit := func(reason string) *http.Response {
		return click(t, s, map[string]any{"type": "view_submission", "user": map[string]any{"id": "U1", "username": "dana", "team_id": "T1"},
			"view": map[string]any{"callback_id": chat.CallbackDeny, "private_metadata": v["private_metadata"],
				"state": map[string]any{"values": map[string]any{"reason": map[string]any{"reason": map[string]any{"value": reason}}}}}}, slackSecret, time.Now())
	}
	submit("  ")
	if approvalStatus(t, s, call2) != "pending" {
		t.Fatal("denied without a reason")
	}
	submit("not before the audit")
	ans = slack.wait(t, "answer", &slack.answers, 3)
	if !strings.Contains(ans["text"].(string), "boss@example.com denied") || !strings.Contains(ans["text"].(string), "not before the audit") {
		t.Errorf("answer after denying: %v", ans)
	}
	if o := <-second; o.ran || o.err == nil {
		t.Fatalf("the denied call ran: %+v", o)
	}
	if st := approvalStatus(t, s, call2); st != "denied" {
		t.Errorf("after the modal: %s", st)
	}
}

func agentOf(t *testing.T, s *arxtest.Server) string {
	var out struct {
		Agents []struct {
			ID string `json:"id"`
		} `json:"agents"`
	}
	s.Do("GET", "/v1/agents", s.AdminToken, nil).JSON(t, &out)
	return out.Agents[0].ID
}

// TestBrowserChatLink: the page that links a chat account, in Chromium.
func TestBrowserChatLink(t *testing.T) {
	browser := startChromium(t)
	s := arxtest.Start(t)
	addManager(t, s, "boss@example.com")
	code, err := s.Runtime.ChatLinkCode(t.Context(), runtime.ChatAccount{Provider: "teams", Subject: "29:1a2b3c4d", Name: "Dana B."})
	if err != nil {
		t.Fatal(err)
	}
	boss := newTab(t, browser, s)
	boss.login("boss@example.com")
	boss.do("open the link", chromedp.Navigate(s.URL+"/console/link?code="+url.QueryEscape(code)), chromedp.WaitVisible(chromedp.CSS("#link-h")))
	boss.screenshot("chat-link")
	boss.do("confirm", chromedp.Click(chromedp.CSS(`form[action="/console/link"] button`)), chromedp.WaitVisible(chromedp.CSS("#chats-h")))
	if got := boss.text("#done"); !strings.Contains(got, "Your chat account is linked") {
		t.Errorf("after linking: %q", got)
	}
	boss.screenshot("passkeys-chat")
}
