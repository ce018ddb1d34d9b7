// Package sqlite is the embedded store, for one arx serve: the log in
// append-only segment files (package segment), and everything else in one
// SQLite database file in WAL mode.
//
// The write path. Updates go through the shared sequencer (package
// sequencer), which decides each against the in-memory state (package
// state) and hands a batch to this store: the batch's entries are one
// frame, one write and one fdatasync, and nothing else touches the disk
// for a batch of governed calls. The database keeps the state the log
// describes, written off the commit path in batches (projector.go), and
// what the record does not hold: people, sessions, tokens by hash, the
// outbox. A batch that writes those too commits them through a redo log
// (redo.go), so they and the entries that record them are durable together.
//
// Opening recovers: a torn write at the end of the log is cut, redo frames
// whose entries are in the log are applied, the state is loaded from the
// tables as of the log size they describe and the entries after it are
// folded in. The whole log is then checked in the background (scrub.go):
// an entry changed at rest is reported by index and the store refuses
// writes.
//
// A failed fsync fails the store for good (store.ErrStorageFailed):
// recovery on the next open decides what reached the disk.
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
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/arxsec/arx/internal/store"
	"github.com/arxsec/arx/internal/store/segment"
	"github.com/arxsec/arx/internal/store/sequencer"
	"github.com/arxsec/arx/internal/store/state"
	"github.com/arxsec/arx/record"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

var _ store.Store = (*Store)(nil)

// Config configures a Store.
type Config struct {
	Path string // the database file
	// LogDir holds the log's segment files; default: "log" beside Path.
	LogDir string
	// MaxBatch bounds how many Updates share one commit.
	MaxBatch int
	// BusyTimeout is how long a connection waits for a lock another
	// process holds on the database (a backup tool, a sqlite3 shell)
	// before it gives up with SQLITE_BUSY. While the write lock is held
	// elsewhere, an Update that writes the database fails within about
	// this long; governed calls go on until the state tables fall
	// MaxBehind entries behind.
	BusyTimeout time.Duration
	// FlushInterval is how often the state tables are written.
	FlushInterval time.Duration
	// SegmentSize is the size of one log segment file.
	SegmentSize int64
	// State bounds the in-memory state (idempotency keys).
	State state.Config
	// LogFault, when set, is called before each write of the log; an
	// error fails it as the disk would (tests).
	LogFault func() error
	Logger   *slog.Logger
	// Now is the clock (tests).
	Now func() time.Time
}

// Defaults.
const (
	DefaultBusyTimeout = 10 * time.Second
	// DefaultMaxBatch is the default group-commit batch size.
	DefaultMaxBatch = sequencer.DefaultMaxBatch
)

// Store is a store.Store on SQLite and segment files.
type Store struct {
	cfg    Config
	read   *sql.DB // query_only pool
	write  *sql.DB // one connection: batches' writes
	projDB *sql.DB // one connection: the projector's flushes and WAL checkpoints
	log    *slog.Logger
	path   string

	seg    *segment.Log
	redo   *redoLog
	st     *state.State
	seq    *sequencer.Sequencer
	proj   *projector
	tokens tokenCache

	// pendingRedo is a committed batch's database writes that did not
	// commit (owned by the sequencer's goroutine: Begin applies it).
	pendingRedo *redoFrame

	quit     chan struct{}
	closeMu  sync.Once
	closeErr error
	scrub    chan struct{} // closed when the background check ends

	// failed holds the error that made the store fail for good (see
	// failStorage); nil while it works.
	failed atomic.Pointer[error]

	leadMu sync.Mutex
	leases map[string]*lease // leader.go

	rstmts map[string]*sql.Stmt // prepared reads

	// commitFault, set by tests, fails a batch's database commit after its
	// entries are durable (a crash between the two).
	commitFault func() error
}

