// Package postgres is the store for several arx serve replicas sharing one
// PostgreSQL database.
//
// Writes keep the promise of package store the way the SQLite store does:
// one sequencer goroutine per process group-commits concurrent Updates in
// one transaction, each isolated by a savepoint, and Update returns only once
// COMMIT has returned (synchronous_commit: durable).
//
// One log, several replicas. Every batch first takes a transaction-scoped
// advisory lock (pg_advisory_xact_lock(LogLockKey)), so exactly one batch of
// one replica writes at a time, and every write transaction of every replica
// is serialised behind the one before it. Under the lock the batch reads the
// log's size; when it differs from what this process last committed (another
// replica appended), the in-memory Merkle frontier is rebuilt from the
// stored hashes and the cache of chain heads is dropped. So indexes stay
// contiguous and each entry names its agent's true previous entry whichever
// replica appends; the entries primary key refuses a duplicate index and a
// trigger refuses a gap, whatever writes. A replica that dies mid-batch
// loses its connection, PostgreSQL rolls its transaction back and releases
// the lock, and the next batch of any replica goes on at once; a replica cut
// off without its connection closing is ended by the server after
// idle_in_transaction_session_timeout (Config.IdleInTransactionTimeout).
//
// No stale authority. Nothing this store caches can outlive a committed
// termination or revocation: reads (tokens, agents, calls, approvals,
// sessions) go to the database every time; the only caches are the log
// frontier and the chain heads, which describe the log alone and are
// rebuilt whenever another replica appended. The runtime's own caches hold
// nothing a termination changes either: parsed manifests by content hash,
// and credential signatures already checked (the gateway reads the call and
// the agent behind a credential in its transaction, every request).
//
// Leadership. The Store is a store.Leader: a session advisory lock held on
// a connection of its own elects one replica to run a job such as the
// bucket publisher (leader.go).
//
// Wake-ups. The Store is a store.Notifier: NOTIFY on one channel
// (NotifyChannel) and a dedicated LISTEN connection per listener, so a
// decision committed on one replica wakes the long polls and console
// streams of the others.
package postgres

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/arxsec/arx/internal/store"
	"github.com/arxsec/arx/record"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/mod/sumdb/tlog"
)

var (
	_ store.Store    = (*Store)(nil)
	_ store.Notifier = (*Store)(nil)
)

// LogLockKey is the advisory lock every write transaction takes first
// ("arxL"). Advisory locks are per database, so deployments in different
// databases of one server do not contend.
const LogLockKey int64 = 0x6172784c

// Config configures a Store.
type Config struct {
	// URL is a PostgreSQL connection string (postgres://user:pass@host/db?...).
	URL string
	// MaxConns bounds the connection pool; the sequencer holds one of them
	// during a batch, and each listener has one of its own besides.
	MaxConns int32
	// MinConns is how many connections the pool keeps open when idle.
	MinConns int32
	// MaxConnLifetime and MaxConnIdleTime retire pooled connections.
	MaxConnLifetime time.Duration
	MaxConnIdleTime time.Duration
	// MaxBatch bounds how many Updates share one commit. Each Update's
	// savepoint is a subtransaction, and PostgreSQL caches 64 of them per
	// transaction before other sessions' visibility checks slow down.
	MaxBatch int
	// BatchTimeout bounds one batch, the wait for the log lock included;
	// its Updates then fail (closed: nothing written).
	BatchTimeout time.Duration
	// IdleInTransactionTimeout is set on every connection: the server ends
	// a session that sits in a transaction that long, so a replica that
	// hangs (or is cut off) while holding the log lock frees it.
	IdleInTransactionTimeout time.Duration
	// ReadTimeout bounds one read outside a batch (a token, a call, a page
	// of entries), so a request on a replica whose database stopped
	// answering (a stalled network path, a hung server) is refused in
	// seconds instead of waiting for its client to give up.
	ReadTimeout time.Duration
	Logger      *slog.Logger
}

