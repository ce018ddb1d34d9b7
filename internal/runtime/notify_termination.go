package runtime

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/arxsec/arx/internal/chat"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/arxsec/arx/internal/store"
	"github.com/arxsec/arx/manifest"
	"github.com/arxsec/arx/record"
)

// Termination notices: the manifest's termination.notify names people
// (emails) and endpoints (https URLs) to tell. Each notice is an outbox item
// written in the terminating transaction, delivered after it commits,
// retried until done, and recorded as termination.notified when delivered.
//
// An https URL receives the notice as JSON. ARX sends no mail itself: a
// notice to an email address goes to the server's configured webhooks
// (--webhook, --slack-webhook), addressed to that person, for the
// organisation's own channels to route; without any webhook it is recorded
// as undeliverable rather than dropped silently.

const noticeKind = "termination.notify"

type noticeJob struct {
	Target  string `json:"target"`
	AgentID string `json:"agent_id"`
	Agent   string `json:"agent"`
	Owner   string `json:"owner"`
	By      string `json:"by"`
	Reason  string `json:"reason"`
	At      string `json:"at"`
	Tokens  int    `json:"revoked_tokens"`
	Creds   int    `json:"revoked_credentials"`
	Appr    int    `json:"cancelled_approvals"`
}

func (r *Runtime) enqueueNotices(tx store.Tx, m *manifest.Manifest, a *store.Agent, by, reason string, res *TerminationResult, now time.Time) error {
	for _, target := range m.Termination.Notify {
		b, err := json.Marshal(noticeJob{Target: target, AgentID: a.ID, Agent: a.Name, Owner: a.Owner, By: by, Reason: reason,
			At: now.UTC().Format(time.RFC3339), Tokens: res.RevokedTokens, Creds: res.RevokedCredentials, Appr: res.CancelledApprovals})
		if err != nil {
			return err
		}
		if err := tx.Enqueue(noticeKind, b, now); err != nil {
			return err
		}
	}
	return nil
}

func (r *Runtime) deliverNotice(ctx context.Context, it *store.OutboxItem) error {
	var j noticeJob
	if err := json.Unmarshal(it.Payload, &j); err != nil {
		return fmt.Errorf("bad notice: %w", err)
	}
	payload := map[string]any{"event": "agent.terminated", "to": j.Target,
		"agent": map[string]any{"id": j.AgentID, "name": j.Agent, "owner": j.Owner},
		"by":    j.By, "reason": j.Reason, "at": j.At, "revoked_tokens": j.Tokens,
		"revoked_credentials": j.Creds, "cancelled_approvals": j.Appr}
	text := fmt.Sprintf(":stop_sign: Agent *%s* was terminated by %s: %s (%d token(s), %d live credential(s) revoked, %d pending approval(s) cancelled). Notice for %s.",
		chat.Escape(j.Agent), chat.Escape(strings.TrimPrefix(j.By, "user:")), chat.Escape(j.Reason), j.Tokens, j.Creds, j.Appr, chat.Escape(j.Target))
	var channel string
	switch {
	case strings.HasPrefix(j.Target, "https://") || strings.HasPrefix(j.Target, "http://"):
		if err := postJSON(ctx, j.Target, payload); err != nil {
			return err
		}
		channel = "webhook"
	case len(r.webhooks) > 0:
		for _, w := range r.webhooks {
			body := any(payload)
			if w.Format == "slack" {
				body = chat.SlackMessage(text)
			}
			if err := postJSON(ctx, w.URL, body); err != nil {
				return err
			}
		}
		channel = "server webhooks"
	default:
		channel = "none: no webhook is configured to route notices to people (arx serve --webhook)"
	}
	return r.store.Update(ctx, func(tx store.Tx) error {
		return tx.Append(record.TerminationNotified(j.AgentID, r.now(), j.Target, channel))
	})
}

func postJSON(ctx context.Context, url string, v any) error {
	b, _ := json.Marshal(v)
	req, err := http.NewRequestWithContext(ctx, "POST", url, bytes.NewReader(b))
	if err != nil {
		return postFailed(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "arx-webhook/1")
	resp, err := webhookClient.Do(req)
	if err != nil {
		return postFailed(err)
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode >= 300 {
		return fmt.Errorf("notice endpoint answered HTTP %d", resp.StatusCode)
	}
	return nil
}

// sendLink sends a person their setup link through the server's webhooks
// (JSON, or a Slack message), at once: a link is a secret, and is never
// kept in the outbox.
func (r *Runtime) sendLink(ctx context.Context, email, url, why string) error {
	if len(r.webhooks) == 0 {
		return errors.New("no webhook is configured")
	}
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	for _, w := range r.webhooks {
		var body any = map[string]any{"event": "user.setup_link", "to": email, "url": url, "reason": why,
			"expires_in": SetupLifetime.String()}
		if w.Format == "slack" {
			body = chat.SlackMessage(fmt.Sprintf(":key: For %s: %s. Set a password within %s: <%s|open the ARX console>",
				chat.Escape(email), chat.Escape(why), SetupLifetime, chat.Escape(url)))
		}
		if err := postJSON(ctx, w.URL, body); err != nil {
			return err
		}
	}
	return nil
}
