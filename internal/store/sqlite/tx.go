package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/arxsec/arx/internal/store"
	"github.com/arxsec/arx/record"
	"golang.org/x/mod/sumdb/tlog"
)

const (
	agentCols = `id, name, owner, status, manifest, manifest_hash, created_at, terminated_at`
	callCols  = `id, agent_id, connector, action, declared_risk, risk, status, idempotency_key, summary, refusal,
		created_at, expires_at, completed_at, outcome, error, duration_ms, raised_by`
	tokenCols = `id, hash, kind, agent_id, user_id, issued_by, label, created_at, revoked_at`
)

// Statements the write path runs on every call, prepared once.
var hotStatements = map[string]string{
	"agent":       `SELECT ` + agentCols + ` FROM agents WHERE id = ?`,
	"call":        `SELECT ` + callCols + ` FROM calls WHERE id = ?`,
	"callByKey":   `SELECT ` + callCols + ` FROM calls WHERE agent_id = ? AND idempotency_key = ?`,
	"openCalls":   `SELECT COUNT(*) FROM calls WHERE agent_id = ? AND status IN ('approved', 'pending_approval')`,
	"callsOn":     `SELECT n FROM call_counts WHERE agent_id = ? AND day = ?`,
	"countCall":   `INSERT INTO call_counts (agent_id, day, n) VALUES (?, ?, 1) ON CONFLICT (agent_id, day) DO UPDATE SET n = n + 1`,
	"countMinute": `INSERT INTO call_minutes (agent_id, minute, n) VALUES (?1, ?2, 1) ON CONFLICT (agent_id, minute) DO UPDATE SET n = n + 1 RETURNING n, (SELECT COALESCE(SUM(c.n), 0) FROM call_minutes c WHERE c.agent_id = ?1 AND c.minute >= ?3 AND c.minute < ?2)`,
	"insertCall":  `INSERT INTO calls (` + callCols + `) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)`,
	"updateCall":  `UPDATE calls SET status = ?, refusal = ?, expires_at = ?, completed_at = ?, outcome = ?, error = ?, duration_ms = ? WHERE id = ?`,
	"head":        `SELECT hashes FROM entries WHERE agent = ? ORDER BY idx DESC LIMIT 1`,
	"savepoint":   `SAVEPOINT op`,
	"rollbackTo":  `ROLLBACK TO op`,
	"release":     `RELEASE op`,
	"insertEntry": `INSERT INTO entries (idx, agent, type, call, body, hashes) VALUES (?, ?, ?, ?, ?, ?)`,
}

// Statements the read path runs on every request, prepared on the read pool.
var hotReads = map[string]string{
	"agent": `SELECT ` + agentCols + ` FROM agents WHERE id = ?`,
	"token": `SELECT ` + tokenCols + ` FROM tokens WHERE hash = ?`,
	"call":  `SELECT ` + callCols + ` FROM calls WHERE id = ?`,
	"agentByToken": `SELECT t.id, t.hash, t.kind, t.agent_id, t.user_id, t.issued_by, t.label, t.created_at, t.revoked_at,
		a.id, a.name, a.owner, a.status, a.manifest, a.manifest_hash, a.created_at, a.terminated_at
		FROM tokens t JOIN agents a ON a.id = t.agent_id WHERE t.hash = ?`,
}

func (s *Store) prepare(ctx context.Context) error {
	s.rstmts = make(map[string]*sql.Stmt, len(hotReads))
	for name, q := range hotReads {
		st, err := s.read.PrepareContext(ctx, q)
		if err != nil {
			return fmt.Errorf("sqlite: prepare %s: %w", name, err)
		}
		s.rstmts[name] = st
	}
	s.stmts = make(map[string]*sql.Stmt, len(hotStatements))
	for name, q := range hotStatements {
		st, err := s.write.PrepareContext(ctx, q)
		if err != nil {
			return fmt.Errorf("sqlite: prepare %s: %w", name, err)
		}
		s.stmts[name] = st
	}
	return nil
}

type tx struct {
	s   *Store
	tx  *sql.Tx
	ctx context.Context
	// heads are this update's own chain heads; batchHeads those of earlier
	// updates in the same batch.
	heads, batchHeads map[string]tlog.Hash
	// appendErr is set when an Append failed after it advanced the tree: the
	// Update then fails even if fn ignores the error, or the tree and the
	// stored entries would part.
	appendErr error
}

func (t *tx) stmt(name string) *sql.Stmt { return t.tx.StmtContext(t.ctx, t.s.stmts[name]) }

