package postgres

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/arxsec/arx/internal/store"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

const (
	agentCols    = `id, name, owner, status, manifest, manifest_hash, created_at, terminated_at, shadow_hash, shadow_since`
	callCols     = `id, agent_id, connector, action, declared_risk, risk, status, idempotency_key, summary, refusal, created_at, expires_at, completed_at, outcome, error, duration_ms, raised_by, args, args_hash`
	tokenCols    = `id, hash, kind, agent_id, user_id, issued_by, label, created_at, revoked_at`
	userCols     = `id, email, role, password_hash, created_at, disabled_at`
	passkeyCols  = `id, user_id, name, public_key, algorithm, attestation, aaguid, rp_id, sign_count, flags, created_at, last_used_at`
	approvalCols = `call_id, agent_id, status, approvers, requested_at, expires_at, decided_by, decided_at, reason, passkey, quorum, grants`
	outboxCols   = `id, kind, payload, created_at, attempts, next_at, done_at, last_error`
)

func wrapWrite(err error) error {
	if err == nil {
		return nil
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == "23505" { // unique_violation
		return fmt.Errorf("%w: %v", store.ErrConflict, err)
	}
	return fmt.Errorf("postgres: %w", err)
}

// Scanning.

func collect[T any](rows pgx.Rows, scan func(pgx.Row) (*T, error)) ([]T, error) {
	defer rows.Close()
	var out []T
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, *v)
	}
	return out, rows.Err()
}

func scanAgent(r pgx.Row) (*store.Agent, error) {
	var a store.Agent
	var created int64
	var term *int64
	err := r.Scan(&a.ID, &a.Name, &a.Owner, &a.Status, &a.Manifest, &a.ManifestHash, &created, &term, &a.ShadowHash, &a.ShadowSince)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, store.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("postgres: read agent: %w", err)
	}
	a.CreatedAt, a.TerminatedAt = fromNanos(created), timePtr(term)
	return &a, nil
}

func scanCall(r pgx.Row) (*store.Call, error) {
	var c store.Call
	var created, expires int64
	var completed *int64
	err := r.Scan(&c.ID, &c.AgentID, &c.Connector, &c.Action, &c.DeclaredRisk, &c.Risk, &c.Status, &c.IdempotencyKey,
		&c.Summary, &c.Refusal, &created, &expires, &completed, &c.Outcome, &c.Error, &c.DurationMS, &c.RaisedBy, &c.Args, &c.ArgsHash)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, store.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("postgres: read call: %w", err)
	}
	c.CreatedAt, c.ExpiresAt, c.CompletedAt = fromNanos(created), fromNanos(expires), timePtr(completed)
	return &c, nil
}

func scanToken(r pgx.Row) (*store.Token, error) {
	var k store.Token
	var agent, user *string
	var created int64
	var revoked *int64
	err := r.Scan(&k.ID, &k.Hash, &k.Kind, &agent, &user, &k.IssuedBy, &k.Label, &created, &revoked)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, store.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("postgres: read token: %w", err)
	}
	k.AgentID, k.UserID, k.CreatedAt, k.RevokedAt = str(agent), str(user), fromNanos(created), timePtr(revoked)
	return &k, nil
}

func scanPasskey(r pgx.Row) (*store.Passkey, error) {
	var k store.Passkey
	var count, created int64
	var flags int32
	var used *int64
	if err := r.Scan(&k.ID, &k.UserID, &k.Name, &k.PublicKey, &k.Algorithm, &k.Attestation, &k.AAGUID, &k.RPID,
		&count, &flags, &created, &used); err != nil {
		return nil, fmt.Errorf("postgres: read passkey: %w", err)
	}
	k.SignCount, k.Flags, k.CreatedAt, k.LastUsedAt = uint32(count), uint8(flags), fromNanos(created), timePtr(used)
	return &k, nil
}

func scanUser(r pgx.Row) (*store.User, error) {
	var u store.User
	var created int64
	var disabled *int64
	err := r.Scan(&u.ID, &u.Email, &u.Role, &u.PasswordHash, &created, &disabled)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, store.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("postgres: read user: %w", err)
	}
	u.CreatedAt, u.DisabledAt = fromNanos(created), timePtr(disabled)
	return &u, nil
}

func scanApproval(r pgx.Row) (*store.Approval, error) {
	var a store.Approval
	var approvers, grants string
	var requested, expires int64
	var decided *int64
	var quorum int32
	err := r.Scan(&a.CallID, &a.AgentID, &a.Status, &approvers, &requested, &expires, &a.DecidedBy, &decided, &a.Reason, &a.Passkey,
		&quorum, &grants)
	a.Quorum = int(quorum)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, store.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("postgres: read approval: %w", err)
	}
	if err := json.Unmarshal([]byte(approvers), &a.Approvers); err != nil {
		return nil, fmt.Errorf("postgres: approval %s: approvers: %w", a.CallID, err)
	}
	if err := json.Unmarshal([]byte(grants), &a.Grants); err != nil {
		return nil, fmt.Errorf("postgres: approval %s: grants: %w", a.CallID, err)
	}
	if len(a.Grants) == 0 {
		a.Grants = nil
	}
	a.RequestedAt, a.ExpiresAt, a.DecidedAt = fromNanos(requested), fromNanos(expires), timePtr(decided)
	return &a, nil
}

func scanOutbox(r pgx.Row) (*store.OutboxItem, error) {
	var o store.OutboxItem
	var created, next int64
	var done *int64
	if err := r.Scan(&o.ID, &o.Kind, &o.Payload, &created, &o.Attempts, &next, &done, &o.LastError); err != nil {
		return nil, fmt.Errorf("postgres: read outbox: %w", err)
	}
	o.CreatedAt, o.NextAt, o.DoneAt = fromNanos(created), fromNanos(next), timePtr(done)
	return &o, nil
}