// Defaults. A replica cut off from the database answers within these
// (internal/replicas/partition_test.go measures them): a request that
// reads first (every authenticated one) within ReadTimeout; a write within
// BatchTimeout for the batch that meets the cut, plus acquireTimeout when
// it was queued behind that batch. BatchTimeout stays well under the SDK's
// 30s attempt timeout, so a client gets the stable 503 rather than giving
// up. The log lock of a replica cut off mid-batch is freed after
// IdleInTransactionTimeout, and every replica's appends wait for it
// meanwhile: batches never idle on purpose (their statements go back to
// back, with in-memory work between), so a few seconds end only sessions
// that are truly lost.
const (
	DefaultMaxConns                 = 16
	DefaultMaxBatch                 = 64
	DefaultBatchTimeout             = 15 * time.Second
	DefaultIdleInTransactionTimeout = 5 * time.Second
	DefaultReadTimeout              = 5 * time.Second
)

// acquireTimeout bounds how long a batch waits for a connection: a stalled
// path holds an idle connection's liveness ping, or a new connection's
// handshake, until the context ends. A healthy pool hands one out at once
// (reads hold theirs for at most ReadTimeout).
const acquireTimeout = 5 * time.Second

// tcpUserTimeout is the server's tcp_user_timeout for arx's sessions.
const tcpUserTimeout = 15 * time.Second

// Store is a store.Store on PostgreSQL.
type Store struct {
	pool    *pgxpool.Pool
	reads   bounded         // the pool, each read bounded by ReadTimeout
	connCfg *pgx.ConnConfig // for listener connections
	log     *slog.Logger
	cfg     Config

	ops     chan *op
	quit    chan struct{}
	done    chan struct{}
	closeMu sync.Once
	bg      context.Context // ends on Close: listeners
	stopBg  context.CancelFunc

	// forceSync is set when the server commits asynchronously by default:
	// each batch then asks for a durable commit.
	forceSync bool

	// Owned by the sequencer goroutine.
	tree  *record.Tree         // nil until loaded under the log lock
	heads map[string]tlog.Hash // committed chain heads by agent, filled on demand

	listeners atomic.Int32 // listeners whose connection is down

	leadMu     sync.Mutex           // leader.go
	leadClosed bool                 // no more TryLead
	candidates map[string]*pgx.Conn // by name: the connection of the last try that did not get the lock
}

type op struct {
	ctx  context.Context
	fn   func(store.Tx) error
	done chan error
}

// Open connects, migrates the schema (once, whichever replica comes first)
// and starts the sequencer.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = DefaultMaxConns
	}
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = DefaultMaxBatch
	}
	if cfg.BatchTimeout <= 0 {
		cfg.BatchTimeout = DefaultBatchTimeout
	}
	if cfg.IdleInTransactionTimeout <= 0 {
		cfg.IdleInTransactionTimeout = DefaultIdleInTransactionTimeout
	}
	if cfg.ReadTimeout <= 0 {
		cfg.ReadTimeout = DefaultReadTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	pc, err := pgxpool.ParseConfig(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", redact(err))
	}
	pc.MaxConns, pc.MinConns = cfg.MaxConns, cfg.MinConns
	if cfg.MaxConnLifetime > 0 {
		pc.MaxConnLifetime = cfg.MaxConnLifetime
	}
	if cfg.MaxConnIdleTime > 0 {
		pc.MaxConnIdleTime = cfg.MaxConnIdleTime
	}
	if pc.ConnConfig.ConnectTimeout == 0 { // an unreachable server fails a batch in seconds, not at the batch timeout
		pc.ConnConfig.ConnectTimeout = 5 * time.Second
	}
	rp := pc.ConnConfig.RuntimeParams
	if rp["application_name"] == "" {
		rp["application_name"] = "arx"
	}
	rp["idle_in_transaction_session_timeout"] = strconv.FormatInt(cfg.IdleInTransactionTimeout.Milliseconds(), 10)
	if rp["tcp_user_timeout"] == "" {
		// The server's side of a partition: a session whose replica
		// vanished while PostgreSQL was sending to it (so not idle in a
		// transaction) is ended once its data goes unacknowledged this
		// long, and releases what it holds, rather than after the
		// kernel's retransmissions (about 15 minutes).
		rp["tcp_user_timeout"] = strconv.FormatInt(tcpUserTimeout.Milliseconds(), 10)
	}
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", redact(err))
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("postgres: connect: %w", redact(err))
	}
	if err := migrate(ctx, pool); err != nil {
		pool.Close()
		return nil, err
	}
	var syncCommit string
	if err := pool.QueryRow(ctx, `SELECT current_setting('synchronous_commit')`).Scan(&syncCommit); err != nil {
		pool.Close()
		return nil, fmt.Errorf("postgres: %w", err)
	}
	bg, stop := context.WithCancel(context.Background())
	s := &Store{pool: pool, reads: bounded{pool, cfg.ReadTimeout}, connCfg: pc.ConnConfig.Copy(), log: cfg.Logger, cfg: cfg,
		ops: make(chan *op, 4096), quit: make(chan struct{}), done: make(chan struct{}), bg: bg, stopBg: stop,
		forceSync: syncCommit == "off", heads: map[string]tlog.Hash{}}
	go s.sequence()
	return s, nil
}

