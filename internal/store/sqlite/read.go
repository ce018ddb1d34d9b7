package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/arxsec/arx/internal/store"
)

// Agent implements store.Store.
func (s *Store) Agent(ctx context.Context, id string) (*store.Agent, error) {
	return scanAgent(s.rstmts["agent"].QueryRowContext(ctx, id))
}

// Agents implements store.Store.
func (s *Store) Agents(ctx context.Context) ([]store.Agent, error) {
	rows, err := s.read.QueryContext(ctx, `SELECT `+agentCols+` FROM agents ORDER BY created_at, id`)
	if err != nil {
		return nil, fmt.Errorf("sqlite: list agents: %w", err)
	}
	defer rows.Close()
	var out []store.Agent
	for rows.Next() {
		a, err := scanAgent(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, *a)
	}
	return out, rows.Err()
}

// TokenByHash implements store.Store.
func (s *Store) TokenByHash(ctx context.Context, hash []byte) (*store.Token, error) {
	return scanToken(s.rstmts["token"].QueryRowContext(ctx, hash))
}

// AgentByToken implements store.Store.
func (s *Store) AgentByToken(ctx context.Context, hash []byte) (*store.Token, *store.Agent, error) {
	var k store.Token
	var a store.Agent
	var agentID, userID sql.NullString
	var kCreated, aCreated int64
	var revoked, term sql.NullInt64
	err := s.rstmts["agentByToken"].QueryRowContext(ctx, hash).Scan(&k.ID, &k.Hash, &k.Kind, &agentID, &userID, &k.IssuedBy,
		&k.Label, &kCreated, &revoked, &a.ID, &a.Name, &a.Owner, &a.Status, &a.Manifest, &a.ManifestHash, &aCreated, &term)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil, store.ErrNotFound
	}
	if err != nil {
		return nil, nil, fmt.Errorf("sqlite: read agent token: %w", err)
	}
	k.AgentID, k.UserID, k.CreatedAt, k.RevokedAt = agentID.String, userID.String, fromNanos(kCreated), timePtr(revoked)
	a.CreatedAt, a.TerminatedAt = fromNanos(aCreated), timePtr(term)
	return &k, &a, nil
}

// Call implements store.Store.
func (s *Store) Call(ctx context.Context, id string) (*store.Call, error) {
	return scanCall(s.rstmts["call"].QueryRowContext(ctx, id))
}

// Calls implements store.Store.
func (s *Store) Calls(ctx context.Context, agentID string, limit int) ([]store.Call, error) {
	return s.calls(ctx, `SELECT `+callCols+` FROM calls WHERE agent_id = ? ORDER BY created_at DESC, id LIMIT ?`, agentID, limit)
}

// OverdueCalls implements store.Store.
func (s *Store) OverdueCalls(ctx context.Context, t time.Time, limit int) ([]store.Call, error) {
	return s.calls(ctx, `SELECT `+callCols+` FROM calls WHERE status = 'approved' AND expires_at < ? ORDER BY expires_at LIMIT ?`, nanos(t), limit)
}

func (s *Store) calls(ctx context.Context, q string, args ...any) ([]store.Call, error) {
	rows, err := s.read.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("sqlite: list calls: %w", err)
	}
	defer rows.Close()
	var out []store.Call
	for rows.Next() {
		c, err := scanCall(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, *c)
	}
	return out, rows.Err()
}

// Entries implements store.Store.
func (s *Store) Entries(ctx context.Context, start int64, limit int) ([]store.Entry, error) {
	return s.entries(ctx, `SELECT idx, agent, type, call, body, hashes FROM entries WHERE idx >= ? ORDER BY idx LIMIT ?`, start, limit)
}

// AgentEntries implements store.Store.
func (s *Store) AgentEntries(ctx context.Context, agent string, after int64, limit int) ([]store.Entry, error) {
	return s.entries(ctx, `SELECT idx, agent, type, call, body, hashes FROM entries WHERE agent = ? AND idx > ? ORDER BY idx LIMIT ?`, agent, after, limit)
}

func (s *Store) entries(ctx context.Context, q string, args ...any) ([]store.Entry, error) {
	rows, err := s.read.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("sqlite: read entries: %w", err)
	}
	defer rows.Close()
	var out []store.Entry
	for rows.Next() {
		var e store.Entry
		var hashes []byte
		if err := rows.Scan(&e.Index, &e.Agent, &e.Type, &e.Call, &e.Data, &hashes); err != nil {
			return nil, fmt.Errorf("sqlite: read entries: %w", err)
		}
		if len(hashes) < len(e.Leaf) {
			return nil, fmt.Errorf("sqlite: entry %d has no leaf hash", e.Index)
		}
		copy(e.Leaf[:], hashes)
		out = append(out, e)
	}
	return out, rows.Err()
}

// LatestCheckpoint implements store.Store.
func (s *Store) LatestCheckpoint(ctx context.Context) (*store.Checkpoint, error) {
	var c store.Checkpoint
	var created int64
	err := s.read.QueryRowContext(ctx, `SELECT size, signed, created_at FROM checkpoints ORDER BY size DESC LIMIT 1`).
		Scan(&c.Size, &c.Signed, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, store.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("sqlite: read checkpoint: %w", err)
	}
	c.CreatedAt = fromNanos(created)
	return &c, nil
}

// Failures implements store.Store.
func (s *Store) Failures(ctx context.Context, key []byte, since time.Time) (int, error) {
	return countFailures(ctx, s.read, key, since)
}

// Meta implements store.Store.
func (s *Store) Meta(ctx context.Context, key string) (string, error) {
	var v string
	err := s.read.QueryRowContext(ctx, `SELECT value FROM meta WHERE key = ?`, key).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return "", store.ErrNotFound
	}
	if err != nil {
		return "", fmt.Errorf("sqlite: read meta: %w", err)
	}
	return v, nil
}
