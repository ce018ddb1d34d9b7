package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/arxsec/arx/internal/store"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// migrateLockKey serialises migrations of replicas that start together
// ("arxM").
const migrateLockKey int64 = 0x6172784d

// migrations are applied in order, each once, in a transaction of its own;
// their position is the schema version. Never edit a migration that has
// shipped: append a new one. The schema follows the SQLite store's (times
// are BIGINT nanoseconds since the Unix epoch, UTC).
var migrations = []string{
	`CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
	CREATE TABLE agents (
		id TEXT PRIMARY KEY,
		name TEXT NOT NULL,
		owner TEXT NOT NULL,
		status TEXT NOT NULL,
		manifest BYTEA NOT NULL,
		manifest_hash TEXT NOT NULL,
		created_at BIGINT NOT NULL,
		terminated_at BIGINT
	);
	CREATE INDEX agents_created ON agents (created_at, id COLLATE "C");
	CREATE TABLE users (
		id TEXT PRIMARY KEY,
		email TEXT NOT NULL,
		role TEXT NOT NULL,
		password_hash TEXT NOT NULL DEFAULT '',
		created_at BIGINT NOT NULL,
		disabled_at BIGINT
	);
	-- Emails are one whatever their ASCII case, as with SQLite's NOCASE.
	CREATE UNIQUE INDEX users_email ON users (lower(email COLLATE "C"));
	CREATE TABLE tokens (
		id TEXT PRIMARY KEY,
		hash BYTEA NOT NULL UNIQUE,
		kind TEXT NOT NULL,
		agent_id TEXT REFERENCES agents (id),
		user_id TEXT REFERENCES users (id),
		issued_by TEXT NOT NULL DEFAULT '',
		label TEXT NOT NULL DEFAULT '',
		created_at BIGINT NOT NULL,
		revoked_at BIGINT
	);
	CREATE INDEX tokens_agent ON tokens (agent_id);
	CREATE TABLE calls (
		id TEXT PRIMARY KEY,
		agent_id TEXT NOT NULL REFERENCES agents (id),
		connector TEXT NOT NULL,
		action TEXT NOT NULL,
		declared_risk TEXT NOT NULL,
		risk TEXT NOT NULL,
		status TEXT NOT NULL,
		idempotency_key TEXT NOT NULL,
		summary TEXT NOT NULL DEFAULT '',
		refusal TEXT NOT NULL DEFAULT '',
		created_at BIGINT NOT NULL,
		expires_at BIGINT NOT NULL,
		completed_at BIGINT,
		outcome TEXT NOT NULL DEFAULT '',
		error TEXT NOT NULL DEFAULT '',
		duration_ms BIGINT NOT NULL DEFAULT 0,
		raised_by TEXT NOT NULL DEFAULT '',
		UNIQUE (agent_id, idempotency_key)
	);
	CREATE INDEX calls_agent_created ON calls (agent_id, created_at);
	CREATE INDEX calls_open ON calls (status, expires_at) WHERE status IN ('approved', 'pending_approval');
	CREATE TABLE call_counts (
		agent_id TEXT NOT NULL,
		day TEXT NOT NULL,
		n BIGINT NOT NULL,
		PRIMARY KEY (agent_id, day)
	);
	CREATE TABLE entries (
		idx BIGINT PRIMARY KEY CHECK (idx >= 0),
		agent TEXT NOT NULL,
		type TEXT NOT NULL,
		call TEXT NOT NULL,
		body BYTEA NOT NULL,
		hashes BYTEA NOT NULL
	);
	CREATE INDEX entries_agent ON entries (agent, idx);
	-- The log is append-only and has no gaps, whoever writes to it: the
	-- primary key refuses a second entry at an index, these triggers an
	-- entry that does not follow the last one, and any change or removal.
	CREATE FUNCTION entries_no_gap() RETURNS trigger LANGUAGE plpgsql AS $$
	BEGIN
		IF NEW.idx > 0 AND NOT EXISTS (SELECT 1 FROM entries WHERE idx = NEW.idx - 1) THEN
			RAISE EXCEPTION 'arx: entry % would leave a gap in the log', NEW.idx USING ERRCODE = 'integrity_constraint_violation';
		END IF;
		RETURN NEW;
	END $$;
	CREATE TRIGGER entries_no_gap BEFORE INSERT ON entries FOR EACH ROW EXECUTE FUNCTION entries_no_gap();
	CREATE FUNCTION entries_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
	BEGIN
		RAISE EXCEPTION 'arx: the log is append-only (% refused)', TG_OP USING ERRCODE = 'integrity_constraint_violation';
	END $$;
	CREATE TRIGGER entries_append_only BEFORE UPDATE OR DELETE ON entries FOR EACH ROW EXECUTE FUNCTION entries_append_only();
	CREATE TRIGGER entries_no_truncate BEFORE TRUNCATE ON entries FOR EACH STATEMENT EXECUTE FUNCTION entries_append_only();
	CREATE TABLE checkpoints (size BIGINT PRIMARY KEY, signed BYTEA NOT NULL, created_at BIGINT NOT NULL);
	CREATE TABLE setup_tokens (
		hash BYTEA PRIMARY KEY,
		user_id TEXT NOT NULL REFERENCES users (id),
		expires_at BIGINT NOT NULL,
		used_at BIGINT
	);
	CREATE TABLE sessions (
		hash BYTEA PRIMARY KEY,
		user_id TEXT NOT NULL REFERENCES users (id),
		csrf TEXT NOT NULL,
		created_at BIGINT NOT NULL,
		expires_at BIGINT NOT NULL
	);
	CREATE INDEX sessions_user ON sessions (user_id);
	CREATE TABLE approvals (
		call_id TEXT PRIMARY KEY REFERENCES calls (id),
		agent_id TEXT NOT NULL REFERENCES agents (id),
		status TEXT NOT NULL,
		approvers TEXT NOT NULL,
		requested_at BIGINT NOT NULL,
		expires_at BIGINT NOT NULL,
		decided_by TEXT NOT NULL DEFAULT '',
		decided_at BIGINT,
		reason TEXT NOT NULL DEFAULT ''
	);
	CREATE INDEX approvals_status ON approvals (status, expires_at);
	CREATE INDEX approvals_requested ON approvals (requested_at);
	CREATE TABLE outbox (
		id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
		kind TEXT NOT NULL,
		payload BYTEA NOT NULL,
		created_at BIGINT NOT NULL,
		attempts INTEGER NOT NULL DEFAULT 0,
		next_at BIGINT NOT NULL,
		done_at BIGINT,
		last_error TEXT NOT NULL DEFAULT ''
	);
	CREATE INDEX outbox_due ON outbox (next_at) WHERE done_at IS NULL;`,

	// Counts that rate limits and the rate-spike rule share across
	// replicas: failures by hashed key (login attempts), calls per agent
	// and minute.
	`CREATE TABLE failures (
		id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
		key BYTEA NOT NULL,
		at BIGINT NOT NULL
	);
	CREATE INDEX failures_key ON failures (key, at);
	CREATE INDEX failures_at ON failures (at);
	CREATE TABLE call_minutes (
		agent_id TEXT NOT NULL,
		minute BIGINT NOT NULL,
		n BIGINT NOT NULL,
		PRIMARY KEY (agent_id, minute)
	);`,

	// The write path's rebuild: the state the log describes is kept in
	// memory by each replica and folded from the log; agent_state keeps
	// each agent's chain head and counts for a replica that loads it, the
	// unique index on (agent, idempotency key) goes (keys are remembered
	// in memory), and the counters by day and minute are agent_state's
	// counts now (filled by migrateCounts).
	`CREATE TABLE agent_state (
		agent TEXT PRIMARY KEY,
		head BYTEA NOT NULL,
		head_idx BIGINT NOT NULL,
		counts BYTEA
	);
	INSERT INTO agent_state (agent, head, head_idx)
		SELECT DISTINCT ON (agent) agent, substring(hashes FROM 1 FOR 32), idx FROM entries ORDER BY agent, idx DESC;
	ALTER TABLE calls DROP CONSTRAINT IF EXISTS calls_agent_id_idempotency_key_key;
	DROP TABLE call_counts;
	DROP TABLE call_minutes;`,
	// People's passkeys, and the passkey that signed a decision.
	`CREATE TABLE passkeys (
		id BYTEA PRIMARY KEY,
		user_id TEXT NOT NULL REFERENCES users (id),
		name TEXT NOT NULL,
		public_key BYTEA NOT NULL,
		algorithm BIGINT NOT NULL,
		attestation TEXT NOT NULL,
		aaguid BYTEA NOT NULL,
		rp_id TEXT NOT NULL,
		sign_count BIGINT NOT NULL DEFAULT 0,
		flags INTEGER NOT NULL DEFAULT 0,
		created_at BIGINT NOT NULL,
		last_used_at BIGINT
	);
	CREATE INDEX passkeys_user ON passkeys (user_id, created_at);
	ALTER TABLE approvals ADD COLUMN passkey TEXT NOT NULL DEFAULT '';`,
	// A call's arguments.
	`ALTER TABLE calls ADD COLUMN args TEXT NOT NULL DEFAULT '';
	ALTER TABLE calls ADD COLUMN args_hash TEXT NOT NULL DEFAULT '';`,
	// Approvals that need several approvers.
	`ALTER TABLE approvals ADD COLUMN quorum INTEGER NOT NULL DEFAULT 0;
	ALTER TABLE approvals ADD COLUMN grants TEXT NOT NULL DEFAULT '[]';`,
	// Job descriptions applied after the hire, and shadowed ones.
	`CREATE TABLE manifests (hash TEXT PRIMARY KEY, text BYTEA NOT NULL);
	ALTER TABLE agents ADD COLUMN shadow_hash TEXT NOT NULL DEFAULT '';
	ALTER TABLE agents ADD COLUMN shadow_since BIGINT NOT NULL DEFAULT -1;`,
	// People's chat accounts.
	`CREATE TABLE chat_links (
		provider TEXT NOT NULL,
		subject TEXT NOT NULL,
		user_id TEXT NOT NULL REFERENCES users(id),
		name TEXT NOT NULL,
		created_at BIGINT NOT NULL,
		PRIMARY KEY (provider, subject)
	);
	CREATE INDEX chat_links_user ON chat_links (user_id, created_at);`,
	// Who the identity provider said signed in, on a session.
	`ALTER TABLE sessions ADD COLUMN idp_issuer TEXT NOT NULL DEFAULT '';
	ALTER TABLE sessions ADD COLUMN idp_subject TEXT NOT NULL DEFAULT '';`,
	// The groups SCIM keeps.
	`CREATE TABLE groups (
		id TEXT PRIMARY KEY,
		name TEXT NOT NULL UNIQUE,
		external_id TEXT NOT NULL,
		members TEXT[] NOT NULL,
		created_at BIGINT NOT NULL
	);`,
}

