package sqlite

import (
	"context"
	"database/sql"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/arxsec/arx/internal/store"
	"github.com/arxsec/arx/internal/store/state"
)

// The projector writes the state the log describes (calls, approvals,
// agents' status, chain heads and counts, the per-agent index of entries)
// to the database off the commit path: committed batches' changes are
// merged in memory, the latest version of each row wins, and every
// FlushInterval (or sooner, when FlushEntries are waiting or a reader
// needs the tables current: Sync) they are written in one transaction.
// Each page of each table is so written once per flush, not once per
// commit: that is what keeps a governed call's bytes on disk small. The
// transaction also records the log size the tables now describe, so a
// restart folds only the entries after it.
//
// Every CheckpointFlushes flushes it copies the WAL into the database
// (PASSIVE, never blocking readers), and after any flush that leaves the
// WAL past WALLimit it restarts it, so the WAL stays bounded under
// continuous load (checkpointMode). Copying after
// several flushes rather than each one copies a page the flushes all
// wrote (an agent's leaf of an index, the counts) once, not each time.

// Defaults of the projector.
const (
	DefaultFlushInterval = time.Second
	FlushEntries         = 16384
	// MaxBehind is how many entries may wait for the tables before new
	// batches are refused.
	MaxBehind = 1 << 20
	// WALLimit is the WAL size past which it is restarted after a flush.
	WALLimit = 64 << 20
	// CheckpointFlushes is how many flushes (or ticks of FlushInterval
	// with nothing to write) pass between two copies of the WAL into the
	// database.
	CheckpointFlushes = 8
)

type projector struct {
	s        *Store
	interval time.Duration

	mu      sync.Mutex
	pend    *delta
	flushed int64 // the log size the tables describe
	waiters []waiter
	failing bool
	flushes int // since the last checkpoint; the projector's goroutine only

	kick chan struct{}
	quit chan struct{}
	done chan struct{}

	stmts map[string]*sql.Stmt // by statement text
}

type waiter struct {
	size int64
	ch   chan struct{}
}

// delta is changes waiting to be written.
type delta struct {
	calls     map[string]*store.Call
	approvals map[string]*store.Approval
	agents    map[string]*store.Agent
	counts    map[string]*store.Counts
	heads     map[string]state.Head
	entries   []state.Applied
	size      int64
}

func newDelta() *delta {
	return &delta{calls: map[string]*store.Call{}, approvals: map[string]*store.Approval{}, agents: map[string]*store.Agent{},
		counts: map[string]*store.Counts{}, heads: map[string]state.Head{}}
}

func (d *delta) merge(t *state.Txn) {
	maps.Copy(d.calls, t.Calls)
	maps.Copy(d.approvals, t.Approvals)
	maps.Copy(d.agents, t.Agents)
	maps.Copy(d.counts, t.Counts)
	maps.Copy(d.heads, t.Heads)
	d.entries = append(d.entries, t.Entries...)
	d.size = max(d.size, t.Size())
}

// under puts older changes under newer ones: d's rows win.
func (d *delta) under(old *delta) {
	under(d.calls, old.calls)
	under(d.approvals, old.approvals)
	under(d.agents, old.agents)
	under(d.counts, old.counts)
	under(d.heads, old.heads)
	d.entries = append(old.entries, d.entries...)
	d.size = max(d.size, old.size)
}

func under[K comparable, V any](newer, older map[K]V) {
	for k, v := range older {
		if _, ok := newer[k]; !ok {
			newer[k] = v
		}
	}
}

func (d *delta) empty() bool {
	return len(d.calls)+len(d.approvals)+len(d.agents)+len(d.counts)+len(d.heads)+len(d.entries) == 0
}

func newProjector(s *Store, flushed int64, interval time.Duration) *projector {
	if interval <= 0 {
		interval = DefaultFlushInterval
	}
	return &projector{s: s, interval: interval, pend: newDelta(), flushed: flushed, kick: make(chan struct{}, 1),
		quit: make(chan struct{}), done: make(chan struct{}), stmts: map[string]*sql.Stmt{}}
}