// Open opens (creating when needed) the store and recovers it.
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
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.LogDir == "" {
		cfg.LogDir = filepath.Join(filepath.Dir(cfg.Path), "log")
	}
	// The database holds token hashes and manifests: only its owner reads it.
	if f, err := os.OpenFile(cfg.Path, os.O_RDWR|os.O_CREATE, 0o600); err != nil {
		return nil, fmt.Errorf("sqlite: open %s: %w", cfg.Path, err)
	} else {
		f.Close()
	}
	base := "file:" + (&url.URL{Path: cfg.Path}).EscapedPath()
	params := func(busy time.Duration) string {
		return fmt.Sprintf("?_pragma=busy_timeout(%d)", busy.Milliseconds()) +
			"&_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)&_pragma=foreign_keys(ON)"
	}
	// The writers never checkpoint on their own: the projector does, after
	// its flushes. A WAL restarted is cut back to WALLimit. There are two,
	// each waiting for SQLite's write lock on its own: the projector's,
	// which waits the busy timeout, and the batches', which wait at most
	// batchBusy inside the sequencer (Update waits the rest, outside it).
	writer := func(busy time.Duration) (*sql.DB, error) {
		db, err := sql.Open("sqlite", base+params(busy)+"&_txlock=immediate&_pragma=wal_autocheckpoint(0)"+
			"&_pragma=temp_store(MEMORY)"+fmt.Sprintf("&_pragma=journal_size_limit(%d)", WALLimit))
		if err != nil {
			return nil, fmt.Errorf("sqlite: open %s: %w", cfg.Path, err)
		}
		db.SetMaxOpenConns(1)
		db.SetMaxIdleConns(1)
		db.SetConnMaxLifetime(0)
		db.SetConnMaxIdleTime(0)
		return db, nil
	}
	projDB, err := writer(cfg.BusyTimeout)
	if err != nil {
		return nil, err
	}
	s := &Store{cfg: cfg, projDB: projDB, log: cfg.Logger, path: cfg.Path, quit: make(chan struct{}), scrub: make(chan struct{})}
	fail := func(err error) (*Store, error) {
		s.closeFiles()
		return nil, err
	}
	if err := migrate(ctx, projDB, cfg.LogDir, cfg.Logger); err != nil {
		return fail(err)
	}
	if s.write, err = writer(min(batchBusy, cfg.BusyTimeout)); err != nil {
		return fail(err)
	}
	if s.read, err = sql.Open("sqlite", base+params(cfg.BusyTimeout)+"&_pragma=query_only(1)"); err != nil {
		return fail(fmt.Errorf("sqlite: open %s: %w", cfg.Path, err))
	}
	s.read.SetMaxOpenConns(8)
	s.read.SetMaxIdleConns(8)
	if err := s.prepare(ctx); err != nil {
		return fail(err)
	}
	if s.seg, err = segment.Open(segment.Config{Dir: cfg.LogDir, SegmentSize: cfg.SegmentSize, Logger: cfg.Logger, Fault: cfg.LogFault}); err != nil {
		return fail(err)
	}
	if err := s.recoverRedo(ctx); err != nil {
		return fail(err)
	}
	s.st = state.New(cfg.State)
	tree, flushed, tail, err := s.recoverState(ctx)
	if err != nil {
		return fail(err)
	}
	s.proj = newProjector(s, flushed, cfg.FlushInterval)
	if err := s.proj.prepare(ctx); err != nil {
		return fail(err)
	}
	if tail != nil {
		s.proj.add(tail)
	}
	s.seq = sequencer.New(sequencer.Config{Backend: backend{s}, State: s.st, Tree: tree, MaxBatch: cfg.MaxBatch,
		Logger: cfg.Logger, Now: cfg.Now})
	go s.proj.run()
	go s.scrubLog(tree.Size())
	return s, nil
}

// closeFiles closes what Open opened, for a failed Open.
func (s *Store) closeFiles() {
	for _, st := range s.rstmts {
		st.Close()
	}
	if s.seg != nil {
		s.seg.Close()
	}
	if s.redo != nil {
		s.redo.close()
	}
	if s.read != nil {
		s.read.Close()
	}
	if s.write != nil {
		s.write.Close()
	}
	s.projDB.Close()
}

// Statements the read path runs on every request, prepared on the read pool.
var hotReads = map[string]string{
	"agent": `SELECT ` + agentCols + ` FROM agents WHERE id = ?`,
	"token": `SELECT ` + tokenCols + ` FROM tokens WHERE hash = ?`,
	"call":  `SELECT ` + callCols + ` FROM calls WHERE id = ?`,
}

