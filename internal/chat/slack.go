package chat

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/arxsec/arx/internal/inert"
)

// Slack's block action and view ids ARX uses.
const (
	ActionApprove = "arx.approve" // button: value is the call id
	ActionDeny    = "arx.deny"    // button: opens the reason modal
	CallbackDeny  = "arx.deny"    // the reason modal's callback id
	reasonBlock   = "reason"
)

// Defaults of Client.
const (
	DefaultSlackAPI   = "https://slack.com/api"
	DefaultSlackHooks = "https://hooks.slack.com/"
)

// Interaction is what Slack sends to the app's interactivity URL, in the
// form field "payload": a button clicked (block_actions) or a modal
// submitted (view_submission).
type Interaction struct {
	Type string `json:"type"`
	User struct {
		ID       string `json:"id"`
		Username string `json:"username"`
		Name     string `json:"name"`
		TeamID   string `json:"team_id"`
	} `json:"user"`
	Team struct {
		ID string `json:"id"`
	} `json:"team"`
	TriggerID   string `json:"trigger_id"`
	ResponseURL string `json:"response_url"`
	Actions     []struct {
		ActionID string `json:"action_id"`
		Value    string `json:"value"`
	} `json:"actions"`
	View *struct {
		CallbackID      string `json:"callback_id"`
		PrivateMetadata string `json:"private_metadata"`
		State           struct {
			Values map[string]map[string]struct {
				Value string `json:"value"`
			} `json:"values"`
		} `json:"state"`
	} `json:"view"`
}

// ParseInteraction reads an interaction from its form-encoded body.
func ParseInteraction(body []byte) (*Interaction, error) {
	form, err := url.ParseQuery(string(body))
	if err != nil {
		return nil, errors.New("the body is not form-encoded")
	}
	var in Interaction
	if err := json.Unmarshal([]byte(form.Get("payload")), &in); err != nil {
		return nil, errors.New("the payload is not an interaction")
	}
	return &in, nil
}

// Subject is the clicking account's stable id: team/user.
func (in *Interaction) Subject() string {
	team := in.User.TeamID
	if team == "" {
		team = in.Team.ID
	}
	return team + "/" + in.User.ID
}

// Reason is what the reason modal's field holds.
func (in *Interaction) Reason() string {
	if in.View == nil {
		return ""
	}
	return in.View.State.Values[reasonBlock][reasonBlock].Value
}

// DenyMetadata is what the reason modal carries back (private_metadata).
type DenyMetadata struct {
	Call        string `json:"call"`
	ResponseURL string `json:"response_url"`
}

// SlackMessage is a message for a Slack webhook: text (mrkdwn, every value
// in it already escaped) as a verbatim section, so that Slack makes no link
// of a URL or a channel name in it (the top-level text, which a plain
// message would be, is auto-linked; it stays as the notification's
// fallback), and with no previews: Slack fetches nothing a summary names.
// Links ARX writes (<url|label>) work either way.
func SlackMessage(text string) map[string]any {
	return map[string]any{"text": text, "blocks": sections(text), "unfurl_links": false, "unfurl_media": false}
}

// sections is text as verbatim mrkdwn sections: as many as it takes (a
// section holds 3,000 characters; a message 50 blocks), so that a long
// notice is shown whole.
func sections(text string) []any {
	const most = 2900 // bytes, under Slack's 3,000 characters
	var out []any
	for len(out) < 48 {
		n := len(text)
		if n > most {
			n = most
			for n > 0 && !utf8Start(text[n]) {
				n--
			}
		}
		out = append(out, map[string]any{"type": "section", "text": map[string]any{"type": "mrkdwn", "text": text[:n], "verbatim": true}})
		text = text[n:]
		if text == "" {
			break
		}
	}
	return out
}

// ApprovalBlocks is an approval request as Block Kit: the text (mrkdwn,
// already escaped, verbatim) and Approve and Deny buttons for the call.
func ApprovalBlocks(text, call string) []any {
	button := func(label, id, style string) map[string]any {
		return map[string]any{"type": "button", "text": map[string]any{"type": "plain_text", "text": label},
			"action_id": id, "value": call, "style": style}
	}
	return append(sections(text),
		map[string]any{"type": "actions", "block_id": "arx.decide", "elements": []any{
			button("Approve", ActionApprove, "primary"), button("Deny", ActionDeny, "danger")}})
}

// Message is what ARX answers through a response_url.
type Message struct {
	Text            string `json:"text"`
	ResponseType    string `json:"response_type,omitempty"` // "ephemeral": only the clicker sees it
	ReplaceOriginal bool   `json:"replace_original"`
}

// Client makes ARX's calls to Slack.
type Client struct {
	HTTP *http.Client
	// API is the Web API's base URL (DefaultSlackAPI); Hooks the prefix
	// every response_url must have (DefaultSlackHooks): ARX posts to no
	// other address an interaction names.
	API, Hooks string
	// BotToken authorises views.open and users.info; "" when the app has
	// none, and then a denial is made in the console instead and no Slack
	// account can be linked.
	BotToken string
	// Teams are the Slack workspaces (team ids) whose interactions count;
	// none: any the signing secret signs for.
	Teams []string
}

// TeamAllowed says whether an interaction from team counts.
func (c *Client) TeamAllowed(team string) bool {
	if len(c.Teams) == 0 {
		return true
	}
	for _, t := range c.Teams {
		if t == team {
			return true
		}
	}
	return false
}

