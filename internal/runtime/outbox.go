package runtime

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/arxsec/arx/internal/chat"
	"github.com/arxsec/arx/internal/store"
	"golang.org/x/sync/errgroup"
)

// Webhook is an endpoint told about approvals: a generic JSON payload, or a
// Slack-compatible one ({"text": ...}).
type Webhook struct {
	URL    string
	Format string // "json" (default) or "slack"
}

// NotifyChannels names the channels notices go out on ("Slack",
// "webhook"), one per configured webhook; none when no webhook is
// configured, and then nobody is told of anything.
func (r *Runtime) NotifyChannels() []string {
	var out []string
	for _, w := range r.webhooks {
		if w.Format == "slack" {
			out = append(out, "Slack")
		} else {
			out = append(out, "webhook")
		}
	}
	return out
}

// webhookJob is the outbox payload of one delivery. It names the endpoint
// by a hash of its URL: the URL is a secret (a Slack webhook's is its only
// credential) and stays out of the database.
type webhookJob struct {
	Hook    string         `json:"hook,omitempty"`
	URL     string         `json:"url,omitempty"` // jobs queued by earlier versions
	Format  string         `json:"format"`
	Payload map[string]any `json:"payload"`
}

// webhookRef names a webhook without its URL.
func webhookRef(u string) string {
	h := sha256.Sum256([]byte("arx webhook\x00" + u))
	return hex.EncodeToString(h[:16])
}

// webhookURL finds the configured webhook a job names.
func (r *Runtime) webhookURL(j *webhookJob) (string, error) {
	if j.URL != "" {
		return j.URL, nil
	}
	for _, w := range r.webhooks {
		if webhookRef(w.URL) == j.Hook {
			return w.URL, nil
		}
	}
	return "", fmt.Errorf("webhook %s is no longer configured (arx serve --webhook)", j.Hook)
}

// postFailed is a failed delivery without the endpoint's URL, which
// net/http's errors repeat and which may carry a secret.
func postFailed(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	return fmt.Errorf("post: %v", err)
}

// notify enqueues, in the transaction that made the change, a webhook
// delivery to every configured endpoint. Delivery happens after the commit,
// from the outbox, retried with backoff, never on the call path.
func (r *Runtime) notify(tx store.Tx, event string, a *store.Agent, c *store.Call, ap *store.Approval, now time.Time) error {
	if len(r.webhooks) == 0 {
		return nil
	}
	p := map[string]any{
		"event": event, "agent": map[string]any{"id": a.ID, "name": a.Name, "owner": a.Owner},
		"call": map[string]any{"id": c.ID, "connector": c.Connector, "action": c.Action, "risk": c.Risk,
			"declared_risk": c.DeclaredRisk, "summary": c.Summary},
		"approval": map[string]any{"status": ap.Status, "approvers": ap.Approvers, "expires_at": ap.ExpiresAt.UTC(),
			"decided_by": ap.DecidedBy, "reason": ap.Reason},
		"at": now.UTC(),
	}
	if r.publicURL != "" {
		p["url"] = r.publicURL + "/console/approvals/" + c.ID
	}
	return r.enqueueWebhooks(tx, p, now)
}

// enqueueWebhooks queues, in the transaction, the delivery of payload p to
// every configured webhook.
func (r *Runtime) enqueueWebhooks(tx store.Tx, p map[string]any, now time.Time) error {
	for _, w := range r.webhooks {
		b, err := json.Marshal(webhookJob{Hook: webhookRef(w.URL), Format: w.Format, Payload: p})
		if err != nil {
			return err
		}
		if err := tx.Enqueue("webhook", b, now); err != nil {
			return err
		}
	}
	return nil
}

func (r *Runtime) kickOutbox() {
	select {
	case r.outboxKick <- struct{}{}:
	default:
	}
}

// MaxOutboxAttempts bounds retries of one delivery (about a day with the
// backoff below); the item then stays in the outbox, marked failed.
const MaxOutboxAttempts = 150

var webhookClient = &http.Client{Timeout: 5 * time.Second,
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

// Outbox sizes.
const (
	// outboxBatch is how many due items one read takes.
	outboxBatch = 50
	// dropWorkers bounds the roles one replica drops at once. Concurrent
	// drops share transactions in the connector (the postgres connector
	// group-commits them) and commits in the store.
	dropWorkers = 16
)

// runOutbox delivers due outbox items until ctx ends. A full batch is
// followed by the next at once, so that a backlog (the drops of a
// termination, of a burst of calls) drains at the speed of delivery, not
// one batch a tick.
func (r *Runtime) runOutbox(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-r.outboxKick:
		}
		for ctx.Err() == nil {
			items, err := r.store.DueOutbox(ctx, r.now(), outboxBatch)
			if err != nil {
				if ctx.Err() == nil {
					r.log.Warn("outbox", "err", err)
				}
				break
			}
			r.deliverBatch(ctx, items)
			if len(items) < outboxBatch {
				break
			}
		}
	}
}

