package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/arxsec/arx/internal/store"
	"github.com/arxsec/arx/record"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"golang.org/x/mod/sumdb/tlog"
)

const (
	agentCols    = `id, name, owner, status, manifest, manifest_hash, created_at, terminated_at`
	callCols     = `id, agent_id, connector, action, declared_risk, risk, status, idempotency_key, summary, refusal, created_at, expires_at, completed_at, outcome, error, duration_ms, raised_by`
	tokenCols    = `id, hash, kind, agent_id, user_id, issued_by, label, created_at, revoked_at`
	userCols     = `id, email, role, password_hash, created_at, disabled_at`
	approvalCols = `call_id, agent_id, status, approvers, requested_at, expires_at, decided_by, decided_at, reason`
	outboxCols   = `id, kind, payload, created_at, attempts, next_at, done_at, last_error`
)

// tx is one Update's view of the batch transaction.
//
// In PostgreSQL a failed statement aborts the transaction up to the last
// savepoint. So inserts that may meet a taken key use ON CONFLICT DO
// NOTHING (ErrConflict without an error in the database, as the runtime's
// idempotency check needs), and once any statement has failed the Update
// fails as a whole, even if fn ignores the error.
//
// Writes that answer nothing but an error (entries, counters, outbox,
// meta) are queued and sent together before the next read or with the
// savepoint's release: one round trip instead of one each. Their errors
// fail the Update the same way.
type tx struct {
	s    *Store
	conn *pgx.Conn
	ctx  context.Context
	// heads are this update's own chain heads; batchHeads those of earlier
	// updates in the same batch.
	heads, batchHeads map[string]tlog.Hash
	queued            []queuedWrite
	failed            error
}

type queuedWrite struct {
	sql  string
	args []any
}

func (t *tx) queue(sql string, args ...any) error {
	if t.failed != nil {
		return t.failed
	}
	t.queued = append(t.queued, queuedWrite{sql, args})
	return nil
}

// send sends the queued writes and, with next, releases the savepoint and
// takes the next one, in one round trip. at is the queued write that
// failed, or -1 when the failure came after them.
func (t *tx) send(next bool) (at int, err error) {
	q := t.queued
	t.queued = nil
	if len(q) == 0 {
		if !next {
			return 0, nil
		}
		_, err := t.conn.Exec(t.ctx, "RELEASE SAVEPOINT op; SAVEPOINT op")
		return -1, err
	}
	b := &pgx.Batch{}
	for _, w := range q {
		b.Queue(w.sql, w.args...)
	}
	if next {
		b.Queue("RELEASE SAVEPOINT op")
		b.Queue("SAVEPOINT op")
	}
	br := t.conn.SendBatch(t.ctx, b)
	at, err = -1, nil
	for i := range b.Len() {
		if _, e := br.Exec(); e != nil {
			at, err = i, e
			break
		}
	}
	if cerr := br.Close(); err == nil && cerr != nil {
		return -1, cerr
	}
	if err != nil && at >= len(q) {
		at = -1
	}
	return at, err
}

// ready sends what is queued, so a read sees this update's writes, and
// refuses to go on once a statement failed.
func (t *tx) ready() error {
	if t.failed != nil {
		return t.failed
	}
	if len(t.queued) > 0 {
		if _, err := t.send(false); err != nil {
			t.failed = wrapWrite(err)
			return t.failed
		}
	}
	return nil
}

// check notes a statement's failure: the savepoint is aborted.
func (t *tx) check(err error) error {
	if err != nil && !errors.Is(err, pgx.ErrNoRows) && t.failed == nil {
		t.failed = err
	}
	return err
}

func (t *tx) row(sql string, args ...any) pgx.Row {
	if err := t.ready(); err != nil {
		return errRow{err}
	}
	return checkedRow{t, t.conn.QueryRow(t.ctx, sql, args...)}
}

type errRow struct{ err error }

func (r errRow) Scan(...any) error { return r.err }

type checkedRow struct {
	t *tx
	r pgx.Row
}

func (r checkedRow) Scan(dest ...any) error { return r.t.check(r.r.Scan(dest...)) }

