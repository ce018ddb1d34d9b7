package runtime

import (
	"context"
	"errors"
	"net/url"
	"strings"
	"time"

	"github.com/arxsec/arx/arxerr"
	"github.com/arxsec/arx/internal/store"
	"github.com/arxsec/arx/record"
)

// TerminationResult says what one termination ended.
type TerminationResult struct {
	Agent              *store.Agent
	RevokedTokens      int
	RevokedCredentials int
	CancelledApprovals int
	// Notices say how the manifest's termination.notify targets are told
	// (queued in the same transaction, delivered after it, each delivery
	// recorded as termination.notified).
	Notices []NoticeRoute
	// Receipt is what the termination confirmed, and what it could not,
	// as its termination.receipt entry records it, signed with the log key.
	Receipt *Receipt

	drops []store.Call // revoked calls whose connector made something for them (a database role)
}

// NoticeRoute says how a termination notice to one target goes out.
type NoticeRoute struct {
	// To is a person's email, or an endpoint's scheme and host (its path
	// and query may hold a secret).
	To string `json:"to"`
	// Via is how: "endpoint" (the target's own URL), or the server's
	// channels for people ("webhook", "Slack"); empty when nothing can
	// reach the target, which is recorded as undeliverable.
	Via []string `json:"via"`
}

// noticeRoutes decides how each target is told, given the server's
// channels for people (NotifyChannels).
func noticeRoutes(targets, channels []string) []NoticeRoute {
	out := make([]NoticeRoute, 0, len(targets))
	for _, t := range targets {
		if u, err := url.Parse(t); err == nil && (u.Scheme == "https" || u.Scheme == "http") && u.Host != "" {
			to := u.Scheme + "://" + u.Host
			if u.Path != "" && u.Path != "/" || u.RawQuery != "" {
				to += "/…"
			}
			out = append(out, NoticeRoute{To: to, Via: []string{"endpoint"}})
			continue
		}
		out = append(out, NoticeRoute{To: t, Via: append([]string{}, channels...)})
	}
	return out
}

// CanTerminate says whether p may terminate agent a: an operator, the
// agent's owner, or a person its manifest names as approver or delegate.
func (r *Runtime) CanTerminate(p *Principal, a *store.Agent) bool {
	if p.IsAdmin() {
		return true
	}
	if !p.IsPerson() {
		return false
	}
	return strings.EqualFold(p.User.Email, a.Owner) || r.CanDecide(p, a)
}

// Terminate ends an agent in one transaction: it becomes terminated, every
// token it holds dies, every outstanding credential dies (its call is
// revoked), and every pending approval is cancelled; agent.terminated
// records who and why. Every check reads this state from the database, so
// once the transaction commits nothing of the agent's is honoured.
func (r *Runtime) Terminate(ctx context.Context, p *Principal, agentID, reason string) (*TerminationResult, error) {
	reason = strings.TrimSpace(reason)
	if reason == "" {
		e := arxerr.New(arxerr.BadRequest, "a termination needs a reason")
		e.Hint = "pass --reason; it goes into the agent's personnel record"
		return nil, e
	}
	if problem := record.TextProblem(reason, 1024); problem != "" {
		return nil, arxerr.New(arxerr.BadRequest, "reason %s", problem)
	}
	now := r.now()
	res := &TerminationResult{}
	var woken []string
	logSize, err := r.store.TreeSize(ctx) // the receipt looks for confirmations after this
	if err != nil {
		return nil, r.ReadFailed("log size", err)
	}
	err = r.store.Update(ctx, func(tx store.Tx) error {
		*res, woken = TerminationResult{}, nil // a store may run fn again
		a, err := tx.Agent(agentID)
		if errors.Is(err, store.ErrNotFound) {
			return arxerr.New(arxerr.AgentNotFound, "no agent %s", truncate(agentID, 64))
		}
		if err != nil {
			return err
		}
		if !r.CanTerminate(p, a) {
			return arxerr.New(arxerr.Forbidden, "only an operator, the agent's owner or its approvers can terminate it")
		}
		*res, woken, err = r.terminateIn(tx, p, a, reason, now)
		return err
	})
	if err != nil {
		return nil, r.writeFailed("terminate", err)
	}
	watchers := r.watching(agentID) // counted before they are woken and leave
	cut := r.afterTerminate(ctx, p, agentID, woken, now)
	if m, err := r.Manifest(res.Agent); err == nil {
		res.Notices = noticeRoutes(m.Termination.Notify, r.NotifyChannels())
	}
	res.Receipt = r.receipt(ctx, p, res, cut, watchers, logSize)
	return res, nil
}

