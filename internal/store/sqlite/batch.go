package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/arxsec/arx/internal/store"
	"github.com/arxsec/arx/internal/store/segment"
	"github.com/arxsec/arx/internal/store/sequencer"
	"github.com/arxsec/arx/internal/store/state"
)

var _ sequencer.Backend = (*backend)(nil)

// backend is what the store gives the shared sequencer.
type backend struct{ s *Store }

// errBehind refuses a batch while the state tables are too far behind the
// log (the database locked by another process for a long time): the
// state held in memory until they catch up stays bounded.
var errBehind = errors.New("sqlite: the state tables are too far behind the log (is the database locked by another process?)")

// Begin implements sequencer.Backend.
func (b backend) Begin(ctx context.Context, known int64) (sequencer.Batch, *sequencer.Foreign, error) {
	s := b.s
	if known < 0 {
		return nil, nil, errors.New("sqlite: the log's tree was lost")
	}
	if s.pendingRedo != nil {
		// A batch's entries are durable but its database writes did not
		// commit: they go first.
		if err := applyRedo(ctx, s.write, *s.pendingRedo); err != nil {
			s.reopenIfReadOnly(s.write, "writer", err)
			return nil, nil, s.failStorage(fmt.Errorf("sqlite: apply the writes of a committed batch: %w", err))
		}
		s.pendingRedo = nil
		s.redo.reset()
	}
	if s.proj.behind() {
		return nil, nil, errBehind
	}
	return &batch{s: s, ctx: ctx}, nil, nil
}

// Committed implements sequencer.Backend: the changes go to the projector.
func (b backend) Committed(changes *state.Txn) { b.s.proj.add(changes) }

// batch is one batch of the sequencer. Its database transaction is opened
// on the first write or read of what the record does not hold, so a batch
// of governed calls alone never touches the database.
type batch struct {
	s       *Store
	ctx     context.Context
	tx      *sql.Tx
	openErr error // opening tx failed

	redo      []stmt
	opRedo    int   // len(redo) when the current Update started
	inOp      bool  // an Update is running
	opSave    bool  // its savepoint is taken
	opErr     error // taking it failed
	revoked   bool  // tokens were revoked: the token cache is dropped at commit
	opRevoked bool
}

var _ sequencer.Batch = (*batch)(nil)

func (b *batch) open() error {
	if b.tx != nil {
		return nil
	}
	if b.openErr != nil {
		return b.openErr // once per batch: a lock held elsewhere is waited for once
	}
	tx, err := b.s.write.BeginTx(b.ctx, nil)
	if err != nil {
		b.s.reopenIfReadOnly(b.s.write, "writer", err)
		if isBusy(err) {
			b.openErr = fmt.Errorf("%w: %w", errLocked, err)
		} else {
			b.openErr = fmt.Errorf("sqlite: begin: %w", err)
		}
		return b.openErr
	}
	b.tx = tx
	if b.inOp {
		if _, err := tx.ExecContext(b.ctx, `SAVEPOINT op`); err != nil {
			return fmt.Errorf("sqlite: savepoint: %w", err)
		}
		b.opSave = true
	}
	return nil
}

// exec runs a write and keeps it for the redo log.
func (b *batch) exec(q string, a ...any) (sql.Result, error) {
	if err := b.open(); err != nil {
		return nil, err
	}
	res, err := b.tx.ExecContext(b.ctx, q, a...)
	if err != nil {
		return nil, err
	}
	return res, b.keep(q, a...)
}

// keep adds a statement to the redo log.
func (b *batch) keep(q string, a ...any) error {
	ra, err := args(a)
	if err != nil {
		return err
	}
	b.redo = append(b.redo, stmt{Q: q, A: ra})
	return nil
}

// insertID runs an insert into a table with an integer key SQLite chooses,
// and keeps it for the redo log as an insert of that key (redoQ takes the
// key first, then a).
func (b *batch) insertID(q, redoQ string, a ...any) (int64, error) {
	if err := b.open(); err != nil {
		return 0, err
	}
	res, err := b.tx.ExecContext(b.ctx, q, a...)
	if err != nil {
		return 0, wrapWrite(err)
	}
	id, err := res.LastInsertId()
	if err != nil {
		return 0, err
	}
	return id, b.keep(redoQ, append([]any{id}, a...)...)
}

func (b *batch) queryRow(q string, a ...any) (*sql.Row, error) {
	if err := b.open(); err != nil {
		return nil, err
	}
	return b.tx.QueryRowContext(b.ctx, q, a...), nil
}

