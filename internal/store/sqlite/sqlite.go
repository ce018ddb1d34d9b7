// Package sqlite is the embedded store: one SQLite database file in WAL mode
// with synchronous=FULL, so a committed transaction has reached the disk.
//
// Writes go through one connection owned by a sequencer goroutine that
// group-commits concurrent Updates: many calls share one fsync, each isolated
// by a savepoint, and no Update returns before its commit is durable. A
// failed fsync fails the store for good (store.ErrStorageFailed): recovery
// on the next open decides what reached the disk.
package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/arxsec/arx/internal/store"
	"github.com/arxsec/arx/record"
	"golang.org/x/mod/sumdb/tlog"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

var _ store.Store = (*Store)(nil)

// Config configures a Store.
type Config struct {
	Path string // the database file
	// MaxBatch bounds how many Updates share one commit.
	MaxBatch int
	// BusyTimeout is how long a connection waits for a lock another
	// process holds on the database (a backup tool, a sqlite3 shell)
	// before it gives up with SQLITE_BUSY. While the write lock is held
	// elsewhere, an Update fails within about this long.
	BusyTimeout time.Duration
	Logger      *slog.Logger
}

// DefaultMaxBatch is the default group-commit batch size.
const DefaultMaxBatch = 512

// DefaultBusyTimeout is the default Config.BusyTimeout.
const DefaultBusyTimeout = 10 * time.Second

// Store is a store.Store on SQLite.
type Store struct {
	read  *sql.DB
	write *sql.DB
	log   *slog.Logger
	path  string

	ops      chan *op
	quit     chan struct{}
	done     chan struct{}
	ckptDone chan struct{}
	maxBatch int
	closeMu  sync.Once

	// failed holds the error that made the store fail for good (see
	// failStorage); nil while it works.
	failed atomic.Pointer[error]

	leadMu sync.Mutex
	leases map[string]*lease // leader.go

	// Owned by the sequencer goroutine.
	tree  *record.Tree
	heads map[string]tlog.Hash // committed chain heads by agent, filled on demand

	rstmts map[string]*sql.Stmt // prepared reads
	ckpt   *sql.DB              // one connection for WAL checkpoints
	stmts  map[string]*sql.Stmt
}

type op struct {
	ctx  context.Context
	fn   func(store.Tx) error
	done chan error
}

// Open opens (creating when needed) the database and migrates it.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = DefaultMaxBatch
	}
	if cfg.BusyTimeout <= 0 {
		cfg.BusyTimeout = DefaultBusyTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	// The database holds token hashes and manifests: only its owner reads it.
	if f, err := os.OpenFile(cfg.Path, os.O_RDWR|os.O_CREATE, 0o600); err != nil {
		return nil, fmt.Errorf("sqlite: open %s: %w", cfg.Path, err)
	} else {
		f.Close()
	}
	base := "file:" + (&url.URL{Path: cfg.Path}).EscapedPath()
	params := fmt.Sprintf("?_pragma=busy_timeout(%d)", cfg.BusyTimeout.Milliseconds()) + "&_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)&_pragma=foreign_keys(ON)"
	// The writer never checkpoints on its own: a commit then costs its WAL
	// frames and one fsync, and checkpoints run beside it (checkpointer).
	write, err := sql.Open("sqlite", base+params+"&_txlock=immediate&_pragma=wal_autocheckpoint(0)")
	if err != nil {
		return nil, fmt.Errorf("sqlite: open %s: %w", cfg.Path, err)
	}
	write.SetMaxOpenConns(1)
	write.SetMaxIdleConns(1)
	write.SetConnMaxLifetime(0)
	write.SetConnMaxIdleTime(0)
	if err := migrate(ctx, write); err != nil {
		write.Close()
		return nil, err
	}
	read, err := sql.Open("sqlite", base+params+"&_pragma=query_only(1)")
	if err != nil {
		write.Close()
		return nil, fmt.Errorf("sqlite: open %s: %w", cfg.Path, err)
	}
	read.SetMaxOpenConns(8)
	read.SetMaxIdleConns(8)
	s := &Store{read: read, write: write, log: cfg.Logger, path: cfg.Path, ops: make(chan *op, 4096),
		quit: make(chan struct{}), done: make(chan struct{}), ckptDone: make(chan struct{}), maxBatch: cfg.MaxBatch, heads: map[string]tlog.Hash{}}
	if err := s.loadTree(ctx); err != nil {
		s.read.Close()
		s.write.Close()
		return nil, err
	}
	if err := s.prepare(ctx); err != nil {
		s.read.Close()
		s.write.Close()
		return nil, err
	}
	ckpt, err := sql.Open("sqlite", base+params)
	if err != nil {
		s.read.Close()
		s.write.Close()
		return nil, fmt.Errorf("sqlite: open %s: %w", cfg.Path, err)
	}
	ckpt.SetMaxOpenConns(1)
	// Open the connection now, while the database is known to be
	// writable, rather than at the first checkpoint (see reopenIfReadOnly).
	if err := ckpt.PingContext(ctx); err != nil {
		s.read.Close()
		s.write.Close()
		ckpt.Close()
		return nil, fmt.Errorf("sqlite: open %s: %w", cfg.Path, err)
	}
	s.ckpt = ckpt
	go s.sequence()
	go s.checkpointer()
	return s, nil
}

