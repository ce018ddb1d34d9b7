package postgres

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/arxsec/arx/internal/store"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Reads go to the pool: each sees what was committed before it started,
// on whichever replica, and nothing is cached. Each is bounded by
// Config.ReadTimeout (bounded).

func (s *Store) list(ctx context.Context, what string, sql string, args ...any) (pgx.Rows, error) {
	rows, err := s.reads.Query(ctx, sql, args...)
	if err != nil {
		return nil, fmt.Errorf("postgres: %s: %w", what, err)
	}
	return rows, nil
}

// Agent implements store.Store.
func (s *Store) Agent(ctx context.Context, id string) (*store.Agent, error) {
	return scanAgent(s.reads.QueryRow(ctx, `SELECT `+agentCols+` FROM agents WHERE id = $1`, id))
}

// Agents implements store.Store.
func (s *Store) Agents(ctx context.Context) ([]store.Agent, error) {
	rows, err := s.list(ctx, "list agents", `SELECT `+agentCols+` FROM agents ORDER BY created_at, id COLLATE "C"`)
	if err != nil {
		return nil, err
	}
	return collect(rows, scanAgent)
}

// TokenByHash implements store.Store.
func (s *Store) TokenByHash(ctx context.Context, hash []byte) (*store.Token, error) {
	return scanToken(s.reads.QueryRow(ctx, `SELECT `+tokenCols+` FROM tokens WHERE hash = $1`, hash))
}

// AgentByToken implements store.Store.
func (s *Store) AgentByToken(ctx context.Context, hash []byte) (*store.Token, *store.Agent, error) {
	var k store.Token
	var a store.Agent
	var agentID, userID *string
	var kCreated, aCreated int64
	var revoked, term *int64
	err := s.reads.QueryRow(ctx, `SELECT t.id, t.hash, t.kind, t.agent_id, t.user_id, t.issued_by, t.label, t.created_at, t.revoked_at,
		a.id, a.name, a.owner, a.status, a.manifest, a.manifest_hash, a.created_at, a.terminated_at, a.shadow_hash, a.shadow_since
		FROM tokens t JOIN agents a ON a.id = t.agent_id WHERE t.hash = $1`, hash).Scan(&k.ID, &k.Hash, &k.Kind, &agentID, &userID,
		&k.IssuedBy, &k.Label, &kCreated, &revoked, &a.ID, &a.Name, &a.Owner, &a.Status, &a.Manifest, &a.ManifestHash, &aCreated, &term,
		&a.ShadowHash, &a.ShadowSince)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil, store.ErrNotFound
	}
	if err != nil {
		return nil, nil, fmt.Errorf("postgres: read agent token: %w", err)
	}
	k.AgentID, k.UserID, k.CreatedAt, k.RevokedAt = str(agentID), str(userID), fromNanos(kCreated), timePtr(revoked)
	a.CreatedAt, a.TerminatedAt = fromNanos(aCreated), timePtr(term)
	return &k, &a, nil
}

// Call implements store.Store.
func (s *Store) Call(ctx context.Context, id string) (*store.Call, error) {
	return scanCall(s.reads.QueryRow(ctx, `SELECT `+callCols+` FROM calls WHERE id = $1`, id))
}

// Calls implements store.Store.
func (s *Store) Calls(ctx context.Context, agentID string, limit int) ([]store.Call, error) {
	rows, err := s.list(ctx, "list calls", `SELECT `+callCols+` FROM calls WHERE agent_id = $1
		ORDER BY created_at DESC, id COLLATE "C" LIMIT $2`, agentID, limit)
	if err != nil {
		return nil, err
	}
	return collect(rows, scanCall)
}

// OverdueCalls implements store.Store.
func (s *Store) OverdueCalls(ctx context.Context, t time.Time, limit int) ([]store.Call, error) {
	rows, err := s.list(ctx, "list calls", `SELECT `+callCols+` FROM calls WHERE status = 'approved' AND expires_at < $1
		ORDER BY expires_at LIMIT $2`, nanos(t), limit)
	if err != nil {
		return nil, err
	}
	return collect(rows, scanCall)
}