// exec runs a write and returns how many rows it touched.
func (t *tx) exec(sql string, args ...any) (int64, error) {
	if err := t.ready(); err != nil {
		return 0, err
	}
	tag, err := t.conn.Exec(t.ctx, sql, args...)
	if t.check(err) != nil {
		return 0, wrapWrite(err)
	}
	return tag.RowsAffected(), nil
}

// insert runs an INSERT ... ON CONFLICT DO NOTHING: no row is a taken key.
func (t *tx) insert(what, sql string, args ...any) error {
	n, err := t.exec(sql, args...)
	if err != nil {
		return err
	}
	if n == 0 {
		return fmt.Errorf("%w: %s", store.ErrConflict, what)
	}
	return nil
}

// update runs an UPDATE: no row is ErrNotFound.
func (t *tx) update(sql string, args ...any) error {
	n, err := t.exec(sql, args...)
	if err != nil {
		return err
	}
	if n == 0 {
		return store.ErrNotFound
	}
	return nil
}

func (t *tx) calls(sql string, args ...any) ([]store.Call, error) {
	if err := t.ready(); err != nil {
		return nil, err
	}
	rows, err := t.conn.Query(t.ctx, sql, args...)
	if t.check(err) != nil {
		return nil, fmt.Errorf("postgres: list calls: %w", err)
	}
	out, err := collect(rows, scanCall)
	return out, t.check(err)
}

func (t *tx) Agent(id string) (*store.Agent, error) {
	return scanAgent(t.row(`SELECT `+agentCols+` FROM agents WHERE id = $1`, id))
}

func (t *tx) Call(id string) (*store.Call, error) {
	return scanCall(t.row(`SELECT `+callCols+` FROM calls WHERE id = $1`, id))
}

func (t *tx) CallByIdempotencyKey(agentID, key string) (*store.Call, error) {
	return scanCall(t.row(`SELECT `+callCols+` FROM calls WHERE agent_id = $1 AND idempotency_key = $2`, agentID, key))
}

func (t *tx) OpenCalls(agentID string) (int, error) {
	var n int
	err := t.row(`SELECT COUNT(*) FROM calls WHERE agent_id = $1 AND status IN ('approved', 'pending_approval')`, agentID).Scan(&n)
	return n, err
}

func (t *tx) CallsOn(agentID, day string) (int, error) {
	var n int
	err := t.row(`SELECT n FROM call_counts WHERE agent_id = $1 AND day = $2`, agentID, day).Scan(&n)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, nil
	}
	return n, err
}

func (t *tx) CountCall(agentID, day string) error {
	return t.queue(`INSERT INTO call_counts (agent_id, day, n) VALUES ($1, $2, 1)
		ON CONFLICT (agent_id, day) DO UPDATE SET n = call_counts.n + 1`, agentID, day)
}

// CountMinute is one round trip: this minute's count with the call and the
// earlier minutes' sum. Writes are serialised by the log lock, so the
// count a call sees is exact across replicas.
func (t *tx) CountMinute(agentID string, minute, since int64) (n, earlier int64, err error) {
	err = t.row(`INSERT INTO call_minutes (agent_id, minute, n) VALUES ($1, $2, 1)
		ON CONFLICT (agent_id, minute) DO UPDATE SET n = call_minutes.n + 1
		RETURNING n, (SELECT COALESCE(SUM(c.n), 0)::BIGINT FROM call_minutes c WHERE c.agent_id = $1 AND c.minute >= $3 AND c.minute < $2)`,
		agentID, minute, since).Scan(&n, &earlier)
	if err != nil {
		return 0, 0, fmt.Errorf("postgres: count call: %w", err)
	}
	if n == 1 { // the agent's first call this minute: forget the minutes out of the window
		if err := t.queue(`DELETE FROM call_minutes WHERE agent_id = $1 AND minute < $2`, agentID, since); err != nil {
			return 0, 0, err
		}
	}
	return n, earlier, nil
}