// OpStart implements sequencer.Batch.
func (b *batch) OpStart() {
	b.inOp, b.opSave, b.opErr, b.opRedo, b.opRevoked = true, false, nil, len(b.redo), false
	if b.tx != nil {
		if _, err := b.tx.ExecContext(b.ctx, `SAVEPOINT op`); err != nil {
			b.opErr = fmt.Errorf("sqlite: savepoint: %w", err)
			return
		}
		b.opSave = true
	}
}

// OpEnd implements sequencer.Batch.
func (b *batch) OpEnd(ok bool) error {
	defer func() { b.inOp, b.opSave = false, false }()
	if b.opErr != nil {
		return b.opErr
	}
	if !ok {
		b.redo = b.redo[:b.opRedo]
	} else if b.opRevoked {
		b.revoked = true
	}
	if !b.opSave {
		return nil // the Update did not touch the database
	}
	if !ok {
		if _, err := b.tx.ExecContext(b.ctx, `ROLLBACK TO op`); err != nil {
			return fmt.Errorf("sqlite: rollback to savepoint: %w", err)
		}
	}
	if _, err := b.tx.ExecContext(b.ctx, `RELEASE op`); err != nil {
		return fmt.Errorf("sqlite: release savepoint: %w", err)
	}
	return nil
}

// Commit implements sequencer.Batch: the redo frame, the entries, then the
// database (see redo.go). Its frame is durable before the sequencer takes
// the next batch, so the Updates that arrive during the fdatasync make up
// that batch.
func (b *batch) Commit(entries []store.Entry, _ *state.Txn) error {
	s := b.s
	var fr *redoFrame
	if len(entries) > 0 && len(b.redo) > 0 {
		last := entries[len(entries)-1]
		fr = &redoFrame{seq: s.redo.seq + 1, lastIndex: last.Index, lastLeaf: last.Leaf, stmts: b.redo}
		if err := s.redo.write(*fr); err != nil {
			return err
		}
	}
	if len(entries) > 0 {
		recs := make([]segment.Record, len(entries))
		for i, e := range entries {
			recs[i] = segment.Record{Index: e.Index, Hashes: e.Hashes, Data: e.Data}
		}
		if err := s.seg.Append(recs); err != nil {
			return syncFailed(err)
		}
	}
	if b.tx != nil {
		err := error(nil)
		if fr != nil {
			err = setMeta(b.ctx, b.tx, metaRedoSeq, strconv.FormatUint(fr.seq, 10))
		}
		if err == nil && s.commitFault != nil {
			err = s.commitFault()
		}
		if err == nil {
			err = b.tx.Commit()
		} else {
			b.tx.Rollback()
		}
		b.tx = nil
		if err != nil {
			s.reopenIfReadOnly(s.write, "writer", err)
			if len(entries) == 0 {
				return s.failStorage(fmt.Errorf("sqlite: commit: %w", err))
			}
			// The entries are durable: the batch happened. Its database
			// writes (in the redo log) are applied before the next batch
			// (Begin), or at the next open.
			if fr != nil {
				s.log.Warn("sqlite: a committed batch's database writes failed; they are applied before the next batch",
					"err", err)
				s.pendingRedo = fr
			}
			s.failStorage(err)
		} else if fr != nil && s.redo.end > redoResetSize {
			s.redo.reset()
		}
	}
	if b.revoked {
		s.tokens.invalidate()
	}
	return nil
}

// syncFailed maps the log's failed sync to the store's.
func syncFailed(err error) error {
	if errors.Is(err, segment.ErrSyncFailed) {
		return fmt.Errorf("%w: %w", store.ErrStorageFailed, err)
	}
	return err
}

// redoResetSize is how large the redo log may grow before it is emptied
// (every frame in it is applied once its batch committed).
const redoResetSize = 1 << 20

// Abort implements sequencer.Batch.
func (b *batch) Abort() {
	if b.tx != nil {
		b.tx.Rollback()
		b.tx = nil
	}
}

// Loader: what the state does not hold. Closed calls and decided
// approvals that were flushed are in the tables; agents always are.

func (b *batch) Agent(id string) (*store.Agent, error) {
	if b.tx != nil {
		return scanAgent(b.tx.QueryRowContext(b.ctx, `SELECT `+agentCols+` FROM agents WHERE id = ?`, id))
	}
	return scanAgent(b.s.rstmts["agent"].QueryRowContext(b.ctx, id))
}

