package sqlite

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"time"

	"github.com/arxsec/arx/internal/store"
	"github.com/arxsec/arx/internal/store/segment"
	"github.com/arxsec/arx/internal/store/state"
	"github.com/arxsec/arx/record"
	"golang.org/x/mod/sumdb/tlog"
)

// schemaVersion is the schema this code reads and writes: the SQL
// migrations of schema.go, then v6, then the later ones (after).
const schemaVersion = 13

// callColsV6 are the columns of calls as v6 moved them.
const callColsV6 = `id, agent_id, connector, action, declared_risk, risk, status, idempotency_key, summary, refusal,
		created_at, expires_at, completed_at, outcome, error, duration_ms, raised_by`

// v8 adds a call's arguments.
const v8 = `
ALTER TABLE calls ADD COLUMN args TEXT NOT NULL DEFAULT '';
ALTER TABLE calls ADD COLUMN args_hash TEXT NOT NULL DEFAULT '';
`

// v9 adds approvals that need several approvers.
const v9 = `
ALTER TABLE approvals ADD COLUMN quorum INTEGER NOT NULL DEFAULT 0;
ALTER TABLE approvals ADD COLUMN grants TEXT NOT NULL DEFAULT '[]';
`

// v10 adds job descriptions applied to agents after their hire, and
// shadowed ones.
const v10 = `
CREATE TABLE manifests (hash TEXT PRIMARY KEY, text BLOB NOT NULL) WITHOUT ROWID;
ALTER TABLE agents ADD COLUMN shadow_hash TEXT NOT NULL DEFAULT '';
ALTER TABLE agents ADD COLUMN shadow_since INTEGER NOT NULL DEFAULT -1;
`

// v11 adds people's chat accounts.
const v11 = `
CREATE TABLE chat_links (
	provider TEXT NOT NULL,
	subject TEXT NOT NULL,
	user_id TEXT NOT NULL REFERENCES users(id),
	name TEXT NOT NULL,
	created_at INTEGER NOT NULL,
	PRIMARY KEY (provider, subject)
) WITHOUT ROWID;
CREATE INDEX chat_links_user ON chat_links(user_id, created_at);
`

// v12 names, on a session, who the identity provider said signed in.
const v12 = `
ALTER TABLE sessions ADD COLUMN idp_issuer TEXT NOT NULL DEFAULT '';
ALTER TABLE sessions ADD COLUMN idp_subject TEXT NOT NULL DEFAULT '';
`

// v13 adds the groups SCIM keeps.
const v13 = `
CREATE TABLE groups (
	id TEXT PRIMARY KEY,
	name TEXT NOT NULL UNIQUE,
	external_id TEXT NOT NULL,
	members TEXT NOT NULL,
	created_at INTEGER NOT NULL
) WITHOUT ROWID;
`

// after are the migrations after v6, from v7 on.
var after = []string{v7, v8, v9, v10, v11, v12, v13}

// v7 adds people's passkeys, and the passkey that signed a decision.
const v7 = `
CREATE TABLE passkeys (
	id BLOB PRIMARY KEY,
	user_id TEXT NOT NULL REFERENCES users(id),
	name TEXT NOT NULL,
	public_key BLOB NOT NULL,
	algorithm INTEGER NOT NULL,
	attestation TEXT NOT NULL,
	aaguid BLOB NOT NULL,
	rp_id TEXT NOT NULL,
	sign_count INTEGER NOT NULL DEFAULT 0,
	flags INTEGER NOT NULL DEFAULT 0,
	created_at INTEGER NOT NULL,
	last_used_at INTEGER
) WITHOUT ROWID;
CREATE INDEX passkeys_user ON passkeys(user_id, created_at);
ALTER TABLE approvals ADD COLUMN passkey TEXT NOT NULL DEFAULT '';
`