func (s *Store) prepare(ctx context.Context) error {
	s.rstmts = make(map[string]*sql.Stmt, len(hotReads))
	for name, q := range hotReads {
		st, err := s.read.PrepareContext(ctx, q)
		if err != nil {
			return fmt.Errorf("sqlite: prepare %s: %w", name, err)
		}
		s.rstmts[name] = st
	}
	return nil
}

// Close stops the sequencer after the Updates already queued, writes the
// state tables and closes the files. It may be called more than once.
func (s *Store) Close() error {
	s.closeMu.Do(func() {
		close(s.quit)
		s.seq.Close()
		s.proj.stop()
		<-s.scrub
		// A last full checkpoint leaves a compact database file behind; not
		// after a failed sync, when recovery on the next open decides.
		if s.failed.Load() == nil && s.seq.Failed() == nil {
			s.projDB.Exec("PRAGMA wal_checkpoint(TRUNCATE)")
		}
		for _, st := range s.rstmts {
			st.Close()
		}
		s.closeErr = errors.Join(s.seg.Close(), s.redo.close(), s.write.Close(), s.projDB.Close(), s.read.Close())
	})
	return s.closeErr
}

// batchBusy is the longest a batch waits inside the sequencer for
// SQLite's write lock (held by the projector's flush, or by another
// process): an Update that needs the database and does not get it in time
// is tried again, outside the sequencer, until the busy timeout, so that
// governed calls batched with it never wait behind a lock.
const batchBusy = 20 * time.Millisecond

// errLocked is a batch's failure to take SQLite's write lock in batchBusy.
var errLocked = errors.New("sqlite: the database is locked")

// Update implements store.Store. An Update that needs the database while
// its write lock is held elsewhere is run again (fn is called once per
// attempt, each a fresh start), until the lock comes free or the busy
// timeout has passed.
func (s *Store) Update(ctx context.Context, fn func(store.Tx) error) error {
	start := time.Now()
	wait := time.Millisecond
	for {
		if err := s.failed.Load(); err != nil {
			return *err
		}
		err := s.seq.Update(ctx, fn)
		if !errors.Is(err, errLocked) || time.Since(start) >= s.cfg.BusyTimeout {
			return err
		}
		t := time.NewTimer(min(wait, s.cfg.BusyTimeout-time.Since(start)))
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return err
		}
		wait = min(2*wait, 50*time.Millisecond)
	}
}

var _ store.Prober = (*Store)(nil)

// Probe implements store.Prober: an empty frame, written and synced.
func (s *Store) Probe(ctx context.Context) error {
	if err := s.failed.Load(); err != nil {
		return *err
	}
	if err := s.seq.Failed(); err != nil {
		return err
	}
	return s.seg.Probe()
}

// Stats are the write path's counters.
func (s *Store) Stats() *sequencer.Stats { return s.seq.Stats() }

// Ping implements store.Store.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.failed.Load(); err != nil {
		return *err
	}
	var one int
	return s.read.QueryRowContext(ctx, "SELECT 1").Scan(&one)
}

// recoverRedo applies the redo frames whose entries are in the log and
// which the database has not applied (redo.go).
func (s *Store) recoverRedo(ctx context.Context) error {
	r, frames, err := openRedo(s.path + ".redo")
	if err != nil {
		return err
	}
	s.redo = r
	applied, err := s.metaInt(ctx, metaRedoSeq)
	if err != nil {
		return err
	}
	for _, fr := range frames {
		if int64(fr.seq) <= applied {
			continue
		}
		rec, err := s.seg.Entry(fr.lastIndex)
		if errors.Is(err, segment.ErrNotFound) || err == nil && rec.Hashes[0] != fr.lastLeaf {
			continue // its batch never committed
		}
		if err != nil {
			return err
		}
		s.log.Info("sqlite: applying the database writes of a batch committed before a crash", "seq", fr.seq, "statements", len(fr.stmts))
		if err := applyRedo(ctx, s.projDB, fr); err != nil {
			return err
		}
	}
	r.seq = max(r.seq, uint64(applied))
	r.reset()
	return nil
}