// deliverBatch delivers one batch and returns when every item of it is
// finished, so that the next read does not list an item again while it is
// being delivered. Drops run concurrently (dropWorkers); other items, in
// order, one at a time, as a webhook's receiver expects them.
func (r *Runtime) deliverBatch(ctx context.Context, items []store.OutboxItem) {
	var drops []*store.OutboxItem
	for i := range items {
		if items[i].Kind == dropKind {
			drops = append(drops, &items[i])
		}
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		bounded(dropWorkers, len(drops), func(i int) { r.deliverDropItem(ctx, drops[i]) })
	})
	for i := range items {
		if it := &items[i]; it.Kind != dropKind {
			r.finishOutbox(ctx, it, r.deliver(ctx, it))
		}
	}
	wg.Wait()
}

// bounded calls fn(0) .. fn(n-1), at most workers at a time, and returns
// when all have returned.
func bounded(workers, n int, fn func(int)) {
	var g errgroup.Group
	g.SetLimit(workers)
	for i := range n {
		g.Go(func() error { fn(i); return nil })
	}
	g.Wait()
}

// finishOutbox records a delivery attempt: done, or retried with backoff.
func (r *Runtime) finishOutbox(ctx context.Context, it *store.OutboxItem, err error) {
	now := r.now()
	msg := ""
	next := now
	if err != nil {
		msg = err.Error()
		backoff := time.Duration(1<<min(it.Attempts, 9)) * time.Second // 1s .. ~8.5min
		next = now.Add(backoff)
		if it.Attempts+1 >= MaxOutboxAttempts {
			msg = "gave up: " + msg
			next = now.Add(100 * 365 * 24 * time.Hour)
		}
		r.log.Warn("outbox delivery failed", "kind", it.Kind, "id", it.ID, "attempt", it.Attempts+1, "err", err)
	}
	if err := r.store.Update(ctx, func(tx store.Tx) error { return tx.FinishOutbox(it.ID, now, msg, next) }); err != nil && ctx.Err() == nil {
		r.log.Warn("outbox", "err", err)
	}
}

// deliver delivers one item other than a drop (deliverBatch drops).
func (r *Runtime) deliver(ctx context.Context, it *store.OutboxItem) error {
	switch it.Kind {
	case noticeKind: // notify_termination.go
		return r.deliverNotice(ctx, it)
	case "webhook":
		var j webhookJob
		if err := json.Unmarshal(it.Payload, &j); err != nil {
			return fmt.Errorf("bad webhook job: %w", err)
		}
		body := j.Payload
		if j.Format == "slack" {
			text := slackText(j.Payload)
			body = chat.SlackMessage(text)
			call, _ := j.Payload["call"].(map[string]any)
			if id, _ := call["id"].(string); r.slackButtons && j.Payload["event"] == "approval.requested" && id != "" {
				body["blocks"] = chat.ApprovalBlocks(text, id)
			}
		}
		u, err := r.webhookURL(&j)
		if err != nil {
			return err
		}
		b, _ := json.Marshal(body)
		req, err := http.NewRequestWithContext(ctx, "POST", u, bytes.NewReader(b))
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
			return fmt.Errorf("webhook answered HTTP %d", resp.StatusCode)
		}
		return nil
	}
	return fmt.Errorf("unknown outbox kind %q", it.Kind)
}

// slackText is a Slack message (mrkdwn) about an approval. Every value in
// it is someone else's text (an agent's summary, a manager's reason):
// chat.Escape keeps it from mentioning a channel or a person, making a
// link that shows one address and opens another, or posing as lines of
// its own.
func slackText(p map[string]any) string {
	agent, _ := p["agent"].(map[string]any)
	call, _ := p["call"].(map[string]any)
	ap, _ := p["approval"].(map[string]any)
	v := func(m map[string]any, k string) string {
		if f, ok := m[k].(float64); ok && f == math.Trunc(f) && math.Abs(f) < 1<<53 {
			return strconv.FormatInt(int64(f), 10) // a count, after the payload's JSON round trip
		}
		return chat.Escape(fmt.Sprint(m[k]))
	}
	var s string
	switch p["event"] {
	case "budget.threshold_reached":
		b, _ := p["budget"].(map[string]any)
		s = fmt.Sprintf(":money_with_wings: *%s* (owner %s) has used %s of its daily %s cap of %s (%s%%) on %s", v(agent, "name"), v(agent, "owner"),
			v(b, "used_today"), v(b, "budget"), v(b, "limit"), v(b, "notify_at"), v(b, "day"))
	case "approval.requested":
		s = fmt.Sprintf(":raised_hand: *%s* asks to run *%s %s* (%s risk): %s", v(agent, "name"), v(call, "connector"), v(call, "action"),
			v(call, "risk"), v(call, "summary"))
	default:
		s = fmt.Sprintf(":memo: The request of *%s* to run *%s %s* was *%s* by %s. %s", v(agent, "name"), v(call, "connector"),
			v(call, "action"), v(ap, "status"), v(ap, "decided_by"), v(ap, "reason"))
	}
	if u, ok := p["url"].(string); ok {
		s += "\n<" + chat.Escape(u) + "|Open in the ARX console>"
	}
	return s
}
