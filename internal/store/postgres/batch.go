package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/arxsec/arx/internal/store"
	"github.com/arxsec/arx/internal/store/sequencer"
	"github.com/arxsec/arx/internal/store/state"
	"github.com/arxsec/arx/record"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/mod/sumdb/tlog"
)

// batch is one batch of the sequencer: a transaction that holds the log
// lock. Its Updates run in memory (package state); what they read or write
// of the tables the record does not hold goes to the database, each
// Update behind a savepoint taken with its first statement.
//
// In PostgreSQL a failed statement aborts the transaction up to the last
// savepoint. So inserts that may meet a taken key use ON CONFLICT DO
// NOTHING (ErrConflict without an error in the database), and once any
// statement of an Update has failed, the Update fails as a whole, even if
// its function went on (sequencer.OpError).
//
// Writes that answer nothing but an error (deletes, outbox, meta) are
// queued and sent with the next read or with the commit: one round trip
// instead of one each.
type batch struct {
	s      *Store
	pc     *pgxpool.Conn
	conn   *pgx.Conn
	ctx    context.Context // bounded by Config.BatchTimeout
	cancel context.CancelFunc

	queued []queuedWrite
	failed error // a statement of the current Update failed
	inOp   bool
	opSave bool // the current Update's savepoint is queued or taken
}

type queuedWrite struct {
	sql  string
	args []any
}

var _ sequencer.Batch = (*batch)(nil)

// OpStart implements sequencer.Batch.
func (t *batch) OpStart() { t.inOp, t.opSave, t.failed = true, false, nil }

// OpEnd implements sequencer.Batch.
func (t *batch) OpEnd(ok bool) error {
	defer func() { t.inOp, t.opSave, t.failed = false, false, nil }()
	failed := t.failed
	if failed != nil {
		ok = false
	}
	if t.opSave {
		if ok {
			t.queued = append(t.queued, queuedWrite{sql: "RELEASE SAVEPOINT op"})
		} else if err := t.rollback(); err != nil {
			return err
		}
	}
	if failed != nil {
		return &sequencer.OpError{Err: wrapWrite(failed)}
	}
	return nil
}

// rollback undoes the current Update's statements: what is queued is
// dropped, what was sent is rolled back to its savepoint.
func (t *batch) rollback() error {
	sent := true
	for i, w := range t.queued {
		if w.sql == "SAVEPOINT op" {
			t.queued, sent = t.queued[:i], false
			break
		}
	}
	if !sent {
		return nil
	}
	t.queued = nil
	if _, err := t.conn.Exec(t.ctx, "ROLLBACK TO SAVEPOINT op; RELEASE SAVEPOINT op"); err != nil {
		return fmt.Errorf("postgres: rollback to savepoint: %w", err)
	}
	return nil
}

// statement is called before each statement: within an Update, its
// savepoint goes first.
func (t *batch) statement() error {
	if t.failed != nil {
		return t.failed
	}
	if t.inOp && !t.opSave {
		t.queued = append(t.queued, queuedWrite{sql: "SAVEPOINT op"})
		t.opSave = true
	}
	return nil
}

func (t *batch) queue(sql string, args ...any) error {
	if err := t.statement(); err != nil {
		return err
	}
	t.queued = append(t.queued, queuedWrite{sql, args})
	return nil
}

// send sends what is queued, in one round trip.
func (t *batch) send() error {
	q := t.queued
	t.queued = nil
	if len(q) == 0 {
		return nil
	}
	b := &pgx.Batch{}
	for _, w := range q {
		b.Queue(w.sql, w.args...)
	}
	br := t.conn.SendBatch(t.ctx, b)
	var err error
	for range b.Len() {
		if _, e := br.Exec(); e != nil {
			err = e
			break
		}
	}
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	return err
}

// ready sends what is queued, so a read sees this batch's writes.
func (t *batch) ready() error {
	if err := t.statement(); err != nil {
		return err
	}
	if err := t.send(); err != nil {
		return t.check(err)
	}
	return nil
}