// Entries implements store.Store.
func (s *Store) Entries(ctx context.Context, start int64, limit int) ([]store.Entry, error) {
	return s.entries(ctx, `SELECT idx, agent, type, call, body, substring(hashes FROM 1 FOR 32) FROM entries
		WHERE idx >= $1 ORDER BY idx LIMIT $2`, start, limit)
}

// AgentEntries implements store.Store.
func (s *Store) AgentEntries(ctx context.Context, agent string, after int64, limit int) ([]store.Entry, error) {
	return s.entries(ctx, `SELECT idx, agent, type, call, body, substring(hashes FROM 1 FOR 32) FROM entries
		WHERE agent = $1 AND idx > $2 ORDER BY idx LIMIT $3`, agent, after, limit)
}

func (s *Store) entries(ctx context.Context, sql string, args ...any) ([]store.Entry, error) {
	rows, err := s.list(ctx, "read entries", sql, args...)
	if err != nil {
		return nil, err
	}
	return collect(rows, func(r pgx.Row) (*store.Entry, error) {
		var e store.Entry
		var leaf []byte
		if err := r.Scan(&e.Index, &e.Agent, &e.Type, &e.Call, &e.Data, &leaf); err != nil {
			return nil, fmt.Errorf("postgres: read entries: %w", err)
		}
		if len(leaf) != len(e.Leaf) {
			return nil, fmt.Errorf("postgres: entry %d has no leaf hash", e.Index)
		}
		copy(e.Leaf[:], leaf)
		return &e, nil
	})
}

// LatestCheckpoint implements store.Store.
// PutCheckpoint implements store.Checkpoints, outside any batch: no log
// lock is taken.
func (s *Store) PutCheckpoint(ctx context.Context, c *store.Checkpoint) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.BatchTimeout)
	defer cancel()
	if _, err := s.pool.Exec(ctx, `INSERT INTO checkpoints (size, signed, created_at) VALUES ($1, $2, $3) ON CONFLICT (size) DO NOTHING`,
		c.Size, c.Signed, nanos(c.CreatedAt)); err != nil {
		return fmt.Errorf("postgres: write checkpoint: %w", err)
	}
	return nil
}

func (s *Store) LatestCheckpoint(ctx context.Context) (*store.Checkpoint, error) {
	var c store.Checkpoint
	var created int64
	err := s.reads.QueryRow(ctx, `SELECT size, signed, created_at FROM checkpoints ORDER BY size DESC LIMIT 1`).
		Scan(&c.Size, &c.Signed, &created)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, store.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("postgres: read checkpoint: %w", err)
	}
	c.CreatedAt = fromNanos(created)
	return &c, nil
}

// Failures implements store.Store.
func (s *Store) Failures(ctx context.Context, key []byte, since time.Time) (int, error) {
	var n int
	if err := s.reads.QueryRow(ctx, `SELECT COUNT(*) FROM failures WHERE key = $1 AND at >= $2`, key, nanos(since)).Scan(&n); err != nil {
		return 0, fmt.Errorf("postgres: count failures: %w", err)
	}
	return n, nil
}

// Meta implements store.Store.
func (s *Store) Meta(ctx context.Context, key string) (string, error) {
	var v string
	err := s.reads.QueryRow(ctx, `SELECT value FROM meta WHERE key = $1`, key).Scan(&v)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", store.ErrNotFound
	}
	if err != nil {
		return "", fmt.Errorf("postgres: read meta: %w", err)
	}
	return v, nil
}

// User implements store.Store.
func (s *Store) User(ctx context.Context, id string) (*store.User, error) {
	return scanUser(s.reads.QueryRow(ctx, `SELECT `+userCols+` FROM users WHERE id = $1`, id))
}

// UserByEmail implements store.Store.
func (s *Store) UserByEmail(ctx context.Context, email string) (*store.User, error) {
	return scanUser(s.reads.QueryRow(ctx, `SELECT `+userCols+` FROM users WHERE lower(email COLLATE "C") = lower($1::text COLLATE "C")`, email))
}

// Users implements store.Store.
// UserTokens implements store.People.
func (s *Store) UserTokens(ctx context.Context, userID string) ([]store.Token, error) {
	rows, err := s.list(ctx, "list tokens", `SELECT `+tokenCols+` FROM tokens WHERE user_id = $1 ORDER BY created_at DESC, id`, userID)
	if err != nil {
		return nil, err
	}
	return collect(rows, scanToken)
}

