package runtime

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/arxsec/arx/arxerr"
	"github.com/arxsec/arx/internal/store"
	"github.com/arxsec/arx/manifest"
	"github.com/arxsec/arx/record"
)

// ApprovalView is an approval with its call and agent, for people.
type ApprovalView struct {
	store.Approval
	Call  *store.Call
	Agent *store.Agent
}

// CanDecide says whether p may decide approvals of agent a's calls under its
// manifest: a person named as approver or delegate.
func (r *Runtime) CanDecide(p *Principal, a *store.Agent) bool {
	if !p.IsPerson() {
		return false
	}
	m, err := r.Manifest(a)
	if err != nil {
		return false
	}
	return m.IsApprover(p.User.Email)
}

// Approvals lists approvals for people and operators.
func (r *Runtime) Approvals(ctx context.Context, p *Principal, status string, limit int) ([]ApprovalView, error) {
	if !p.IsAdmin() && !p.IsPerson() {
		return nil, arxerr.New(arxerr.Forbidden, "approvals are for people and operators")
	}
	switch status {
	case "", store.ApprovalPending, store.ApprovalGranted, store.ApprovalDenied, store.ApprovalExpired, store.ApprovalWithdrawn, store.ApprovalCancelled:
	default:
		return nil, arxerr.New(arxerr.BadRequest, "status %q is not pending, granted, denied, expired, withdrawn or cancelled", truncate(status, 16))
	}
	list, err := r.store.Approvals(ctx, status, limit)
	if err != nil {
		return nil, r.ReadFailed("list approvals", err)
	}
	out := make([]ApprovalView, 0, len(list))
	agents := map[string]*store.Agent{}
	for _, a := range list {
		v, err := r.approvalView(ctx, &a, agents)
		if err != nil {
			return nil, err
		}
		out = append(out, *v)
	}
	return out, nil
}

// Approval returns one approval.
func (r *Runtime) Approval(ctx context.Context, p *Principal, callID string) (*ApprovalView, error) {
	if !p.IsAdmin() && !p.IsPerson() {
		return nil, arxerr.New(arxerr.Forbidden, "approvals are for people and operators")
	}
	a, err := r.store.Approval(ctx, callID)
	if errors.Is(err, store.ErrNotFound) {
		return nil, arxerr.New(arxerr.ApprovalNotFound, "no approval for call %s", truncate(callID, 64))
	}
	if err != nil {
		return nil, r.ReadFailed("approval", err)
	}
	return r.approvalView(ctx, a, map[string]*store.Agent{})
}

func (r *Runtime) approvalView(ctx context.Context, a *store.Approval, agents map[string]*store.Agent) (*ApprovalView, error) {
	c, err := r.store.Call(ctx, a.CallID)
	if err != nil {
		return nil, r.ReadFailed("approval call", err)
	}
	ag, ok := agents[a.AgentID]
	if !ok {
		if ag, err = r.store.Agent(ctx, a.AgentID); err != nil {
			return nil, r.ReadFailed("approval agent", err)
		}
		agents[a.AgentID] = ag
	}
	return &ApprovalView{Approval: *a, Call: c, Agent: ag}, nil
}

// Decide grants or denies a pending approval. Only a person the agent's
// manifest names (approver or delegate) may decide, never the person who
// raised the request; a decision after the timeout, a second decision, or a
// decision about a terminated agent's call is refused. Granting issues the
// call's credential in the same transaction that records the decision.
func (r *Runtime) Decide(ctx context.Context, p *Principal, callID string, grant bool, reason string) (*ApprovalView, error) {
	return r.decide(ctx, p, callID, grant, reason, nil, nil)
}

// DecideSigned is Decide with the decision signed by the person's passkey
// (BeginDecision gave the challenge): the signature is checked before
// anything is written, and recorded in the decision's entry.
func (r *Runtime) DecideSigned(ctx context.Context, p *Principal, callID string, grant bool, reason string, sd *SignedDecision) (*ApprovalView, error) {
	if sd == nil {
		return nil, arxerr.New(arxerr.PasskeyInvalid, "the decision carries no passkey signature")
	}
	return r.decide(ctx, p, callID, grant, reason, sd, nil)
}