func (b *batch) Call(id string) (*store.Call, error) {
	if b.tx != nil {
		return scanCall(b.tx.QueryRowContext(b.ctx, `SELECT `+callCols+` FROM calls WHERE id = ?`, id))
	}
	return scanCall(b.s.rstmts["call"].QueryRowContext(b.ctx, id))
}

func (b *batch) Approval(callID string) (*store.Approval, error) {
	if b.tx != nil {
		return scanApproval(b.tx.QueryRowContext(b.ctx, `SELECT `+approvalCols+` FROM approvals WHERE call_id = ?`, callID))
	}
	return scanApproval(b.s.read.QueryRowContext(b.ctx, `SELECT `+approvalCols+` FROM approvals WHERE call_id = ?`, callID))
}

// Cold writes.

func (b *batch) InsertAgent(a *store.Agent) error {
	_, err := b.exec(`INSERT INTO agents (`+agentCols+`) VALUES (?,?,?,?,?,?,?,?,?,?)`,
		a.ID, a.Name, a.Owner, a.Status, a.Manifest, a.ManifestHash, nanos(a.CreatedAt), nullTime(a.TerminatedAt), a.ShadowHash, a.ShadowSince)
	return wrapWrite(err)
}

func (b *batch) PutManifest(hash string, text []byte) error {
	_, err := b.exec(`INSERT INTO manifests (hash, text) VALUES (?, ?) ON CONFLICT (hash) DO NOTHING`, hash, text)
	return wrapWrite(err)
}

func (b *batch) InsertToken(k *store.Token) error {
	_, err := b.exec(`INSERT INTO tokens (`+tokenCols+`) VALUES (?,?,?,?,?,?,?,?,?)`,
		k.ID, k.Hash, k.Kind, nullString(k.AgentID), nullString(k.UserID), k.IssuedBy, k.Label, nanos(k.CreatedAt), nullTime(k.RevokedAt))
	return wrapWrite(err)
}

func (b *batch) RevokeToken(agentID, id string, at time.Time) error {
	res, err := b.exec(`UPDATE tokens SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ? AND agent_id = ?`, nanos(at), id, agentID)
	if err := affected(res, err); err != nil {
		return err
	}
	b.opRevoked = true
	return nil
}

func (b *batch) RevokeAgentTokens(agentID string, at time.Time) (int, error) {
	res, err := b.exec(`UPDATE tokens SET revoked_at = ? WHERE agent_id = ? AND revoked_at IS NULL`, nanos(at), agentID)
	if err != nil {
		return 0, fmt.Errorf("sqlite: revoke tokens: %w", err)
	}
	n, err := res.RowsAffected()
	b.opRevoked = true
	return int(n), err
}

func (b *batch) Meta(key string) (string, error) {
	row, err := b.queryRow(`SELECT value FROM meta WHERE key = ?`, key)
	if err != nil {
		return "", err
	}
	var v string
	if err := row.Scan(&v); errors.Is(err, sql.ErrNoRows) {
		return "", store.ErrNotFound
	} else if err != nil {
		return "", fmt.Errorf("sqlite: read meta: %w", err)
	}
	return v, nil
}

func (b *batch) SetMeta(key, value string) error {
	_, err := b.exec(`INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value`, key, value)
	return wrapWrite(err)
}

func (b *batch) PutCheckpoint(c *store.Checkpoint) error {
	_, err := b.exec(`INSERT INTO checkpoints (size, signed, created_at) VALUES (?, ?, ?) ON CONFLICT(size) DO NOTHING`,
		c.Size, c.Signed, nanos(c.CreatedAt))
	return wrapWrite(err)
}

func (b *batch) User(id string) (*store.User, error) {
	row, err := b.queryRow(`SELECT `+userCols+` FROM users WHERE id = ?`, id)
	if err != nil {
		return nil, err
	}
	return scanUser(row)
}

func (b *batch) UserByEmail(email string) (*store.User, error) {
	row, err := b.queryRow(`SELECT `+userCols+` FROM users WHERE email = ? COLLATE NOCASE`, email)
	if err != nil {
		return nil, err
	}
	return scanUser(row)
}

func (b *batch) InsertUser(u *store.User) error {
	_, err := b.exec(`INSERT INTO users (`+userCols+`) VALUES (?,?,?,?,?,?)`,
		u.ID, u.Email, u.Role, u.PasswordHash, nanos(u.CreatedAt), nullTime(u.DisabledAt))
	return wrapWrite(err)
}