// redact keeps a password in a connection string out of error messages.
func redact(err error) error {
	var pe *pgconn.ParseConfigError
	if errors.As(err, &pe) {
		return errors.New("invalid connection string (see https://www.postgresql.org/docs/current/libpq-connect.html#LIBPQ-CONNSTRING)")
	}
	return err
}

// Close stops the sequencer after the Updates already queued, stops the
// listeners and closes the pool.
func (s *Store) Close() error {
	s.closeMu.Do(func() { close(s.quit) })
	<-s.done
	s.closeLeadership()
	s.stopBg() // leases end
	s.pool.Close()
	return nil
}

// Update implements store.Store.
func (s *Store) Update(ctx context.Context, fn func(store.Tx) error) error {
	o := &op{ctx: ctx, fn: fn, done: make(chan error, 1)}
	select {
	case <-s.quit:
		return store.ErrClosed
	default:
	}
	select {
	case s.ops <- o:
	case <-s.quit:
		return store.ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	// Once queued, wait for the outcome even if ctx ends: the caller must
	// learn whether its entries were committed.
	select {
	case err := <-o.done:
		return err
	case <-s.done:
		select {
		case err := <-o.done:
			return err
		default:
			return store.ErrClosed
		}
	}
}

func (s *Store) sequence() {
	defer close(s.done)
	batch := make([]*op, 0, s.cfg.MaxBatch)
	for {
		var first *op
		select {
		case first = <-s.ops:
		case <-s.quit:
			for {
				select {
				case o := <-s.ops:
					s.commit([]*op{o})
				default:
					return
				}
			}
		}
		batch = append(batch[:0], first)
	fill:
		for len(batch) < s.cfg.MaxBatch {
			select {
			case o := <-s.ops:
				batch = append(batch, o)
			default:
				break fill
			}
		}
		s.commit(batch)
	}
}

// commit runs one batch in one transaction, under the log lock.
func (s *Store) commit(batch []*op) {
	errs := make([]error, len(batch))
	live := 0
	for i, o := range batch {
		if err := o.ctx.Err(); err != nil {
			errs[i] = err
		} else {
			live++
		}
	}
	finish := func(err error) {
		for i, o := range batch {
			if errs[i] == nil {
				errs[i] = err
			}
			o.done <- errs[i]
		}
	}
	if live == 0 {
		finish(nil)
		return
	}

	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.BatchTimeout)
	defer cancel()
	actx, acancel := context.WithTimeout(ctx, max(acquireTimeout, s.connCfg.ConnectTimeout))
	pc, err := s.pool.Acquire(actx)
	acancel()
	if err != nil {
		finish(fmt.Errorf("postgres: connect: %w", err))
		return
	}
	conn := pc.Conn()
	// A connection left in an unknown state is not given back to the pool.
	broken := func() {
		conn.PgConn().Close(context.Background())
		pc.Release()
	}

	if err := s.begin(ctx, conn); err != nil {
		broken()
		s.tree = nil // reloaded by the next batch
		finish(err)
		return
	}

	before := s.tree.Clone()
	batchHeads := map[string]tlog.Hash{}
	fail := func(err error) {
		broken()
		s.tree = before
		finish(err)
	}
	for i, o := range batch {
		if errs[i] != nil {
			continue
		}
		opTree := s.tree.Clone()
		t := &tx{s: s, conn: conn, ctx: ctx, batchHeads: batchHeads}
		err := runOp(o.fn, t)
		if err == nil {
			err = t.failed
		}
		if err == nil {
			// The op's queued writes, then its savepoint is released and
			// the next one taken: one round trip.
			at, serr := t.send(true)
			switch {
			case serr == nil:
				for a, h := range t.heads {
					batchHeads[a] = h
				}
				continue
			case at < 0:
				fail(fmt.Errorf("postgres: release savepoint: %w", serr))
				return
			}
			err = wrapWrite(serr)
		}
		errs[i] = err
		s.tree = opTree
		if _, rerr := conn.Exec(ctx, "ROLLBACK TO SAVEPOINT op"); rerr != nil {
			fail(fmt.Errorf("postgres: rollback to savepoint: %w", rerr))
			return
		}
	}
	if _, err := conn.Exec(ctx, "COMMIT"); err != nil {
		// Committed or not, this process cannot tell: the next batch reads
		// the log's size under the lock and reloads if it moved.
		fail(fmt.Errorf("postgres: commit: %w", err))
		return
	}
	pc.Release()
	for a, h := range batchHeads {
		s.heads[a] = h
	}
	finish(nil)
}