// terminateIn terminates agent a inside tx (Terminate, and Hire with
// replace): its tokens, credentials and pending approvals end, and
// agent.terminated records it. It returns what it ended and the calls to
// wake; the caller runs the effects after the commit (afterTerminate).
func (r *Runtime) terminateIn(tx store.Tx, p *Principal, a *store.Agent, reason string, now time.Time) (TerminationResult, []string, error) {
	var res TerminationResult
	var woken []string
	var err error
	if a.Status == store.AgentTerminated {
		return res, woken, arxerr.New(arxerr.AgentTerminated, "agent %s is already terminated", a.Name)
	}
	if res.RevokedTokens, err = tx.RevokeAgentTokens(a.ID, now); err != nil {
		return res, woken, err
	}
	open, err := tx.AgentOpenCalls(a.ID)
	if err != nil {
		return res, woken, err
	}
	actor := p.Actor()
	// Pending calls end with their approvals, one entry each; every
	// live credential dies in entries of up to RevokedCallsPerEntry
	// calls: an agent holding a thousand live credentials is
	// terminated in milliseconds, not in a thousand appends.
	var revoked []string
	for i := range open {
		c := &open[i]
		woken = append(woken, c.ID)
		if c.Status == store.CallPending {
			if err := tx.Append(record.ApprovalCancelled(callRef(c), actor, now, "agent terminated")); err != nil {
				return res, woken, err
			}
			res.CancelledApprovals++
			continue
		}
		res.RevokedCredentials++
		revoked = append(revoked, c.ID)
	}
	for len(revoked) > 0 {
		n := min(len(revoked), record.RevokedCallsPerEntry)
		if err := tx.Append(record.CredentialsRevoked(a.ID, actor, now, "agent terminated", revoked[:n])); err != nil {
			return res, woken, err
		}
		revoked = revoked[n:]
	}
	for i := range open {
		if c := &open[i]; c.Status == store.CallApproved {
			if _, ok := r.conn.provisioners[c.Connector]; ok {
				res.drops = append(res.drops, *c)
			}
			c.Status = store.CallRevoked
			if err := r.onCallClosed(tx, c); err != nil { // connectors.go: drop the call's database role
				return res, woken, err
			}
		}
	}
	if err := tx.Append(record.AgentTerminated(a.ID, actor, now, record.Termination{Reason: reason, RevokedTokens: res.RevokedTokens,
		RevokedCredentials: res.RevokedCredentials, CancelledApprovals: res.CancelledApprovals})); err != nil {
		return res, woken, err
	}
	if m, err := r.Manifest(a); err == nil {
		if err := r.enqueueNotices(tx, m, a, actor, reason, &res, now); err != nil {
			return res, woken, err
		}
	}
	a.Status, a.TerminatedAt = store.AgentTerminated, &now
	res.Agent = a
	return res, woken, nil
}

// afterTerminate runs a termination's effects once it committed.
func (r *Runtime) afterTerminate(ctx context.Context, p *Principal, agentID string, woken []string, now time.Time) (cut int) {
	r.kickOutbox() // database roles of the revoked calls are dropped now
	cut = r.cutAgent(agentID, "the agent was terminated")
	r.broadcast(ctx, &Event{Type: "agent.updated", AgentID: agentID, Status: store.AgentTerminated, At: now}, woken...)
	r.log.Info("agent terminated", "agent", agentID, "actor", p.Actor())
	return cut
}