func (b *batch) UpdateUser(u *store.User) error {
	res, err := b.exec(`UPDATE users SET role = ?, password_hash = ?, disabled_at = ? WHERE id = ?`,
		u.Role, u.PasswordHash, nullTime(u.DisabledAt), u.ID)
	return affected(res, err)
}

func (b *batch) InsertPasskey(k *store.Passkey) error {
	_, err := b.exec(`INSERT INTO passkeys (`+passkeyCols+`) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)`,
		k.ID, k.UserID, k.Name, k.PublicKey, k.Algorithm, k.Attestation, k.AAGUID, k.RPID, int64(k.SignCount), int64(k.Flags),
		nanos(k.CreatedAt), nullTime(k.LastUsedAt))
	return wrapWrite(err)
}

func (b *batch) UserPasskeys(userID string) ([]store.Passkey, error) {
	if err := b.open(); err != nil {
		return nil, err
	}
	return scanPasskeys(b.tx.QueryContext(b.ctx, `SELECT `+passkeyCols+` FROM passkeys WHERE user_id = ? ORDER BY created_at, id`, userID))
}

func (b *batch) UsePasskey(id []byte, signCount uint32, at time.Time) error {
	res, err := b.exec(`UPDATE passkeys SET sign_count = ?, last_used_at = ? WHERE id = ?`, int64(signCount), nanos(at), id)
	return affected(res, err)
}

func (b *batch) DeletePasskey(userID string, id []byte) error {
	res, err := b.exec(`DELETE FROM passkeys WHERE id = ? AND user_id = ?`, id, userID)
	return affected(res, err)
}

func (b *batch) LinkChat(l *store.ChatLink) error {
	_, err := b.exec(`INSERT INTO chat_links (provider, subject, user_id, name, created_at) VALUES (?,?,?,?,?)
		ON CONFLICT (provider, subject) DO UPDATE SET user_id = excluded.user_id, name = excluded.name, created_at = excluded.created_at`,
		l.Provider, l.Subject, l.UserID, l.Name, nanos(l.CreatedAt))
	return wrapWrite(err)
}

func (b *batch) UnlinkChat(userID, provider, subject string) error {
	res, err := b.exec(`DELETE FROM chat_links WHERE provider = ? AND subject = ? AND user_id = ?`, provider, subject, userID)
	return affected(res, err)
}

func (b *batch) InsertSetupToken(t *store.SetupToken) error {
	if err := b.DeleteSetupTokens(t.UserID); err != nil {
		return err
	}
	_, err := b.exec(`INSERT INTO setup_tokens (hash, user_id, expires_at, used_at) VALUES (?,?,?,?)`,
		t.Hash, t.UserID, nanos(t.ExpiresAt), nullTime(t.UsedAt))
	return wrapWrite(err)
}

func (b *batch) DeleteSetupTokens(userID string) error {
	_, err := b.exec(`DELETE FROM setup_tokens WHERE user_id = ?`, userID)
	return wrapWrite(err)
}

func (b *batch) RevokeUserTokens(userID string, at time.Time) (int, error) {
	res, err := b.exec(`UPDATE tokens SET revoked_at = ? WHERE user_id = ? AND revoked_at IS NULL`, nanos(at), userID)
	if err != nil {
		return 0, wrapWrite(err)
	}
	n, err := res.RowsAffected()
	b.opRevoked = true
	return int(n), err
}

func (b *batch) RevokeUserToken(userID, id string, at time.Time) error {
	res, err := b.exec(`UPDATE tokens SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ? AND user_id = ?`, nanos(at), id, userID)
	if err := affected(res, err); err != nil {
		return err
	}
	b.opRevoked = true
	return nil
}

func (b *batch) UseSetupToken(hash []byte, at time.Time) (*store.SetupToken, error) {
	row, err := b.queryRow(`SELECT hash, user_id, expires_at, used_at FROM setup_tokens WHERE hash = ?`, hash)
	if err != nil {
		return nil, err
	}
	var t store.SetupToken
	var expires int64
	var used sql.NullInt64
	err = row.Scan(&t.Hash, &t.UserID, &expires, &used)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, store.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("sqlite: read setup token: %w", err)
	}
	t.ExpiresAt = fromNanos(expires)
	if used.Valid || !at.Before(t.ExpiresAt) {
		return nil, store.ErrNotFound
	}
	if _, err := b.exec(`UPDATE setup_tokens SET used_at = ? WHERE hash = ?`, nanos(at), hash); err != nil {
		return nil, fmt.Errorf("sqlite: use setup token: %w", err)
	}
	t.UsedAt = &at
	return &t, nil
}