// v6 is the write path's rebuild. The log leaves the database for segment
// files (package segment); the database keeps the state the log describes,
// written in batches off the commit path (projector.go), and what the
// record does not hold. The unique index on (agent, idempotency key) goes:
// the keys are remembered in memory (package state).
const (
	v6tables = `
CREATE TABLE agent_log (agent TEXT NOT NULL, first INTEGER NOT NULL, idx BLOB NOT NULL, PRIMARY KEY (agent, first)) WITHOUT ROWID;
CREATE TABLE agent_state (agent TEXT PRIMARY KEY, head BLOB NOT NULL, head_idx INTEGER NOT NULL, counts BLOB) WITHOUT ROWID;
`
	v6 = `
CREATE TABLE calls_v6 (
	id TEXT PRIMARY KEY,
	agent_id TEXT NOT NULL REFERENCES agents(id),
	connector TEXT NOT NULL,
	action TEXT NOT NULL,
	declared_risk TEXT NOT NULL,
	risk TEXT NOT NULL,
	status TEXT NOT NULL,
	idempotency_key TEXT NOT NULL,
	summary TEXT NOT NULL DEFAULT '',
	refusal TEXT NOT NULL DEFAULT '',
	created_at INTEGER NOT NULL,
	expires_at INTEGER NOT NULL,
	completed_at INTEGER,
	outcome TEXT NOT NULL DEFAULT '',
	error TEXT NOT NULL DEFAULT '',
	duration_ms INTEGER NOT NULL DEFAULT 0,
	raised_by TEXT NOT NULL DEFAULT ''
);
INSERT INTO calls_v6 SELECT ` + callColsV6 + ` FROM calls;
DROP TABLE calls;
ALTER TABLE calls_v6 RENAME TO calls;
CREATE INDEX calls_agent_created ON calls(agent_id, created_at);
CREATE INDEX calls_open ON calls(status) WHERE status IN ('approved', 'pending_approval');
DROP TABLE call_counts;
DROP TABLE call_minutes;
`
)

// Meta keys of the projection.
const (
	metaProjected = "log.projected" // the log size the state tables describe
	metaRedoSeq   = "log.redo_seq"  // the last redo frame applied (redo.go)
)