// afterMigration runs Go code a migration needs, in its transaction.
var afterMigration = map[int]func(ctx context.Context, tx pgx.Tx) error{
	3: migrateCounts,
}

// migrateCounts counts the calls of the last hours by agent into
// agent_state, as the state does.
func migrateCounts(ctx context.Context, tx pgx.Tx) error {
	since := time.Now().Add(-(store.CountHours + 2) * time.Hour)
	rows, err := tx.Query(ctx, `SELECT agent_id, created_at, status FROM calls WHERE created_at >= $1`, since.UnixNano())
	if err != nil {
		return err
	}
	counts := map[string]*store.Counts{}
	for rows.Next() {
		var agent, status string
		var created int64
		if err := rows.Scan(&agent, &created, &status); err != nil {
			rows.Close()
			return err
		}
		c := counts[agent]
		if c == nil {
			c = &store.Counts{}
			counts[agent] = c
		}
		c.Add(fromNanos(created), status != store.CallRefused)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	for agent, c := range counts {
		if _, err := tx.Exec(ctx, `UPDATE agent_state SET counts = $1 WHERE agent = $2`, store.EncodeCounts(c), agent); err != nil {
			return err
		}
	}
	return nil
}

// migrate brings the schema up to date. Replicas starting together take
// turns on a session advisory lock; the first migrates, the others find it
// done.
func migrate(ctx context.Context, pool *pgxpool.Pool) (err error) {
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("postgres: migrate: %w", err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock($1)`, migrateLockKey); err != nil {
		return fmt.Errorf("postgres: migrate: %w", err)
	}
	defer func() {
		if _, uerr := conn.Exec(context.Background(), `SELECT pg_advisory_unlock($1)`, migrateLockKey); uerr != nil && err == nil {
			err = fmt.Errorf("postgres: migrate: %w", uerr)
		}
	}()
	if _, err := conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS arx_schema (version INTEGER NOT NULL)`); err != nil {
		return fmt.Errorf("postgres: migrate: %w", err)
	}
	var v int
	err = conn.QueryRow(ctx, `SELECT version FROM arx_schema`).Scan(&v)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		if _, err := conn.Exec(ctx, `INSERT INTO arx_schema (version) VALUES (0)`); err != nil {
			return fmt.Errorf("postgres: migrate: %w", err)
		}
	case err != nil:
		return fmt.Errorf("postgres: migrate: %w", err)
	}
	if v > len(migrations) {
		return fmt.Errorf("postgres: the database has schema version %d, this arx knows only %d: upgrade arx", v, len(migrations))
	}
	for i := v; i < len(migrations); i++ {
		err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, migrations[i]); err != nil {
				return err
			}
			if f := afterMigration[i+1]; f != nil {
				if err := f(ctx, tx); err != nil {
					return err
				}
			}
			_, err := tx.Exec(ctx, `UPDATE arx_schema SET version = $1`, i+1)
			return err
		})
		if err != nil {
			return fmt.Errorf("postgres: migration %d: %w", i+1, err)
		}
	}
	return nil
}
