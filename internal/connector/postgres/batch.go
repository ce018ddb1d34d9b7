package postgres

import (
	"context"
	"errors"
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
	if errors.As(err, &pe) && pe.Code == "42710" { // duplicate_object: made by an earlier attempt, with its grants
		err = nil
	}
	for _, q := range batch {
		q.err = err
		close(q.done)
	}
}

// flushDrops drops the roles of a batch in one transaction: under the
// lock, which of them exist; then no new logins, membership (so that a
// non-superuser administrator may end their sessions and drop what they
// own; a superuser needs none, and a membership it has already is no
// error), their sessions ended, their privileges and objects in the
// database dropped, the roles dropped.
func (c *Connector) flushDrops(batch []*request) {
	batch = live(batch)
	if len(batch) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.spec.Timeout)
	defer cancel()
	existing, err := c.dropRoles(ctx, batch)
	if len(batch) > 1 && refused(err) {
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
	conn, err := c.pool.Acquire(ctx)
	if err != nil {
		return nil, err
	}
	// A connection left inside a failed transaction is closed, not reused.
	defer conn.Release()
	pg := conn.Conn().PgConn()
	var names []string
	for _, q := range batch {
		names = append(names, literal(q.role))
	}
	res, err := pg.Exec(ctx, "BEGIN;"+grantLock+";SELECT rolname FROM pg_roles WHERE rolname IN ("+strings.Join(names, ",")+")").ReadAll()
	if err != nil {
		return nil, err
	}
	existing := map[string]bool{}
	var roles, quoted []string
	for _, row := range res[len(res)-1].Rows {
		r := string(row[0])
		existing[r] = true
		roles = append(roles, literal(r))
		quoted = append(quoted, ident(r))
	}
	if len(roles) == 0 {
		_, err = pg.Exec(ctx, "COMMIT").ReadAll()
		return existing, err
	}
	var sql strings.Builder
	for _, q := range quoted {
		sql.WriteString("ALTER ROLE " + q + " NOLOGIN;")
	}
	sql.WriteString("DO $$DECLARE r text; BEGIN FOREACH r IN ARRAY ARRAY[" + strings.Join(roles, ",") + "] LOOP " +
		"BEGIN EXECUTE format('GRANT %I TO CURRENT_USER', r); EXCEPTION WHEN OTHERS THEN NULL; END; END LOOP; END$$;")
	sql.WriteString("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename IN (" + strings.Join(roles, ",") + ");")
	all := strings.Join(quoted, ",")
	sql.WriteString("DROP OWNED BY " + all + ";DROP ROLE " + all + ";COMMIT")
	if _, err := pg.Exec(ctx, sql.String()).ReadAll(); err != nil {
		return nil, err
	}
	return existing, nil
}