// migrate brings the database to schemaVersion. Moving a version-5 log
// (the entries table) to segment files writes them to logDir+".migrating"
// first and renames it to logDir once the database committed, so a crash
// at any point leaves either the old format whole or the new one.
func migrate(ctx context.Context, db *sql.DB, logDir string, log *slog.Logger) error {
	// Rebuilding a table that others refer to needs foreign keys off,
	// outside a transaction.
	if _, err := db.ExecContext(ctx, `PRAGMA foreign_keys = OFF`); err != nil {
		return fmt.Errorf("sqlite: migrate: %w", err)
	}
	defer db.ExecContext(context.Background(), `PRAGMA foreign_keys = ON`)
	if _, err := db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)`); err != nil {
		return fmt.Errorf("sqlite: migrate: %w", err)
	}
	v, err := version(ctx, db)
	if err != nil {
		return err
	}
	migrating := logDir + ".migrating"
	if v > schemaVersion {
		return fmt.Errorf("sqlite: the database has schema version %d, this arx knows only %d: upgrade arx", v, schemaVersion)
	}
	if v >= 6 {
		// The move to segment files committed (v6), but the log directory
		// was not renamed yet: finish it before anything else.
		if _, err := os.Stat(migrating); err == nil {
			if _, err := os.Stat(logDir); err == nil {
				return fmt.Errorf("sqlite: both %s and %s exist: keep the one the database was migrated with (%s) and remove the other", logDir, migrating, migrating)
			}
			if err := os.Rename(migrating, logDir); err != nil {
				return fmt.Errorf("sqlite: migrate: %w", err)
			}
		}
	}
	if v == schemaVersion {
		return nil
	}
	if v >= 6 {
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			return fmt.Errorf("sqlite: migrate: %w", err)
		}
		defer tx.Rollback()
		for i := v - 6; i < len(after); i++ {
			if _, err := tx.ExecContext(ctx, after[i]); err != nil {
				return fmt.Errorf("sqlite: migration %d: %w", i+7, err)
			}
		}
		if _, err := tx.ExecContext(ctx, `UPDATE schema_version SET version = ?`, schemaVersion); err != nil {
			return fmt.Errorf("sqlite: migrate: %w", err)
		}
		if err := tx.Commit(); err != nil {
			return fmt.Errorf("sqlite: migrate: %w", err)
		}
		return nil
	}
	// An interrupted move starts over.
	if err := os.RemoveAll(migrating); err != nil {
		return fmt.Errorf("sqlite: migrate: %w", err)
	}
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("sqlite: migrate: %w", err)
	}
	defer tx.Rollback()
	for i := v; i < len(migrations); i++ {
		if _, err := tx.ExecContext(ctx, migrations[i]); err != nil {
			return fmt.Errorf("sqlite: migration %d: %w", i+1, err)
		}
	}
	if _, err := tx.ExecContext(ctx, v6tables); err != nil {
		return fmt.Errorf("sqlite: migration 6: %w", err)
	}
	moved, err := moveLog(ctx, tx, migrating, log)
	if err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, v6); err != nil {
		return fmt.Errorf("sqlite: migration 6: %w", err)
	}
	for i, m := range after {
		if _, err := tx.ExecContext(ctx, m); err != nil {
			return fmt.Errorf("sqlite: migration %d: %w", i+7, err)
		}
	}
	if _, err := tx.ExecContext(ctx, `UPDATE schema_version SET version = ?`, schemaVersion); err != nil {
		return fmt.Errorf("sqlite: migrate: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("sqlite: migrate: %w", err)
	}
	if moved > 0 {
		if err := os.Rename(migrating, logDir); err != nil {
			return fmt.Errorf("sqlite: migrate: %w", err)
		}
		log.Info("sqlite: the log was moved to segment files; compacting the database", "entries", moved, "dir", logDir)
		if _, err := db.ExecContext(ctx, `VACUUM`); err != nil {
			log.Warn("sqlite: compacting the database after the move failed; it stays larger than it needs to be", "err", err)
		}
	} else {
		os.RemoveAll(migrating)
	}
	return nil
}

func version(ctx context.Context, db *sql.DB) (int, error) {
	var v int
	err := db.QueryRowContext(ctx, `SELECT version FROM schema_version`).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		if _, err := db.ExecContext(ctx, `INSERT INTO schema_version (version) VALUES (0)`); err != nil {
			return 0, fmt.Errorf("sqlite: migrate: %w", err)
		}
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("sqlite: migrate: %w", err)
	}
	return v, nil
}

// moveLog copies the entries table, checked entry by entry, to a new
// segment log in dir, and fills the state tables the entries describe: the
// per-agent index, the chain heads, and the recent calls' counts.
func moveLog(ctx context.Context, tx *sql.Tx, dir string, log *slog.Logger) (int64, error) {
	var n int64
	if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM entries`).Scan(&n); err != nil {
		return 0, fmt.Errorf("sqlite: migrate: %w", err)
	}
	if n > 0 {
		log.Info("sqlite: moving the log to segment files", "entries", n, "dir", dir)
		seg, err := segment.Open(segment.Config{Dir: dir})
		if err != nil {
			return 0, err
		}
		defer seg.Close()
		const page = 4096
		heads := map[string]headRow{}
		for start := int64(0); start < n; start += page {
			rows, err := tx.QueryContext(ctx, `SELECT idx, agent, body, hashes FROM entries WHERE idx >= ? ORDER BY idx LIMIT ?`, start, page)
			if err != nil {
				return 0, fmt.Errorf("sqlite: migrate: %w", err)
			}
			var recs []segment.Record
			for rows.Next() {
				var idx int64
				var agent string
				var body, hashes []byte
				if err := rows.Scan(&idx, &agent, &body, &hashes); err != nil {
					rows.Close()
					return 0, fmt.Errorf("sqlite: migrate: %w", err)
				}
				if idx != start+int64(len(recs)) {
					rows.Close()
					return 0, fmt.Errorf("sqlite: migrate: the entries table has no entry %d: the log is damaged", start+int64(len(recs)))
				}
				if len(hashes) == 0 || len(hashes)%tlog.HashSize != 0 {
					rows.Close()
					return 0, fmt.Errorf("sqlite: migrate: entry %d keeps %d bytes of hashes", idx, len(hashes))
				}
				hs := make([]tlog.Hash, len(hashes)/tlog.HashSize)
				for i := range hs {
					hs[i] = tlog.Hash(hashes[i*tlog.HashSize:])
				}
				if leaf := record.LeafHash(body); !bytes.Equal(leaf[:], hs[0][:]) {
					rows.Close()
					return 0, fmt.Errorf("sqlite: migrate: entry %d: its bytes do not hash to the leaf the log stores: it was edited", idx)
				}
				recs = append(recs, segment.Record{Index: idx, Hashes: hs, Data: body})
				heads[agent] = headRow{hash: hs[0], idx: idx}
			}
			rows.Close()
			if err := rows.Err(); err != nil {
				return 0, fmt.Errorf("sqlite: migrate: %w", err)
			}
			if err := seg.Append(recs); err != nil {
				return 0, err
			}
		}
		if err := moveAgentIndex(ctx, tx); err != nil {
			return 0, err
		}
		counts, err := recentCounts(ctx, tx)
		if err != nil {
			return 0, err
		}
		for agent, h := range heads {
			c := counts[agent]
			if c == nil {
				c = &store.Counts{}
			}
			if _, err := tx.ExecContext(ctx, `INSERT INTO agent_state (agent, head, head_idx, counts) VALUES (?, ?, ?, ?)`,
				agent, h.hash[:], h.idx, store.EncodeCounts(c)); err != nil {
				return 0, fmt.Errorf("sqlite: migrate: %w", err)
			}
		}
	}
	if _, err := tx.ExecContext(ctx, `DROP TABLE entries`); err != nil {
		return 0, fmt.Errorf("sqlite: migrate: %w", err)
	}
	for k, v := range map[string]string{metaProjected: strconv.FormatInt(n, 10), metaRedoSeq: "0"} {
		if _, err := tx.ExecContext(ctx, `INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value`, k, v); err != nil {
			return 0, fmt.Errorf("sqlite: migrate: %w", err)
		}
	}
	return n, nil
}