func (s *Store) loadTree(ctx context.Context) error {
	size, err := s.treeSize(ctx, s.write)
	if err != nil {
		return err
	}
	fr, err := s.readHashes(ctx, s.write, record.FrontierIndexes(size))
	if err != nil {
		return fmt.Errorf("sqlite: load log frontier: %w", err)
	}
	s.tree, err = record.NewTree(size, fr)
	return err
}

// Close stops the sequencer after the Updates already queued and closes the
// database.
func (s *Store) Close() error {
	s.closeMu.Do(func() { close(s.quit) })
	<-s.done
	for _, st := range s.stmts {
		st.Close()
	}
	for _, st := range s.rstmts {
		st.Close()
	}
	<-s.ckptDone
	// A last full checkpoint leaves a compact database file behind; not
	// after a failed sync, when recovery on the next open decides.
	if s.failed.Load() == nil {
		s.ckpt.Exec("PRAGMA wal_checkpoint(TRUNCATE)")
	}
	return errors.Join(s.write.Close(), s.read.Close(), s.ckpt.Close())
}

// Update implements store.Store.
func (s *Store) Update(ctx context.Context, fn func(store.Tx) error) error {
	o := &op{ctx: ctx, fn: fn, done: make(chan error, 1)}
	select {
	case <-s.quit:
		return store.ErrClosed
	default:
	}
	if err := s.failed.Load(); err != nil {
		return *err
	}
	select {
	case s.ops <- o:
	case <-s.quit:
		return store.ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	// Once queued, wait for the outcome even if ctx ends: the caller must
	// learn whether its entries were committed. An op queued after the
	// sequencer drained the queue on Close is never run.
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
	batch := make([]*op, 0, s.maxBatch)
	for {
		var first *op
		select {
		case first = <-s.ops:
		case <-s.quit:
			// Drain what is queued, then stop.
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
		for len(batch) < s.maxBatch {
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

// commit runs one batch in one transaction.
func (s *Store) commit(batch []*op) {
	errs := make([]error, len(batch))
	fail := func(err error) {
		s.reopenIfReadOnly(s.write, "writer", err)
		err = s.failStorage(err)
		for _, o := range batch {
			o.done <- err
		}
	}
	if err := s.failed.Load(); err != nil {
		// Queued before the store failed.
		fail(*err)
		return
	}
	ctx := context.Background()
	sqlTx, err := s.write.BeginTx(ctx, nil)
	if err != nil {
		if isBusy(err) {
			// Another process kept the write lock for the whole busy
			// timeout. The Updates queued meanwhile have waited about as
			// long: they are refused now too, rather than each after one
			// more busy timeout, so none waits much longer than one.
			batch = s.drain(batch)
		}
		fail(fmt.Errorf("sqlite: begin: %w", err))
		return
	}
	before := s.tree.Clone()
	batchHeads := map[string]tlog.Hash{}
	exec := func(name string) error {
		_, err := sqlTx.StmtContext(ctx, s.stmts[name]).ExecContext(ctx)
		return err
	}
	for i, o := range batch {
		if err := o.ctx.Err(); err != nil {
			errs[i] = err
			continue
		}
		if err := exec("savepoint"); err != nil {
			errs[i] = fmt.Errorf("sqlite: savepoint: %w", err)
			continue
		}
		opTree := s.tree.Clone()
		tx := &tx{s: s, tx: sqlTx, ctx: ctx, batchHeads: batchHeads}
		err := runOp(o.fn, tx)
		if err == nil {
			err = tx.appendErr
		}
		if err != nil {
			s.tree = opTree
			if rerr := exec("rollbackTo"); rerr != nil {
				sqlTx.Rollback()
				s.tree = before
				fail(fmt.Errorf("sqlite: rollback to savepoint: %w", rerr))
				return
			}
			errs[i] = err
		} else {
			for a, h := range tx.heads {
				batchHeads[a] = h
			}
		}
		if err := exec("release"); err != nil {
			sqlTx.Rollback()
			s.tree = before
			fail(fmt.Errorf("sqlite: release savepoint: %w", err))
			return
		}
	}
	if err := sqlTx.Commit(); err != nil {
		s.tree = before
		fail(fmt.Errorf("sqlite: commit: %w", err))
		return
	}
	for a, h := range batchHeads {
		s.heads[a] = h
	}
	for i, o := range batch {
		o.done <- errs[i]
	}
}

// drain appends the Updates queued now to batch.
func (s *Store) drain(batch []*op) []*op {
	for {
		select {
		case o := <-s.ops:
			batch = append(batch, o)
		default:
			return batch
		}
	}
}

// runOp runs fn, turning a panic into an error so one bad Update cannot take
// the sequencer down with the others in its batch.
func runOp(fn func(store.Tx) error, tx store.Tx) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("sqlite: update panicked: %v", r)
		}
	}()
	return fn(tx)
}

// Ping implements store.Store.
func (s *Store) Ping(ctx context.Context) error {
	var one int
	return s.read.QueryRowContext(ctx, "SELECT 1").Scan(&one)
}

type querier interface {
	QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row
}

func (s *Store) treeSize(ctx context.Context, q querier) (int64, error) {
	var n int64
	if err := q.QueryRowContext(ctx, "SELECT COALESCE(MAX(idx)+1, 0) FROM entries").Scan(&n); err != nil {
		return 0, fmt.Errorf("sqlite: tree size: %w", err)
	}
	return n, nil
}

// TreeSize implements store.Store.
func (s *Store) TreeSize(ctx context.Context) (int64, error) { return s.treeSize(ctx, s.read) }

// ReadHashes implements store.Store. Each entry row keeps the hashes its
// append stored (tlog.StoredHashes): the leaf, then the interior nodes it
// completed. Stored index i is node (level, n), written by the append of
// record (n+1)<<level - 1, at offset level.
func (s *Store) ReadHashes(ctx context.Context, indexes []int64) ([]tlog.Hash, error) {
	return s.readHashes(ctx, s.read, indexes)
}

func (s *Store) readHashes(ctx context.Context, q querier, indexes []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(indexes))
	for i, x := range indexes {
		level, n := tlog.SplitStoredHashIndex(x)
		rec := (n+1)<<level - 1
		var hashes []byte
		err := q.QueryRowContext(ctx, "SELECT hashes FROM entries WHERE idx = ?", rec).Scan(&hashes)
		if errors.Is(err, sql.ErrNoRows) {
			return nil, fmt.Errorf("sqlite: no stored hash %d (entry %d)", x, rec)
		}
		if err != nil {
			return nil, fmt.Errorf("sqlite: read hash: %w", err)
		}
		if len(hashes) < (level+1)*tlog.HashSize {
			return nil, fmt.Errorf("sqlite: entry %d keeps %d bytes of hashes, need level %d", rec, len(hashes), level)
		}
		copy(out[i][:], hashes[level*tlog.HashSize:])
	}
	return out, nil
}

// code is SQLite's extended result code of err, or 0 when err does not
// come from SQLite.
func code(err error) int {
	var se *sqlite.Error
	if errors.As(err, &se) {
		return se.Code()
	}
	return 0
}

func isUnique(err error) bool {
	if c := code(err); c != 0 {
		return c == sqlite3.SQLITE_CONSTRAINT_UNIQUE || c == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY
	}
	return strings.Contains(err.Error(), "UNIQUE constraint failed")
}

// isBusy reports whether err is SQLite's SQLITE_BUSY: a lock held by
// another connection outlasted the busy timeout.
func isBusy(err error) bool { return code(err)&0xff == sqlite3.SQLITE_BUSY }

// isReadOnly reports whether err is SQLite's SQLITE_READONLY, in any of
// its extended forms.
func isReadOnly(err error) bool { return code(err)&0xff == sqlite3.SQLITE_READONLY }

// isSyncFailure reports whether err is SQLite's failure to fsync a file or
// its directory.
func isSyncFailure(err error) bool {
	c := code(err)
	return c == sqlite3.SQLITE_IOERR_FSYNC || c == sqlite3.SQLITE_IOERR_DIR_FSYNC
}

// failStorage makes the store fail for good when err is a failed fsync,
// and returns the error every Update gets from now on; other errors (a
// full or read-only disk, a lock held elsewhere) pass unchanged and the
// store recovers by itself once they clear.
//
// After a failed fsync nothing says what reached the disk: the kernel may
// have dropped the dirty pages and will not report it again, and WAL frames
// of a commit SQLite refused may still be on the disk and reappear when
// the database is next opened. Retrying could only make a lost write look
// durable, so, as PostgreSQL does, the store stops writing and leaves the
// decision to recovery on restart.
func (s *Store) failStorage(err error) error {
	if p := s.failed.Load(); p != nil {
		return *p
	}
	if !isSyncFailure(err) || s.syncRefused() {
		return err
	}
	ferr := fmt.Errorf("%w: %w", store.ErrStorageFailed, err)
	if s.failed.CompareAndSwap(nil, &ferr) {
		s.log.Error("sqlite: the disk failed an fsync: refusing every write until restart",
			"err", err, "hint", "check the disk, then restart arx serve")
		return ferr
	}
	return *s.failed.Load()
}

// syncRefused reports whether fsync on the database's files fails now
// because the filesystem refuses writes (read-only, full, over quota): a
// commit whose frames were written just before it turned so fails in its
// fsync, and that is the ordinary case of a read-only or full disk, which
// clears by itself. Any other answer (EIO, or success: the kernel reports a
// writeback error once) leaves the failed fsync fatal.
func (s *Store) syncRefused() bool {
	for _, p := range []string{s.path + "-wal", s.path, filepath.Dir(s.path)} {
		f, err := os.Open(p)
		if err != nil {
			continue
		}
		err = f.Sync()
		f.Close()
		if errors.Is(err, syscall.EROFS) || errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
			return true
		}
	}
	return false
}

