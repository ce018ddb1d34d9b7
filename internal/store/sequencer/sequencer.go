// Package sequencer is the one serial step of ARX's storage, shared by every
// backend: it orders Updates, runs each against the in-memory state of the
// hot path (package state), gives each appended entry its index, its chain
// link and its Merkle hashes, and hands the batch to the backend, which makes
// it durable with one write (sqlite: one frame and one fdatasync; postgres:
// one transaction). Only then does any Update of the batch return, and only
// then does the committed state change: nothing is answered, and nothing is
// seen by a reader, before the record that describes it is durable (fail
// closed).
//
// What a backend gives is small (Backend, Batch): a batch to write to, the
// reads the state cannot answer, and the writes the record does not hold
// (people, tokens by hash, the outbox: Cold). Tessera's storage/internal
// plays the same part for its drivers.
package sequencer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/arxsec/arx/internal/store"
	"github.com/arxsec/arx/internal/store/state"
	"github.com/arxsec/arx/record"
	"golang.org/x/mod/sumdb/tlog"
)

// Backend is what a storage driver gives the sequencer.
type Backend interface {
	// Begin opens a batch. known is the log's size as this process knows
	// it, or -1 when it needs a fresh snapshot (after a failed batch). A
	// backend shared by several processes takes its log lock here and
	// reports what the others appended since known (Foreign).
	Begin(ctx context.Context, known int64) (Batch, *Foreign, error)
	// Committed runs once a batch is durable and merged into the state,
	// before its Updates return: changes holds what the batch changed.
	Committed(changes *state.Txn)
}

// Foreign is what other processes appended to a shared log since the
// known size: their entries, to fold; or, when that is too much or the
// caller asked, a snapshot of the state and the log's frontier to load.
type Foreign struct {
	Entries  []store.Entry // with Hashes and Data
	Snapshot *state.Snapshot
	Frontier []tlog.Hash // with Snapshot: record.FrontierIndexes(Snapshot.Size)
}

// Batch is one batch of Updates in a backend.
type Batch interface {
	// Loader reads what the state does not hold, as this batch sees it.
	state.Loader
	// Cold writes and reads what the record does not hold.
	Cold
	// OpStart and OpEnd bracket each Update: OpEnd(false) undoes its cold
	// writes (a savepoint). OpEnd(true) returns an *OpError when the
	// Update must fail after all (a statement of it failed, though fn
	// went on): its writes are undone, and the batch goes on. Any other
	// error fails the batch.
	OpStart()
	OpEnd(ok bool) error
	// Commit makes the batch durable: its entries, in order, with their
	// stored hashes, and its cold writes; changes is what it changed in the
	// state. It runs under the context the batch began with (Begin), and
	// any bound of the batch's own. An error wrapping
	// store.ErrStorageFailed fails the store for good; any other leaves
	// nothing of the batch behind.
	Commit(entries []store.Entry, changes *state.Txn) error
	// Abort drops the batch (after a failed Commit too).
	Abort()
}

// OpError is OpEnd's answer for an Update that must fail alone.
type OpError struct{ Err error }

func (e *OpError) Error() string { return e.Err.Error() }
func (e *OpError) Unwrap() error { return e.Err }

// Cold is what a batch writes that the record does not hold, and reads of it.
type Cold interface {
	InsertAgent(a *store.Agent) error
	InsertToken(t *store.Token) error
	RevokeToken(agentID, id string, at time.Time) error
	RevokeAgentTokens(agentID string, at time.Time) (int, error)
	PutManifest(hash string, text []byte) error
	store.PeopleTx
	store.OutboxTx
	store.SettingsTx
}

// Config configures a Sequencer.
type Config struct {
	Backend Backend
	// State is the committed state and Tree the log's tree, as the
	// backend loaded them (both at the same size).
	State *state.State
	Tree  *record.Tree
	// MaxBatch bounds how many Updates share one commit.
	MaxBatch int
	Logger   *slog.Logger
	Now      func() time.Time
}

// DefaultMaxBatch is the default Config.MaxBatch.
const DefaultMaxBatch = 512

// Sequencer runs Updates.
type Sequencer struct {
	cfg   Config
	state *state.State
	tree  *record.Tree // nil after a batch that left it unknown
	log   *slog.Logger

	ops     chan *op
	quit    chan struct{}
	done    chan struct{}
	closeMu sync.Once

	size   atomic.Int64
	failed atomic.Pointer[error]
	// turn is when the loop last took up work (unix nanoseconds); 0 while
	// it waits for Updates (stalled).
	turn   atomic.Int64
	stats  Stats
	opTree record.Tree // the tree before the running Update (prepare)
}