// add takes a committed batch's changes.
func (p *projector) add(t *state.Txn) {
	p.mu.Lock()
	p.pend.merge(t)
	n := len(p.pend.entries)
	p.mu.Unlock()
	if n >= FlushEntries {
		p.poke()
	}
}

func (p *projector) poke() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// behind says whether the tables are so far behind that batches must wait.
func (p *projector) behind() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.pend.size-p.flushed > MaxBehind
}

// Flushed is the log size the tables describe.
func (p *projector) Flushed() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.flushed
}

// Sync returns once the tables describe at least the log's size at the
// time of the call.
func (p *projector) Sync(ctx context.Context) error {
	target := p.s.seq.Size()
	p.mu.Lock()
	if p.flushed >= target {
		p.mu.Unlock()
		return nil
	}
	w := waiter{size: target, ch: make(chan struct{})}
	p.waiters = append(p.waiters, w)
	failing := p.failing
	p.mu.Unlock()
	p.poke()
	// While flushes fail (the database locked by another process), the
	// reader gets the tables as they are, at most a second later, rather
	// than waiting for a flush that may not come.
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-w.ch:
			return nil
		case <-t.C:
			p.mu.Lock()
			failing = p.failing
			p.mu.Unlock()
			if failing {
				return nil
			}
		case <-ctx.Done():
			return ctx.Err()
		case <-p.done:
			return store.ErrClosed
		}
	}
}

func (p *projector) run() {
	defer close(p.done)
	t := time.NewTicker(p.interval)
	defer t.Stop()
	for {
		select {
		case <-p.quit:
			p.flush()
			return
		case <-t.C:
		case <-p.kick:
		}
		p.flush()
	}
}

func (p *projector) stop() {
	close(p.quit)
	<-p.done
	for _, st := range p.stmts {
		st.Close()
	}
}

// flush writes what is pending.
func (p *projector) flush() {
	p.mu.Lock()
	d := p.pend
	p.pend = newDelta()
	p.mu.Unlock()
	if !d.empty() {
		if err := p.write(d); err != nil {
			p.s.reopenIfReadOnly(p.s.projDB, "projector", err)
			p.s.failStorage(err)
			p.mu.Lock()
			p.pend.under(d)
			first := !p.failing
			p.failing = true
			p.mu.Unlock()
			if first {
				p.s.log.Warn("sqlite: writing the state tables failed; retrying (calls go on, the console lags)", "err", err)
			}
			return
		}
	}
	p.mu.Lock()
	if p.failing {
		p.s.log.Info("sqlite: the state tables are written again")
	}
	p.failing = false
	p.flushed = max(p.flushed, d.size)
	keep := p.waiters[:0]
	for _, w := range p.waiters {
		if w.size <= p.flushed {
			close(w.ch)
		} else {
			keep = append(keep, w)
		}
	}
	p.waiters = keep
	p.mu.Unlock()
	if !d.empty() {
		p.s.st.Evict(d.calls, d.approvals)
	}
	p.flushes++
	p.checkpoint()
}

// The per-agent index of the log (agent_log) keeps each agent's entry
// indexes in rows of up to agentLogRow, delta-encoded: one row per agent
// and flush, not one per entry.
const agentLogRow = 4096

// agentLogRows makes the agent_log rows of entries (in log order).
func agentLogRows(entries []state.Applied) [][]any {
	by := map[string][]int64{}
	var order []string
	for _, e := range entries {
		if _, ok := by[e.Agent]; !ok {
			order = append(order, e.Agent)
		}
		by[e.Agent] = append(by[e.Agent], e.Index)
	}
	var out [][]any
	for _, agent := range order {
		idx := by[agent]
		for len(idx) > 0 {
			n := min(len(idx), agentLogRow)
			out = append(out, []any{agent, idx[0], encodeIndexes(idx[:n])})
			idx = idx[n:]
		}
	}
	return out
}

