package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/arxsec/arx/internal/store"
)

const (
	userCols     = `id, email, role, password_hash, created_at, disabled_at`
	approvalCols = `call_id, agent_id, status, approvers, requested_at, expires_at, decided_by, decided_at, reason`
	outboxCols   = `id, kind, payload, created_at, attempts, next_at, done_at, last_error`
)

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
	var approvers string
	var requested, expires int64
	var decided sql.NullInt64
	err := r.Scan(&a.CallID, &a.AgentID, &a.Status, &approvers, &requested, &expires, &a.DecidedBy, &decided, &a.Reason)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, store.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("sqlite: read approval: %w", err)
	}
	if err := json.Unmarshal([]byte(approvers), &a.Approvers); err != nil {
		return nil, fmt.Errorf("sqlite: approval %s: approvers: %w", a.CallID, err)
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

// Transaction side.

func (t *tx) User(id string) (*store.User, error) {
	return scanUser(t.tx.QueryRowContext(t.ctx, `SELECT `+userCols+` FROM users WHERE id = ?`, id))
}

func (t *tx) UserByEmail(email string) (*store.User, error) {
	return scanUser(t.tx.QueryRowContext(t.ctx, `SELECT `+userCols+` FROM users WHERE email = ? COLLATE NOCASE`, email))
}

func (t *tx) InsertUser(u *store.User) error {
	_, err := t.tx.ExecContext(t.ctx, `INSERT INTO users (`+userCols+`) VALUES (?,?,?,?,?,?)`,
		u.ID, u.Email, u.Role, u.PasswordHash, nanos(u.CreatedAt), nullTime(u.DisabledAt))
	return wrapWrite(err)
}

func (t *tx) UpdateUser(u *store.User) error {
	res, err := t.tx.ExecContext(t.ctx, `UPDATE users SET role = ?, password_hash = ?, disabled_at = ? WHERE id = ?`,
		u.Role, u.PasswordHash, nullTime(u.DisabledAt), u.ID)
	return affected(res, err)
}

func (t *tx) InsertSetupToken(s *store.SetupToken) error {
	_, err := t.tx.ExecContext(t.ctx, `INSERT INTO setup_tokens (hash, user_id, expires_at, used_at) VALUES (?,?,?,?)`,
		s.Hash, s.UserID, nanos(s.ExpiresAt), nullTime(s.UsedAt))
	return wrapWrite(err)
}

func (t *tx) UseSetupToken(hash []byte, at time.Time) (*store.SetupToken, error) {
	var s store.SetupToken
	var expires int64
	var used sql.NullInt64
	err := t.tx.QueryRowContext(t.ctx, `SELECT hash, user_id, expires_at, used_at FROM setup_tokens WHERE hash = ?`, hash).
		Scan(&s.Hash, &s.UserID, &expires, &used)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, store.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("sqlite: read setup token: %w", err)
	}
	s.ExpiresAt = fromNanos(expires)
	if used.Valid || !at.Before(s.ExpiresAt) {
		return nil, store.ErrNotFound
	}
	if _, err := t.tx.ExecContext(t.ctx, `UPDATE setup_tokens SET used_at = ? WHERE hash = ?`, nanos(at), hash); err != nil {
		return nil, fmt.Errorf("sqlite: use setup token: %w", err)
	}
	s.UsedAt = &at
	return &s, nil
}

func (t *tx) InsertSession(s *store.Session) error {
	_, err := t.tx.ExecContext(t.ctx, `INSERT INTO sessions (hash, user_id, csrf, created_at, expires_at) VALUES (?,?,?,?,?)`,
		s.Hash, s.UserID, s.CSRF, nanos(s.CreatedAt), nanos(s.ExpiresAt))
	return wrapWrite(err)
}

func (t *tx) DeleteSession(hash []byte) error {
	_, err := t.tx.ExecContext(t.ctx, `DELETE FROM sessions WHERE hash = ?`, hash)
	return wrapWrite(err)
}

func (t *tx) DeleteUserSessions(userID string) error {
	_, err := t.tx.ExecContext(t.ctx, `DELETE FROM sessions WHERE user_id = ?`, userID)
	return wrapWrite(err)
}

func (t *tx) Approval(callID string) (*store.Approval, error) {
	return scanApproval(t.tx.QueryRowContext(t.ctx, `SELECT `+approvalCols+` FROM approvals WHERE call_id = ?`, callID))
}

func (t *tx) InsertApproval(a *store.Approval) error {
	approvers, err := json.Marshal(a.Approvers)
	if err != nil {
		return err
	}
	_, err = t.tx.ExecContext(t.ctx, `INSERT INTO approvals (`+approvalCols+`) VALUES (?,?,?,?,?,?,?,?,?)`,
		a.CallID, a.AgentID, a.Status, string(approvers), nanos(a.RequestedAt), nanos(a.ExpiresAt), a.DecidedBy, nullTime(a.DecidedAt), a.Reason)
	return wrapWrite(err)
}