func (c *Client) http() *http.Client {
	if c.HTTP != nil {
		return c.HTTP
	}
	return &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// Respond posts a message to an interaction's response_url, which must be
// under Hooks: same scheme and host, and under its path.
func (c *Client) Respond(ctx context.Context, responseURL string, m Message) error {
	hooks := c.Hooks
	if hooks == "" {
		hooks = DefaultSlackHooks
	}
	if !under(responseURL, hooks) {
		return fmt.Errorf("chat: the response URL is not under %s", hooks)
	}
	_, err := c.post(ctx, responseURL, "", m)
	return err
}

func under(target, base string) bool {
	t, err1 := url.Parse(target)
	b, err2 := url.Parse(base)
	if err1 != nil || err2 != nil || t.User != nil || t.Scheme != b.Scheme || t.Host != b.Host {
		return false
	}
	return strings.HasPrefix(t.Path, strings.TrimSuffix(b.Path, "/")+"/")
}

// VerifyEmail checks that the Slack account subject ("team/user") has the
// email address email, as Slack's users.info says (the bot token needs
// users:read and users:read.email): an account is linked to a person only
// when Slack says it is theirs.
func (c *Client) VerifyEmail(ctx context.Context, subject, email string) error {
	if c.BotToken == "" {
		return errors.New("linking a Slack account needs the app's bot token (arx serve --slack-bot-token-file, scopes users:read and users:read.email), to check the account's email")
	}
	_, user, ok := strings.Cut(subject, "/")
	if !ok || user == "" {
		return errors.New("the Slack account id names no user")
	}
	api := c.API
	if api == "" {
		api = DefaultSlackAPI
	}
	b, err := c.post(ctx, strings.TrimSuffix(api, "/")+"/users.info?user="+url.QueryEscape(user), c.BotToken, map[string]any{})
	if err != nil {
		return err
	}
	var ans struct {
		OK   bool   `json:"ok"`
		Err  string `json:"error"`
		User struct {
			Deleted bool `json:"deleted"`
			Profile struct {
				Email string `json:"email"`
			} `json:"profile"`
		} `json:"user"`
	}
	if json.Unmarshal(b, &ans) != nil || !ans.OK {
		return fmt.Errorf("Slack's users.info: %s", clip(ans.Err, 100))
	}
	if ans.User.Deleted || !strings.EqualFold(ans.User.Profile.Email, email) {
		return fmt.Errorf("Slack says this account's email is not %s: only your own Slack account can be linked to you", email)
	}
	return nil
}

// OpenDenyModal opens the modal asking the clicker why they deny the call.
func (c *Client) OpenDenyModal(ctx context.Context, triggerID string, meta DenyMetadata, shown string) error {
	if c.BotToken == "" {
		return errors.New("chat: no bot token to open a modal with")
	}
	md, _ := json.Marshal(meta)
	view := map[string]any{
		"type": "modal", "callback_id": CallbackDeny, "private_metadata": string(md),
		"title":  map[string]any{"type": "plain_text", "text": "Deny the request"},
		"submit": map[string]any{"type": "plain_text", "text": "Deny"},
		"close":  map[string]any{"type": "plain_text", "text": "Cancel"},
		"blocks": []any{
			map[string]any{"type": "section", "text": map[string]any{"type": "plain_text", "text": clip(shown, 2900)}},
			map[string]any{"type": "input", "block_id": reasonBlock, "label": map[string]any{"type": "plain_text", "text": "Why? It goes into the agent's record."},
				"element": map[string]any{"type": "plain_text_input", "action_id": reasonBlock, "multiline": true, "max_length": 1024}},
		},
	}
	api := c.API
	if api == "" {
		api = DefaultSlackAPI
	}
	b, err := c.post(ctx, strings.TrimSuffix(api, "/")+"/views.open", c.BotToken, map[string]any{"trigger_id": triggerID, "view": view})
	if err != nil {
		return err
	}
	var ans struct {
		OK    bool   `json:"ok"`
		Error string `json:"error"`
	}
	if json.Unmarshal(b, &ans) != nil || !ans.OK {
		return fmt.Errorf("chat: views.open: %s", clip(ans.Error, 100))
	}
	return nil
}

func (c *Client) post(ctx context.Context, u, token string, v any) ([]byte, error) {
	body, _ := json.Marshal(v)
	req, err := http.NewRequestWithContext(ctx, "POST", u, bytes.NewReader(body))
	if err != nil {
		return nil, errors.New("chat: bad URL")
	}
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.http().Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // without the URL, which carries a secret
		}
		return nil, fmt.Errorf("chat: post: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode >= 300 {
		return nil, fmt.Errorf("chat: Slack answered HTTP %d", resp.StatusCode)
	}
	return b, nil
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8Start(s[n]) {
		n--
	}
	return s[:n] + "…"
}

func utf8Start(b byte) bool { return b&0xC0 != 0x80 }

// Escape renders text inert in a Slack message: the three characters
// Slack's mrkdwn gives meaning (& < >) as the entities Slack asks for, so
// that <!channel>, <@U123> and <https://a|b> stay text, and controls, line
// breaks and bidi overrides escaped visibly (inert.Text). Emphasis marks
// (* _ ~ `) have no escape in mrkdwn and may still change how text looks,
// never where a link goes or whom a message notifies.
func Escape(s string) string { return entities.Replace(inert.Text(s)) }

var entities = strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;")