// encodeIndexes writes ascending indexes as uvarint deltas.
func encodeIndexes(idx []int64) []byte {
	b := make([]byte, 0, 2*len(idx))
	prev := int64(0)
	for _, x := range idx {
		b = binary.AppendUvarint(b, uint64(x-prev))
		prev = x
	}
	return b
}

func decodeIndexes(b []byte) ([]int64, error) {
	var out []int64
	prev := int64(0)
	for len(b) > 0 {
		d, n := binary.Uvarint(b)
		if n <= 0 {
			return nil, errors.New("sqlite: agent_log: bad index list")
		}
		prev += int64(d)
		out = append(out, prev)
		b = b[n:]
	}
	return out, nil
}

// chunk is how many rows one multi-row statement writes.
const chunk = 64

// write writes one delta in one transaction.
func (p *projector) write(d *delta) error {
	if p.s.failed.Load() != nil {
		return *p.s.failed.Load()
	}
	ctx := context.Background()
	tx, err := p.s.projDB.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("sqlite: begin: %w", err)
	}
	defer tx.Rollback()
	// Calls first: approvals refer to them.
	calls := make([][]any, 0, len(d.calls))
	for _, c := range d.calls {
		calls = append(calls, []any{c.ID, c.AgentID, c.Connector, c.Action, c.DeclaredRisk, c.Risk, c.Status, c.IdempotencyKey,
			c.Summary, c.Refusal, nanos(c.CreatedAt), nanos(c.ExpiresAt), nullTime(c.CompletedAt), c.Outcome, c.Error, c.DurationMS, c.RaisedBy,
			c.Args, c.ArgsHash})
	}
	if err := p.write1(ctx, tx, 0, calls); err != nil {
		return fmt.Errorf("sqlite: write calls: %w", err)
	}
	approvals := make([][]any, 0, len(d.approvals))
	for _, a := range d.approvals {
		js, err := json.Marshal(a.Approvers)
		if err != nil {
			return err
		}
		gs, err := json.Marshal(nonNil(a.Grants))
		if err != nil {
			return err
		}
		approvals = append(approvals, []any{a.CallID, a.AgentID, a.Status, string(js), nanos(a.RequestedAt), nanos(a.ExpiresAt),
			a.DecidedBy, nullTime(a.DecidedAt), a.Reason, a.Passkey, int64(a.Quorum), string(gs)})
	}
	if err := p.write1(ctx, tx, 1, approvals); err != nil {
		return fmt.Errorf("sqlite: write approvals: %w", err)
	}
	for _, a := range d.agents {
		if _, err := tx.ExecContext(ctx, `UPDATE agents SET status = ?, terminated_at = ?, manifest_hash = ?, shadow_hash = ?, shadow_since = ? WHERE id = ?`,
			a.Status, nullTime(a.TerminatedAt), a.ManifestHash, a.ShadowHash, a.ShadowSince, a.ID); err != nil {
			return fmt.Errorf("sqlite: write agents: %w", err)
		}
	}
	// An agent's counts change with some of its entries only: unchanged
	// ones are left as they are (NULL), so the row describes the state as
	// of exactly the flushed size.
	agents := make([][]any, 0, len(d.heads))
	for agent, h := range d.heads {
		var counts any
		if c := d.counts[agent]; c != nil {
			counts = store.EncodeCounts(c)
		}
		agents = append(agents, []any{agent, h.Hash[:], h.Index, counts})
	}
	if err := p.write1(ctx, tx, 2, agents); err != nil {
		return fmt.Errorf("sqlite: write agent state: %w", err)
	}
	if err := p.write1(ctx, tx, 3, agentLogRows(d.entries)); err != nil {
		return fmt.Errorf("sqlite: write the entries index: %w", err)
	}
	if err := setMeta(ctx, tx, metaProjected, strconv.FormatInt(d.size, 10)); err != nil {
		return err
	}
	return tx.Commit()
}

