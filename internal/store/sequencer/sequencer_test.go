package sequencer

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/arxsec/arx/internal/store"
	"github.com/arxsec/arx/internal/store/state"
	"github.com/arxsec/arx/record"
)

// The sequencer against a backend in memory: what it commits, in which
// batches, and what it does when a batch, an Update or the storage fails.
// The storage drivers' conformance suite (internal/store/storetest) runs
// the same sequencer against SQLite and PostgreSQL.

var errCommit = errors.New("fake: commit failed")

// fakeBackend keeps what was committed, and fails on request.
type fakeBackend struct {
	mu      sync.Mutex
	log     []store.Entry
	agents  map[string]bool
	batches []int // Updates' entries per committed batch

	failCommits   atomic.Int32 // the next n commits fail (nothing written)
	failStorage   atomic.Bool  // commits fail with store.ErrStorageFailed
	commitStarted chan struct{}
	commitRelease chan struct{} // after commitStarted, the write waits for it
	beginGate     chan struct{} // Begin waits for it (a log lock that does not come)
}

func newFake() *fakeBackend {
	return &fakeBackend{agents: map[string]bool{}}
}

func (f *fakeBackend) Begin(ctx context.Context, known int64) (Batch, *Foreign, error) {
	if f.beginGate != nil {
		<-f.beginGate
	}
	return &fakeBatch{f: f}, nil, nil
}

func (f *fakeBackend) Committed(*state.Txn) {}