// decide records a person's decision: signed with a passkey (sd), or made
// in a chat tool (via: the account the person linked), or neither.
func (r *Runtime) decide(ctx context.Context, p *Principal, callID string, grant bool, reason string, sd *SignedDecision, via *ChatAccount) (*ApprovalView, error) {
	if !p.IsPerson() {
		e := arxerr.New(arxerr.NotApprover, "only a person named as approver can decide; tokens of agents and operators cannot")
		return nil, e
	}
	reason = strings.TrimSpace(reason)
	if problem := record.TextProblem(reason, 1024); problem != "" {
		return nil, arxerr.New(arxerr.BadRequest, "reason %s", problem)
	}
	if !grant && reason == "" {
		e := arxerr.New(arxerr.BadRequest, "a denial needs a reason")
		e.Hint = "say why, so the agent's owner can act on it"
		return nil, e
	}
	var sig *record.Signature
	var signedWith []byte
	var signCount uint32
	if sd != nil {
		d, err := r.decisionToSign(ctx, p, callID, grant, reason, sd.At)
		if err != nil {
			return nil, err
		}
		s, cred, err := r.verifyDecision(ctx, p, d, sd)
		if err != nil {
			return nil, err
		}
		sig, signedWith, signCount = s, cred.ID, cred.Authenticator.SignCount
	}
	now := r.now()
	actor := p.Actor()
	var expired bool
	var agentID string
	err := r.store.Update(ctx, func(tx store.Tx) error {
		// The person as the log stands: disabled since the request was
		// authenticated (an admin, or deprovisioned), they decide nothing.
		if u, err := tx.User(p.User.ID); err != nil {
			return err
		} else if u.DisabledAt != nil {
			return arxerr.New(arxerr.Unauthenticated, "the account is disabled")
		}
		ap, err := tx.Approval(callID)
		if errors.Is(err, store.ErrNotFound) {
			return arxerr.New(arxerr.ApprovalNotFound, "no approval for call %s", truncate(callID, 64))
		}
		if err != nil {
			return err
		}
		agentID = ap.AgentID
		a, err := tx.Agent(ap.AgentID)
		if err != nil {
			return err
		}
		if err := agentUsable(a); err != nil {
			return err
		}
		switch ap.Status {
		case store.ApprovalPending:
		case store.ApprovalExpired:
			return arxerr.New(arxerr.ApprovalExpired, "the request expired at %s", ap.ExpiresAt.UTC().Format(time.RFC3339))
		default:
			return arxerr.New(arxerr.ApprovalDecided, "the request is already %s", ap.Status)
		}
		c, err := tx.Call(callID)
		if err != nil {
			return err
		}
		m, err := r.Manifest(a)
		if err != nil {
			return err
		}
		if !m.IsApprover(p.User.Email) {
			return arxerr.New(arxerr.NotApprover, "%s is not an approver of agent %s", p.User.Email, a.Name)
		}
		if c.RaisedBy != "" && strings.EqualFold(c.RaisedBy, actor) {
			return arxerr.New(arxerr.SelfApproval, "%s raised this request and cannot decide it", p.User.Email)
		}
		if !now.Before(ap.ExpiresAt) {
			expired = true
			return r.expireApproval(tx, ap, c, now)
		}
		if err := signatureRule(m.Approval.RequirePasskey, sig != nil); err != nil {
			return err
		}
		if grant {
			// The job description may have changed since the call was
			// held (manifest.changed): a call it now refuses is not granted.
			declared, _ := manifest.ParseRisk(c.DeclaredRisk)
			if d := m.Decide(c.Connector, c.Action, declared); d.Refusal != "" {
				e := arxerr.New(d.Refusal, "the job description %s is held to now refuses this call (%s); it cannot be granted", a.Name, d.Message)
				e.Hint = "deny it, or let it expire"
				return e
			}
		}
		grants, enough, err := quorumRule(ap, p.User.Email, grant)
		if err != nil {
			return err
		}
		ref := callRef(c)
		var entry *record.Entry
		switch {
		case sig != nil:
			if err := tx.UsePasskey(signedWith, signCount, now); errors.Is(err, store.ErrNotFound) {
				return arxerr.New(arxerr.PasskeyInvalid, "the passkey that signed was removed meanwhile")
			} else if err != nil {
				return err
			}
			verdict := record.DecisionDeny
			if grant {
				verdict = record.DecisionApprove
			}
			entry = record.ApprovalSigned(ref, actor, now, verdict, p.User.Email, reason, sig)
		case grant:
			entry = record.ApprovalGranted(ref, actor, now, p.User.Email, reason)
		default:
			entry = record.ApprovalDenied(ref, actor, now, p.User.Email, reason)
		}
		if c.ArgsHash != "" {
			entry.Data["args_hash"] = c.ArgsHash // the approval covers exactly these arguments
		}
		if via != nil {
			entry.Data["via"] = map[string]any{"provider": via.Provider, "subject": via.Subject}
		}
		if p.IdP != nil { // the person as the identity provider named them when they signed in
			entry.Data["idp"] = map[string]any{"issuer": p.IdP.Issuer, "subject": p.IdP.Subject}
		}
		if grant && ap.Quorum > 1 {
			entry.Data["grants"], entry.Data["quorum"] = grants, ap.Quorum
		}
		if err := tx.Append(entry); err != nil {
			return err
		}
		if grant && enough {
			ask := record.Ask{DeclaredRisk: c.DeclaredRisk, Summary: c.Summary, IdempotencyKey: c.IdempotencyKey, RaisedBy: c.RaisedBy,
				Args: c.Args, ArgsHash: c.ArgsHash}
			if act, ok := m.Action(c.Connector, c.Action); ok && act.Cost != nil && m.Budget.Spend != nil {
				ask.Cost = act.Cost.String() // charged with the credential
			}
			before := tx.CallCounts(c.AgentID)
			if err := tx.Append(record.CredentialIssued(ref, actor, now, ask, now.Add(m.CallTTL(c.Connector, c.Action)), p.User.Email)); err != nil {
				return err
			}
			if ask.Cost != "" {
				if err := r.recordThresholds(tx, a, m, ref, &before, now); err != nil {
					return err
				}
			}
		}
		return r.notifyDecided(tx, a, c.ID, now)
	})
	if err != nil {
		return nil, r.writeFailed("decide approval", err)
	}
	r.broadcast(ctx, &Event{Type: "approval.decided", AgentID: agentID, CallID: callID, At: now}, callID)
	r.kickOutbox()
	if expired {
		return nil, arxerr.New(arxerr.ApprovalExpired, "the request expired before the decision")
	}
	return r.Approval(ctx, p, callID)
}