// Stats counts the sequencer's work.
type Stats struct {
	Batches atomic.Int64 // batches committed
	Updates atomic.Int64 // Updates committed
	Entries atomic.Int64 // entries committed
	// The time spent in each step of a batch: opening it (Backend's
	// Begin: on a log shared by several processes, taking its lock and
	// reading what the others appended), running its Updates' functions,
	// and making it durable (Batch's Commit). Together, how busy the one
	// serial step is.
	BeginNanos  atomic.Int64
	RunNanos    atomic.Int64
	CommitNanos atomic.Int64
}

type op struct {
	ctx   context.Context
	fn    func(store.Tx) error
	done  chan error
	state atomic.Int32 // opQueued, then opTaken (by prepare) or opWithdrawn (by Update)
}

// An op's states: queued until prepare takes it to run, or its Update
// withdraws it (its context ended first). Taken, its Update waits for the
// outcome; withdrawn, it never runs.
const (
	opQueued = iota
	opTaken
	opWithdrawn
)

// New starts a sequencer.
func New(cfg Config) *Sequencer {
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = DefaultMaxBatch
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &Sequencer{cfg: cfg, state: cfg.State, tree: cfg.Tree, log: cfg.Logger,
		ops: make(chan *op, 4096), quit: make(chan struct{}), done: make(chan struct{})}
	if s.tree != nil {
		s.size.Store(s.tree.Size())
	}
	go s.run()
	return s
}

// Stats returns the sequencer's counters.
func (s *Sequencer) Stats() *Stats { return &s.stats }

// Size is the log's size as of the last committed batch.
func (s *Sequencer) Size() int64 { return s.size.Load() }

// stalled says whether the loop has been on one turn (a batch taking the
// log lock, being run, written or landed) for longer than d: the database
// stopped answering, or the disk. Waiting for Updates is not stalled.
func (s *Sequencer) stalled(d time.Duration) bool {
	t := s.turn.Load()
	return t != 0 && time.Since(time.Unix(0, t)) > d
}

// TokenRevocations implements store.Agents.TokenRevocations for a store
// whose Updates this sequencer runs: the revocations its state folded, and
// wait, or 0 while its turns are stalled (store.StallAfter).
func (s *Sequencer) TokenRevocations(wait time.Duration) (uint64, time.Duration) {
	if s.stalled(store.StallAfter) {
		wait = 0
	}
	return s.state.Revocations(), wait
}

// withdrawn is the error of an op that never ran because ctx ended.
func withdrawn(ctx context.Context) error {
	return fmt.Errorf("%w: %w", store.ErrWithdrawn, ctx.Err())
}

// Failed is the error that failed the store for good, or nil.
func (s *Sequencer) Failed() error {
	if p := s.failed.Load(); p != nil {
		return *p
	}
	return nil
}

// Close stops after the Updates already queued.
func (s *Sequencer) Close() {
	s.closeMu.Do(func() { close(s.quit) })
	<-s.done
}

