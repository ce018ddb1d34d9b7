package postgres

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// MaxBatch bounds the roles made, or dropped, in one transaction.
const MaxBatch = 64

// createFlushers bounds the transactions that make roles at once (see
// flushCreates); drops take the lock first and run one at a time.
const createFlushers = 3

// Every role ARX makes or drops changes the ACL of the objects its action
// grants on, and PostgreSQL lets one transaction at a time change an ACL
// (grantLock). So concurrent Provisions, and concurrent Revokes, are
// group-committed: what queued while one transaction ran goes in the next,
// one round trip, one lock and one WAL flush for all of them. A batch that
// PostgreSQL refuses is retried role by role, so that one bad role (a
// foreign object it owns, a retried call whose role exists) fails alone.

// batcher runs queued requests through flush, in batches of at most
// MaxBatch, from at most flushers goroutines that live while the queue is
// not empty.
type batcher[R any] struct {
	flush    func([]R)
	flushers int

	mu      sync.Mutex
	queue   []R
	running int
}

func (b *batcher[R]) submit(r R) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.queue = append(b.queue, r)
	if b.running < max(b.flushers, 1) {
		b.running++
		go b.loop()
	}
}

func (b *batcher[R]) loop() {
	for {
		b.mu.Lock()
		n := min(len(b.queue), MaxBatch)
		if n == 0 {
			b.running--
			b.mu.Unlock()
			return
		}
		batch := make([]R, n)
		copy(batch, b.queue)
		b.queue = append(b.queue[:0], b.queue[n:]...)
		b.mu.Unlock()
		b.flush(batch)
	}
}

// request is one caller's part of a batch.
type request struct {
	ctx     context.Context // the caller's: a request it has given up on is left out
	role    string
	create  string   // creates: CREATE ROLE
	grants  []string // creates: GRANTs
	existed bool     // drops: the role was there
	err     error
	done    chan struct{}
}

func newRequest(ctx context.Context, role, create string, grants []string) *request {
	return &request{ctx: ctx, role: role, create: create, grants: grants, done: make(chan struct{})}
}

// wait waits for the request's batch, or for the caller to give up.
func (q *request) wait() error {
	select {
	case <-q.done:
		return q.err
	case <-q.ctx.Done():
		return q.ctx.Err()
	}
}

// live drops (and answers) the requests whose callers gave up.
func live(batch []*request) []*request {
	out := batch[:0]
	for _, q := range batch {
		if err := q.ctx.Err(); err != nil {
			q.err = err
			close(q.done)
			continue
		}
		out = append(out, q)
	}
	return out
}

func refused(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe)
}

// flushCreates makes the roles of a batch in one transaction. The roles
// are created before the lock is taken: PostgreSQL checks each new SCRAM
// secret against the empty password, a full PBKDF2 of ScramIterations
// rounds, and that work need not wait for other transactions' grants. So
// several batches of creates run at once (createFlushers), and only their
// GRANTs and commits take turns.
func (c *Connector) flushCreates(batch []*request) {
	batch = live(batch)
	if len(batch) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.spec.Timeout)
	defer cancel()
	var sql strings.Builder
	sql.WriteString("BEGIN;")
	for _, q := range batch {
		sql.WriteString(q.create + ";")
	}
	sql.WriteString(grantLock + ";")
	for _, q := range batch {
		for _, g := range q.grants {
			sql.WriteString(g + ";")
		}
	}
	sql.WriteString("COMMIT")
	// Simple protocol, no parameters: every name is quoted, every value a
	// literal ARX made.
	_, err := c.pool.Exec(ctx, sql.String(), pgx.QueryExecModeSimpleProtocol)
	if len(batch) > 1 && refused(err) {
		for _, q := range batch {
			c.flushCreates([]*request{q})
		}
		return
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) && (pe.Code == "42710" || // duplicate_object: made by an earlier attempt, with its grants
		pe.Code == "23505" && pe.ConstraintName == "pg_authid_rolname_index") { // made by a concurrent attempt, which committed while this one waited
		err = nil
	}
	for _, q := range batch {
		q.err = err
		close(q.done)
	}
}

// flushDrops drops the roles of a batch: access cut first, in a
// transaction of its own (dropAccess), then what the roles own or were
// granted in other databases (dropElsewhere), then, in one transaction
// under the lock, their privileges and objects here and the roles
// themselves. A role that cannot be dropped (it owns something in a
// database ARX cannot reach) fails its own drop, loudly, and has no way in
// meanwhile: no login, no password, no session.
func (c *Connector) flushDrops(batch []*request) {
	batch = live(batch)
	if len(batch) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.spec.Timeout)
	defer cancel()
	existing, err := c.dropRoles(ctx, batch)
	if len(batch) > 1 && err != nil {
		for _, q := range batch {
			c.flushDrops([]*request{q})
		}
		return
	}
	for _, q := range batch {
		q.err = err
		if err == nil && existing[q.role] {
			q.existed = true
			delete(existing, q.role) // the same role twice in one batch: dropped once
		}
		close(q.done)
	}
}

