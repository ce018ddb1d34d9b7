package mcpgw

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/arxsec/arx/agentvault"
	"github.com/arxsec/arx/arxerr"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// Call statuses and outcomes of the agent API (docs/api.md).
const (
	statusPending  = "pending_approval"
	statusApproved = "approved"

	outcomeSuccess   = "success"
	outcomeError     = "error"
	outcomeCancelled = "cancelled"
)

// completeTimeout bounds closing a call, also after its request ended.
const completeTimeout = 10 * time.Second

// outcome is how a governed call ended, as the record says it.
type outcome struct {
	kind string // outcomeSuccess, outcomeError, outcomeCancelled
	msg  string // short, never a secret or an argument
}

// governed makes one governed call with the Go SDK: it asks ARX for the
// call; when the call needs a named approver, it waits for the decision and
// tells the agent through sink meanwhile; then it runs fn with the call's
// credential, under the credential's deadline, and completes the call with
// fn's outcome. It returns the call's id and, when fn did not run, why (an
// *agentvault.Error for ARX's refusals and decisions); when fn ran, the
// error of completing the call, if any.
//
// It uses the SDK's steps (Request, Wait, Complete) rather than
// agentvault.Do, because the agent must hear about the wait while it lasts.
func (g *Gateway) governed(ctx context.Context, sink *progressSink, a agentvault.Action, fn func(context.Context, agentvault.Credential) outcome) (string, error) {
	call, err := g.arx.Request(ctx, a)
	if err != nil {
		if ends(err) {
			go g.end(err)
		}
		return "", err
	}
	if call.Status == statusPending {
		start := time.Now()
		stop := g.tellWaiting(ctx, sink, call.ID, start)
		decided, err := g.arx.Wait(ctx, call.ID)
		stop()
		if err != nil {
			if decided == nil && ctx.Err() != nil {
				// Withdraw: no approver should decide on work nobody waits for.
				g.complete(ctx, call.ID, outcome{outcomeCancelled, "cancelled while waiting for approval"}, time.Since(start))
				return call.ID, fmt.Errorf("arx: call %s: %w", call.ID, context.Cause(ctx))
			}
			if ends(err) {
				go g.end(err)
			}
			return call.ID, err
		}
		call = decided
	}
	if call.Status != statusApproved || call.Credential == nil {
		return call.ID, &agentvault.Error{Code: arxerr.Internal, CallID: call.ID,
			Message: fmt.Sprintf("call %s is %s, without a credential", call.ID, call.Status)}
	}
	cred := *call.Credential
	fctx, cancel := context.WithDeadline(ctx, cred.ExpiresAt)
	start := time.Now()
	o := fn(fctx, cred)
	cancel()
	return call.ID, g.complete(ctx, call.ID, o, time.Since(start))
}

// complete closes a call, detached from ctx's cancellation so that the
// record gets the outcome even after the agent went away.
func (g *Gateway) complete(ctx context.Context, callID string, o outcome, d time.Duration) error {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), completeTimeout)
	defer cancel()
	_, err := g.arx.Complete(cctx, callID, agentvault.Outcome{Outcome: o.kind, Error: o.msg, Duration: d})
	if err != nil {
		g.log.Warn("completing a call failed; the record may lack its completion", "call", callID, "outcome", o.kind, "err", err.Error())
	}
	return err
}

// tellWaiting sends the agent a progress notification at once and then
// every ProgressInterval until stop is called.
func (g *Gateway) tellWaiting(ctx context.Context, sink *progressSink, callID string, start time.Time) (stop func()) {
	if !sink.enabled() {
		return func() {}
	}
	who := strings.Join(append(append([]string{}, g.manifest.Approval.Approvers...), g.manifest.Approval.Delegates...), ", ")
	msg := fmt.Sprintf("arx: waiting for a named approver (%s) to decide on call %s", who, callID)
	total := g.manifest.Approval.Timeout.Seconds()
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(g.cfg.ProgressInterval)
		defer t.Stop()
		for {
			sink.send(max(time.Since(start).Seconds(), 0.001), total, msg)
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return func() { cancel(); <-done }
}

// progressSink sends progress notifications for one request of the agent,
// keeping them increasing as MCP requires: what the upstream reports while
// the tool runs continues from where the wait for approval left off.
type progressSink struct {
	ctx   context.Context // the request's: streamable HTTP answers on the request's stream
	ss    *mcp.ServerSession
	token any

	mu   sync.Mutex
	sent bool
	last float64
	base float64 // added to what the upstream reports
}

func newProgressSink(ctx context.Context, ss *mcp.ServerSession, token any) *progressSink {
	return &progressSink{ctx: ctx, ss: ss, token: token}
}

func (p *progressSink) enabled() bool { return p != nil && p.ss != nil && p.token != nil }

// send notifies progress (in total, when known) unless it would not
// increase.
func (p *progressSink) send(progress, total float64, msg string) {
	if !p.enabled() {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.sent && progress <= p.last {
		return
	}
	p.sent, p.last = true, progress
	ctx, cancel := context.WithTimeout(p.ctx, 5*time.Second)
	defer cancel()
	_ = p.ss.NotifyProgress(ctx, &mcp.ProgressNotificationParams{ProgressToken: p.token, Progress: progress, Total: total, Message: msg})
}

// relay passes on what the upstream reports, after what was sent before.
func (p *progressSink) relay(progress, total float64, msg string) {
	p.mu.Lock()
	base := p.base
	p.mu.Unlock()
	if total > 0 {
		total += base
	}
	p.send(base+progress, total, msg)
}

// start marks the beginning of the upstream's own reports.
func (p *progressSink) start() {
	p.mu.Lock()
	p.base = p.last
	p.mu.Unlock()
}

// progressRoutes maps the progress tokens the gateway gives upstreams to
// the agent requests they belong to.
type progressRoutes struct {
	next atomic.Uint64
	mu   sync.Mutex
	m    map[string]*progressSink
}

// add registers sink and returns the token to give the upstream, "" when
// the agent asked for no progress.
func (r *progressRoutes) add(sink *progressSink) string {
	if !sink.enabled() {
		return ""
	}
	sink.start()
	token := "arx-" + strconv.FormatUint(r.next.Add(1), 10)
	r.mu.Lock()
	r.m[token] = sink
	r.mu.Unlock()
	return token
}

func (r *progressRoutes) remove(token string) {
	if token == "" {
		return
	}
	r.mu.Lock()
	delete(r.m, token)
	r.mu.Unlock()
}

// relay is the upstream clients' progress handler.
func (r *progressRoutes) relay(_ context.Context, req *mcp.ProgressNotificationClientRequest) {
	token, ok := req.Params.ProgressToken.(string)
	if !ok {
		return
	}
	r.mu.Lock()
	sink := r.m[token]
	r.mu.Unlock()
	if sink != nil {
		sink.relay(req.Params.Progress, req.Params.Total, req.Params.Message)
	}
}