// Update implements store.Store.
func (s *Sequencer) Update(ctx context.Context, fn func(store.Tx) error) error {
	select {
	case <-s.quit:
		return store.ErrClosed
	default:
	}
	if err := s.Failed(); err != nil {
		return err
	}
	o := &op{ctx: ctx, fn: fn, done: make(chan error, 1)}
	select {
	case s.ops <- o:
	case <-s.quit:
		return store.ErrClosed
	case <-ctx.Done():
		return withdrawn(ctx)
	}
	// Once queued, an op whose ctx ends before its batch runs it (after
	// the backend's Begin: on PostgreSQL, the log lock and what other
	// replicas appended) is withdrawn: it never runs, and the caller knows
	// nothing of it was written. Once taken, wait for the outcome even if
	// ctx ends: the caller must learn whether its entries were committed.
	// An op queued after the sequencer drained the queue on Close is never
	// run.
	select {
	case err := <-o.done:
		return err
	case <-ctx.Done():
		if o.state.CompareAndSwap(opQueued, opWithdrawn) {
			return withdrawn(ctx)
		}
	case <-s.done:
	}
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

func (s *Sequencer) run() {
	defer close(s.done)
	batch := make([]*op, 0, s.cfg.MaxBatch)
	for {
		s.turn.Store(0)
		var first *op
		select {
		case first = <-s.ops:
		case <-s.quit:
			for { // what is queued, then stop
				select {
				case o := <-s.ops:
					s.now([]*op{o})
				default:
					return
				}
			}
		}
		s.turn.Store(time.Now().UnixNano())
		// The Updates that queued while the last batch was made durable
		// make up this one.
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
		s.now(slices.Clone(batch))
	}
}

// now runs a batch, commits it and answers its Updates.
func (s *Sequencer) now(ops []*op) {
	if f := s.prepare(ops); !f.landed {
		s.commit(f)
	}
}

// flight is a batch on its way to the log: run, then committed, then
// landed (its Updates answered).
type flight struct {
	s       *Sequencer
	ops     []*op
	errs    []error
	b       Batch
	txn     *state.Txn
	before  *record.Tree // to go back to when it fails
	entries []store.Entry
	updates int
	landed  bool
	started time.Time
}

// finish answers every Update of the batch that has no answer yet with err.
func (f *flight) finish(err error) {
	if f.landed {
		return
	}
	f.landed = true
	for i, o := range f.ops {
		if f.errs[i] == nil {
			f.errs[i] = err
		}
		o.done <- f.errs[i]
	}
}

// abort fails a prepared batch that was not started.
func (f *flight) abort(err error) {
	f.b.Abort()
	f.s.tree = f.before
	f.finish(err)
}

// prepare runs a batch's Updates against the state. The flight it returns
// is landed already when there is nothing to write.
func (s *Sequencer) prepare(ops []*op) *flight {
	f := &flight{s: s, ops: ops, errs: make([]error, len(ops))}
	live := 0
	for i, o := range ops {
		if o.ctx.Err() != nil {
			f.errs[i] = withdrawn(o.ctx)
		} else {
			live++
		}
	}
	if err := s.Failed(); err != nil {
		f.finish(err) // queued before the store failed
		return f
	}
	if live == 0 {
		f.finish(nil)
		return f
	}
	ctx := context.Background()
	known := int64(-1)
	if s.tree != nil {
		known = s.tree.Size()
	}
	beginning := time.Now()
	b, foreign, err := s.cfg.Backend.Begin(ctx, known)
	s.stats.BeginNanos.Add(int64(time.Since(beginning)))
	if err != nil {
		f.finish(s.fail(err))
		return f
	}
	f.b = b
	if err := s.catchUp(b, foreign); err != nil {
		b.Abort()
		s.tree = nil // reloaded by the next batch
		f.finish(err)
		return f
	}
	now := s.cfg.Now()
	f.started = time.Now()
	f.before = s.tree.Clone()
	f.txn = s.state.Begin(b)
	for i, o := range ops {
		if f.errs[i] != nil {
			continue
		}
		if !o.state.CompareAndSwap(opQueued, opTaken) {
			f.errs[i] = withdrawn(o.ctx) // while the batch began
			continue
		}
		treeBefore := &s.opTree
		s.tree.CopyTo(treeBefore)
		t := &tx{Cold: b, s: s, op: f.txn.Child(), now: now}
		b.OpStart()
		err := runOp(o.fn, t)
		if err == nil {
			err = t.appendErr
		}
		if err != nil {
			treeBefore.CopyTo(s.tree)
			if oerr := b.OpEnd(false); oerr != nil {
				f.abort(oerr)
				return f
			}
			f.errs[i] = err
			continue
		}
		if err := b.OpEnd(true); err != nil {
			var oe *OpError
			if errors.As(err, &oe) {
				treeBefore.CopyTo(s.tree)
				f.errs[i] = oe.Err
				continue
			}
			f.abort(err)
			return f
		}
		t.op.Commit(now)
		f.entries = append(f.entries, t.entries...)
		f.updates++
	}
	s.stats.RunNanos.Add(int64(time.Since(f.started)))
	return f
}

// commit hands a prepared batch to its backend to make durable, then
// answers its Updates.
func (s *Sequencer) commit(f *flight) {
	t := time.Now()
	err := f.b.Commit(f.entries, f.txn)
	s.stats.CommitNanos.Add(int64(time.Since(t)))
	if err != nil {
		f.b.Abort()
		s.tree = f.before
		f.finish(s.fail(err))
		return
	}
	f.txn.Commit(s.cfg.Now())
	s.size.Store(f.before.Size() + int64(len(f.entries)))
	s.stats.Batches.Add(1)
	s.stats.Updates.Add(int64(f.updates))
	s.stats.Entries.Add(int64(len(f.entries)))
	s.cfg.Backend.Committed(f.txn)
	f.finish(nil)
}

// fail returns the error the batch's Updates get, and fails the store
// for good when err says the disk failed.
func (s *Sequencer) fail(err error) error {
	if errors.Is(err, store.ErrStorageFailed) {
		s.failed.CompareAndSwap(nil, &err)
		return *s.failed.Load()
	}
	return err
}

// catchUp folds what other processes appended, or loads a snapshot.
func (s *Sequencer) catchUp(b Batch, f *Foreign) error {
	if f == nil {
		return nil
	}
	if f.Snapshot != nil {
		tree, err := record.NewTree(f.Snapshot.Size, f.Frontier)
		if err != nil {
			return err
		}
		s.state.Load(f.Snapshot)
		s.tree = tree
		s.size.Store(tree.Size())
		return nil
	}
	if len(f.Entries) == 0 {
		return nil
	}
	if s.tree == nil {
		return errors.New("sequencer: entries to catch up with, but no tree")
	}
	tree := s.tree.Clone()
	rp := s.state.Replay(b)
	for _, fe := range f.Entries {
		if fe.Index != tree.Size() {
			return fmt.Errorf("sequencer: catching up: entry %d where %d was expected", fe.Index, tree.Size())
		}
		e, err := record.Parse(fe.Data)
		if err != nil {
			return fmt.Errorf("sequencer: catching up: entry %d: %w", fe.Index, err)
		}
		if e.Index != fe.Index {
			return fmt.Errorf("sequencer: catching up: entry %d says index %d", fe.Index, e.Index)
		}
		leaf := record.LeafHash(fe.Data)
		stored := tree.Append(leaf)
		if len(fe.Hashes) > 0 && !slices.Equal(stored, fe.Hashes) {
			return fmt.Errorf("sequencer: catching up: entry %d: its stored hashes are not the tree's", fe.Index)
		}
		if err := rp.Apply(e, leaf); err != nil {
			return fmt.Errorf("sequencer: catching up: %w", err)
		}
	}
	rp.Commit(s.cfg.Now())
	s.tree = tree
	s.size.Store(tree.Size())
	return nil
}

// runOp runs fn, turning a panic into an error so one bad Update cannot take
// the sequencer down with the others in its batch.
func runOp(fn func(store.Tx) error, tx store.Tx) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("sequencer: update panicked: %v", r)
		}
	}()
	return fn(tx)
}