// expireApproval closes a pending approval whose time ran out: the
// manifest's on_timeout (deny) applies, and the call never gets a credential.
func (r *Runtime) expireApproval(tx store.Tx, ap *store.Approval, c *store.Call, now time.Time) error {
	if err := tx.Append(record.ApprovalExpired(callRef(c), now, ap.ExpiresAt, manifest.DefaultOnTimeout)); err != nil {
		return err
	}
	a, err := tx.Agent(c.AgentID)
	if err != nil {
		return err
	}
	return r.notifyDecided(tx, a, c.ID, now)
}

// notifyDecided tells the webhooks of a decision, with the call and the
// approval as they now stand.
func (r *Runtime) notifyDecided(tx store.Tx, a *store.Agent, callID string, now time.Time) error {
	c, err := tx.Call(callID)
	if err != nil {
		return err
	}
	ap, err := tx.Approval(callID)
	if err != nil {
		return err
	}
	return r.notify(tx, "approval.decided", a, c, ap, now)
}

// SweepApprovals expires pending approvals past their timeout.
func (r *Runtime) SweepApprovals(ctx context.Context) error {
	now := r.now()
	overdue, err := r.store.OverdueApprovals(ctx, now, 500)
	if err != nil {
		return err
	}
	for _, ap := range overdue {
		err := r.store.Update(ctx, func(tx store.Tx) error {
			cur, err := tx.Approval(ap.CallID)
			if err != nil {
				return err
			}
			if cur.Status != store.ApprovalPending || now.Before(cur.ExpiresAt) {
				return nil
			}
			c, err := tx.Call(ap.CallID)
			if err != nil {
				return err
			}
			return r.expireApproval(tx, cur, c, now)
		})
		if err != nil {
			return err
		}
		r.broadcast(ctx, &Event{Type: "approval.decided", AgentID: ap.AgentID, CallID: ap.CallID, Status: store.ApprovalExpired, At: now}, ap.CallID)
	}
	if len(overdue) > 0 {
		r.kickOutbox()
	}
	return nil
}