// check notes a statement's failure: the savepoint is aborted.
func (t *batch) check(err error) error {
	if err != nil && !errors.Is(err, pgx.ErrNoRows) && t.failed == nil {
		t.failed = err
	}
	return err
}

func (t *batch) row(sql string, args ...any) pgx.Row {
	if err := t.ready(); err != nil {
		return errRow{err}
	}
	return checkedRow{t, t.conn.QueryRow(t.ctx, sql, args...)}
}

type errRow struct{ err error }

func (r errRow) Scan(...any) error { return r.err }

type checkedRow struct {
	t *batch
	r pgx.Row
}

func (r checkedRow) Scan(dest ...any) error { return r.t.check(r.r.Scan(dest...)) }

// exec runs a write and returns how many rows it touched.
func (t *batch) exec(sql string, args ...any) (int64, error) {
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
func (t *batch) insert(what, sql string, args ...any) error {
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
func (t *batch) update(sql string, args ...any) error {
	n, err := t.exec(sql, args...)
	if err != nil {
		return err
	}
	if n == 0 {
		return store.ErrNotFound
	}
	return nil
}

// Loader: what the state does not hold, as this batch sees it.

func (t *batch) Agent(id string) (*store.Agent, error) {
	return scanAgent(t.row(`SELECT `+agentCols+` FROM agents WHERE id = $1`, id))
}

func (t *batch) Call(id string) (*store.Call, error) {
	return scanCall(t.row(`SELECT `+callCols+` FROM calls WHERE id = $1`, id))
}

func (t *batch) Approval(callID string) (*store.Approval, error) {
	return scanApproval(t.row(`SELECT `+approvalCols+` FROM approvals WHERE call_id = $1`, callID))
}

// Cold writes and reads.

func (t *batch) Failures(key []byte, since time.Time) (int, error) {
	var n int
	if err := t.row(`SELECT COUNT(*) FROM failures WHERE key = $1 AND at >= $2`, key, nanos(since)).Scan(&n); err != nil {
		return 0, fmt.Errorf("postgres: count failures: %w", err)
	}
	return n, nil
}

func (t *batch) AddFailure(key []byte, at time.Time) (int64, error) {
	var id int64
	if err := t.row(`INSERT INTO failures (key, at) VALUES ($1, $2) RETURNING id`, key, nanos(at)).Scan(&id); err != nil {
		return 0, fmt.Errorf("postgres: add failure: %w", err)
	}
	return id, nil
}

func (t *batch) DeleteFailure(id int64) error {
	return t.queue(`DELETE FROM failures WHERE id = $1`, id)
}

func (t *batch) PruneFailures(before time.Time) error {
	return t.queue(`DELETE FROM failures WHERE at < $1`, nanos(before))
}

func (t *batch) InsertAgent(a *store.Agent) error {
	return t.insert("agent "+a.ID, `INSERT INTO agents (`+agentCols+`) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10) ON CONFLICT DO NOTHING`,
		a.ID, a.Name, a.Owner, a.Status, a.Manifest, a.ManifestHash, nanos(a.CreatedAt), nullTime(a.TerminatedAt), a.ShadowHash, a.ShadowSince)
}

func (t *batch) PutManifest(hash string, text []byte) error {
	return t.queue(`INSERT INTO manifests (hash, text) VALUES ($1, $2) ON CONFLICT (hash) DO NOTHING`, hash, text)
}

func (t *batch) InsertToken(k *store.Token) error {
	return t.insert("token "+k.ID, `INSERT INTO tokens (`+tokenCols+`) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9) ON CONFLICT DO NOTHING`,
		k.ID, k.Hash, k.Kind, nullString(k.AgentID), nullString(k.UserID), k.IssuedBy, k.Label, nanos(k.CreatedAt), nullTime(k.RevokedAt))
}

func (t *batch) RevokeToken(agentID, id string, at time.Time) error {
	return t.update(`UPDATE tokens SET revoked_at = COALESCE(revoked_at, $1) WHERE id = $2 AND agent_id = $3`, nanos(at), id, agentID)
}

func (t *batch) RevokeAgentTokens(agentID string, at time.Time) (int, error) {
	n, err := t.exec(`UPDATE tokens SET revoked_at = $1 WHERE agent_id = $2 AND revoked_at IS NULL`, nanos(at), agentID)
	return int(n), err
}

func (t *batch) Meta(key string) (string, error) {
	var v string
	if err := t.row(`SELECT value FROM meta WHERE key = $1`, key).Scan(&v); errors.Is(err, pgx.ErrNoRows) {
		return "", store.ErrNotFound
	} else if err != nil {
		return "", fmt.Errorf("postgres: read meta: %w", err)
	}
	return v, nil
}

func (t *batch) SetMeta(key, value string) error {
	return t.queue(`INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value`, key, value)
}

func (t *batch) PutCheckpoint(c *store.Checkpoint) error {
	return t.queue(`INSERT INTO checkpoints (size, signed, created_at) VALUES ($1, $2, $3) ON CONFLICT (size) DO NOTHING`,
		c.Size, c.Signed, nanos(c.CreatedAt))
}

func (t *batch) User(id string) (*store.User, error) {
	return scanUser(t.row(`SELECT `+userCols+` FROM users WHERE id = $1`, id))
}

func (t *batch) UserByEmail(email string) (*store.User, error) {
	return scanUser(t.row(`SELECT `+userCols+` FROM users WHERE lower(email COLLATE "C") = lower($1 COLLATE "C")`, email))
}

func (t *batch) InsertUser(u *store.User) error {
	return t.insert("user "+u.ID, `INSERT INTO users (`+userCols+`) VALUES ($1,$2,$3,$4,$5,$6) ON CONFLICT DO NOTHING`,
		u.ID, u.Email, u.Role, u.PasswordHash, nanos(u.CreatedAt), nullTime(u.DisabledAt))
}

func (t *batch) UpdateUser(u *store.User) error {
	return t.update(`UPDATE users SET role = $1, password_hash = $2, disabled_at = $3 WHERE id = $4`,
		u.Role, u.PasswordHash, nullTime(u.DisabledAt), u.ID)
}

func (t *batch) InsertPasskey(k *store.Passkey) error {
	return t.insert("passkey", `INSERT INTO passkeys (`+passkeyCols+`) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12) ON CONFLICT DO NOTHING`,
		k.ID, k.UserID, k.Name, k.PublicKey, k.Algorithm, k.Attestation, k.AAGUID, k.RPID, int64(k.SignCount), int32(k.Flags),
		nanos(k.CreatedAt), nullTime(k.LastUsedAt))
}

func (t *batch) UserPasskeys(userID string) ([]store.Passkey, error) {
	if err := t.ready(); err != nil {
		return nil, err
	}
	rows, err := t.conn.Query(t.ctx, `SELECT `+passkeyCols+` FROM passkeys WHERE user_id = $1 ORDER BY created_at, id`, userID)
	if err := t.check(err); err != nil {
		return nil, fmt.Errorf("postgres: list passkeys: %w", err)
	}
	return collect(rows, scanPasskey)
}

func (t *batch) UsePasskey(id []byte, signCount uint32, at time.Time) error {
	return t.update(`UPDATE passkeys SET sign_count = $1, last_used_at = $2 WHERE id = $3`, int64(signCount), nanos(at), id)
}

func (t *batch) DeletePasskey(userID string, id []byte) error {
	return t.update(`DELETE FROM passkeys WHERE id = $1 AND user_id = $2`, id, userID)
}

func (t *batch) LinkChat(l *store.ChatLink) error {
	return t.queue(`INSERT INTO chat_links (provider, subject, user_id, name, created_at) VALUES ($1,$2,$3,$4,$5)
		ON CONFLICT (provider, subject) DO UPDATE SET user_id = excluded.user_id, name = excluded.name, created_at = excluded.created_at`,
		l.Provider, l.Subject, l.UserID, l.Name, nanos(l.CreatedAt))
}

func (t *batch) UnlinkChat(userID, provider, subject string) error {
	return t.update(`DELETE FROM chat_links WHERE provider = $1 AND subject = $2 AND user_id = $3`, provider, subject, userID)
}

func (t *batch) InsertSetupToken(k *store.SetupToken) error {
	if err := t.DeleteSetupTokens(k.UserID); err != nil {
		return err
	}
	return t.insert("setup token", `INSERT INTO setup_tokens (hash, user_id, expires_at, used_at) VALUES ($1,$2,$3,$4) ON CONFLICT DO NOTHING`,
		k.Hash, k.UserID, nanos(k.ExpiresAt), nullTime(k.UsedAt))
}

func (t *batch) UseSetupToken(hash []byte, at time.Time) (*store.SetupToken, error) {
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

func (t *batch) InsertSession(x *store.Session) error {
	return t.insert("session", `INSERT INTO sessions (hash, user_id, csrf, created_at, expires_at, idp_issuer, idp_subject)
		VALUES ($1,$2,$3,$4,$5,$6,$7) ON CONFLICT DO NOTHING`,
		x.Hash, x.UserID, x.CSRF, nanos(x.CreatedAt), nanos(x.ExpiresAt), x.IdPIssuer, x.IdPSubject)
}

func (t *batch) EndLocalPasswords(at time.Time) (sessions, tokens int, err error) {
	n, err := t.exec(`DELETE FROM sessions WHERE idp_subject = ''`)
	if err != nil {
		return 0, 0, err
	}
	m, err := t.exec(`UPDATE tokens SET revoked_at = $1 WHERE kind = $2 AND revoked_at IS NULL`, nanos(at), store.TokenUser)
	return int(n), int(m), err
}

func (t *batch) DeleteSession(hash []byte) error {
	return t.queue(`DELETE FROM sessions WHERE hash = $1`, hash)
}

func (t *batch) DeleteSetupTokens(userID string) error {
	return t.queue(`DELETE FROM setup_tokens WHERE user_id = $1`, userID)
}

func (t *batch) RevokeUserTokens(userID string, at time.Time) (int, error) {
	n, err := t.exec(`UPDATE tokens SET revoked_at = $1 WHERE user_id = $2 AND revoked_at IS NULL`, nanos(at), userID)
	return int(n), err
}

func (t *batch) RevokeUserToken(userID, id string, at time.Time) error {
	return t.update(`UPDATE tokens SET revoked_at = COALESCE(revoked_at, $1) WHERE id = $2 AND user_id = $3`, nanos(at), id, userID)
}

func (t *batch) DeleteUserSessions(userID string) error {
	return t.queue(`DELETE FROM sessions WHERE user_id = $1`, userID)
}

func (t *batch) Enqueue(kind string, payload []byte, at time.Time) error {
	return t.queue(`INSERT INTO outbox (kind, payload, created_at, next_at) VALUES ($1, $2, $3, $3)`, kind, payload, nanos(at))
}

func (t *batch) FinishOutbox(id int64, at time.Time, errMsg string, next time.Time) error {
	if errMsg == "" {
		return t.update(`UPDATE outbox SET attempts = attempts + 1, done_at = $1, last_error = '' WHERE id = $2`, nanos(at), id)
	}
	return t.update(`UPDATE outbox SET attempts = attempts + 1, next_at = $1, last_error = $2 WHERE id = $3`, nanos(next), errMsg, id)
}

// Commit implements sequencer.Batch: the queued writes, the entries, the
// state the batch changed and COMMIT, in one round trip. The log lock is
// held from Begin to here: about two round trips a batch, whatever its size.
// The round trip is bounded by the batch's own context (BatchTimeout from
// Begin): a COMMIT cut off on its way fails the batch in time instead of
// waiting for TCP to give up.
func (t *batch) Commit(entries []store.Entry, changes *state.Txn) error {
	b := &pgx.Batch{}
	for _, w := range t.queued {
		b.Queue(w.sql, w.args...)
	}
	t.queued = nil
	if len(entries) > 0 {
		idx := make([]int64, len(entries))
		agent, typ, call := make([]string, len(entries)), make([]string, len(entries)), make([]string, len(entries))
		body, hashes := make([][]byte, len(entries)), make([][]byte, len(entries))
		for i, e := range entries {
			idx[i], agent[i], typ[i], call[i], body[i] = e.Index, e.Agent, e.Type, e.Call, e.Data
			h := make([]byte, 0, len(e.Hashes)*32)
			for _, x := range e.Hashes {
				h = append(h, x[:]...)
			}
			hashes[i] = h
		}
		b.Queue(`INSERT INTO entries (idx, agent, type, call, body, hashes)
			SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::bytea[], $6::bytea[])`,
			idx, agent, typ, call, body, hashes)
	}
	if n := len(changes.Calls); n > 0 {
		var c17 struct {
			id, agent, connector, action, declared, risk, status, key, summary, refusal []string
			created, expires, duration                                                  []int64
			completed                                                                   []*int64
			outcome, errs, raised, args, argsHash                                       []string
		}
		for _, c := range changes.Calls {
			c17.id, c17.agent, c17.connector, c17.action = append(c17.id, c.ID), append(c17.agent, c.AgentID), append(c17.connector, c.Connector), append(c17.action, c.Action)
			c17.declared, c17.risk, c17.status, c17.key = append(c17.declared, c.DeclaredRisk), append(c17.risk, c.Risk), append(c17.status, c.Status), append(c17.key, c.IdempotencyKey)
			c17.summary, c17.refusal = append(c17.summary, pgText(c.Summary)), append(c17.refusal, c.Refusal)
			c17.created, c17.expires, c17.completed = append(c17.created, nanos(c.CreatedAt)), append(c17.expires, nanos(c.ExpiresAt)), append(c17.completed, nullTime(c.CompletedAt))
			c17.outcome, c17.errs, c17.duration, c17.raised = append(c17.outcome, c.Outcome), append(c17.errs, pgText(c.Error)), append(c17.duration, c.DurationMS), append(c17.raised, c.RaisedBy)
			c17.args, c17.argsHash = append(c17.args, pgText(c.Args)), append(c17.argsHash, c.ArgsHash)
		}
		b.Queue(`INSERT INTO calls (`+callCols+`)
			SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[],
				$9::text[], $10::text[], $11::bigint[], $12::bigint[], $13::bigint[], $14::text[], $15::text[], $16::bigint[], $17::text[], $18::text[], $19::text[])
			ON CONFLICT (id) DO UPDATE SET status = excluded.status, refusal = excluded.refusal, expires_at = excluded.expires_at,
				completed_at = excluded.completed_at, outcome = excluded.outcome, error = excluded.error, duration_ms = excluded.duration_ms`,
			c17.id, c17.agent, c17.connector, c17.action, c17.declared, c17.risk, c17.status, c17.key, c17.summary, c17.refusal,
			c17.created, c17.expires, c17.completed, c17.outcome, c17.errs, c17.duration, c17.raised, c17.args, c17.argsHash)
	}
	if len(changes.Approvals) > 0 {
		var a9 struct {
			call, agent, status, approvers, by, reason, passkey, grants []string
			quorum                                                      []int32
			requested, expires                                          []int64
			decided                                                     []*int64
		}
		for _, a := range changes.Approvals {
			js, err := json.Marshal(a.Approvers)
			if err != nil {
				return err
			}
			a9.call, a9.agent, a9.status, a9.approvers = append(a9.call, a.CallID), append(a9.agent, a.AgentID), append(a9.status, a.Status), append(a9.approvers, string(js))
			a9.requested, a9.expires, a9.by = append(a9.requested, nanos(a.RequestedAt)), append(a9.expires, nanos(a.ExpiresAt)), append(a9.by, a.DecidedBy)
			a9.decided, a9.reason = append(a9.decided, nullTime(a.DecidedAt)), append(a9.reason, pgText(a.Reason))
			a9.passkey = append(a9.passkey, a.Passkey)
			gs, err := json.Marshal(a.Grants)
			if err != nil {
				return err
			}
			if a.Grants == nil {
				gs = []byte("[]")
			}
			a9.quorum, a9.grants = append(a9.quorum, int32(a.Quorum)), append(a9.grants, string(gs))
		}
		b.Queue(`INSERT INTO approvals (`+approvalCols+`)
			SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::bigint[], $7::text[], $8::bigint[], $9::text[], $10::text[], $11::int[], $12::text[])
			ON CONFLICT (call_id) DO UPDATE SET status = excluded.status, decided_by = excluded.decided_by,
				decided_at = excluded.decided_at, reason = excluded.reason, passkey = excluded.passkey, grants = excluded.grants`,
			a9.call, a9.agent, a9.status, a9.approvers, a9.requested, a9.expires, a9.by, a9.decided, a9.reason, a9.passkey, a9.quorum, a9.grants)
	}
	for _, a := range changes.Agents {
		b.Queue(`UPDATE agents SET status = $1, terminated_at = $2, manifest_hash = $3, shadow_hash = $4, shadow_since = $5 WHERE id = $6`,
			a.Status, nullTime(a.TerminatedAt), a.ManifestHash, a.ShadowHash, a.ShadowSince, a.ID)
	}
	if n := len(changes.Heads); n > 0 {
		agents, heads, idx, counts := make([]string, 0, n), make([][]byte, 0, n), make([]int64, 0, n), make([][]byte, 0, n)
		for agent, h := range changes.Heads {
			var c []byte
			if cs := changes.Counts[agent]; cs != nil {
				c = store.EncodeCounts(cs)
			}
			agents, heads, idx, counts = append(agents, agent), append(heads, h.Hash[:]), append(idx, h.Index), append(counts, c)
		}
		b.Queue(`INSERT INTO agent_state (agent, head, head_idx, counts)
			SELECT * FROM unnest($1::text[], $2::bytea[], $3::bigint[], $4::bytea[])
			ON CONFLICT (agent) DO UPDATE SET head = excluded.head, head_idx = excluded.head_idx,
				counts = COALESCE(excluded.counts, agent_state.counts)`, agents, heads, idx, counts)
	}
	b.Queue("COMMIT")
	br := t.conn.SendBatch(t.ctx, b)
	var err error
	for range b.Len() {
		if _, e := br.Exec(); e != nil {
			err = e
			break
		}
	}
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		// Committed or not, this process cannot tell: the next batch reads
		// the log under the lock and catches up with what is there.
		return fmt.Errorf("postgres: commit: %w", err)
	}
	t.pc.Release()
	t.pc = nil
	t.cancel()
	return nil
}

// Abort implements sequencer.Batch: the connection, in an unknown state,
// is closed rather than given back to the pool (PostgreSQL rolls back).
func (t *batch) Abort() {
	if t.pc != nil {
		t.conn.PgConn().Close(context.Background())
		t.pc.Release()
		t.pc = nil
	}
	t.cancel()
}

// snapshot reads the state the tables describe and the log's frontier, in
// the batch's transaction (so at the log's size, under the lock).
func (t *batch) snapshot(size int64) (*sequencer.Foreign, error) {
	snap := &state.Snapshot{Size: size, Counts: map[string]*store.Counts{}, Heads: map[string]state.Head{}}
	q := func(sql string, scan func(pgx.Rows) error, args ...any) error {
		rows, err := t.conn.Query(t.ctx, sql, args...)
		if err != nil {
			return fmt.Errorf("postgres: load state: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			if err := scan(rows); err != nil {
				return fmt.Errorf("postgres: load state: %w", err)
			}
		}
		return rows.Err()
	}
	err := q(`SELECT `+agentCols+` FROM agents`, func(r pgx.Rows) error {
		a, err := scanAgent(r)
		if err == nil {
			snap.Agents = append(snap.Agents, *a)
		}
		return err
	})
	if err == nil {
		err = q(`SELECT `+callCols+` FROM calls WHERE status IN ('approved', 'pending_approval')`, func(r pgx.Rows) error {
			c, err := scanCall(r)
			if err == nil {
				snap.Calls = append(snap.Calls, *c)
			}
			return err
		})
	}
	if err == nil {
		err = q(`SELECT `+approvalCols+` FROM approvals WHERE status = 'pending'`, func(r pgx.Rows) error {
			a, err := scanApproval(r)
			if err == nil {
				snap.Approvals = append(snap.Approvals, *a)
			}
			return err
		})
	}
	if err == nil {
		err = q(`SELECT agent, head, head_idx, counts FROM agent_state`, func(r pgx.Rows) error {
			var agent string
			var head, counts []byte
			var idx int64
			if err := r.Scan(&agent, &head, &idx, &counts); err != nil {
				return err
			}
			if len(head) != tlog.HashSize {
				return fmt.Errorf("the chain head of %q has %d bytes", agent, len(head))
			}
			c, err := store.DecodeCounts(counts)
			if err != nil {
				return fmt.Errorf("agent %q: %w", agent, err)
			}
			snap.Heads[agent], snap.Counts[agent] = state.Head{Hash: tlog.Hash(head), Index: idx}, c
			return nil
		})
	}
	if err == nil {
		cfg := t.s.cfg.State
		window, keys := cfg.IdempotencyWindow, cfg.IdempotencyKeys
		if window <= 0 {
			window = state.DefaultIdempotencyWindow
		}
		if keys <= 0 {
			keys = state.DefaultIdempotencyKeys
		}
		err = q(`SELECT agent_id, idempotency_key, id, created_at FROM calls WHERE id >= $1 AND idempotency_key <> '' ORDER BY id DESC LIMIT $2`, func(r pgx.Rows) error {
			var k state.Key
			var created int64
			if err := r.Scan(&k.Agent, &k.Key, &k.Call, &created); err != nil {
				return err
			}
			k.At = fromNanos(created)
			snap.Keys = append(snap.Keys, k)
			return nil
		}, store.CallIDFloor(time.Now().Add(-window)), keys)
		slices.Reverse(snap.Keys)
	}
	if err != nil {
		return nil, err
	}
	fr, err := readHashes(t.ctx, t.conn, record.FrontierIndexes(size))
	if err != nil {
		return nil, fmt.Errorf("postgres: load the log's frontier: %w", err)
	}
	return &sequencer.Foreign{Snapshot: snap, Frontier: fr}, nil
}

// pgText is s as PostgreSQL's text can hold it: a NUL becomes U+FFFD.
// Defence in depth: the runtime refuses texts with a NUL
// (runtime.TextProblem), but one that reached a batch would fail the
// whole batch, every other caller's Updates with it. The record keeps the
// exact text; only this projection of it differs.
func pgText(s string) string {
	if strings.IndexByte(s, 0) < 0 {
		return s
	}
	return strings.ReplaceAll(s, "\x00", "\uFFFD")
}

func (t *batch) Groups() ([]store.Group, error) {
	if err := t.ready(); err != nil {
		return nil, err
	}
	rows, err := t.conn.Query(t.ctx, `SELECT `+groupCols+` FROM groups ORDER BY name COLLATE "C", id COLLATE "C"`)
	if err := t.check(err); err != nil {
		return nil, fmt.Errorf("postgres: list groups: %w", err)
	}
	return collect(rows, scanGroup)
}

func (t *batch) PutGroup(g *store.Group) error {
	members := slices.Compact(slices.Sorted(slices.Values(g.Members)))
	if members == nil {
		members = []string{}
	}
	return t.insert("group", `INSERT INTO groups (`+groupCols+`) VALUES ($1,$2,$3,$4,$5)
		ON CONFLICT (id) DO UPDATE SET name = excluded.name, external_id = excluded.external_id, members = excluded.members`,
		g.ID, g.Name, g.ExternalID, members, nanos(g.CreatedAt))
}

func (t *batch) DeleteGroup(id string) error {
	return t.update(`DELETE FROM groups WHERE id = $1`, id)
}