// write lands a batch's entries and cold writes, or fails as told.
func (f *fakeBackend) write(b *fakeBatch, entries []store.Entry) error {
	if f.commitStarted != nil {
		f.commitStarted <- struct{}{}
	}
	if f.commitRelease != nil {
		<-f.commitRelease
	}
	if f.failStorage.Load() {
		return fmt.Errorf("%w: fake disk", store.ErrStorageFailed)
	}
	if f.failCommits.Load() > 0 {
		f.failCommits.Add(-1)
		return errCommit
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, e := range entries {
		if e.Index != int64(len(f.log)) {
			return fmt.Errorf("fake: entry %d of the batch has index %d, the log has %d", i, e.Index, len(f.log))
		}
		f.log = append(f.log, e)
	}
	for _, id := range b.agents {
		f.agents[id] = true
	}
	f.batches = append(f.batches, len(entries))
	return nil
}

type fakeBatch struct {
	Cold   // what the tests do not use: a nil interface, so a call panics
	f      *fakeBackend
	agents []string // cold writes of the batch
	mark   int      // where the current Update's cold writes start
}

func (b *fakeBatch) Agent(id string) (*store.Agent, error)           { return nil, store.ErrNotFound }
func (b *fakeBatch) Call(id string) (*store.Call, error)             { return nil, store.ErrNotFound }
func (b *fakeBatch) Approval(callID string) (*store.Approval, error) { return nil, store.ErrNotFound }

func (b *fakeBatch) InsertAgent(a *store.Agent) error {
	b.agents = append(b.agents, a.ID)
	return nil
}

func (b *fakeBatch) OpStart() { b.mark = len(b.agents) }

// OpEnd fails an Update alone when it inserted an agent named "opfail...",
// as a backend whose statement failed would.
func (b *fakeBatch) OpEnd(ok bool) error {
	if ok {
		for _, id := range b.agents[b.mark:] {
			if strings.HasPrefix(id, "opfail") {
				b.agents = b.agents[:b.mark]
				return &OpError{Err: fmt.Errorf("fake: statement for %s failed", id)}
			}
		}
		return nil
	}
	b.agents = b.agents[:b.mark]
	return nil
}

func (b *fakeBatch) Commit(entries []store.Entry, changes *state.Txn) error {
	return b.f.write(b, entries)
}

func (b *fakeBatch) Abort() {}

func start(t *testing.T, f *fakeBackend) *Sequencer {
	t.Helper()
	s := New(Config{Backend: f, State: state.New(state.Config{}), Tree: &record.Tree{}, Now: time.Now})
	t.Cleanup(s.Close)
	return s
}

// hire is an Update that inserts an agent and appends its agent.hired.
func hire(id string) func(store.Tx) error {
	return func(tx store.Tx) error {
		if err := tx.InsertAgent(&store.Agent{ID: id, Name: id, Owner: "o@example.com", Status: store.AgentActive, CreatedAt: time.Now()}); err != nil {
			return err
		}
		return tx.Append(record.AgentHired(id, "admin:test", time.Now(), record.Hire{Name: id, Owner: "o@example.com"}))
	}
}

// token appends a token.issued entry to an agent's chain.
func token(agent string, n int) func(store.Tx) error {
	return func(tx store.Tx) error {
		return tx.Append(record.TokenIssued(agent, "admin:test", time.Now(), fmt.Sprint("tok-", n), "", "test"))
	}
}

// checkLog checks the committed log: contiguous indexes, and every
// agent's chain linked entry to entry.
func checkLog(t *testing.T, f *fakeBackend) {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	var c record.ChainChecker
	for i, e := range f.log {
		if e.Index != int64(i) {
			t.Fatalf("entry %d has index %d", i, e.Index)
		}
		c.Check(e.Index, e.Data, e.Leaf)
	}
	if c.ProblemCount() != 0 {
		t.Fatalf("chains: %v", c.Problems())
	}
}

// TestConcurrentUpdates: 64 callers, each appending to its own agent's
// chain: every Update lands once, in one log without gaps, each chain
// intact and in the caller's order, and Updates share batches.
func TestConcurrentUpdates(t *testing.T) {
	f := newFake()
	s := start(t, f)
	const callers, each = 64, 40
	var wg sync.WaitGroup
	errs := make(chan error, callers*each)
	for c := range callers {
		wg.Go(func() {
			agent := fmt.Sprint("agent-", c)
			if err := s.Update(t.Context(), hire(agent)); err != nil {
				errs <- err
				return
			}
			for i := range each - 1 {
				if err := s.Update(t.Context(), token(agent, i)); err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	checkLog(t, f)
	if got := len(f.log); got != callers*each || s.Size() != callers*each {
		t.Fatalf("log of %d entries (size %d), want %d", got, s.Size(), callers*each)
	}
	if len(f.batches) >= callers*each {
		t.Errorf("%d batches for %d Updates: nothing was grouped", len(f.batches), callers*each)
	}
	for _, e := range f.log {
		if !f.agents[e.Agent] {
			t.Fatalf("entry of agent %s committed without the agent's cold write", e.Agent)
		}
	}
}

// TestUpdateFailsAlone: an Update whose fn returns an error, panics, or
// whose statement fails (OpError) fails alone: nothing of it is written,
// and the Updates batched with it land.
func TestUpdateFailsAlone(t *testing.T) {
	f := newFake()
	s := start(t, f)
	if err := s.Update(t.Context(), hire("a")); err != nil {
		t.Fatal(err)
	}
	boom := errors.New("boom")
	bad := map[string]func(store.Tx) error{
		"error": func(tx store.Tx) error {
			tx.Append(record.TokenIssued("a", "admin:test", time.Now(), "bad", "", "x"))
			return boom
		},
		"panic": func(tx store.Tx) error {
			tx.Append(record.TokenIssued("a", "admin:test", time.Now(), "bad", "", "x"))
			panic("on purpose")
		},
		"op error": hire("opfail-1"),
	}
	var wg sync.WaitGroup
	results := map[string]error{}
	var mu sync.Mutex
	for name, fn := range bad {
		wg.Go(func() {
			err := s.Update(t.Context(), fn)
			mu.Lock()
			results[name] = err
			mu.Unlock()
		})
	}
	for i := range 20 {
		wg.Go(func() {
			if err := s.Update(t.Context(), token("a", i)); err != nil {
				t.Errorf("a good Update beside failing ones: %v", err)
			}
		})
	}
	wg.Wait()
	if !errors.Is(results["error"], boom) {
		t.Errorf("fn's error: %v", results["error"])
	}
	if results["panic"] == nil || results["op error"] == nil || !strings.Contains(results["op error"].Error(), "statement for opfail-1 failed") {
		t.Errorf("panic: %v; op error: %v", results["panic"], results["op error"])
	}
	checkLog(t, f)
	if len(f.log) != 21 || f.agents["opfail-1"] {
		t.Fatalf("log of %d entries (want 21), opfail-1 written: %v", len(f.log), f.agents["opfail-1"])
	}
	for _, e := range f.log {
		if strings.Contains(string(e.Data), `"bad"`) {
			t.Fatalf("a failed Update's entry was committed: %s", e.Data)
		}
	}
}

// TestBatchFailure: a commit that fails fails every Update of its batch
// and writes nothing; the next batches go on from the same index. A
// storage failure fails the sequencer for good.
func TestBatchFailure(t *testing.T) {
	f := newFake()
	s := start(t, f)
	if err := s.Update(t.Context(), hire("a")); err != nil {
		t.Fatal(err)
	}
	f.failCommits.Store(1)
	if err := s.Update(t.Context(), token("a", 1)); !errors.Is(err, errCommit) {
		t.Fatalf("Update in a failed batch: %v", err)
	}
	if err := s.Update(t.Context(), token("a", 2)); err != nil {
		t.Fatalf("after a failed batch: %v", err)
	}
	checkLog(t, f)
	if len(f.log) != 2 || s.Size() != 2 {
		t.Fatalf("log of %d entries (size %d), want 2", len(f.log), s.Size())
	}

	f.failStorage.Store(true)
	if err := s.Update(t.Context(), token("a", 3)); !errors.Is(err, store.ErrStorageFailed) {
		t.Fatalf("Update when the storage fails: %v", err)
	}
	f.failStorage.Store(false)
	if err := s.Update(t.Context(), token("a", 4)); !errors.Is(err, store.ErrStorageFailed) || s.Failed() == nil {
		t.Fatalf("after a storage failure the sequencer goes on: %v", err)
	}
	if len(f.log) != 2 {
		t.Fatalf("log of %d entries after the storage failed", len(f.log))
	}
}

// TestClose: Updates after Close fail; Close waits for nothing forever.
func TestClose(t *testing.T) {
	f := newFake()
	s := start(t, f)
	if err := s.Update(t.Context(), hire("a")); err != nil {
		t.Fatal(err)
	}
	s.Close()
	done := make(chan error, 1)
	go func() { done <- s.Update(context.Background(), token("a", 1)) }()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("an Update after Close succeeded")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("an Update after Close hangs")
	}
}

// TestCancelledUpdate: an Update whose context ends before its batch runs
// returns the context's error and writes nothing.
func TestCancelledUpdate(t *testing.T) {
	f := newFake()
	s := start(t, f)
	if err := s.Update(t.Context(), hire("a")); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := s.Update(ctx, token("a", 1)); !errors.Is(err, context.Canceled) {
		t.Fatalf("a cancelled Update: %v", err)
	}
	time.Sleep(50 * time.Millisecond)
	if len(f.log) != 1 {
		t.Fatalf("a cancelled Update wrote: log of %d entries", len(f.log))
	}
}

// TestWithdrawnUpdate: an Update whose context ends while its batch
// begins (the log lock does not come) is withdrawn: it returns at once,
// never runs, and the batch goes on without it; one whose context ends
// after it ran waits for its batch and learns that it committed.
func TestWithdrawnUpdate(t *testing.T) {
	f := newFake()
	s := start(t, f)
	if err := s.Update(t.Context(), hire("a")); err != nil {
		t.Fatal(err)
	}
	f.beginGate = make(chan struct{})
	var open sync.Once
	openGate := func() { open.Do(func() { close(f.beginGate) }) }
	defer openGate() // a failure below must not leave Close waiting for it
	var ran atomic.Bool
	withdrawn := make(chan error, 1)
	began := time.Now()
	go func() {
		ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
		defer cancel()
		withdrawn <- s.Update(ctx, func(tx store.Tx) error { ran.Store(true); return token("a", 1)(tx) })
	}()
	waited := make(chan error, 1)
	go func() {
		time.Sleep(20 * time.Millisecond) // queued behind the first, or in its batch
		waited <- s.Update(t.Context(), token("a", 2))
	}()
	select {
	case err := <-withdrawn:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("the withdrawn Update: %v, want its context's error", err)
		}
		if d := time.Since(began); d > 2*time.Second {
			t.Errorf("the withdrawn Update returned after %v", d)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("an Update whose context ended while its batch began did not return")
	}
	openGate()
	if err := <-waited; err != nil {
		t.Fatalf("the Update that waited: %v", err)
	}
	if ran.Load() {
		t.Error("the withdrawn Update ran")
	}
	f.mu.Lock()
	if len(f.log) != 2 || f.log[1].Type != record.TypeTokenIssued {
		t.Errorf("log of %d entries, want the hire and the one token", len(f.log))
	}
	f.mu.Unlock()
	checkLog(t, f)

	// Taken, then its context ends while the batch is written: it waits.
	f.commitStarted, f.commitRelease = make(chan struct{}), make(chan struct{})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- s.Update(ctx, token("a", 3)) }()
	<-f.commitStarted
	cancel()
	select {
	case err := <-done:
		t.Fatalf("an Update that ran returned before its batch was written: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	close(f.commitRelease)
	if err := <-done; err != nil {
		t.Errorf("an Update that ran and committed: %v", err)
	}
	f.mu.Lock()
	if len(f.log) != 3 {
		t.Errorf("log of %d entries, want 3", len(f.log))
	}
	f.mu.Unlock()
}

// TestUpdatesDuringCommitShareTheNextBatch: Updates that arrive while a
// batch is being made durable all go into the next batch, not one each or
// the first alone (what keeps entries per fdatasync up under load).
func TestUpdatesDuringCommitShareTheNextBatch(t *testing.T) {
	f := newFake()
	s := start(t, f)
	if err := s.Update(t.Context(), hire("a")); err != nil {
		t.Fatal(err)
	}
	f.commitStarted, f.commitRelease = make(chan struct{}), make(chan struct{})
	const queued = 5
	done := make(chan error, queued+1)
	go func() { done <- s.Update(t.Context(), token("a", 0)) }()
	<-f.commitStarted // the first batch is being made durable
	for i := range queued {
		go func() { done <- s.Update(t.Context(), token("a", i+1)) }()
	}
	for deadline := time.Now().Add(5 * time.Second); len(s.ops) < queued; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d Updates queued after 5s", len(s.ops), queued)
		}
	}
	f.commitRelease <- struct{}{}
	<-f.commitStarted // the next batch
	f.commitRelease <- struct{}{}
	for range queued + 1 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	f.mu.Lock()
	got := slices.Clone(f.batches[len(f.batches)-2:])
	f.mu.Unlock()
	if !slices.Equal(got, []int{1, queued}) {
		t.Errorf("entries of the last two batches: %v, want [1 %d]", got, queued)
	}
}

// TestStatsTimeEachStep: the sequencer counts the time it spends
// beginning a batch, running its Updates and committing it, each apart.
func TestStatsTimeEachStep(t *testing.T) {
	f := newFake()
	f.beginGate = make(chan struct{})
	f.commitStarted, f.commitRelease = make(chan struct{}), make(chan struct{})
	s := start(t, f)
	done := make(chan error, 1)
	go func() { done <- s.Update(t.Context(), hire("a")) }()
	const beginHold, commitHold = 20 * time.Millisecond, 200 * time.Millisecond
	time.Sleep(beginHold)
	f.beginGate <- struct{}{} // the log lock comes after beginHold
	<-f.commitStarted
	time.Sleep(commitHold)
	f.commitRelease <- struct{}{} // durable after commitHold
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	st := s.Stats()
	begin, commit := time.Duration(st.BeginNanos.Load()), time.Duration(st.CommitNanos.Load())
	if begin < beginHold || commit < commitHold || st.RunNanos.Load() <= 0 || st.Batches.Load() != 1 {
		t.Errorf("begin %v (held %v), commit %v (held %v), run %dns, %d batches", begin, beginHold, commit, commitHold, st.RunNanos.Load(), st.Batches.Load())
	}
	if begin >= commit {
		t.Errorf("begin %v, commit %v: the begin's time counts the commit's", begin, commit)
	}
}