func (t *tx) Agent(id string) (*store.Agent, error) {
	return scanAgent(t.stmt("agent").QueryRowContext(t.ctx, id))
}

func (t *tx) Call(id string) (*store.Call, error) {
	return scanCall(t.stmt("call").QueryRowContext(t.ctx, id))
}

func (t *tx) CallByIdempotencyKey(agentID, key string) (*store.Call, error) {
	return scanCall(t.stmt("callByKey").QueryRowContext(t.ctx, agentID, key))
}

func (t *tx) OpenCalls(agentID string) (int, error) {
	var n int
	err := t.stmt("openCalls").QueryRowContext(t.ctx, agentID).Scan(&n)
	return n, err
}

func (t *tx) InsertAgent(a *store.Agent) error {
	_, err := t.tx.ExecContext(t.ctx, `INSERT INTO agents (`+agentCols+`) VALUES (?,?,?,?,?,?,?,?)`,
		a.ID, a.Name, a.Owner, a.Status, a.Manifest, a.ManifestHash, nanos(a.CreatedAt), nullTime(a.TerminatedAt))
	return wrapWrite(err)
}

func (t *tx) SetAgentStatus(id, status string, at time.Time) error {
	var term sql.NullInt64
	if status == store.AgentTerminated {
		term = sql.NullInt64{Int64: nanos(at), Valid: true}
	}
	res, err := t.tx.ExecContext(t.ctx, `UPDATE agents SET status = ?, terminated_at = COALESCE(terminated_at, ?) WHERE id = ?`, status, term, id)
	return affected(res, err)
}

func (t *tx) InsertToken(k *store.Token) error {
	_, err := t.tx.ExecContext(t.ctx, `INSERT INTO tokens (`+tokenCols+`) VALUES (?,?,?,?,?,?,?,?,?)`,
		k.ID, k.Hash, k.Kind, nullString(k.AgentID), nullString(k.UserID), k.IssuedBy, k.Label, nanos(k.CreatedAt), nullTime(k.RevokedAt))
	return wrapWrite(err)
}

func (t *tx) RevokeToken(id string, at time.Time) error {
	res, err := t.tx.ExecContext(t.ctx, `UPDATE tokens SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ?`, nanos(at), id)
	return affected(res, err)
}

func (t *tx) InsertCall(c *store.Call) error {
	_, err := t.stmt("insertCall").ExecContext(t.ctx, c.ID, c.AgentID, c.Connector, c.Action, c.DeclaredRisk, c.Risk,
		c.Status, c.IdempotencyKey, c.Summary, c.Refusal, nanos(c.CreatedAt), nanos(c.ExpiresAt), nullTime(c.CompletedAt),
		c.Outcome, c.Error, c.DurationMS, c.RaisedBy)
	return wrapWrite(err)
}

func (t *tx) UpdateCall(c *store.Call) error {
	res, err := t.stmt("updateCall").ExecContext(t.ctx, c.Status, c.Refusal, nanos(c.ExpiresAt), nullTime(c.CompletedAt),
		c.Outcome, c.Error, c.DurationMS, c.ID)
	return affected(res, err)
}

func (t *tx) SetMeta(key, value string) error {
	_, err := t.tx.ExecContext(t.ctx, `INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value`, key, value)
	return wrapWrite(err)
}

func (t *tx) PutCheckpoint(c *store.Checkpoint) error {
	_, err := t.tx.ExecContext(t.ctx, `INSERT INTO checkpoints (size, signed, created_at) VALUES (?, ?, ?)
		ON CONFLICT(size) DO NOTHING`, c.Size, c.Signed, nanos(c.CreatedAt))
	return wrapWrite(err)
}

func (t *tx) Append(e *record.Entry) error {
	prev, ok, err := t.head(e.Agent)
	if err != nil {
		t.appendErr = err
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
	if _, err := t.stmt("insertEntry").ExecContext(t.ctx, e.Index, e.Agent, e.Type, e.Call, body, hashes); err != nil {
		t.appendErr = fmt.Errorf("sqlite: append entry: %w", err)
		return t.appendErr
	}
	if t.heads == nil {
		t.heads = map[string]tlog.Hash{}
	}
	t.heads[e.Agent] = stored[0]
	return nil
}

// head is the leaf hash of the agent's latest entry: this update's own
// appends first, then earlier updates of the batch, then what is committed
// (cached by the sequencer; read from the log on a miss).
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
	var hashes []byte
	err := t.stmt("head").QueryRowContext(t.ctx, agent).Scan(&hashes)
	if errors.Is(err, sql.ErrNoRows) {
		return tlog.Hash{}, false, nil
	}
	if err != nil {
		return tlog.Hash{}, false, fmt.Errorf("sqlite: read chain head: %w", err)
	}
	if len(hashes) < tlog.HashSize {
		return tlog.Hash{}, false, fmt.Errorf("sqlite: chain head of %q has %d bytes", agent, len(hashes))
	}
	h := tlog.Hash(hashes[:tlog.HashSize])
	// Not in the batch, so this is committed state: safe to cache.
	t.s.heads[agent] = h
	return h, true, nil
}

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
	err := r.Scan(&a.ID, &a.Name, &a.Owner, &a.Status, &a.Manifest, &a.ManifestHash, &created, &term)
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
		&c.Summary, &c.Refusal, &created, &expires, &completed, &c.Outcome, &c.Error, &c.DurationMS, &c.RaisedBy)
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