func (s *Store) metaInt(ctx context.Context, key string) (int64, error) {
	var v string
	err := s.projDB.QueryRowContext(ctx, `SELECT value FROM meta WHERE key = ?`, key).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("sqlite: read meta: %w", err)
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("sqlite: meta %s = %q: %w", key, v, err)
	}
	return n, nil
}

// recoverState loads the state as of the log size the tables describe and
// folds the entries logged after it; it returns the log's tree, that size,
// and the folded changes for the tables.
func (s *Store) recoverState(ctx context.Context) (*record.Tree, int64, *state.Txn, error) {
	size := s.seg.Size()
	flushed, err := s.metaInt(ctx, metaProjected)
	if err != nil {
		return nil, 0, nil, err
	}
	if flushed > size {
		return nil, 0, nil, fmt.Errorf("sqlite: the log in %s holds %d entries, but the database describes %d: entries were lost or removed; restore the log directory from a backup or the bucket",
			s.cfg.LogDir, size, flushed)
	}
	snap, err := s.loadSnapshot(ctx, flushed)
	if err != nil {
		return nil, 0, nil, err
	}
	s.st.Load(snap)
	fr, err := s.seg.ReadHashes(record.FrontierIndexes(flushed))
	if err != nil {
		return nil, 0, nil, fmt.Errorf("sqlite: load the log's frontier: %w", err)
	}
	tree, err := record.NewTree(flushed, fr)
	if err != nil {
		return nil, 0, nil, err
	}
	if flushed == size {
		return tree, flushed, nil, nil
	}
	s.log.Info("sqlite: folding the entries logged after the state tables", "from", flushed, "to", size)
	txn := s.st.Begin(&readLoader{s: s, ctx: ctx})
	err = s.seg.Read(flushed, int(size-flushed), func(r segment.Record) error {
		e, err := record.Parse(r.Data)
		if err != nil {
			return fmt.Errorf("sqlite: entry %d of the log: %w", r.Index, err)
		}
		if e.Index != r.Index {
			return fmt.Errorf("sqlite: entry %d of the log says index %d", r.Index, e.Index)
		}
		leaf := record.LeafHash(r.Data)
		stored := tree.Append(leaf)
		if len(stored) != len(r.Hashes) || stored[0] != r.Hashes[0] {
			return fmt.Errorf("sqlite: entry %d of the log: its bytes do not hash to the leaf the log stores: it was edited", r.Index)
		}
		for i := range stored {
			if stored[i] != r.Hashes[i] {
				return fmt.Errorf("sqlite: entry %d of the log: the tree hashes it stores are not the tree's: the log was edited", r.Index)
			}
		}
		return txn.Apply(e, leaf)
	})
	if err != nil {
		return nil, 0, nil, err
	}
	txn.Commit(s.cfg.Now())
	return tree, flushed, txn, nil
}

// readLoader reads what the state does not hold, outside a batch.
type readLoader struct {
	s   *Store
	ctx context.Context
}

func (l *readLoader) Agent(id string) (*store.Agent, error) {
	return scanAgent(l.s.rstmts["agent"].QueryRowContext(l.ctx, id))
}

func (l *readLoader) Call(id string) (*store.Call, error) {
	return scanCall(l.s.rstmts["call"].QueryRowContext(l.ctx, id))
}

func (l *readLoader) Approval(callID string) (*store.Approval, error) {
	return scanApproval(l.s.read.QueryRowContext(l.ctx, `SELECT `+approvalCols+` FROM approvals WHERE call_id = ?`, callID))
}

