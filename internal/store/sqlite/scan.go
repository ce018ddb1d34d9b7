package sqlite

import (
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/arxsec/arx/internal/store"
)

const (
	agentCols = `id, name, owner, status, manifest, manifest_hash, created_at, terminated_at, shadow_hash, shadow_since`
	callCols  = `id, agent_id, connector, action, declared_risk, risk, status, idempotency_key, summary, refusal,
		created_at, expires_at, completed_at, outcome, error, duration_ms, raised_by, args, args_hash`
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
	if isUnique(err) {
		return fmt.Errorf("%w: %v", store.ErrConflict, err)
	}
	return fmt.Errorf("sqlite: %w", err)
}

func affected(res sql.Result, err error) error {
	if err != nil {
		return fmt.Errorf("sqlite: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("sqlite: %w", err)
	}
	if n == 0 {
		return store.ErrNotFound
	}
	return nil
}

type scanner interface{ Scan(dest ...any) error }

func scanAgent(r scanner) (*store.Agent, error) {
	var a store.Agent
	var created int64
	var term sql.NullInt64
	err := r.Scan(&a.ID, &a.Name, &a.Owner, &a.Status, &a.Manifest, &a.ManifestHash, &created, &term, &a.ShadowHash, &a.ShadowSince)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, store.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("sqlite: read agent: %w", err)
	}
	a.CreatedAt, a.TerminatedAt = fromNanos(created), timePtr(term)
	return &a, nil
}

func scanCall(r scanner) (*store.Call, error) {
	var c store.Call
	var created, expires int64
	var completed sql.NullInt64
	err := r.Scan(&c.ID, &c.AgentID, &c.Connector, &c.Action, &c.DeclaredRisk, &c.Risk, &c.Status, &c.IdempotencyKey,
		&c.Summary, &c.Refusal, &created, &expires, &completed, &c.Outcome, &c.Error, &c.DurationMS, &c.RaisedBy, &c.Args, &c.ArgsHash)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, store.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("sqlite: read call: %w", err)
	}
	c.CreatedAt, c.ExpiresAt, c.CompletedAt = fromNanos(created), fromNanos(expires), timePtr(completed)
	return &c, nil
}

func scanToken(r scanner) (*store.Token, error) {
	var k store.Token
	var agent, user sql.NullString
	var created int64
	var revoked sql.NullInt64
	err := r.Scan(&k.ID, &k.Hash, &k.Kind, &agent, &user, &k.IssuedBy, &k.Label, &created, &revoked)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, store.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("sqlite: read token: %w", err)
	}
	k.AgentID, k.UserID, k.CreatedAt, k.RevokedAt = agent.String, user.String, fromNanos(created), timePtr(revoked)
	return &k, nil
}

func scanPasskeys(rows *sql.Rows, err error) ([]store.Passkey, error) {
	if err != nil {
		return nil, fmt.Errorf("sqlite: list passkeys: %w", err)
	}
	defer rows.Close()
	var out []store.Passkey
	for rows.Next() {
		var k store.Passkey
		var count, flags, created int64
		var used sql.NullInt64
		if err := rows.Scan(&k.ID, &k.UserID, &k.Name, &k.PublicKey, &k.Algorithm, &k.Attestation, &k.AAGUID, &k.RPID,
			&count, &flags, &created, &used); err != nil {
			return nil, fmt.Errorf("sqlite: read passkey: %w", err)
		}
		k.SignCount, k.Flags, k.CreatedAt, k.LastUsedAt = uint32(count), uint8(flags), fromNanos(created), timePtr(used)
		out = append(out, k)
	}
	return out, rows.Err()
}

func scanUser(r scanner) (*store.User, error) {
	var u store.User
	var created int64
	var disabled sql.NullInt64
	err := r.Scan(&u.ID, &u.Email, &u.Role, &u.PasswordHash, &created, &disabled)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, store.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("sqlite: read user: %w", err)
	}
	u.CreatedAt, u.DisabledAt = fromNanos(created), timePtr(disabled)
	return &u, nil
}

func scanApproval(r scanner) (*store.Approval, error) {
	var a store.Approval
	var approvers, grants string
	var requested, expires int64
	var decided sql.NullInt64
	err := r.Scan(&a.CallID, &a.AgentID, &a.Status, &approvers, &requested, &expires, &a.DecidedBy, &decided, &a.Reason, &a.Passkey,
		&a.Quorum, &grants)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, store.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("sqlite: read approval: %w", err)
	}
	if err := json.Unmarshal([]byte(approvers), &a.Approvers); err != nil {
		return nil, fmt.Errorf("sqlite: approval %s: approvers: %w", a.CallID, err)
	}
	if err := json.Unmarshal([]byte(grants), &a.Grants); err != nil {
		return nil, fmt.Errorf("sqlite: approval %s: grants: %w", a.CallID, err)
	}
	if len(a.Grants) == 0 {
		a.Grants = nil
	}
	a.RequestedAt, a.ExpiresAt, a.DecidedAt = fromNanos(requested), fromNanos(expires), timePtr(decided)
	return &a, nil
}

func scanOutbox(r scanner) (*store.OutboxItem, error) {
	var o store.OutboxItem
	var created, next int64
	var done sql.NullInt64
	if err := r.Scan(&o.ID, &o.Kind, &o.Payload, &created, &o.Attempts, &next, &done, &o.LastError); err != nil {
		return nil, fmt.Errorf("sqlite: read outbox: %w", err)
	}
	o.CreatedAt, o.NextAt, o.DoneAt = fromNanos(created), fromNanos(next), timePtr(done)
	return &o, nil
}

// nanos is a time as stored: nanoseconds since the Unix epoch, 0 for the
// zero time (which UnixNano cannot represent).
func nanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UTC().UnixNano()
}

func fromNanos(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

func nullTime(t *time.Time) sql.NullInt64 {
	if t == nil {
		return sql.NullInt64{}
	}
	return sql.NullInt64{Int64: nanos(*t), Valid: true}
}

func timePtr(n sql.NullInt64) *time.Time {
	if !n.Valid {
		return nil
	}
	t := fromNanos(n.Int64)
	return &t
}

func nullString(s string) sql.NullString {
	if s == "" {
		return sql.NullString{}
	}
	return sql.NullString{String: s, Valid: true}
}