// catchUpMax bounds the entries of other replicas a batch reads to bring
// its frontier and chain heads up to date; past it, the frontier is
// rebuilt from the stored hashes and the chain heads forgotten.
const catchUpMax = 4096

// begin opens the batch's transaction, takes the log lock and brings this
// process's view of the log up to date, in one round trip: the log's size
// and the entries other replicas appended since this process's last batch
// (their leaf hashes extend the frontier and are their agents' new chain
// heads). Under READ COMMITTED each statement sees what was committed
// before it started, so what is read after the lock was granted includes
// every batch that held it before.
func (s *Store) begin(ctx context.Context, conn *pgx.Conn) error {
	q := "BEGIN; "
	if s.forceSync {
		q += "SET LOCAL synchronous_commit = on; "
	}
	q += "SELECT pg_advisory_xact_lock(" + strconv.FormatInt(LogLockKey, 10) + "); " +
		"SELECT COALESCE(MAX(idx) + 1, 0) FROM entries; "
	known := int64(-1)
	if s.tree != nil {
		known = s.tree.Size()
		q += fmt.Sprintf("SELECT idx, agent, encode(substring(hashes FROM 1 FOR 32), 'hex') FROM entries "+
			"WHERE idx >= %d ORDER BY idx LIMIT %d; ", known, catchUpMax+1)
	}
	q += "SAVEPOINT op"
	res, err := conn.PgConn().Exec(ctx, q).ReadAll()
	if err != nil {
		return fmt.Errorf("postgres: begin batch: %w", err)
	}
	at := 2
	if s.forceSync {
		at++
	}
	if len(res) < at+2 || len(res[at].Rows) != 1 || len(res[at].Rows[0]) != 1 {
		return errors.New("postgres: begin batch: no log size")
	}
	size, err := strconv.ParseInt(string(res[at].Rows[0][0]), 10, 64)
	if err != nil {
		return fmt.Errorf("postgres: begin batch: log size: %w", err)
	}
	switch {
	case size == known: // nobody else appended
		return nil
	case known >= 0 && size > known && size-known <= catchUpMax:
		if s.catchUp(known, size, res[at+1].Rows) {
			return nil
		}
	}
	// First batch, a long way behind, or a log that is not what this
	// process saw: rebuild the frontier, forget the chain heads.
	return s.loadTree(ctx, conn, size)
}

// catchUp extends the frontier with the leaves of entries [known, size)
// and records their agents' chain heads. It changes nothing and reports
// false unless rows are exactly those entries.
func (s *Store) catchUp(known, size int64, rows [][][]byte) bool {
	if int64(len(rows)) != size-known {
		return false
	}
	leaves := make([]tlog.Hash, len(rows))
	for i, r := range rows {
		if len(r) != 3 || string(r[0]) != strconv.FormatInt(known+int64(i), 10) {
			return false
		}
		if n, err := hex.Decode(leaves[i][:], r[2]); err != nil || n != tlog.HashSize {
			return false
		}
	}
	for i, r := range rows {
		s.tree.AppendLeaf(leaves[i])
		s.heads[string(r[1])] = leaves[i]
	}
	return true
}