func (b *batch) InsertSession(s *store.Session) error {
	_, err := b.exec(`INSERT INTO sessions (hash, user_id, csrf, created_at, expires_at, idp_issuer, idp_subject) VALUES (?,?,?,?,?,?,?)`,
		s.Hash, s.UserID, s.CSRF, nanos(s.CreatedAt), nanos(s.ExpiresAt), s.IdPIssuer, s.IdPSubject)
	return wrapWrite(err)
}

func (b *batch) EndLocalPasswords(at time.Time) (sessions, tokens int, err error) {
	res, err := b.exec(`DELETE FROM sessions WHERE idp_subject = ''`)
	if err != nil {
		return 0, 0, wrapWrite(err)
	}
	n, _ := res.RowsAffected()
	res, err = b.exec(`UPDATE tokens SET revoked_at = ? WHERE kind = ? AND revoked_at IS NULL`, nanos(at), store.TokenUser)
	if err != nil {
		return 0, 0, wrapWrite(err)
	}
	m, _ := res.RowsAffected()
	b.opRevoked = true
	return int(n), int(m), nil
}

func (b *batch) DeleteSession(hash []byte) error {
	_, err := b.exec(`DELETE FROM sessions WHERE hash = ?`, hash)
	return wrapWrite(err)
}

func (b *batch) DeleteUserSessions(userID string) error {
	_, err := b.exec(`DELETE FROM sessions WHERE user_id = ?`, userID)
	return wrapWrite(err)
}

func (b *batch) Failures(key []byte, since time.Time) (int, error) {
	row, err := b.queryRow(`SELECT COUNT(*) FROM failures WHERE key = ? AND at >= ?`, key, nanos(since))
	if err != nil {
		return 0, err
	}
	var n int
	if err := row.Scan(&n); err != nil {
		return 0, fmt.Errorf("sqlite: count failures: %w", err)
	}
	return n, nil
}

func (b *batch) AddFailure(key []byte, at time.Time) (int64, error) {
	return b.insertID(`INSERT INTO failures (key, at) VALUES (?, ?)`, `INSERT INTO failures (id, key, at) VALUES (?, ?, ?)`, key, nanos(at))
}

func (b *batch) DeleteFailure(id int64) error {
	_, err := b.exec(`DELETE FROM failures WHERE id = ?`, id)
	return wrapWrite(err)
}

func (b *batch) PruneFailures(before time.Time) error {
	_, err := b.exec(`DELETE FROM failures WHERE at < ?`, nanos(before))
	return wrapWrite(err)
}

func (b *batch) Enqueue(kind string, payload []byte, at time.Time) error {
	_, err := b.insertID(`INSERT INTO outbox (kind, payload, created_at, next_at) VALUES (?, ?, ?, ?)`,
		`INSERT INTO outbox (id, kind, payload, created_at, next_at) VALUES (?, ?, ?, ?, ?)`, kind, payload, nanos(at), nanos(at))
	return err
}

func (b *batch) FinishOutbox(id int64, at time.Time, errMsg string, next time.Time) error {
	var res sql.Result
	var err error
	if errMsg == "" {
		res, err = b.exec(`UPDATE outbox SET attempts = attempts + 1, done_at = ?, last_error = '' WHERE id = ?`, nanos(at), id)
	} else {
		res, err = b.exec(`UPDATE outbox SET attempts = attempts + 1, next_at = ?, last_error = ? WHERE id = ?`, nanos(next), errMsg, id)
	}
	return affected(res, err)
}

func (b *batch) Groups() ([]store.Group, error) {
	if err := b.open(); err != nil {
		return nil, err
	}
	return scanGroups(b.tx.QueryContext(b.ctx, `SELECT `+groupCols+` FROM groups ORDER BY name, id`))
}

func (b *batch) PutGroup(g *store.Group) error {
	members, err := json.Marshal(sortedMembers(g.Members))
	if err != nil {
		return err
	}
	_, err = b.exec(`INSERT INTO groups (`+groupCols+`) VALUES (?,?,?,?,?)
		ON CONFLICT (id) DO UPDATE SET name = excluded.name, external_id = excluded.external_id, members = excluded.members`,
		g.ID, g.Name, g.ExternalID, string(members), nanos(g.CreatedAt))
	return wrapWrite(err)
}

func (b *batch) DeleteGroup(id string) error {
	res, err := b.exec(`DELETE FROM groups WHERE id = ?`, id)
	return affected(res, err)
}