func (t *tx) Failures(key []byte, since time.Time) (int, error) {
	var n int
	if err := t.row(`SELECT COUNT(*) FROM failures WHERE key = $1 AND at >= $2`, key, nanos(since)).Scan(&n); err != nil {
		return 0, fmt.Errorf("postgres: count failures: %w", err)
	}
	return n, nil
}

func (t *tx) AddFailure(key []byte, at time.Time) (int64, error) {
	var id int64
	if err := t.row(`INSERT INTO failures (key, at) VALUES ($1, $2) RETURNING id`, key, nanos(at)).Scan(&id); err != nil {
		return 0, fmt.Errorf("postgres: add failure: %w", err)
	}
	return id, nil
}

func (t *tx) DeleteFailure(id int64) error {
	return t.queue(`DELETE FROM failures WHERE id = $1`, id)
}

func (t *tx) PruneFailures(before time.Time) error {
	return t.queue(`DELETE FROM failures WHERE at < $1`, nanos(before))
}

func (t *tx) AgentOpenCalls(agentID string) ([]store.Call, error) {
	return t.calls(`SELECT `+callCols+` FROM calls WHERE agent_id = $1 AND status IN ('approved', 'pending_approval')
		ORDER BY created_at, id COLLATE "C"`, agentID)
}

func (t *tx) InsertAgent(a *store.Agent) error {
	return t.insert("agent "+a.ID, `INSERT INTO agents (`+agentCols+`) VALUES ($1,$2,$3,$4,$5,$6,$7,$8) ON CONFLICT DO NOTHING`,
		a.ID, a.Name, a.Owner, a.Status, a.Manifest, a.ManifestHash, nanos(a.CreatedAt), nullTime(a.TerminatedAt))
}

func (t *tx) SetAgentStatus(id, status string, at time.Time) error {
	var term *int64
	if status == store.AgentTerminated {
		n := nanos(at)
		term = &n
	}
	return t.update(`UPDATE agents SET status = $1, terminated_at = COALESCE(terminated_at, $2) WHERE id = $3`, status, term, id)
}

func (t *tx) InsertToken(k *store.Token) error {
	return t.insert("token "+k.ID, `INSERT INTO tokens (`+tokenCols+`) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9) ON CONFLICT DO NOTHING`,
		k.ID, k.Hash, k.Kind, nullString(k.AgentID), nullString(k.UserID), k.IssuedBy, k.Label, nanos(k.CreatedAt), nullTime(k.RevokedAt))
}

func (t *tx) RevokeToken(id string, at time.Time) error {
	return t.update(`UPDATE tokens SET revoked_at = COALESCE(revoked_at, $1) WHERE id = $2`, nanos(at), id)
}

func (t *tx) RevokeAgentTokens(agentID string, at time.Time) (int, error) {
	n, err := t.exec(`UPDATE tokens SET revoked_at = $1 WHERE agent_id = $2 AND revoked_at IS NULL`, nanos(at), agentID)
	return int(n), err
}

func (t *tx) RevokeAgentCredentials(agentID string, at time.Time) (int, error) {
	n, err := t.exec(`UPDATE calls SET status = 'revoked', completed_at = $1 WHERE agent_id = $2 AND status = 'approved'`, nanos(at), agentID)
	return int(n), err
}

func (t *tx) InsertCall(c *store.Call) error {
	return t.insert("call "+c.ID, `INSERT INTO calls (`+callCols+`) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17)
		ON CONFLICT DO NOTHING`,
		c.ID, c.AgentID, c.Connector, c.Action, c.DeclaredRisk, c.Risk, c.Status, c.IdempotencyKey, c.Summary, c.Refusal,
		nanos(c.CreatedAt), nanos(c.ExpiresAt), nullTime(c.CompletedAt), c.Outcome, c.Error, c.DurationMS, c.RaisedBy)
}

func (t *tx) UpdateCall(c *store.Call) error {
	return t.update(`UPDATE calls SET status = $1, refusal = $2, expires_at = $3, completed_at = $4, outcome = $5, error = $6,
		duration_ms = $7 WHERE id = $8`,
		c.Status, c.Refusal, nanos(c.ExpiresAt), nullTime(c.CompletedAt), c.Outcome, c.Error, c.DurationMS, c.ID)
}