func (s *Store) loadTree(ctx context.Context, q querier, size int64) error {
	fr, err := readHashes(ctx, q, record.FrontierIndexes(size))
	if err != nil {
		return fmt.Errorf("postgres: load log frontier: %w", err)
	}
	t, err := record.NewTree(size, fr)
	if err != nil {
		return fmt.Errorf("postgres: load log frontier: %w", err)
	}
	s.tree = t
	clear(s.heads)
	return nil
}

// runOp runs fn, turning a panic into an error so one bad Update cannot take
// the sequencer down with the others in its batch.
func runOp(fn func(store.Tx) error, t store.Tx) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("postgres: update panicked: %v", r)
		}
	}()
	return fn(t)
}

// Ping implements store.Store: the database answers, and every listener
// has its connection.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.pool.Ping(ctx); err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	if n := s.listeners.Load(); n > 0 {
		return fmt.Errorf("postgres: %d notification listener(s) reconnecting", n)
	}
	return nil
}

// querier is what both a pool and a connection answer.
type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// TreeSize implements store.Store.
func (s *Store) TreeSize(ctx context.Context) (int64, error) {
	var n int64
	if err := s.reads.QueryRow(ctx, `SELECT COALESCE(MAX(idx) + 1, 0) FROM entries`).Scan(&n); err != nil {
		return 0, fmt.Errorf("postgres: tree size: %w", err)
	}
	return n, nil
}

// ReadHashes implements store.Store. Each entry row keeps the hashes its
// append stored (tlog.StoredHashes): the leaf, then the interior nodes it
// completed. Stored index i is node (level, n), written by the append of
// record (n+1)<<level - 1, at offset level.
func (s *Store) ReadHashes(ctx context.Context, indexes []int64) ([]tlog.Hash, error) {
	return readHashes(ctx, s.reads, indexes)
}

func readHashes(ctx context.Context, q querier, indexes []int64) ([]tlog.Hash, error) {
	recs := make([]int64, len(indexes))
	for i, x := range indexes {
		level, n := tlog.SplitStoredHashIndex(x)
		recs[i] = (n+1)<<level - 1
	}
	rows, err := q.Query(ctx, `SELECT idx, hashes FROM entries WHERE idx = ANY($1)`, recs)
	if err != nil {
		return nil, fmt.Errorf("postgres: read hashes: %w", err)
	}
	byRec := make(map[int64][]byte, len(recs))
	for rows.Next() {
		var idx int64
		var hashes []byte
		if err := rows.Scan(&idx, &hashes); err != nil {
			rows.Close()
			return nil, fmt.Errorf("postgres: read hashes: %w", err)
		}
		byRec[idx] = hashes
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("postgres: read hashes: %w", err)
	}
	out := make([]tlog.Hash, len(indexes))
	for i, x := range indexes {
		level, _ := tlog.SplitStoredHashIndex(x)
		hashes, ok := byRec[recs[i]]
		if !ok {
			return nil, fmt.Errorf("postgres: no stored hash %d (entry %d)", x, recs[i])
		}
		if len(hashes) < (level+1)*tlog.HashSize {
			return nil, fmt.Errorf("postgres: entry %d keeps %d bytes of hashes, need level %d", recs[i], len(hashes), level)
		}
		copy(out[i][:], hashes[level*tlog.HashSize:])
	}
	return out, nil
}

func nanos(t time.Time) int64 { return t.UnixNano() }

func fromNanos(n int64) time.Time { return time.Unix(0, n).UTC() }

func nullTime(t *time.Time) *int64 {
	if t == nil {
		return nil
	}
	n := nanos(*t)
	return &n
}

func timePtr(n *int64) *time.Time {
	if n == nil {
		return nil
	}
	t := fromNanos(*n)
	return &t
}

func nullString(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func str(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}
