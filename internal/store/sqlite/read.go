package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/arxsec/arx/internal/store"
	"github.com/arxsec/arx/internal/store/segment"
	"github.com/arxsec/arx/record"
	"golang.org/x/mod/sumdb/tlog"
)

// Reads of the state come from memory where it holds them (agents, open
// calls, pending approvals: always; anything changed since the last flush),
// else from the tables; lists read the tables after a Sync, so they include
// every committed change. Nothing here reads an agent's whole history.

// Agent implements store.Agents.
func (s *Store) Agent(ctx context.Context, id string) (*store.Agent, error) {
	if a, ok := s.st.Agent(id); ok {
		return &a, nil
	}
	return scanAgent(s.rstmts["agent"].QueryRowContext(ctx, id))
}

// Agents implements store.Agents.
func (s *Store) Agents(ctx context.Context) ([]store.Agent, error) {
	out := s.st.Agents()
	slices.SortFunc(out, func(a, b store.Agent) int {
		if c := a.CreatedAt.Compare(b.CreatedAt); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out, nil
}

// TokenByHash implements store.Agents.
func (s *Store) TokenByHash(ctx context.Context, hash []byte) (*store.Token, error) {
	return s.tokens.get(hash, func() (*store.Token, error) { return scanToken(s.rstmts["token"].QueryRowContext(ctx, hash)) })
}

// AgentByToken implements store.Agents: the token from the cache, the
// agent from the state.
func (s *Store) AgentByToken(ctx context.Context, hash []byte) (*store.Token, *store.Agent, error) {
	t, err := s.TokenByHash(ctx, hash)
	if err != nil {
		return nil, nil, err
	}
	if t.AgentID == "" {
		return nil, nil, store.ErrNotFound
	}
	a, err := s.Agent(ctx, t.AgentID)
	if err != nil {
		return nil, nil, err
	}
	return t, a, nil
}

// Call implements store.Calls.
func (s *Store) Call(ctx context.Context, id string) (*store.Call, error) {
	if c, ok := s.st.Call(id); ok {
		return &c, nil
	}
	return scanCall(s.rstmts["call"].QueryRowContext(ctx, id))
}

// Calls implements store.Calls.
func (s *Store) Calls(ctx context.Context, agentID string, limit int) ([]store.Call, error) {
	if err := s.proj.Sync(ctx); err != nil {
		return nil, err
	}
	rows, err := s.read.QueryContext(ctx, `SELECT `+callCols+` FROM calls WHERE agent_id = ? ORDER BY created_at DESC, id LIMIT ?`, agentID, limit)
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

// OverdueCalls implements store.Calls, from the open calls in memory.
func (s *Store) OverdueCalls(ctx context.Context, t time.Time, limit int) ([]store.Call, error) {
	out := s.st.OverdueCalls(t, limit)
	slices.SortFunc(out, func(a, b store.Call) int { return a.ExpiresAt.Compare(b.ExpiresAt) })
	return out, nil
}

// Approval implements store.Approvals.
func (s *Store) Approval(ctx context.Context, callID string) (*store.Approval, error) {
	if a, ok := s.st.Approval(callID); ok {
		return &a, nil
	}
	return scanApproval(s.read.QueryRowContext(ctx, `SELECT `+approvalCols+` FROM approvals WHERE call_id = ?`, callID))
}

// Approvals implements store.Approvals.
func (s *Store) Approvals(ctx context.Context, status string, limit int) ([]store.Approval, error) {
	if err := s.proj.Sync(ctx); err != nil {
		return nil, err
	}
	q, a := `SELECT `+approvalCols+` FROM approvals ORDER BY requested_at DESC LIMIT ?`, []any{limit}
	if status != "" {
		q, a = `SELECT `+approvalCols+` FROM approvals WHERE status = ? ORDER BY requested_at DESC LIMIT ?`, []any{status, limit}
	}
	rows, err := s.read.QueryContext(ctx, q, a...)
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

// OverdueApprovals implements store.Approvals, from memory.
func (s *Store) OverdueApprovals(ctx context.Context, t time.Time, limit int) ([]store.Approval, error) {
	out := s.st.OverdueApprovals(t, limit)
	slices.SortFunc(out, func(a, b store.Approval) int { return a.ExpiresAt.Compare(b.ExpiresAt) })
	return out, nil
}

// Entries implements store.LogReader, from the segment files.
func (s *Store) Entries(ctx context.Context, start int64, limit int) ([]store.Entry, error) {
	if start < 0 || limit <= 0 {
		return nil, nil
	}
	limit = int(min(int64(limit), max(s.seq.Size()-start, 0)))
	out := make([]store.Entry, 0, limit)
	err := s.seg.Read(start, limit, func(r segment.Record) error {
		out = append(out, stored(r))
		return nil
	})
	return out, err
}

// stored is a segment record as a store.Entry (its own copy).
func stored(r segment.Record) store.Entry {
	e := store.Entry{Index: r.Index, Leaf: r.Hashes[0], Data: slices.Clone(r.Data)}
	e.Agent, e.Call, e.Type = record.Peek(e.Data)
	return e
}

// AgentEntries implements store.LogReader: the per-agent index gives the
// indexes, the segment files the entries.
func (s *Store) AgentEntries(ctx context.Context, agent string, after int64, limit int) ([]store.Entry, error) {
	if err := s.proj.Sync(ctx); err != nil {
		return nil, err
	}
	// The row that may hold after+1, and those after it.
	rows, err := s.read.QueryContext(ctx, `SELECT idx FROM agent_log WHERE agent = ?1
		AND first >= COALESCE((SELECT MAX(first) FROM agent_log WHERE agent = ?1 AND first <= ?2 + 1), -1)
		ORDER BY first`, agent, after)
	if err != nil {
		return nil, fmt.Errorf("sqlite: read entries: %w", err)
	}
	var idx []int64
	for len(idx) < limit && rows.Next() {
		var b []byte
		if err := rows.Scan(&b); err != nil {
			rows.Close()
			return nil, fmt.Errorf("sqlite: read entries: %w", err)
		}
		list, err := decodeIndexes(b)
		if err != nil {
			rows.Close()
			return nil, err
		}
		for _, i := range list {
			if i > after && len(idx) < limit {
				idx = append(idx, i)
			}
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: read entries: %w", err)
	}
	out := make([]store.Entry, 0, len(idx))
	// Runs of consecutive indexes are read at once.
	for len(idx) > 0 {
		n := 1
		for n < len(idx) && idx[n] == idx[0]+int64(n) {
			n++
		}
		err := s.seg.Read(idx[0], n, func(r segment.Record) error {
			out = append(out, stored(r))
			return nil
		})
		if err != nil {
			return nil, err
		}
		idx = idx[n:]
	}
	return out, nil
}

// TreeSize implements store.LogReader.
func (s *Store) TreeSize(ctx context.Context) (int64, error) { return s.seq.Size(), nil }

// ReadHashes implements store.LogReader.
func (s *Store) ReadHashes(ctx context.Context, indexes []int64) ([]tlog.Hash, error) {
	size := s.seq.Size()
	for _, x := range indexes {
		level, n := tlog.SplitStoredHashIndex(x)
		if (n+1)<<level-1 >= size {
			return nil, fmt.Errorf("sqlite: no stored hash %d in a log of %d entries", x, size)
		}
	}
	return s.seg.ReadHashes(indexes)
}

// LatestCheckpoint implements store.LogReader.
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

// PutCheckpoint implements store.Checkpoints, on the projector's
// connection, apart from the sequencer.
func (s *Store) PutCheckpoint(ctx context.Context, c *store.Checkpoint) error {
	if err := s.failed.Load(); err != nil {
		return *err
	}
	_, err := s.projDB.ExecContext(ctx, `INSERT INTO checkpoints (size, signed, created_at) VALUES (?, ?, ?) ON CONFLICT(size) DO NOTHING`,
		c.Size, c.Signed, nanos(c.CreatedAt))
	if err != nil {
		s.reopenIfReadOnly(s.projDB, "projector", err)
		return s.failStorage(fmt.Errorf("sqlite: write checkpoint: %w", err))
	}
	return nil
}

// Failures implements store.People.
func (s *Store) Failures(ctx context.Context, key []byte, since time.Time) (int, error) {
	var n int
	if err := s.read.QueryRowContext(ctx, `SELECT COUNT(*) FROM failures WHERE key = ? AND at >= ?`, key, nanos(since)).Scan(&n); err != nil {
		return 0, fmt.Errorf("sqlite: count failures: %w", err)
	}
	return n, nil
}

// Meta implements store.Settings.
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

// User implements store.People.
func (s *Store) User(ctx context.Context, id string) (*store.User, error) {
	return scanUser(s.read.QueryRowContext(ctx, `SELECT `+userCols+` FROM users WHERE id = ?`, id))
}

// UserByEmail implements store.People.
func (s *Store) UserByEmail(ctx context.Context, email string) (*store.User, error) {
	return scanUser(s.read.QueryRowContext(ctx, `SELECT `+userCols+` FROM users WHERE email = ? COLLATE NOCASE`, email))
}

// Users implements store.People.
// UserTokens implements store.People.
func (s *Store) UserTokens(ctx context.Context, userID string) ([]store.Token, error) {
	rows, err := s.read.QueryContext(ctx, `SELECT `+tokenCols+` FROM tokens WHERE user_id = ? ORDER BY created_at DESC, id`, userID)
	if err != nil {
		return nil, fmt.Errorf("sqlite: list tokens: %w", err)
	}
	defer rows.Close()
	var out []store.Token
	for rows.Next() {
		t, err := scanToken(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, *t)
	}
	return out, rows.Err()
}

// Passkeys implements store.People.
func (s *Store) Passkeys(ctx context.Context, userID string) ([]store.Passkey, error) {
	return scanPasskeys(s.read.QueryContext(ctx, `SELECT `+passkeyCols+` FROM passkeys WHERE user_id = ? ORDER BY created_at, id`, userID))
}

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

// SessionByHash implements store.People.
func (s *Store) SessionByHash(ctx context.Context, hash []byte) (*store.Session, error) {
	var ss store.Session
	var created, expires int64
	err := s.read.QueryRowContext(ctx, `SELECT hash, user_id, csrf, created_at, expires_at, idp_issuer, idp_subject FROM sessions WHERE hash = ?`, hash).
		Scan(&ss.Hash, &ss.UserID, &ss.CSRF, &created, &expires, &ss.IdPIssuer, &ss.IdPSubject)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, store.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("sqlite: read session: %w", err)
	}
	ss.CreatedAt, ss.ExpiresAt = fromNanos(created), fromNanos(expires)
	return &ss, nil
}

// DueOutbox implements store.Outbox.
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

// PendingOutbox implements store.Outbox.
func (s *Store) PendingOutbox(ctx context.Context, kind string, limit int) ([]store.OutboxItem, error) {
	rows, err := s.read.QueryContext(ctx, `SELECT `+outboxCols+` FROM outbox WHERE done_at IS NULL AND kind = ? ORDER BY id LIMIT ?`, kind, limit)
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

// ManifestText implements store.Agents.
func (s *Store) ManifestText(ctx context.Context, hash string) ([]byte, error) {
	var text []byte
	err := s.read.QueryRowContext(ctx, `SELECT text FROM manifests WHERE hash = ?`, hash).Scan(&text)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, store.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("sqlite: read manifest: %w", err)
	}
	return text, nil
}

// ChatLink implements store.People.
func (s *Store) ChatLink(ctx context.Context, provider, subject string) (*store.ChatLink, error) {
	var l store.ChatLink
	var created int64
	err := s.read.QueryRowContext(ctx, `SELECT provider, subject, user_id, name, created_at FROM chat_links WHERE provider = ? AND subject = ?`,
		provider, subject).Scan(&l.Provider, &l.Subject, &l.UserID, &l.Name, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, store.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("sqlite: read chat link: %w", err)
	}
	l.CreatedAt = fromNanos(created)
	return &l, nil
}

// ChatLinks implements store.People.
func (s *Store) ChatLinks(ctx context.Context, userID string) ([]store.ChatLink, error) {
	rows, err := s.read.QueryContext(ctx, `SELECT provider, subject, user_id, name, created_at FROM chat_links WHERE user_id = ? ORDER BY created_at, provider, subject`, userID)
	if err != nil {
		return nil, fmt.Errorf("sqlite: list chat links: %w", err)
	}
	defer rows.Close()
	var out []store.ChatLink
	for rows.Next() {
		var l store.ChatLink
		var created int64
		if err := rows.Scan(&l.Provider, &l.Subject, &l.UserID, &l.Name, &created); err != nil {
			return nil, fmt.Errorf("sqlite: list chat links: %w", err)
		}
		l.CreatedAt = fromNanos(created)
		out = append(out, l)
	}
	return out, rows.Err()
}

const groupCols = `id, name, external_id, members, created_at`

// Groups implements store.People.
func (s *Store) Groups(ctx context.Context) ([]store.Group, error) {
	return scanGroups(s.read.QueryContext(ctx, `SELECT `+groupCols+` FROM groups ORDER BY name, id`))
}

func scanGroups(rows *sql.Rows, err error) ([]store.Group, error) {
	if err != nil {
		return nil, fmt.Errorf("sqlite: list groups: %w", err)
	}
	defer rows.Close()
	var out []store.Group
	for rows.Next() {
		var g store.Group
		var members string
		var created int64
		if err := rows.Scan(&g.ID, &g.Name, &g.ExternalID, &members, &created); err != nil {
			return nil, fmt.Errorf("sqlite: list groups: %w", err)
		}
		if err := json.Unmarshal([]byte(members), &g.Members); err != nil {
			return nil, fmt.Errorf("sqlite: group %s: members: %w", g.ID, err)
		}
		g.CreatedAt = fromNanos(created)
		out = append(out, g)
	}
	return out, rows.Err()
}

// sortedMembers is a group's members as stored: sorted, without repeats.
func sortedMembers(m []string) []string {
	out := slices.Clone(m)
	slices.Sort(out)
	return slices.Compact(out)
}

// TokenRevocations implements store.Agents.
func (s *Store) TokenRevocations() (uint64, time.Duration) {
	return s.seq.TokenRevocations(store.TokenWait)
}
