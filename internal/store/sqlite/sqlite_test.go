package sqlite

import (
	"bytes"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/arxsec/arx/internal/store"
	"github.com/arxsec/arx/internal/store/storetest"
	"github.com/arxsec/arx/record"
	"golang.org/x/mod/sumdb/tlog"
)

func TestStore(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store { return open(t, dbPath(t), Config{}) })
}

func dbPath(t testing.TB) string { return filepath.Join(t.TempDir(), "arx.db") }

// open opens the store at path and closes it when the test ends.
func open(t testing.TB, path string, cfg Config) *Store {
	t.Helper()
	cfg.Path = path
	s, err := Open(t.Context(), cfg)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// sideHandle opens the store's file through a second database/sql handle,
// as another process would, to change it behind the store's back.
func sideHandle(t *testing.T, path string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+(&url.URL{Path: path}).EscapedPath()+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func exec(t *testing.T, db *sql.DB, q string) {
	t.Helper()
	if _, err := db.ExecContext(t.Context(), q); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}

func count(t *testing.T, db *sql.DB, q string, args ...any) int {
	t.Helper()
	var n int
	if err := db.QueryRowContext(t.Context(), q, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return n
}

func entry(agent, call string) *record.Entry {
	return &record.Entry{Agent: agent, Type: record.TypeCallRequested, Call: call, Connector: "crm",
		Action: "account.read", Risk: "low", Actor: "agent:" + agent}
}

func newCall(id, agent string) *store.Call {
	now := time.Now()
	return &store.Call{ID: id, AgentID: agent, Connector: "crm", Action: "account.read", DeclaredRisk: "low",
		Risk: "low", Status: store.CallPending, IdempotencyKey: id, CreatedAt: now, ExpiresAt: now.Add(time.Minute)}
}

func insertAgents(t testing.TB, s *Store, ids ...string) {
	t.Helper()
	err := s.Update(t.Context(), func(tx store.Tx) error {
		for _, id := range ids {
			if err := tx.InsertAgent(&store.Agent{ID: id, Name: id, Owner: "o", Status: store.AgentActive,
				Manifest: []byte("m"), ManifestHash: "h", CreatedAt: time.Now()}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("insert agents: %v", err)
	}
}

// callAndEntry is what the runtime does for a governed call: the state
// change and the entry that records it, in one Update.
func callAndEntry(agent, id string) func(store.Tx) error {
	return func(tx store.Tx) error {
		if err := tx.InsertCall(newCall(id, agent)); err != nil {
			return err
		}
		return tx.Append(entry(agent, id))
	}
}

// verifyLog checks the log as an auditor would and that the stored hashes
// give the same root; it returns the entries.
func verifyLog(t *testing.T, s *Store) []store.Entry {
	t.Helper()
	ctx := t.Context()
	es, err := s.Entries(ctx, 0, 1<<20)
	if err != nil {
		t.Fatalf("Entries: %v", err)
	}
	var v record.Verifier
	for _, e := range es {
		v.Add(e.Data)
	}
	if int64(len(es)) != v.Size() {
		t.Fatalf("verifier size %d, %d entries", v.Size(), len(es))
	}
	var cp *record.Checkpoint
	if n := int64(len(es)); n > 0 {
		th, err := tlog.TreeHash(n, store.HashReader(ctx, s))
		if err != nil {
			t.Fatalf("tlog.TreeHash(%d): %v", n, err)
		}
		if th != v.Root() {
			t.Errorf("tlog.TreeHash(%d) over stored hashes = %v, the entries hash to %v", n, th, v.Root())
		}
		cp = &record.Checkpoint{Origin: "test", Size: uint64(n), Hash: th[:]}
	}
	for _, p := range v.Finish(cp) {
		t.Errorf("record.Verifier: %v", p)
	}
	return es
}

// TestReopen closes and reopens one file at sizes whose frontiers differ:
// the reloaded tree must continue the indexes, the chains and the root.
func TestReopen(t *testing.T) {
	path := dbPath(t)
	agents := []string{"a", "b", "c"}
	last := map[string]string{}
	var tree record.Tree
	for cycle, k := range []int{1, 1, 1, 5, 3, 8, 13, 1} { // sizes 1, 2, 3, 8, 11, 19, 32, 33
		s := open(t, path, Config{})
		size := tree.Size()
		if n, err := s.TreeSize(t.Context()); err != nil || n != size {
			t.Fatalf("cycle %d: TreeSize after reopen = %d, %v; want %d", cycle, n, err, size)
		}
		if size > 0 {
			if th, err := tlog.TreeHash(size, store.HashReader(t.Context(), s)); err != nil || th != tree.Root() {
				t.Fatalf("cycle %d: root after reopen = %v, %v; want %v", cycle, th, err, tree.Root())
			}
		}
		for range k {
			e := entry(agents[tree.Size()%3], fmt.Sprint("call-", tree.Size()))
			if err := s.Update(t.Context(), func(tx store.Tx) error { return tx.Append(e) }); err != nil {
				t.Fatalf("cycle %d: Update: %v", cycle, err)
			}
			if e.Index != tree.Size() || e.Prev != last[e.Agent] {
				t.Fatalf("cycle %d: appended at %d with prev %q; want %d, %q", cycle, e.Index, e.Prev, tree.Size(), last[e.Agent])
			}
			body, err := e.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			tree.AppendLeaf(record.LeafHash(body))
			last[e.Agent] = record.HashString(record.LeafHash(body))
		}
		verifyLog(t, s)
		if err := s.Close(); err != nil {
			t.Fatalf("cycle %d: Close: %v", cycle, err)
		}
	}
}

// TestCloseKeepsCommitted: an Update that returned nil before Close is in
// the file when it is opened again, however Close raced it.
func TestCloseKeepsCommitted(t *testing.T) {
	path := dbPath(t)
	s := open(t, path, Config{})
	insertAgents(t, s, "a")
	var mu sync.Mutex
	var committed []string
	var wg sync.WaitGroup
	for w := range 16 {
		wg.Go(func() {
			for i := 0; ; i++ {
				id := fmt.Sprintf("c-%d-%d", w, i)
				err := s.Update(t.Context(), callAndEntry("a", id))
				if errors.Is(err, store.ErrClosed) {
					return
				}
				if err != nil {
					t.Errorf("Update: %v", err)
					return
				}
				mu.Lock()
				committed = append(committed, id)
				mu.Unlock()
			}
		})
	}
	time.Sleep(50 * time.Millisecond)
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	wg.Wait()

	s = open(t, path, Config{})
	es := verifyLog(t, s)
	if len(es) != len(committed) {
		t.Errorf("the reopened log has %d entries, %d Updates returned nil", len(es), len(committed))
	}
	for _, id := range committed {
		if _, err := s.Call(t.Context(), id); err != nil {
			t.Errorf("committed call %s after reopen: %v", id, err)
		}
	}
}

const refuseEntries = `CREATE TRIGGER fail_entries BEFORE INSERT ON entries BEGIN SELECT RAISE(ABORT, 'record write refused by test'); END;`

// TestFailClosed makes SQLite itself refuse to write the record: the call
// that the entry would record must not exist, and the store recovers when
// the record can be written again.
func TestFailClosed(t *testing.T) {
	ctx := t.Context()
	path := dbPath(t)
	s := open(t, path, Config{})
	side := sideHandle(t, path)
	insertAgents(t, s, "a")
	if err := s.Update(ctx, callAndEntry("a", "before")); err != nil {
		t.Fatal(err)
	}
	before := verifyLog(t, s)
	exec(t, side, refuseEntries)

	err := s.Update(ctx, callAndEntry("a", "refused"))
	if err == nil || !strings.Contains(err.Error(), "record write refused by test") {
		t.Fatalf("Update while the record cannot be written returned %v, want SQLite's refusal", err)
	}
	_, err = s.Call(ctx, "refused")
	if !errors.Is(err, store.ErrNotFound) {
		t.Errorf("the call whose entry was refused exists: %v", err)
	}
	if n := count(t, side, `SELECT COUNT(*) FROM calls WHERE id = 'refused'`); n != 0 {
		t.Errorf("the file holds the call whose entry was refused")
	}
	// Approving an existing call fails the same way and leaves it pending.
	err = s.Update(ctx, func(tx store.Tx) error {
		c, err := tx.Call("before")
		if err != nil {
			return err
		}
		c.Status = store.CallApproved
		if err := tx.UpdateCall(c); err != nil {
			return err
		}
		return tx.Append(&record.Entry{Agent: "a", Type: record.TypeCredentialIssued, Call: "before"})
	})
	if err == nil {
		t.Fatal("approving a call while the record cannot be written returned nil")
	}
	if c, err := s.Call(ctx, "before"); err != nil || c.Status != store.CallPending {
		t.Errorf("call after a refused approval: %+v, %v; want pending", c, err)
	}
	// An Update that writes no entry is not affected.
	if err := s.Update(ctx, func(tx store.Tx) error { return tx.SetMeta("k", "v") }); err != nil {
		t.Errorf("Update without entries while entries are refused: %v", err)
	}

	exec(t, side, `DROP TRIGGER fail_entries`)
	e := entry("a", "after")
	err = s.Update(ctx, func(tx store.Tx) error {
		if err := tx.InsertCall(newCall("after", "a")); err != nil {
			return err
		}
		return tx.Append(e)
	})
	if err != nil {
		t.Fatalf("Update after the record can be written again: %v", err)
	}
	if want := int64(len(before)); e.Index != want || e.Prev != record.HashString(before[len(before)-1].Leaf) {
		t.Errorf("entry after recovery: index %d, prev %q; want %d and the last committed entry", e.Index, e.Prev, want)
	}
	if es := verifyLog(t, s); len(es) != len(before)+1 {
		t.Errorf("the log has %d entries, want %d", len(es), len(before)+1)
	}
}

// TestFailedAppendIgnored: a function that ignores a failed Append and
// returns nil still fails its Update. Otherwise its call would commit without
// the entry that records it, and the tree, already advanced, would leave a
// hole in the log that no later Open gets past.
func TestFailedAppendIgnored(t *testing.T) {
	ctx := t.Context()
	path := dbPath(t)
	s := open(t, path, Config{})
	side := sideHandle(t, path)
	insertAgents(t, s, "a")
	if err := s.Update(ctx, callAndEntry("a", "c0")); err != nil {
		t.Fatal(err)
	}
	exec(t, side, refuseEntries)
	err := s.Update(ctx, func(tx store.Tx) error {
		if err := tx.InsertCall(newCall("c1", "a")); err != nil {
			return err
		}
		tx.Append(entry("a", "c1")) // the error is ignored on purpose
		return nil
	})
	exec(t, side, `DROP TRIGGER fail_entries`)
	if err == nil || !strings.Contains(err.Error(), "record write refused by test") {
		t.Errorf("Update that ignored a failed Append returned %v, want SQLite's refusal", err)
	}
	if _, err := s.Call(ctx, "c1"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("the call whose entry was refused exists: %v", err)
	}
	e := entry("a", "c2")
	if err := s.Update(ctx, func(tx store.Tx) error { return tx.Append(e) }); err != nil {
		t.Fatal(err)
	}
	if e.Index != 1 {
		t.Errorf("the next entry got index %d, want 1: the failed append moved the tree", e.Index)
	}
	verifyLog(t, s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	verifyLog(t, open(t, path, Config{}))
}

// hold runs an Update whose function blocks the sequencer until release is
// closed, and waits until n more Updates are queued behind it, so that they
// are committed together as one batch.
func hold(t *testing.T, s *Store, release chan struct{}) <-chan error {
	t.Helper()
	started := make(chan struct{})
	held := make(chan error, 1)
	go func() {
		held <- s.Update(t.Context(), func(tx store.Tx) error {
			close(started)
			<-release
			return nil
		})
	}()
	<-started
	t.Cleanup(func() {
		select {
		case <-release:
		default:
			close(release)
		}
	})
	return held
}

func waitQueued(t *testing.T, s *Store, n int) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); len(s.ops) < n; {
		if time.Now().After(deadline) {
			t.Fatalf("%d Updates queued, want %d", len(s.ops), n)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestBatchFailures shows what a real SQLite failure inside one group commit
// takes down: a failed statement only its own Update, a failed commit the
// whole batch, and in both cases nothing partial.
func TestBatchFailures(t *testing.T) {
	const n = 40 // Updates in the batch; even ones append, odd ones do not
	for _, tc := range []struct {
		name    string
		install []string
		remove  []string
		refusal string
		// whether an Update that appends nothing survives in the batch
		othersCommit bool
	}{
		{
			name:         "statement failure",
			install:      []string{refuseEntries},
			remove:       []string{`DROP TRIGGER fail_entries`},
			refusal:      "record write refused by test",
			othersCommit: true,
		},
		{
			// Each entry insert adds a row violating a deferred foreign key:
			// every statement succeeds, the COMMIT fails.
			name: "commit failure",
			install: []string{
				`CREATE TABLE trap_parent (id INTEGER PRIMARY KEY)`,
				`CREATE TABLE trap (id INTEGER REFERENCES trap_parent(id) DEFERRABLE INITIALLY DEFERRED)`,
				`CREATE TRIGGER trap_entries AFTER INSERT ON entries BEGIN INSERT INTO trap (id) VALUES (NEW.idx); END`,
			},
			remove:       []string{`DROP TRIGGER trap_entries`, `DROP TABLE trap`, `DROP TABLE trap_parent`},
			refusal:      "FOREIGN KEY constraint failed",
			othersCommit: false,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := t.Context()
			path := dbPath(t)
			s := open(t, path, Config{})
			side := sideHandle(t, path)
			insertAgents(t, s, "a", "b")
			for i := range 3 {
				if err := s.Update(ctx, callAndEntry("a", fmt.Sprint("pre-", i))); err != nil {
					t.Fatal(err)
				}
			}
			before := verifyLog(t, s)
			for _, q := range tc.install {
				exec(t, side, q)
			}

			release := make(chan struct{})
			held := hold(t, s, release)
			errs := make([]error, n)
			var wg sync.WaitGroup
			for i := range n {
				wg.Go(func() {
					id := fmt.Sprint("batch-", i)
					if i%2 == 0 {
						errs[i] = s.Update(ctx, callAndEntry("a", id))
					} else {
						errs[i] = s.Update(ctx, func(tx store.Tx) error { return tx.InsertCall(newCall(id, "b")) })
					}
				})
			}
			waitQueued(t, s, n)
			close(release)
			wg.Wait()
			if err := <-held; err != nil {
				t.Fatalf("the holding Update: %v", err)
			}

			for i, err := range errs {
				id := fmt.Sprint("batch-", i)
				switch {
				case i%2 == 0 && err == nil:
					t.Errorf("Update %d appended while the record could not be written, and returned nil", i)
				case i%2 == 0 && !strings.Contains(err.Error(), tc.refusal):
					t.Errorf("Update %d returned %v, want SQLite's %q", i, err, tc.refusal)
				case i%2 == 1 && tc.othersCommit && err != nil:
					t.Errorf("Update %d, which appends nothing, failed with its batch: %v", i, err)
				case i%2 == 1 && !tc.othersCommit && err == nil:
					t.Errorf("Update %d returned nil, but its batch's commit failed", i)
				}
				// Each Update is all or nothing, as its error says.
				_, cerr := s.Call(ctx, id)
				if err == nil && cerr != nil {
					t.Errorf("Update %d returned nil, its call: %v", i, cerr)
				}
				if err != nil && !errors.Is(cerr, store.ErrNotFound) {
					t.Errorf("Update %d failed, but its call exists: %v", i, cerr)
				}
			}
			if es := verifyLog(t, s); len(es) != len(before) {
				t.Errorf("the log has %d entries after the failures, want %d", len(es), len(before))
			}

			// The write connection is not left inside a transaction: with the
			// trap still set, an Update without entries commits.
			if err := s.Update(ctx, func(tx store.Tx) error { return tx.SetMeta("still", "writable") }); err != nil {
				t.Errorf("Update without entries after the failure: %v", err)
			}
			for _, q := range tc.remove {
				exec(t, side, q)
			}
			var wg2 sync.WaitGroup
			for i := range 20 {
				wg2.Go(func() {
					if err := s.Update(ctx, callAndEntry([]string{"a", "b"}[i%2], fmt.Sprint("after-", i))); err != nil {
						t.Errorf("Update after the failure was removed: %v", err)
					}
				})
			}
			wg2.Wait()
			es := verifyLog(t, s)
			if len(es) != len(before)+20 {
				t.Errorf("the log has %d entries, want %d", len(es), len(before)+20)
			}
			for i, e := range es[:len(before)] {
				if !bytes.Equal(e.Data, before[i].Data) {
					t.Errorf("entry %d changed", i)
				}
			}
		})
	}
}

// TestConcurrentReadersWriters runs (under -race in CI) more readers than
// the read pool has connections against writers in small batches.
func TestConcurrentReadersWriters(t *testing.T) {
	ctx := t.Context()
	s := open(t, dbPath(t), Config{MaxBatch: 3})
	const writers, perWriter, readers = 8, 20, 16
	var agents []string
	for w := range writers {
		agents = append(agents, fmt.Sprint("w", w))
	}
	insertAgents(t, s, agents...)

	stop := make(chan struct{})
	var reads atomic.Int64
	var rg, wg sync.WaitGroup
	for r := range readers {
		rg.Go(func() {
			hr := store.HashReader(ctx, s)
			for {
				select {
				case <-stop:
					return
				default:
				}
				n, err := s.TreeSize(ctx)
				if err != nil {
					t.Errorf("reader %d: TreeSize: %v", r, err)
					return
				}
				if n > 0 {
					if _, err := tlog.TreeHash(n, hr); err != nil {
						t.Errorf("reader %d: TreeHash(%d): %v", r, n, err)
						return
					}
					if _, err := tlog.ProveRecord(n, n/2, hr); err != nil {
						t.Errorf("reader %d: ProveRecord(%d, %d): %v", r, n, n/2, err)
						return
					}
				}
				agent := agents[r%writers]
				if _, err := s.AgentEntries(ctx, agent, -1, 100); err != nil {
					t.Errorf("reader %d: AgentEntries: %v", r, err)
					return
				}
				if _, err := s.Calls(ctx, agent, 10); err != nil {
					t.Errorf("reader %d: Calls: %v", r, err)
					return
				}
				if _, err := s.Agents(ctx); err != nil {
					t.Errorf("reader %d: Agents: %v", r, err)
					return
				}
				reads.Add(1)
			}
		})
	}
	for w := range writers {
		wg.Go(func() {
			for i := range perWriter {
				err := s.Update(ctx, func(tx store.Tx) error {
					if err := callAndEntry(agents[w], fmt.Sprintf("%s-%d", agents[w], i))(tx); err != nil {
						return err
					}
					if i%5 == 4 {
						return errors.New("fails on purpose")
					}
					_, err := tx.OpenCalls(agents[w])
					return err
				})
				if (err != nil) != (i%5 == 4) {
					t.Errorf("writer %d, Update %d: %v", w, i, err)
				}
			}
		})
	}
	wg.Wait()
	close(stop)
	rg.Wait()
	if es := verifyLog(t, s); len(es) != writers*perWriter*4/5 {
		t.Errorf("the log has %d entries, want %d", len(es), writers*perWriter*4/5)
	}
	t.Logf("%d read rounds during the writes", reads.Load())
}

// BenchmarkAppend measures governed-call throughput: each Update inserts a
// call and appends its entry, as the runtime does, from many goroutines.
func BenchmarkAppend(b *testing.B) {
	s, err := Open(b.Context(), Config{Path: filepath.Join(b.TempDir(), "arx.db")})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	err = s.Update(b.Context(), func(tx store.Tx) error {
		return tx.InsertAgent(&store.Agent{ID: "a", Name: "a", Owner: "o", Status: store.AgentActive,
			Manifest: []byte("m"), ManifestHash: "h", CreatedAt: time.Now()})
	})
	if err != nil {
		b.Fatal(err)
	}
	var seq atomic.Int64
	b.SetParallelism(16)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := s.Update(b.Context(), callAndEntry("a", fmt.Sprint("call-", seq.Add(1)))); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "entries/s")
}