func (t *tx) AgentOpenCalls(agentID string) ([]store.Call, error) {
	rows, err := t.tx.QueryContext(t.ctx, `SELECT `+callCols+` FROM calls WHERE agent_id = ? AND status IN ('approved', 'pending_approval') ORDER BY created_at`, agentID)
	if err != nil {
		return nil, fmt.Errorf("sqlite: open calls: %w", err)
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

func (t *tx) RevokeAgentTokens(agentID string, at time.Time) (int, error) {
	res, err := t.tx.ExecContext(t.ctx, `UPDATE tokens SET revoked_at = ? WHERE agent_id = ? AND revoked_at IS NULL`, nanos(at), agentID)
	if err != nil {
		return 0, fmt.Errorf("sqlite: revoke tokens: %w", err)
	}
	n, err := res.RowsAffected()
	return int(n), err
}

func (t *tx) CallsOn(agentID, day string) (int, error) {
	var n int
	err := t.stmt("callsOn").QueryRowContext(t.ctx, agentID, day).Scan(&n)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	return n, err
}

func (t *tx) CountCall(agentID, day string) error {
	_, err := t.stmt("countCall").ExecContext(t.ctx, agentID, day)
	return wrapWrite(err)
}

// CountMinute is one statement: this minute's count with the call, and the
// earlier minutes' sum.
func (t *tx) CountMinute(agentID string, minute, since int64) (n, earlier int64, err error) {
	if err := t.stmt("countMinute").QueryRowContext(t.ctx, agentID, minute, since).Scan(&n, &earlier); err != nil {
		return 0, 0, fmt.Errorf("sqlite: count call: %w", err)
	}
	if n == 1 { // the agent's first call this minute: forget the minutes out of the window
		if _, err := t.tx.ExecContext(t.ctx, `DELETE FROM call_minutes WHERE agent_id = ? AND minute < ?`, agentID, since); err != nil {
			return 0, 0, wrapWrite(err)
		}
	}
	return n, earlier, nil
}

func (t *tx) Failures(key []byte, since time.Time) (int, error) {
	return countFailures(t.ctx, t.tx, key, since)
}

func (t *tx) AddFailure(key []byte, at time.Time) (int64, error) {
	res, err := t.tx.ExecContext(t.ctx, `INSERT INTO failures (key, at) VALUES (?, ?)`, key, nanos(at))
	if err != nil {
		return 0, wrapWrite(err)
	}
	return res.LastInsertId()
}

func (t *tx) DeleteFailure(id int64) error {
	_, err := t.tx.ExecContext(t.ctx, `DELETE FROM failures WHERE id = ?`, id)
	return wrapWrite(err)
}

func (t *tx) PruneFailures(before time.Time) error {
	_, err := t.tx.ExecContext(t.ctx, `DELETE FROM failures WHERE at < ?`, nanos(before))
	return wrapWrite(err)
}

func countFailures(ctx context.Context, q querier, key []byte, since time.Time) (int, error) {
	var n int
	if err := q.QueryRowContext(ctx, `SELECT COUNT(*) FROM failures WHERE key = ? AND at >= ?`, key, nanos(since)).Scan(&n); err != nil {
		return 0, fmt.Errorf("sqlite: count failures: %w", err)
	}
	return n, nil
}

func (t *tx) RevokeAgentCredentials(agentID string, at time.Time) (int, error) {
	res, err := t.tx.ExecContext(t.ctx, `UPDATE calls SET status = 'revoked', completed_at = ? WHERE agent_id = ? AND status = 'approved'`, nanos(at), agentID)
	if err != nil {
		return 0, fmt.Errorf("sqlite: revoke credentials: %w", err)
	}
	n, err := res.RowsAffected()
	return int(n), err
}