// loadSnapshot reads the state the tables describe at size.
func (s *Store) loadSnapshot(ctx context.Context, size int64) (*state.Snapshot, error) {
	snap := &state.Snapshot{Size: size, Counts: map[string]*store.Counts{}, Heads: map[string]state.Head{}}
	q := func(query string, scan func(*sql.Rows) error, args ...any) error {
		rows, err := s.projDB.QueryContext(ctx, query, args...)
		if err != nil {
			return fmt.Errorf("sqlite: load state: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			if err := scan(rows); err != nil {
				return fmt.Errorf("sqlite: load state: %w", err)
			}
		}
		return rows.Err()
	}
	err := q(`SELECT `+agentCols+` FROM agents`, func(r *sql.Rows) error {
		a, err := scanAgent(r)
		if err == nil {
			snap.Agents = append(snap.Agents, *a)
		}
		return err
	})
	if err == nil {
		err = q(`SELECT `+callCols+` FROM calls WHERE status IN ('approved', 'pending_approval')`, func(r *sql.Rows) error {
			c, err := scanCall(r)
			if err == nil {
				snap.Calls = append(snap.Calls, *c)
			}
			return err
		})
	}
	if err == nil {
		err = q(`SELECT `+approvalCols+` FROM approvals WHERE status = 'pending'`, func(r *sql.Rows) error {
			a, err := scanApproval(r)
			if err == nil {
				snap.Approvals = append(snap.Approvals, *a)
			}
			return err
		})
	}
	if err == nil {
		err = q(`SELECT agent, head, head_idx, counts FROM agent_state`, func(r *sql.Rows) error {
			var agent string
			var head, counts []byte
			var idx int64
			if err := r.Scan(&agent, &head, &idx, &counts); err != nil {
				return err
			}
			if len(head) != len(state.Head{}.Hash) {
				return fmt.Errorf("the chain head of %q has %d bytes", agent, len(head))
			}
			c, err := store.DecodeCounts(counts)
			if err != nil {
				return fmt.Errorf("agent %q: %w", agent, err)
			}
			h := state.Head{Index: idx}
			copy(h.Hash[:], head)
			snap.Heads[agent], snap.Counts[agent] = h, c
			return nil
		})
	}
	if err == nil {
		// The idempotency keys of the window: calls are keyed by UUIDv7,
		// which sorts by time.
		cfg := s.cfg.State
		window, keys := cfg.IdempotencyWindow, cfg.IdempotencyKeys
		if window <= 0 {
			window = state.DefaultIdempotencyWindow
		}
		if keys <= 0 {
			keys = state.DefaultIdempotencyKeys
		}
		from := store.CallIDFloor(s.cfg.Now().Add(-window))
		err = q(`SELECT agent_id, idempotency_key, id, created_at FROM calls WHERE id >= ? AND idempotency_key <> '' ORDER BY id DESC LIMIT ?`, func(r *sql.Rows) error {
			var k state.Key
			var created int64
			if err := r.Scan(&k.Agent, &k.Key, &k.Call, &created); err != nil {
				return err
			}
			k.At = fromNanos(created)
			snap.Keys = append(snap.Keys, k)
			return nil
		}, from, keys)
		for i, j := 0, len(snap.Keys)-1; i < j; i, j = i+1, j-1 {
			snap.Keys[i], snap.Keys[j] = snap.Keys[j], snap.Keys[i]
		}
	}
	return snap, err
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

// failStorage makes the store fail for good when err is a failed fsync of
// the database, and returns the error every Update gets from now on; other
// errors (a full or read-only disk, a lock held elsewhere) pass unchanged
// and the store recovers by itself once they clear.
//
// After a failed fsync nothing says what reached the disk: the kernel may
// have dropped the dirty pages and will not report it again. Retrying could
// only make a lost write look durable, so, as PostgreSQL does, the store
// stops writing and leaves the decision to recovery on restart.
func (s *Store) failStorage(err error) error {
	if p := s.failed.Load(); p != nil {
		return *p
	}
	if !isSyncFailure(err) || s.syncRefused() {
		return err
	}
	ferr := fmt.Errorf("%w: %w", store.ErrStorageFailed, err)
	if s.failed.CompareAndSwap(nil, &ferr) {
		if s.seg != nil && s.seg.SyncFailed() {
			// The log's own fsync failed first and said so: the disk is
			// the same, one alarm is enough.
			return ferr
		}
		s.log.Error("sqlite: the disk failed an fsync: refusing every write until restart",
			"err", err, "hint", "check the disk, then restart arx serve")
		return ferr
	}
	return *s.failed.Load()
}

// syncRefused reports whether fsync on the database's files fails now
// because the filesystem refuses writes (read-only, full, over quota): the
// ordinary case of a read-only or full disk, which clears by itself. Any
// other answer (EIO, or success: the kernel reports a writeback error
// once) leaves the failed fsync fatal.
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