func (c *Connector) dropRoles(ctx context.Context, batch []*request) (map[string]bool, error) {
	existing, roles, err := c.dropAccess(ctx, batch)
	if err != nil || len(roles) == 0 {
		return existing, err
	}
	quoted := make([]string, len(roles))
	for i, r := range roles {
		quoted[i] = ident(r)
	}
	all := strings.Join(quoted, ",")
	if err := c.dropElsewhere(ctx, roles, all); err != nil {
		return nil, err
	}
	if _, err := c.pool.Exec(ctx, "BEGIN;"+grantLock+";DROP OWNED BY "+all+";DROP ROLE "+all+";COMMIT",
		pgx.QueryExecModeSimpleProtocol); err != nil {
		return nil, fmt.Errorf("%w (the role cannot log in: its login and password are gone)", err)
	}
	return existing, nil
}

// dropAccess cuts the access of the batch's roles that exist, and commits
// that before anything else: no login, no password (a role may have set
// its own: PostgreSQL lets every role change its password), membership for
// the administrator (so that a non-superuser may end their sessions and
// drop what they own; a membership it has already is no error); then their
// sessions are ended. A drop that fails later leaves a role that cannot
// come back.
func (c *Connector) dropAccess(ctx context.Context, batch []*request) (map[string]bool, []string, error) {
	var names []string
	for _, q := range batch {
		names = append(names, literal(q.role))
	}
	rows, err := c.pool.Query(ctx, "SELECT rolname FROM pg_roles WHERE rolname IN ("+strings.Join(names, ",")+")",
		pgx.QueryExecModeSimpleProtocol)
	if err != nil {
		return nil, nil, err
	}
	roles, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, nil, err
	}
	existing := map[string]bool{}
	var lits []string
	for _, r := range roles {
		existing[r] = true
		lits = append(lits, literal(r))
	}
	if len(roles) == 0 {
		return existing, nil, nil
	}
	var sql strings.Builder
	sql.WriteString("BEGIN;")
	for _, r := range roles {
		sql.WriteString("ALTER ROLE " + ident(r) + " NOLOGIN PASSWORD NULL;")
	}
	sql.WriteString("DO $$DECLARE r text; BEGIN FOREACH r IN ARRAY ARRAY[" + strings.Join(lits, ",") + "] LOOP " +
		"BEGIN EXECUTE format('GRANT %I TO CURRENT_USER', r); EXCEPTION WHEN OTHERS THEN NULL; END; END LOOP; END$$;")
	sql.WriteString("COMMIT;SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename IN (" + strings.Join(lits, ",") + ")")
	if _, err := c.pool.Exec(ctx, sql.String(), pgx.QueryExecModeSimpleProtocol); err != nil {
		return nil, nil, fmt.Errorf("cut the access of %s: %w", strings.Join(roles, ", "), err)
	}
	return existing, roles, nil
}

// dropElsewhere drops what the roles own, and the privileges they were
// granted, in the other databases of the cluster: any role may connect to
// a database that grants CONNECT to PUBLIC (PostgreSQL's default) and
// make a large object there, and DROP ROLE refuses while anything
// remains. pg_shdepend says which databases hold something.
func (c *Connector) dropElsewhere(ctx context.Context, roles []string, all string) error {
	rows, err := c.pool.Query(ctx, `SELECT DISTINCT d.datname FROM pg_shdepend s JOIN pg_database d ON d.oid = s.dbid
		WHERE s.refclassid = 'pg_authid'::regclass AND s.refobjid IN (SELECT oid FROM pg_roles WHERE rolname = ANY($1))
		AND d.datname <> current_database() ORDER BY 1`, roles)
	if err != nil {
		return err
	}
	dbs, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return err
	}
	for _, db := range dbs {
		cfg := c.pool.Config().ConnConfig.Copy()
		cfg.Database = db
		conn, err := pgx.ConnectConfig(ctx, cfg)
		if err != nil {
			return fmt.Errorf("%s own or were granted something in database %s, which the connector's user cannot reach to drop it: %w",
				strings.Join(roles, ", "), ident(db), err)
		}
		_, err = conn.Exec(ctx, "DROP OWNED BY "+all, pgx.QueryExecModeSimpleProtocol)
		conn.Close(context.Background())
		if err != nil {
			return fmt.Errorf("drop what %s own in database %s: %w", strings.Join(roles, ", "), ident(db), err)
		}
	}
	return nil
}