// reopenIfReadOnly closes db's idle connection when err says it cannot
// write, so that its next use opens a fresh one. SQLite opens a database
// read-only, silently, when opening it for writing fails (EROFS, EACCES):
// a connection database/sql opened while the data directory was read-only
// would refuse every write for good, after the directory is writable again.
// db must have no connection in use.
func (s *Store) reopenIfReadOnly(db *sql.DB, which string, err error) {
	if !isReadOnly(err) {
		return
	}
	s.log.Warn("sqlite: connection cannot write, reopening it", "conn", which, "err", err)
	db.SetMaxIdleConns(0) // closes the idle connection
	db.SetMaxIdleConns(1)
}

func nanos(t time.Time) int64 { return t.UTC().UnixNano() }

func fromNanos(n int64) time.Time { return time.Unix(0, n).UTC() }

func nullTime(t *time.Time) sql.NullInt64 {
	if t == nil {
		return sql.NullInt64{}
	}
	return sql.NullInt64{Int64: nanos(*t), Valid: true}
}

func timePtr(n sql.NullInt64) *time.Time {
	if !n.Valid {
		return nil
	}
	t := fromNanos(n.Int64)
	return &t
}

func nullString(s string) sql.NullString {
	if s == "" {
		return sql.NullString{}
	}
	return sql.NullString{String: s, Valid: true}
}

// CheckpointInterval is how often committed WAL frames are copied into the
// database file, off the commit path.
const CheckpointInterval = 500 * time.Millisecond

// checkpointer copies the WAL into the database file in the background
// (PASSIVE: it never blocks the writer or readers), so commits never pay
// for it. Once a checkpoint has caught up, SQLite starts the WAL over.
func (s *Store) checkpointer() {
	defer close(s.ckptDone)
	t := time.NewTicker(CheckpointInterval)
	defer t.Stop()
	for {
		select {
		case <-s.quit:
			return
		case <-t.C:
			if s.failed.Load() != nil {
				return // copying on could make lost pages look durable
			}
			var busy, logFrames, done int
			if err := s.ckpt.QueryRow("PRAGMA wal_checkpoint(PASSIVE)").Scan(&busy, &logFrames, &done); err != nil {
				s.log.Warn("sqlite: checkpoint", "err", err)
				s.reopenIfReadOnly(s.ckpt, "checkpointer", err)
				s.failStorage(err)
			}
		}
	}
}