// moveAgentIndex fills agent_log from the entries table: each agent's
// entry indexes, in rows of up to agentLogRow.
func moveAgentIndex(ctx context.Context, tx *sql.Tx) error {
	rows, err := tx.QueryContext(ctx, `SELECT agent, idx FROM entries ORDER BY agent, idx`)
	if err != nil {
		return fmt.Errorf("sqlite: migrate: %w", err)
	}
	var batch []state.Applied
	for rows.Next() {
		var a state.Applied
		if err := rows.Scan(&a.Agent, &a.Index); err != nil {
			rows.Close()
			return fmt.Errorf("sqlite: migrate: %w", err)
		}
		batch = append(batch, a)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("sqlite: migrate: %w", err)
	}
	for _, r := range agentLogRows(batch) {
		if _, err := tx.ExecContext(ctx, `INSERT INTO agent_log (agent, first, idx) VALUES (?, ?, ?)`, r...); err != nil {
			return fmt.Errorf("sqlite: migrate: %w", err)
		}
	}
	return nil
}

type headRow struct {
	hash tlog.Hash
	idx  int64
}

// recentCounts counts the calls of the last CountHours hours by agent, as
// the state does (a version-5 database counted by day and by minute).
func recentCounts(ctx context.Context, tx *sql.Tx) (map[string]*store.Counts, error) {
	since := time.Now().Add(-(store.CountHours + 2) * time.Hour)
	rows, err := tx.QueryContext(ctx, `SELECT agent_id, created_at, status FROM calls WHERE created_at >= ?`, nanos(since))
	if err != nil {
		return nil, fmt.Errorf("sqlite: migrate: %w", err)
	}
	defer rows.Close()
	out := map[string]*store.Counts{}
	for rows.Next() {
		var agent, status string
		var created int64
		if err := rows.Scan(&agent, &created, &status); err != nil {
			return nil, fmt.Errorf("sqlite: migrate: %w", err)
		}
		c := out[agent]
		if c == nil {
			c = &store.Counts{}
			out[agent] = c
		}
		c.Add(fromNanos(created), status != store.CallRefused)
	}
	return out, rows.Err()
}