// Passkeys implements store.People.
func (s *Store) Passkeys(ctx context.Context, userID string) ([]store.Passkey, error) {
	rows, err := s.list(ctx, "list passkeys", `SELECT `+passkeyCols+` FROM passkeys WHERE user_id = $1 ORDER BY created_at, id`, userID)
	if err != nil {
		return nil, err
	}
	return collect(rows, scanPasskey)
}

func (s *Store) Users(ctx context.Context) ([]store.User, error) {
	rows, err := s.list(ctx, "list users", `SELECT `+userCols+` FROM users ORDER BY lower(email COLLATE "C")`)
	if err != nil {
		return nil, err
	}
	return collect(rows, scanUser)
}

// SessionByHash implements store.Store.
func (s *Store) SessionByHash(ctx context.Context, hash []byte) (*store.Session, error) {
	var x store.Session
	var created, expires int64
	err := s.reads.QueryRow(ctx, `SELECT hash, user_id, csrf, created_at, expires_at, idp_issuer, idp_subject FROM sessions WHERE hash = $1`, hash).
		Scan(&x.Hash, &x.UserID, &x.CSRF, &created, &expires, &x.IdPIssuer, &x.IdPSubject)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, store.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("postgres: read session: %w", err)
	}
	x.CreatedAt, x.ExpiresAt = fromNanos(created), fromNanos(expires)
	return &x, nil
}

// Approval implements store.Store.
func (s *Store) Approval(ctx context.Context, callID string) (*store.Approval, error) {
	return scanApproval(s.reads.QueryRow(ctx, `SELECT `+approvalCols+` FROM approvals WHERE call_id = $1`, callID))
}

// Approvals implements store.Store.
func (s *Store) Approvals(ctx context.Context, status string, limit int) ([]store.Approval, error) {
	var rows pgx.Rows
	var err error
	if status == "" {
		rows, err = s.list(ctx, "list approvals", `SELECT `+approvalCols+` FROM approvals ORDER BY requested_at DESC LIMIT $1`, limit)
	} else {
		rows, err = s.list(ctx, "list approvals", `SELECT `+approvalCols+` FROM approvals WHERE status = $1
			ORDER BY requested_at DESC LIMIT $2`, status, limit)
	}
	if err != nil {
		return nil, err
	}
	return collect(rows, scanApproval)
}

// OverdueApprovals implements store.Store.
func (s *Store) OverdueApprovals(ctx context.Context, t time.Time, limit int) ([]store.Approval, error) {
	rows, err := s.list(ctx, "list approvals", `SELECT `+approvalCols+` FROM approvals WHERE status = 'pending' AND expires_at < $1
		ORDER BY expires_at LIMIT $2`, nanos(t), limit)
	if err != nil {
		return nil, err
	}
	return collect(rows, scanApproval)
}

// DueOutbox implements store.Store. It leases what it returns until
// t+store.OutboxLease, so that of several replicas one delivers each item;
// FinishOutbox ends the lease. Items another replica is leasing right now
// are skipped, not waited for.
func (s *Store) DueOutbox(ctx context.Context, t time.Time, limit int) ([]store.OutboxItem, error) {
	rows, err := s.list(ctx, "read outbox", `WITH due AS (
			SELECT `+outboxCols+` FROM outbox WHERE done_at IS NULL AND next_at <= $1
			ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED)
		UPDATE outbox o SET next_at = $3 FROM due WHERE o.id = due.id
		RETURNING due.id, due.kind, due.payload, due.created_at, due.attempts, due.next_at, due.done_at, due.last_error`,
		nanos(t), limit, nanos(t.Add(store.OutboxLease)))
	if err != nil {
		return nil, err
	}
	out, err := collect(rows, scanOutbox)
	if err != nil {
		return nil, err
	}
	slices.SortFunc(out, func(a, b store.OutboxItem) int { return cmp.Compare(a.ID, b.ID) })
	return out, nil
}

// PendingOutbox implements store.Store.
func (s *Store) PendingOutbox(ctx context.Context, kind string, limit int) ([]store.OutboxItem, error) {
	rows, err := s.list(ctx, "read outbox", `SELECT `+outboxCols+` FROM outbox WHERE done_at IS NULL AND kind = $1 ORDER BY id LIMIT $2`,
		kind, limit)
	if err != nil {
		return nil, err
	}
	return collect(rows, scanOutbox)
}