func (t *tx) SetMeta(key, value string) error {
	return t.queue(`INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value`, key, value)
}

func (t *tx) PutCheckpoint(c *store.Checkpoint) error {
	return t.queue(`INSERT INTO checkpoints (size, signed, created_at) VALUES ($1, $2, $3) ON CONFLICT (size) DO NOTHING`,
		c.Size, c.Signed, nanos(c.CreatedAt))
}

func (t *tx) User(id string) (*store.User, error) {
	return scanUser(t.row(`SELECT `+userCols+` FROM users WHERE id = $1`, id))
}

func (t *tx) UserByEmail(email string) (*store.User, error) {
	return scanUser(t.row(`SELECT `+userCols+` FROM users WHERE lower(email COLLATE "C") = lower($1 COLLATE "C")`, email))
}

func (t *tx) InsertUser(u *store.User) error {
	return t.insert("user "+u.ID, `INSERT INTO users (`+userCols+`) VALUES ($1,$2,$3,$4,$5,$6) ON CONFLICT DO NOTHING`,
		u.ID, u.Email, u.Role, u.PasswordHash, nanos(u.CreatedAt), nullTime(u.DisabledAt))
}

func (t *tx) UpdateUser(u *store.User) error {
	return t.update(`UPDATE users SET role = $1, password_hash = $2, disabled_at = $3 WHERE id = $4`,
		u.Role, u.PasswordHash, nullTime(u.DisabledAt), u.ID)
}

func (t *tx) InsertSetupToken(k *store.SetupToken) error {
	return t.insert("setup token", `INSERT INTO setup_tokens (hash, user_id, expires_at, used_at) VALUES ($1,$2,$3,$4) ON CONFLICT DO NOTHING`,
		k.Hash, k.UserID, nanos(k.ExpiresAt), nullTime(k.UsedAt))
}

func (t *tx) UseSetupToken(hash []byte, at time.Time) (*store.SetupToken, error) {
	var k store.SetupToken
	var expires int64
	// One statement: unused and unexpired, marked used.
	err := t.row(`UPDATE setup_tokens SET used_at = $1 WHERE hash = $2 AND used_at IS NULL AND expires_at > $1
		RETURNING hash, user_id, expires_at`, nanos(at), hash).Scan(&k.Hash, &k.UserID, &expires)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, store.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("postgres: use setup token: %w", err)
	}
	k.ExpiresAt, k.UsedAt = fromNanos(expires), &at
	return &k, nil
}

func (t *tx) InsertSession(x *store.Session) error {
	return t.insert("session", `INSERT INTO sessions (hash, user_id, csrf, created_at, expires_at) VALUES ($1,$2,$3,$4,$5) ON CONFLICT DO NOTHING`,
		x.Hash, x.UserID, x.CSRF, nanos(x.CreatedAt), nanos(x.ExpiresAt))
}

func (t *tx) DeleteSession(hash []byte) error {
	return t.queue(`DELETE FROM sessions WHERE hash = $1`, hash)
}

func (t *tx) DeleteUserSessions(userID string) error {
	return t.queue(`DELETE FROM sessions WHERE user_id = $1`, userID)
}

func (t *tx) Approval(callID string) (*store.Approval, error) {
	return scanApproval(t.row(`SELECT `+approvalCols+` FROM approvals WHERE call_id = $1`, callID))
}

func (t *tx) InsertApproval(a *store.Approval) error {
	approvers, err := json.Marshal(a.Approvers)
	if err != nil {
		return err
	}
	return t.insert("approval "+a.CallID, `INSERT INTO approvals (`+approvalCols+`) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9) ON CONFLICT DO NOTHING`,
		a.CallID, a.AgentID, a.Status, string(approvers), nanos(a.RequestedAt), nanos(a.ExpiresAt), a.DecidedBy, nullTime(a.DecidedAt), a.Reason)
}

func (t *tx) UpdateApproval(a *store.Approval) error {
	return t.update(`UPDATE approvals SET status = $1, decided_by = $2, decided_at = $3, reason = $4 WHERE call_id = $5`,
		a.Status, a.DecidedBy, nullTime(a.DecidedAt), a.Reason, a.CallID)
}

