package runtime

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/arxsec/arx/arxerr"
	"github.com/arxsec/arx/internal/store"
	"github.com/arxsec/arx/record"
)

// revokedPerEntry bounds the call ids one credential.revoked entry lists
// (37 bytes each, well within record.MaxEntrySize).
const revokedPerEntry = 500

// TerminationResult says what one termination ended.
type TerminationResult struct {
	Agent              *store.Agent
	RevokedTokens      int
	RevokedCredentials int
	CancelledApprovals int
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
	if len(reason) > 1024 || !utf8.ValidString(reason) {
		return nil, arxerr.New(arxerr.BadRequest, "reason must be valid UTF-8 of at most 1024 bytes")
	}
	now := r.now()
	res := &TerminationResult{}
	var woken []string
	err := r.store.Update(ctx, func(tx store.Tx) error {
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
		if a.Status == store.AgentTerminated {
			return arxerr.New(arxerr.AgentTerminated, "agent %s is already terminated", a.Name)
		}
		if err := tx.SetAgentStatus(a.ID, store.AgentTerminated, now); err != nil {
			return err
		}
		if res.RevokedTokens, err = tx.RevokeAgentTokens(a.ID, now); err != nil {
			return err
		}
		open, err := tx.AgentOpenCalls(a.ID)
		if err != nil {
			return err
		}
		actor := p.Actor()
		var revoked []string
		// Every live credential dies in one statement; pending calls are
		// closed one by one with their approvals.
		n, err := tx.RevokeAgentCredentials(a.ID, now)
		if err != nil {
			return err
		}
		for i := range open {
			c := &open[i]
			wasPending := c.Status == store.CallPending
			c.Status, c.CompletedAt = store.CallRevoked, &now
			if wasPending {
				if err := tx.UpdateCall(c); err != nil {
					return err
				}
			}
			e := record.Entry{Agent: c.AgentID, Call: c.ID, Connector: c.Connector, Action: c.Action, Risk: c.Risk, Actor: actor, Time: now}
			if wasPending {
				ap, err := tx.Approval(c.ID)
				if err != nil {
					return err
				}
				ap.Status, ap.DecidedBy, ap.DecidedAt, ap.Reason = store.ApprovalCancelled, actor, &now, "agent terminated"
				if err := tx.UpdateApproval(ap); err != nil {
					return err
				}
				e.Type = "approval.cancelled"
				res.CancelledApprovals++
			} else {
				res.RevokedCredentials++
				if err := r.onCallClosed(tx, c); err != nil { // connectors.go: drop the call's database role
					return err
				}
				revoked = append(revoked, c.ID)
				woken = append(woken, c.ID)
				continue
			}
			e.Data = map[string]any{"reason": "agent terminated"}
			if err := tx.Append(&e); err != nil {
				return err
			}
			woken = append(woken, c.ID)
		}
		if n != res.RevokedCredentials {
			return fmt.Errorf("runtime: revoked %d credentials, expected %d", n, res.RevokedCredentials)
		}
		// Revoked credentials are recorded in entries of up to
		// revokedPerEntry calls: an agent holding a thousand live
		// credentials is terminated in milliseconds, not in a thousand
		// appends.
		for len(revoked) > 0 {
			n := min(len(revoked), revokedPerEntry)
			if err := tx.Append(&record.Entry{Agent: a.ID, Type: "credential.revoked", Actor: actor, Time: now,
				Data: map[string]any{"reason": "agent terminated", "calls": stringsAny(revoked[:n])}}); err != nil {
				return err
			}
			revoked = revoked[n:]
		}
		if err := tx.Append(&record.Entry{Agent: a.ID, Type: record.TypeAgentTerminated, Actor: actor, Time: now,
			Data: map[string]any{"reason": reason, "revoked_tokens": res.RevokedTokens,
				"revoked_credentials": res.RevokedCredentials, "cancelled_approvals": res.CancelledApprovals}}); err != nil {
			return err
		}
		if m, err := r.Manifest(a); err == nil {
			if err := r.enqueueNotices(tx, m, a, actor, reason, res, now); err != nil {
				return err
			}
		}
		a.Status, a.TerminatedAt = store.AgentTerminated, &now
		res.Agent = a
		return nil
	})
	if err != nil {
		return nil, r.writeFailed("terminate", err)
	}
	r.kickOutbox() // database roles of the revoked calls are dropped now
	r.broadcast(ctx, &Event{Type: "agent.updated", AgentID: agentID, Status: store.AgentTerminated, At: now}, woken...)
	r.log.Info("agent terminated", "agent", agentID, "actor", p.Actor())
	return res, nil
}