// bounded is the pool with Config.ReadTimeout on each read. pgx waits for
// an answer as long as its context allows, and a stalled path (a black
// hole, or a server that stopped answering) never fails a read by itself:
// the socket stays open. At the deadline pgx closes the connection, and
// the pool does not hand it out again.
type bounded struct {
	pool    *pgxpool.Pool
	timeout time.Duration
}

var _ querier = bounded{}

func (b bounded) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	ctx, cancel := context.WithTimeout(ctx, b.timeout)
	return boundedRow{b.pool.QueryRow(ctx, sql, args...), cancel}
}

func (b bounded) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	ctx, cancel := context.WithTimeout(ctx, b.timeout)
	rows, err := b.pool.Query(ctx, sql, args...)
	if err != nil {
		cancel()
		return nil, err
	}
	return &boundedRows{Rows: rows, cancel: cancel}, nil
}

type boundedRow struct {
	row    pgx.Row
	cancel context.CancelFunc
}

func (r boundedRow) Scan(dest ...any) error {
	defer r.cancel()
	return r.row.Scan(dest...)
}

// boundedRows ends its context once read to the end or closed.
type boundedRows struct {
	pgx.Rows
	cancel context.CancelFunc
}

func (r *boundedRows) Next() bool {
	if r.Rows.Next() {
		return true
	}
	r.cancel()
	return false
}

func (r *boundedRows) Close() {
	r.Rows.Close()
	r.cancel()
}

// ManifestText implements store.Agents.
func (s *Store) ManifestText(ctx context.Context, hash string) ([]byte, error) {
	var text []byte
	err := s.reads.QueryRow(ctx, `SELECT text FROM manifests WHERE hash = $1`, hash).Scan(&text)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, store.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("postgres: read manifest: %w", err)
	}
	return text, nil
}

func scanChatLink(r pgx.Row) (*store.ChatLink, error) {
	var l store.ChatLink
	var created int64
	if err := r.Scan(&l.Provider, &l.Subject, &l.UserID, &l.Name, &created); err != nil {
		return nil, err
	}
	l.CreatedAt = fromNanos(created)
	return &l, nil
}

// ChatLink implements store.People.
func (s *Store) ChatLink(ctx context.Context, provider, subject string) (*store.ChatLink, error) {
	l, err := scanChatLink(s.reads.QueryRow(ctx, `SELECT provider, subject, user_id, name, created_at FROM chat_links WHERE provider = $1 AND subject = $2`,
		provider, subject))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, store.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("postgres: read chat link: %w", err)
	}
	return l, nil
}

// ChatLinks implements store.People.
func (s *Store) ChatLinks(ctx context.Context, userID string) ([]store.ChatLink, error) {
	rows, err := s.list(ctx, "list chat links", `SELECT provider, subject, user_id, name, created_at FROM chat_links WHERE user_id = $1
		ORDER BY created_at, provider COLLATE "C", subject COLLATE "C"`, userID)
	if err != nil {
		return nil, err
	}
	return collect(rows, scanChatLink)
}

const groupCols = `id, name, external_id, members, created_at`

func scanGroup(r pgx.Row) (*store.Group, error) {
	var g store.Group
	var created int64
	if err := r.Scan(&g.ID, &g.Name, &g.ExternalID, &g.Members, &created); err != nil {
		return nil, err
	}
	g.CreatedAt = fromNanos(created)
	return &g, nil
}

// Groups implements store.People.
func (s *Store) Groups(ctx context.Context) ([]store.Group, error) {
	rows, err := s.list(ctx, "list groups", `SELECT `+groupCols+` FROM groups ORDER BY name COLLATE "C", id COLLATE "C"`)
	if err != nil {
		return nil, err
	}
	return collect(rows, scanGroup)
}

// TokenRevocations implements store.Agents: the revocations folded by this
// replica's sequencer (its own, and other replicas' as each batch reads
// them under the log lock). A request that saved its token's read waits
// for its Update to run at most as long as that read would have.
func (s *Store) TokenRevocations() (uint64, time.Duration) {
	return s.seq.TokenRevocations(s.cfg.ReadTimeout)
}
