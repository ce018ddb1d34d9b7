// Package postgres is the store for several arx serve replicas sharing one
// PostgreSQL database.
//
// Writes go through the shared sequencer (package sequencer) as with the
// SQLite store: Updates are decided against the in-memory state (package
// state) and a batch is made durable in one transaction, and Update returns
// only once COMMIT has returned (synchronous_commit: durable).
//
// One log, several replicas. Every batch first takes a transaction-scoped
// advisory lock (pg_advisory_xact_lock(LogLockKey)), so exactly one batch of
// one replica writes at a time. In the same round trip it reads the entries
// other replicas appended since this process's last batch, and folds them
// into its state and its Merkle frontier (or, a long way behind, reloads
// both from the tables). Then its Updates run in memory, and the entries,
// the state they changed and COMMIT go in one more round trip: the lock is
// held for about two round trips a batch, whatever its size. The entries
// primary key refuses a duplicate index and a trigger refuses a gap,
// whatever writes. A replica that dies mid-batch loses its connection,
// PostgreSQL rolls its transaction back and releases the lock; a replica cut
// off without its connection closing is ended by the server after
// idle_in_transaction_session_timeout (Config.IdleInTransactionTimeout).
//
// No stale authority. Reads outside a batch (tokens, agents, calls,
// approvals, sessions) go to the database every time, never to this
// replica's memory, which only knows what it folded at its last batch: a
// termination committed on one replica is seen on every other at once.
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
	"github.com/arxsec/arx/internal/store/sequencer"
	"github.com/arxsec/arx/internal/store/state"
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
	// State bounds the in-memory state (idempotency keys).
	State  state.Config
	Logger *slog.Logger
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

	st  *state.State
	seq *sequencer.Sequencer

	quit    chan struct{}
	closeMu sync.Once
	bg      context.Context // ends on Close: listeners
	stopBg  context.CancelFunc

	// forceSync is set when the server commits asynchronously by default:
	// each batch then asks for a durable commit.
	forceSync bool

	listeners atomic.Int32 // listeners whose connection is down

	leadMu     sync.Mutex           // leader.go
	leadClosed bool                 // no more TryLead
	candidates map[string]*pgx.Conn // by name: the connection of the last try that did not get the lock
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
		quit: make(chan struct{}), bg: bg, stopBg: stop, forceSync: syncCommit == "off", st: state.New(cfg.State)}
	// The state and the tree are loaded by the first batch, under the log
	// lock (Begin, with no tree yet).
	s.seq = sequencer.New(sequencer.Config{Backend: backend{s}, State: s.st, MaxBatch: cfg.MaxBatch, Logger: cfg.Logger})
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
	s.seq.Close()
	s.closeLeadership()
	s.stopBg() // leases end
	s.pool.Close()
	return nil
}

// Update implements store.Store.
func (s *Store) Update(ctx context.Context, fn func(store.Tx) error) error {
	return s.seq.Update(ctx, fn)
}

// Stats are the write path's counters.
func (s *Store) Stats() *sequencer.Stats { return s.seq.Stats() }

// backend is what the store gives the shared sequencer.
type backend struct{ s *Store }

// catchUpMax bounds the entries of other replicas a batch folds; past it,
// the state and the frontier are reloaded from the tables.
const catchUpMax = 4096