// tx is the store.Tx an Update gets: the hot state through its layer, the
// cold writes through the batch, appends through the sequencer.
type tx struct {
	Cold
	s       *Sequencer
	op      *state.Txn
	now     time.Time
	entries []store.Entry
	// appendErr is set when an Append failed after it advanced the tree:
	// the Update then fails even if fn ignores the error.
	appendErr error
}

var _ store.Tx = (*tx)(nil)

func (t *tx) Agent(id string) (*store.Agent, error) { return t.op.Agent(id) }

func (t *tx) TokenRevocations() uint64 { return t.op.Revocations() }

func (t *tx) InsertAgent(a *store.Agent) error {
	if _, err := t.op.Agent(a.ID); err == nil {
		return fmt.Errorf("%w: agent %s exists", store.ErrConflict, a.ID)
	}
	if err := t.Cold.InsertAgent(a); err != nil {
		return err
	}
	t.op.PutAgent(a)
	return nil
}

func (t *tx) Call(id string) (*store.Call, error) { return t.op.Call(id) }

func (t *tx) CallByIdempotencyKey(agentID, key string) (*store.Call, error) {
	id, ok := t.op.CallByKey(agentID, key)
	if !ok {
		return nil, store.ErrNotFound
	}
	return t.op.Call(id)
}

func (t *tx) AgentOpenCalls(agentID string) ([]store.Call, error) {
	out := t.op.OpenCalls(agentID)
	slices.SortFunc(out, func(a, b store.Call) int { return a.CreatedAt.Compare(b.CreatedAt) })
	return out, nil
}

func (t *tx) CallCounts(agentID string) store.Counts { return t.op.CountsOf(agentID) }

func (t *tx) Approval(callID string) (*store.Approval, error) { return t.op.Approval(callID) }

// Append implements store.Log.
func (t *tx) Append(e *record.Entry) error {
	e.Prev = ""
	if h, ok := t.op.Head(e.Agent); ok {
		e.Prev = record.HashString(h.Hash)
	}
	e.Index = t.s.tree.Size()
	if e.Time.IsZero() {
		e.Time = t.now
	}
	// The record keeps microseconds (record.TimeFormat): so does the state
	// folded from it, whether from this entry or from its bytes later.
	e.Time = e.Time.Truncate(time.Microsecond)
	body, err := e.Marshal()
	if err != nil {
		return err // nothing appended
	}
	leaf := record.LeafHash(body)
	if err := t.op.Apply(e, leaf); err != nil {
		t.appendErr = err
		return err
	}
	stored := t.s.tree.Append(leaf)
	t.entries = append(t.entries, store.Entry{Index: e.Index, Agent: e.Agent, Type: e.Type, Call: e.Call, Leaf: leaf,
		Hashes: stored, Data: body})
	return nil
}
