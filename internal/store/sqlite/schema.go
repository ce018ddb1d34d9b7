package sqlite

// migrations are applied in order, each once; their position is the schema
// version. Never edit a migration that has shipped: append a new one.
// Version 6 and later are in migrations.go (they move data as well).
var migrations = []string{
	`CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
	CREATE TABLE agents (
		id TEXT PRIMARY KEY,
		name TEXT NOT NULL,
		owner TEXT NOT NULL,
		status TEXT NOT NULL,
		manifest BLOB NOT NULL,
		manifest_hash TEXT NOT NULL,
		created_at INTEGER NOT NULL,
		terminated_at INTEGER
	);
	CREATE TABLE tokens (
		id TEXT PRIMARY KEY,
		hash BLOB NOT NULL UNIQUE,
		kind TEXT NOT NULL,
		agent_id TEXT REFERENCES agents(id),
		label TEXT NOT NULL DEFAULT '',
		created_at INTEGER NOT NULL,
		revoked_at INTEGER
	);
	CREATE INDEX tokens_agent ON tokens(agent_id);
	CREATE TABLE calls (
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
		UNIQUE (agent_id, idempotency_key)
	);
	CREATE INDEX calls_agent_created ON calls(agent_id, created_at);
	CREATE INDEX calls_open ON calls(status, expires_at) WHERE status IN ('approved', 'pending_approval');
	CREATE TABLE entries (
		idx INTEGER PRIMARY KEY,
		agent TEXT NOT NULL,
		type TEXT NOT NULL,
		call TEXT NOT NULL,
		body BLOB NOT NULL,
		hashes BLOB NOT NULL
	);
	CREATE INDEX entries_agent ON entries(agent, idx);
	CREATE TABLE heads (agent TEXT PRIMARY KEY, hash BLOB NOT NULL, idx INTEGER NOT NULL);
	CREATE TABLE checkpoints (size INTEGER PRIMARY KEY, signed BLOB NOT NULL, created_at INTEGER NOT NULL);`,

	// People, approvals and the outbox.
	`CREATE TABLE users (
		id TEXT PRIMARY KEY,
		email TEXT NOT NULL UNIQUE COLLATE NOCASE,
		role TEXT NOT NULL,
		password_hash TEXT NOT NULL DEFAULT '',
		created_at INTEGER NOT NULL,
		disabled_at INTEGER
	);
	CREATE TABLE setup_tokens (
		hash BLOB PRIMARY KEY,
		user_id TEXT NOT NULL REFERENCES users(id),
		expires_at INTEGER NOT NULL,
		used_at INTEGER
	);
	CREATE TABLE sessions (
		hash BLOB PRIMARY KEY,
		user_id TEXT NOT NULL REFERENCES users(id),
		csrf TEXT NOT NULL,
		created_at INTEGER NOT NULL,
		expires_at INTEGER NOT NULL
	);
	CREATE INDEX sessions_user ON sessions(user_id);
	ALTER TABLE tokens ADD COLUMN user_id TEXT REFERENCES users(id);
	ALTER TABLE tokens ADD COLUMN issued_by TEXT NOT NULL DEFAULT '';
	ALTER TABLE calls ADD COLUMN raised_by TEXT NOT NULL DEFAULT '';
	CREATE TABLE approvals (
		call_id TEXT PRIMARY KEY REFERENCES calls(id),
		agent_id TEXT NOT NULL REFERENCES agents(id),
		status TEXT NOT NULL,
		approvers TEXT NOT NULL,
		requested_at INTEGER NOT NULL,
		expires_at INTEGER NOT NULL,
		decided_by TEXT NOT NULL DEFAULT '',
		decided_at INTEGER,
		reason TEXT NOT NULL DEFAULT ''
	);
	CREATE INDEX approvals_status ON approvals(status, expires_at);
	CREATE INDEX approvals_requested ON approvals(requested_at);
	CREATE TABLE outbox (
		id INTEGER PRIMARY KEY AUTOINCREMENT,
		kind TEXT NOT NULL,
		payload BLOB NOT NULL,
		created_at INTEGER NOT NULL,
		attempts INTEGER NOT NULL DEFAULT 0,
		next_at INTEGER NOT NULL,
		done_at INTEGER,
		last_error TEXT NOT NULL DEFAULT ''
	);
	CREATE INDEX outbox_due ON outbox(next_at) WHERE done_at IS NULL;`,

	// Chain heads are derived from the log (entries_agent), not kept twice.
	`DROP TABLE heads;`,

	// Calls per agent and day, for budget.calls_per_day in O(1).
	`CREATE TABLE call_counts (
		agent_id TEXT NOT NULL,
		day TEXT NOT NULL,
		n INTEGER NOT NULL,
		PRIMARY KEY (agent_id, day)
	) WITHOUT ROWID;`,

	// Counts that rate limits and the rate-spike rule share across
	// replicas: failures by hashed key (login attempts), calls per agent
	// and minute.
	`CREATE TABLE failures (
		id INTEGER PRIMARY KEY,
		key BLOB NOT NULL,
		at INTEGER NOT NULL
	);
	CREATE INDEX failures_key ON failures(key, at);
	CREATE INDEX failures_at ON failures(at);
	CREATE TABLE call_minutes (
		agent_id TEXT NOT NULL,
		minute INTEGER NOT NULL,
		n INTEGER NOT NULL,
		PRIMARY KEY (agent_id, minute)
	) WITHOUT ROWID;`,
}