// rows writes rows of n columns: full chunks with one multi-row statement
// each, the rest one by one; head, the value lists, tail. The statements
// are prepared before the first flush (the writer has one connection, held
// by a flush's transaction).
func (p *projector) rows(ctx context.Context, tx *sql.Tx, head string, n int, rows [][]any, tail string) error {
	for len(rows) > 0 {
		k := 1
		if len(rows) >= chunk {
			k = chunk
		}
		st, ok := p.stmts[multiRow(head, n, k, tail)]
		if !ok {
			return fmt.Errorf("sqlite: statement not prepared: %s", head)
		}
		a := make([]any, 0, n*k)
		for _, r := range rows[:k] {
			a = append(a, r...)
		}
		if _, err := tx.StmtContext(ctx, st).ExecContext(ctx, a...); err != nil {
			return err
		}
		rows = rows[k:]
	}
	return nil
}

// The multi-row statements of a flush: head, columns, tail.
var flushStatements = []struct {
	head string
	n    int
	tail string
}{
	{`INSERT INTO calls (` + callCols + `) VALUES `, 19, ` ON CONFLICT(id) DO UPDATE SET status = excluded.status,
		refusal = excluded.refusal, expires_at = excluded.expires_at, completed_at = excluded.completed_at,
		outcome = excluded.outcome, error = excluded.error, duration_ms = excluded.duration_ms`},
	{`INSERT INTO approvals (` + approvalCols + `) VALUES `, 12, ` ON CONFLICT(call_id) DO UPDATE SET status = excluded.status,
		decided_by = excluded.decided_by, decided_at = excluded.decided_at, reason = excluded.reason, passkey = excluded.passkey,
		grants = excluded.grants`},
	{`INSERT INTO agent_state (agent, head, head_idx, counts) VALUES `, 4, ` ON CONFLICT(agent) DO UPDATE SET head = excluded.head,
		head_idx = excluded.head_idx, counts = COALESCE(excluded.counts, agent_state.counts)`},
	{`INSERT OR IGNORE INTO agent_log (agent, first, idx) VALUES `, 3, ``},
}

func (p *projector) prepare(ctx context.Context) error {
	for _, f := range flushStatements {
		for _, k := range []int{1, chunk} {
			q := multiRow(f.head, f.n, k, f.tail)
			st, err := p.s.projDB.PrepareContext(ctx, q)
			if err != nil {
				return fmt.Errorf("sqlite: prepare: %w", err)
			}
			p.stmts[q] = st
		}
	}
	return nil
}

func (p *projector) write1(ctx context.Context, tx *sql.Tx, i int, rows [][]any) error {
	f := flushStatements[i]
	return p.rows(ctx, tx, f.head, f.n, rows, f.tail)
}

func multiRow(head string, n, k int, tail string) string {
	one := "(" + strings.TrimSuffix(strings.Repeat("?,", n), ",") + ")"
	return head + strings.TrimSuffix(strings.Repeat(one+",", k), ",") + tail
}

// checkpoint copies the WAL into the database when checkpointMode says
// so (a restart waits for readers, never for writers of the log).
func (p *projector) checkpoint() {
	s := p.s
	if s.failed.Load() != nil {
		return // copying on could make lost pages look durable
	}
	wal := int64(0)
	if fi, err := os.Stat(s.path + "-wal"); err == nil {
		wal = fi.Size()
	}
	mode := checkpointMode(p.flushes, wal)
	if mode == "" {
		return
	}
	p.flushes = 0
	var busy, logFrames, done int
	if err := s.projDB.QueryRow("PRAGMA wal_checkpoint("+mode+")").Scan(&busy, &logFrames, &done); err != nil {
		s.reopenIfReadOnly(s.projDB, "projector", err)
		s.failStorage(err)
	}
}

// checkpointMode decides, after a flush, whether to copy the WAL into the
// database: RESTART once the WAL is past WALLimit, PASSIVE every
// CheckpointFlushes flushes, otherwise not ("").
func checkpointMode(flushes int, walBytes int64) string {
	switch {
	case walBytes > WALLimit:
		return "RESTART"
	case flushes >= CheckpointFlushes:
		return "PASSIVE"
	}
	return ""
}

// nonNil is s, or an empty list for nil (stored as [], not null).
func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