func (t *tx) Enqueue(kind string, payload []byte, at time.Time) error {
	return t.queue(`INSERT INTO outbox (kind, payload, created_at, next_at) VALUES ($1, $2, $3, $3)`, kind, payload, nanos(at))
}

func (t *tx) FinishOutbox(id int64, at time.Time, errMsg string, next time.Time) error {
	if errMsg == "" {
		return t.update(`UPDATE outbox SET attempts = attempts + 1, done_at = $1, last_error = '' WHERE id = $2`, nanos(at), id)
	}
	return t.update(`UPDATE outbox SET attempts = attempts + 1, next_at = $1, last_error = $2 WHERE id = $3`, nanos(next), errMsg, id)
}

func (t *tx) Append(e *record.Entry) error {
	if t.failed != nil {
		return t.failed
	}
	prev, ok, err := t.head(e.Agent)
	if err != nil {
		return err
	}
	e.Prev = ""
	if ok {
		e.Prev = record.HashString(prev)
	}
	e.Index = t.s.tree.Size()
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	body, err := e.Marshal()
	if err != nil {
		return err
	}
	stored := t.s.tree.Append(record.LeafHash(body))
	hashes := make([]byte, 0, len(stored)*tlog.HashSize)
	for _, h := range stored {
		hashes = append(hashes, h[:]...)
	}
	// From here the tree has moved: if the insert fails, so does the
	// Update (t.failed), and the sequencer rolls the tree back with it.
	if err := t.queue(`INSERT INTO entries (idx, agent, type, call, body, hashes) VALUES ($1, $2, $3, $4, $5, $6)`,
		e.Index, e.Agent, e.Type, e.Call, body, hashes); err != nil {
		return err
	}
	if t.heads == nil {
		t.heads = map[string]tlog.Hash{}
	}
	t.heads[e.Agent] = stored[0]
	return nil
}

// head is the leaf hash of the agent's latest entry: this update's own
// appends first, then earlier updates of the batch, then what is committed
// (cached by the sequencer until another replica appends; read from the
// log on a miss).
func (t *tx) head(agent string) (tlog.Hash, bool, error) {
	if h, ok := t.heads[agent]; ok {
		return h, true, nil
	}
	if h, ok := t.batchHeads[agent]; ok {
		return h, true, nil
	}
	if h, ok := t.s.heads[agent]; ok {
		return h, true, nil
	}
	var leaf []byte
	err := t.row(`SELECT substring(hashes FROM 1 FOR 32) FROM entries WHERE agent = $1 ORDER BY idx DESC LIMIT 1`, agent).Scan(&leaf)
	if errors.Is(err, pgx.ErrNoRows) {
		return tlog.Hash{}, false, nil
	}
	if err != nil {
		return tlog.Hash{}, false, fmt.Errorf("postgres: read chain head: %w", err)
	}
	if len(leaf) != tlog.HashSize {
		return tlog.Hash{}, false, fmt.Errorf("postgres: chain head of %q has %d bytes", agent, len(leaf))
	}
	h := tlog.Hash(leaf)
	// Neither this update's nor the batch's: committed, and no other
	// replica appends while this batch holds the log lock. Safe to cache.
	t.s.heads[agent] = h
	return h, true, nil
}

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
	err := r.Scan(&a.ID, &a.Name, &a.Owner, &a.Status, &a.Manifest, &a.ManifestHash, &created, &term)
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
		&c.Summary, &c.Refusal, &created, &expires, &completed, &c.Outcome, &c.Error, &c.DurationMS, &c.RaisedBy)
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
	var approvers string
	var requested, expires int64
	var decided *int64
	err := r.Scan(&a.CallID, &a.AgentID, &a.Status, &approvers, &requested, &expires, &a.DecidedBy, &decided, &a.Reason)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, store.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("postgres: read approval: %w", err)
	}
	if err := json.Unmarshal([]byte(approvers), &a.Approvers); err != nil {
		return nil, fmt.Errorf("postgres: approval %s: approvers: %w", a.CallID, err)
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