// Begin implements sequencer.Backend: it opens the batch's transaction,
// takes the log lock and reads what other replicas appended since known,
// in one round trip. Under READ COMMITTED each statement sees what was
// committed before it started, so what is read after the lock was granted
// includes every batch that held it before.
func (b backend) Begin(ctx context.Context, known int64) (sequencer.Batch, *sequencer.Foreign, error) {
	s := b.s
	ctx, cancel := context.WithTimeout(ctx, s.cfg.BatchTimeout)
	actx, acancel := context.WithTimeout(ctx, max(acquireTimeout, s.connCfg.ConnectTimeout))
	pc, err := s.pool.Acquire(actx)
	acancel()
	if err != nil {
		cancel()
		return nil, nil, fmt.Errorf("postgres: connect: %w", err)
	}
	t := &batch{s: s, pc: pc, conn: pc.Conn(), ctx: ctx, cancel: cancel}
	q := "BEGIN; "
	if s.forceSync {
		q += "SET LOCAL synchronous_commit = on; "
	}
	q += "SELECT pg_advisory_xact_lock(" + strconv.FormatInt(LogLockKey, 10) + "); " +
		"SELECT COALESCE(MAX(idx) + 1, 0) FROM entries; "
	if known >= 0 {
		q += fmt.Sprintf("SELECT idx, body, hashes FROM entries WHERE idx >= %d ORDER BY idx LIMIT %d; ", known, catchUpMax+1)
	}
	res, err := t.conn.PgConn().Exec(ctx, q).ReadAll()
	if err != nil {
		t.Abort()
		return nil, nil, fmt.Errorf("postgres: begin batch: %w", err)
	}
	at := 2
	if s.forceSync {
		at++
	}
	if len(res) <= at || len(res[at].Rows) != 1 || len(res[at].Rows[0]) != 1 {
		t.Abort()
		return nil, nil, errors.New("postgres: begin batch: no log size")
	}
	size, err := strconv.ParseInt(string(res[at].Rows[0][0]), 10, 64)
	if err != nil {
		t.Abort()
		return nil, nil, fmt.Errorf("postgres: begin batch: log size: %w", err)
	}
	if size == known {
		return t, nil, nil // nobody else appended
	}
	if known >= 0 && size > known && size-known <= catchUpMax && len(res) > at+1 {
		if f, ok := foreign(known, size, res[at+1].Rows); ok {
			return t, f, nil
		}
	}
	// First batch, a long way behind, or a log that is not what this
	// process saw: reload the state and the frontier.
	f, err := t.snapshot(size)
	if err != nil {
		t.Abort()
		return nil, nil, err
	}
	return t, f, nil
}

// foreign reads the entries [known, size) of rows (idx, body, hashes);
// false unless they are exactly those.
func foreign(known, size int64, rows [][][]byte) (*sequencer.Foreign, bool) {
	if int64(len(rows)) != size-known {
		return nil, false
	}
	f := &sequencer.Foreign{Entries: make([]store.Entry, len(rows))}
	for i, r := range rows {
		if len(r) != 3 || string(r[0]) != strconv.FormatInt(known+int64(i), 10) {
			return nil, false
		}
		body, hashes, ok := decodeBytea(r[1]), decodeBytea(r[2]), true
		if body == nil || len(hashes) == 0 || len(hashes)%tlog.HashSize != 0 {
			ok = false
		}
		if !ok {
			return nil, false
		}
		e := store.Entry{Index: known + int64(i), Data: body, Hashes: make([]tlog.Hash, len(hashes)/tlog.HashSize)}
		for j := range e.Hashes {
			e.Hashes[j] = tlog.Hash(hashes[j*tlog.HashSize:])
		}
		e.Leaf = e.Hashes[0]
		f.Entries[i] = e
	}
	return f, true
}

// decodeBytea decodes a bytea in PostgreSQL's text form (hex: \x...).
func decodeBytea(b []byte) []byte {
	if len(b) < 2 || b[0] != '\\' || b[1] != 'x' {
		return nil
	}
	out := make([]byte, hex.DecodedLen(len(b)-2))
	if _, err := hex.Decode(out, b[2:]); err != nil {
		return nil
	}
	return out
}

// Committed implements sequencer.Backend: the batch wrote its changes to
// the tables, so closed calls and decided approvals leave memory.
func (b backend) Committed(changes *state.Txn) { b.s.st.Evict(changes.Calls, changes.Approvals) }

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

// nanos is a time as stored: nanoseconds since the Unix epoch, 0 for the
// zero time (which UnixNano cannot represent).
func nanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func fromNanos(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

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