func (t *tx) UpdateApproval(a *store.Approval) error {
	res, err := t.tx.ExecContext(t.ctx, `UPDATE approvals SET status = ?, decided_by = ?, decided_at = ?, reason = ? WHERE call_id = ?`,
		a.Status, a.DecidedBy, nullTime(a.DecidedAt), a.Reason, a.CallID)
	return affected(res, err)
}

func (t *tx) Enqueue(kind string, payload []byte, at time.Time) error {
	_, err := t.tx.ExecContext(t.ctx, `INSERT INTO outbox (kind, payload, created_at, next_at) VALUES (?,?,?,?)`,
		kind, payload, nanos(at), nanos(at))
	return wrapWrite(err)
}

func (t *tx) FinishOutbox(id int64, at time.Time, errMsg string, next time.Time) error {
	var res sql.Result
	var err error
	if errMsg == "" {
		res, err = t.tx.ExecContext(t.ctx, `UPDATE outbox SET attempts = attempts + 1, done_at = ?, last_error = '' WHERE id = ?`, nanos(at), id)
	} else {
		res, err = t.tx.ExecContext(t.ctx, `UPDATE outbox SET attempts = attempts + 1, next_at = ?, last_error = ? WHERE id = ?`, nanos(next), errMsg, id)
	}
	return affected(res, err)
}

// Read side.

// User implements store.Store.
func (s *Store) User(ctx context.Context, id string) (*store.User, error) {
	return scanUser(s.read.QueryRowContext(ctx, `SELECT `+userCols+` FROM users WHERE id = ?`, id))
}

// UserByEmail implements store.Store.
func (s *Store) UserByEmail(ctx context.Context, email string) (*store.User, error) {
	return scanUser(s.read.QueryRowContext(ctx, `SELECT `+userCols+` FROM users WHERE email = ? COLLATE NOCASE`, email))
}

// Users implements store.Store.
func (s *Store) Users(ctx context.Context) ([]store.User, error) {
	rows, err := s.read.QueryContext(ctx, `SELECT `+userCols+` FROM users ORDER BY email`)
	if err != nil {
		return nil, fmt.Errorf("sqlite: list users: %w", err)
	}
	defer rows.Close()
	var out []store.User
	for rows.Next() {
		u, err := scanUser(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, *u)
	}
	return out, rows.Err()
}

// SessionByHash implements store.Store.
func (s *Store) SessionByHash(ctx context.Context, hash []byte) (*store.Session, error) {
	var ss store.Session
	var created, expires int64
	err := s.read.QueryRowContext(ctx, `SELECT hash, user_id, csrf, created_at, expires_at FROM sessions WHERE hash = ?`, hash).
		Scan(&ss.Hash, &ss.UserID, &ss.CSRF, &created, &expires)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, store.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("sqlite: read session: %w", err)
	}
	ss.CreatedAt, ss.ExpiresAt = fromNanos(created), fromNanos(expires)
	return &ss, nil
}

// Approval implements store.Store.
func (s *Store) Approval(ctx context.Context, callID string) (*store.Approval, error) {
	return scanApproval(s.read.QueryRowContext(ctx, `SELECT `+approvalCols+` FROM approvals WHERE call_id = ?`, callID))
}

// Approvals implements store.Store.
func (s *Store) Approvals(ctx context.Context, status string, limit int) ([]store.Approval, error) {
	if status == "" {
		return s.approvals(ctx, `SELECT `+approvalCols+` FROM approvals ORDER BY requested_at DESC LIMIT ?`, limit)
	}
	return s.approvals(ctx, `SELECT `+approvalCols+` FROM approvals WHERE status = ? ORDER BY requested_at DESC LIMIT ?`, status, limit)
}

// OverdueApprovals implements store.Store.
func (s *Store) OverdueApprovals(ctx context.Context, t time.Time, limit int) ([]store.Approval, error) {
	return s.approvals(ctx, `SELECT `+approvalCols+` FROM approvals WHERE status = 'pending' AND expires_at < ? ORDER BY expires_at LIMIT ?`, nanos(t), limit)
}

func (s *Store) approvals(ctx context.Context, q string, args ...any) ([]store.Approval, error) {
	rows, err := s.read.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("sqlite: list approvals: %w", err)
	}
	defer rows.Close()
	var out []store.Approval
	for rows.Next() {
		a, err := scanApproval(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, *a)
	}
	return out, rows.Err()
}

// DueOutbox implements store.Store.
func (s *Store) DueOutbox(ctx context.Context, t time.Time, limit int) ([]store.OutboxItem, error) {
	rows, err := s.read.QueryContext(ctx, `SELECT `+outboxCols+` FROM outbox WHERE done_at IS NULL AND next_at <= ? ORDER BY id LIMIT ?`, nanos(t), limit)
	if err != nil {
		return nil, fmt.Errorf("sqlite: read outbox: %w", err)
	}
	defer rows.Close()
	var out []store.OutboxItem
	for rows.Next() {
		o, err := scanOutbox(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, *o)
	}
	return out, rows.Err()
}
