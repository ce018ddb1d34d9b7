package storetest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/arxsec/arx/internal/store"
	"github.com/arxsec/arx/record"
	"golang.org/x/mod/sumdb/tlog"
)

// writeEverything makes one change of every kind, for an Update that then
// fails: none of them may survive. x names what it creates; outboxID is an
// undone outbox item, failureID a recorded failure.
func writeEverything(tx store.Tx, x string, outboxID, failureID int64) error {
	T := at(time.Hour)
	for _, w := range []func() error{
		// What the record does not hold.
		func() error { return hireIn(tx, newAgent(x, t0)) },
		func() error {
			return tx.InsertToken(&store.Token{ID: "tok-" + x, Hash: []byte("hash-" + x), Kind: store.TokenAgent, AgentID: x, CreatedAt: t0})
		},
		func() error { return tx.RevokeToken("a", "tok-a", t0) },
		func() error { return tx.SetMeta("k", "v-"+x) },
		func() error {
			return tx.PutCheckpoint(&store.Checkpoint{Size: 1000, Signed: []byte("cp"), CreatedAt: t0})
		},
		func() error {
			return tx.InsertUser(&store.User{ID: "u-" + x, Email: x + "@example.com", Role: store.RoleManager, CreatedAt: t0})
		},
		func() error {
			u, err := tx.User("u0")
			if err != nil {
				return err
			}
			u.DisabledAt = &t0
			return tx.UpdateUser(u)
		},
		func() error {
			return tx.InsertSetupToken(&store.SetupToken{Hash: []byte("setup-" + x), UserID: "u-" + x, ExpiresAt: t0.Add(time.Hour)})
		},
		func() error { _, err := tx.UseSetupToken([]byte("setup-0"), t0); return err },
		func() error {
			return tx.InsertSession(&store.Session{Hash: []byte("sess-" + x), UserID: "u0", CSRF: x, CreatedAt: t0, ExpiresAt: t0})
		},
		func() error { return tx.DeleteSession([]byte("sess-0")) },
		func() error { return tx.DeleteUserSessions("u0") },
		func() error { return tx.Enqueue("webhook", []byte(x), t0) },
		func() error { return tx.FinishOutbox(outboxID, t0, "", t0) },
		func() error { _, err := tx.RevokeAgentTokens("a", t0); return err },
		func() error { _, err := tx.AddFailure(failureKey("x"), t0); return err },
		func() error { return tx.DeleteFailure(failureID) },
		func() error { return tx.PruneFailures(t0.Add(time.Hour)) },
		// The state, through the entries that record each change.
		func() error { return tx.Append(issue("a", "call-"+x, T)) },         // a call issued
		func() error { return appendAll(request("b", "req-"+x, T)...)(tx) }, // a call requested
		func() error { return tx.Append(complete("a", "call-0", T)) },       // a call completed
		func() error { return appendAll(grant("a", "call-p", T)...)(tx) },   // an approval granted
		func() error { // an approval denied
			return tx.Append(record.ApprovalDenied(ref("a", "call-d"), "user:dana@example.com", T, "dana@example.com", "no"))
		},
		func() error {
			return tx.Append(record.CredentialsRevoked("a", "admin:root", T, "r", []string{"call-r"}))
		},
		func() error { return tx.Append(record.CallExpired(ref("a", "call-e"), T, T)) },
		func() error {
			return tx.Append(record.AgentTerminated("a", "admin:root", T, record.Termination{Reason: "r"}))
		},
		func() error { return tx.Append(entry("b", record.TypeGatewayRequest, "call-"+x, nil)) },
	} {
		if err := w(); err != nil {
			return err
		}
	}
	return nil
}

func failureKey(s string) []byte { h := sha256.Sum256([]byte(s)); return h[:] }

// testAtomicity: an Update that fails leaves nothing of what it did: no
// entry, no state its entries would have changed (a call issued, requested,
// completed, revoked or expired, an approval decided, an agent hired or
// terminated, a count, an idempotency key), no cold write; whether its
// function returned an error, panicked, or had an Append fail and returned
// nil. The store goes on from where it was.
func testAtomicity(t *testing.T, s store.Store) {
	ctx := t.Context()
	hire(t, s, "a", "b")
	tokA := &store.Token{ID: "tok-a", Hash: []byte("hash-a"), Kind: store.TokenAgent, AgentID: "a", CreatedAt: t0}
	var failureID int64
	update(t, s, func(tx store.Tx) error {
		if err := tx.InsertToken(tokA); err != nil {
			return err
		}
		if err := tx.SetMeta("k", "v0"); err != nil {
			return err
		}
		if err := tx.PutCheckpoint(&store.Checkpoint{Size: 1, Signed: []byte("cp1"), CreatedAt: t0}); err != nil {
			return err
		}
		if err := tx.InsertUser(&store.User{ID: "u0", Email: "u0@example.com", Role: store.RoleManager, CreatedAt: t0}); err != nil {
			return err
		}
		if err := tx.InsertSetupToken(&store.SetupToken{Hash: []byte("setup-0"), UserID: "u0", ExpiresAt: t0.Add(time.Hour)}); err != nil {
			return err
		}
		if err := tx.InsertSession(&store.Session{Hash: []byte("sess-0"), UserID: "u0", CSRF: "c", CreatedAt: t0, ExpiresAt: t0}); err != nil {
			return err
		}
		if err := tx.Enqueue("webhook", []byte("item-0"), t0); err != nil {
			return err
		}
		var err error
		if failureID, err = tx.AddFailure(failureKey("f"), t0); err != nil {
			return err
		}
		return appendAll(cat(one(issue("a", "call-0", at(0))), request("a", "call-p", at(0)), request("a", "call-d", at(0)),
			one(issue("a", "call-r", at(0)), issue("a", "call-e", at(0))))...)(tx)
	})
	due, err := s.DueOutbox(ctx, t0, 10)
	if err != nil || len(due) != 1 {
		t.Fatalf("DueOutbox = %+v, %v; want one item", due, err)
	}
	outboxID := due[0].ID

	cases := []struct {
		name string
		fail func(tx store.Tx) error
		is   error // what Update's error must wrap; nil for any error
	}{
		{"error", func(store.Tx) error { return errBoom }, errBoom},
		{"wrapped error", func(store.Tx) error { return fmt.Errorf("storetest: %w", errBoom) }, errBoom},
		{"panic", func(store.Tx) error { panic("storetest: panic on purpose") }, nil},
		{"conflict", func(tx store.Tx) error {
			return tx.InsertToken(&store.Token{ID: "tok-a", Hash: []byte("another hash"), Kind: store.TokenAdmin, CreatedAt: t0})
		}, store.ErrConflict},
		{"bad entry", func(tx store.Tx) error { return tx.Append(&record.Entry{Agent: "a"}) }, nil},
		{"unknown call", func(tx store.Tx) error { return tx.Append(complete("a", "nope", at(time.Hour))) }, nil},
		{"unknown call, its error ignored", func(tx store.Tx) error {
			tx.Append(complete("a", "nope", at(time.Hour)))
			return nil
		}, nil},
		{"unknown agent, its error ignored", func(tx store.Tx) error {
			tx.Append(record.AgentTerminated("nobody", "admin:root", at(time.Hour), record.Termination{Reason: "r"}))
			return nil
		}, nil},
	}
	sc := scope{agents: []string{"a", "b"}, calls: []string{"call-0", "call-p", "call-d", "call-r", "call-e"},
		keys: [][2]string{{"a", key("call-0")}, {"a", key("call-p")}}, tokens: [][]byte{tokA.Hash}, users: []string{"u0"},
		sessions: [][]byte{[]byte("sess-0")}, meta: []string{"k"}, failures: [][]byte{failureKey("f"), failureKey("x")}, at: at(time.Hour)}
	for i := range cases {
		x := fmt.Sprint("x", i)
		sc.agents = append(sc.agents, x)
		sc.calls = append(sc.calls, "call-"+x, "req-"+x)
		sc.keys = append(sc.keys, [2]string{"a", key("call-" + x)}, [2]string{"b", key("req-" + x)})
		sc.tokens = append(sc.tokens, []byte("hash-"+x))
		sc.users = append(sc.users, "u-"+x)
		sc.sessions = append(sc.sessions, []byte("sess-"+x))
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := look(t, s, sc)
			size := treeSize(t, s)
			lastA, lastB := lastLeaf(t, s, "a"), lastLeaf(t, s, "b")
			x := fmt.Sprint("x", i)
			var setup error
			err := s.Update(ctx, func(tx store.Tx) error {
				if setup = writeEverything(tx, x, outboxID, failureID); setup != nil {
					return setup
				}
				return tc.fail(tx)
			})
			if setup != nil {
				t.Fatalf("a write before the failure failed: %v", setup)
			}
			if err == nil {
				t.Fatal("Update returned nil for a function that failed")
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("Update returned %v, want an error wrapping %v", err, tc.is)
			}

			// Nothing the function did survives.
			sameView(t, "after the failed Update", look(t, s, sc), before)
			// Past any lease a shared store may have taken on the item.
			if due, err := s.DueOutbox(ctx, t0.Add(time.Duration(i+1)*2*store.OutboxLease), 10); err != nil ||
				len(due) != 1 || due[0].ID != outboxID || due[0].Attempts != 0 || due[0].DoneAt != nil {
				t.Errorf("outbox after the failed Update = %+v, %v; want the one undone item", due, err)
			}
			// Probes that write through a transaction, then undo themselves.
			probe(t, s, func(tx store.Tx) error {
				_, err := tx.UseSetupToken([]byte("setup-"+x), t0)
				mustNotFound(t, "setup token inserted by the failed Update", err)
				if _, err := tx.UseSetupToken([]byte("setup-0"), t0); err != nil {
					t.Errorf("setup token used by the failed Update: %v", err)
				}
				return nil
			})

			// The store goes on: the next entries take the next indexes and
			// name the last committed entries, not the undone ones.
			ea := issue("a", "after-"+x, at(2*time.Hour))
			eb := entry("b", record.TypeGatewayRequest, "after-"+x, nil)
			ex := entry(x, record.TypeGatewayRequest, "", nil)
			update(t, s, appendAll(ea, eb, ex))
			for _, c := range []struct {
				e     *record.Entry
				index int64
				prev  string
			}{{ea, size, lastA}, {eb, size + 1, lastB}, {ex, size + 2, ""}} {
				if c.e.Index != c.index || c.e.Prev != c.prev {
					t.Errorf("next entry of %q: index %d, prev %q; want %d, %q", c.e.Agent, c.e.Index, c.e.Prev, c.index, c.prev)
				}
			}
		})
	}
	verify(t, s)
}

// testGroupCommit: concurrent Updates, some failing, are committed
// together; each committed one's entries are at the indexes Append gave
// them, its calls exist and count; no failed one left anything.
func testGroupCommit(t *testing.T, s store.Store) {
	ctx := t.Context()
	const ops = 200
	agents := []string{"g0", "g1", "g2", "g3", "g4"}
	insertAgents(t, s, agents...)

	// Every 7th Update fails after its appends, half of those by
	// panicking; every other one appends two entries.
	type result struct {
		err     error
		entries []*record.Entry
	}
	results := make([]result, ops)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range ops {
		wg.Go(func() {
			<-start
			r := &results[i]
			agent := agents[i%len(agents)]
			r.err = s.Update(ctx, func(tx store.Tx) error {
				r.entries = nil
				id := fmt.Sprintf("gc-%03d", i)
				es := []*record.Entry{issue(agent, id, at(time.Duration(i)*time.Millisecond))}
				if i%2 == 1 {
					es = append(es, entry(agent, record.TypeGatewayRequest, id, map[string]any{"op": i}))
				}
				for _, e := range es {
					if err := tx.Append(e); err != nil {
						return err
					}
					r.entries = append(r.entries, e)
				}
				switch {
				case i%14 == 0:
					panic("storetest: panic on purpose")
				case i%7 == 0:
					return errBoom
				}
				return nil
			})
		})
	}
	close(start)
	wg.Wait()

	es := verify(t, s)
	claimed := make([]string, len(es))
	want := 0
	open := map[string]int{}
	for i, r := range results {
		id := fmt.Sprintf("gc-%03d", i)
		if i%7 == 0 {
			if r.err == nil {
				t.Errorf("Update %d failed on purpose but returned nil", i)
			} else if i%14 != 0 && !errors.Is(r.err, errBoom) {
				t.Errorf("Update %d returned %v, want %v", i, r.err, errBoom)
			}
			_, err := s.Call(ctx, id)
			mustNotFound(t, "call of a failed Update", err)
			continue
		}
		if r.err != nil {
			t.Errorf("Update %d: %v", i, r.err)
			continue
		}
		if _, err := s.Call(ctx, id); err != nil {
			t.Errorf("call of committed Update %d: %v", i, err)
		}
		open[agents[i%len(agents)]]++
		// Each committed entry sits at the index Append gave it.
		for _, e := range r.entries {
			want++
			if e.Index < 0 || e.Index >= int64(len(es)) {
				t.Errorf("Update %d got index %d, the log has %d entries", i, e.Index, len(es))
				continue
			}
			if claimed[e.Index] != "" {
				t.Errorf("index %d was given to %s and %s", e.Index, claimed[e.Index], id)
			}
			claimed[e.Index] = id
			body, err := e.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			if got := es[e.Index]; !bytes.Equal(got.Data, body) || got.Call != id {
				t.Errorf("entry %d is\n\t%s\nUpdate %d appended\n\t%s", e.Index, got.Data, i, body)
			}
		}
	}
	if len(es) != want {
		t.Errorf("the log has %d entries, the committed Updates appended %d", len(es), want)
	}
	probe(t, s, func(tx store.Tx) error {
		for i := range ops {
			agent, id := agents[i%len(agents)], fmt.Sprintf("gc-%03d", i)
			_, err := tx.CallByIdempotencyKey(agent, key(id))
			if i%7 == 0 {
				mustNotFound(t, "the idempotency key of a failed Update", err)
			} else if err != nil {
				t.Errorf("the idempotency key of committed Update %d: %v", i, err)
			}
		}
		for _, agent := range agents {
			if n := tx.CallCounts(agent).Open; n != open[agent] {
				t.Errorf("CallCounts(%s).Open = %d, the committed Updates made %d calls", agent, n, open[agent])
			}
		}
		return nil
	})
}

// testSerializable: concurrent Updates see each other's appends as if run
// one at a time: the idempotency check, the concurrency budget and the
// daily budget of the runtime rely on it.
func testSerializable(t *testing.T, s store.Store) {
	ctx := t.Context()
	hire(t, s, "a", "b", "c")

	t.Run("idempotency", func(t *testing.T) {
		const n = 20
		ids := make([]string, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				err := s.Update(ctx, func(tx store.Tx) error {
					c, err := tx.CallByIdempotencyKey("a", "same-key")
					switch {
					case err == nil:
						ids[i] = c.ID
						return nil
					case !errors.Is(err, store.ErrNotFound):
						return err
					}
					ids[i] = fmt.Sprint("idem-", i)
					return tx.Append(record.CredentialIssued(ref("a", ids[i]), "agent:a", at(0),
						record.Ask{DeclaredRisk: "low", IdempotencyKey: "same-key"}, at(ttl), ""))
				})
				if err != nil {
					t.Errorf("Update %d: %v", i, err)
				}
			})
		}
		wg.Wait()
		for i := range ids {
			if ids[i] != ids[0] {
				t.Fatalf("concurrent Updates made calls %s and %s for one idempotency key", ids[0], ids[i])
			}
		}
		if cs, err := s.Calls(ctx, "a", 100); err != nil || len(cs) != 1 {
			t.Errorf("Calls(a) = %q, %v; want 1", callIDs(cs), err)
		}
	})

	t.Run("open calls", func(t *testing.T) {
		const n, budget = 30, 5
		errFull := errors.New("storetest: budget spent")
		var ok, full atomic.Int32
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				err := s.Update(ctx, func(tx store.Tx) error {
					if tx.CallCounts("b").Open >= budget {
						return errFull
					}
					return appendAll(request("b", fmt.Sprint("budget-", i), at(time.Duration(i)*time.Millisecond))...)(tx)
				})
				switch {
				case err == nil:
					ok.Add(1)
				case errors.Is(err, errFull):
					full.Add(1)
				default:
					t.Errorf("Update %d: %v", i, err)
				}
			})
		}
		wg.Wait()
		if ok.Load() != budget || full.Load() != n-budget {
			t.Errorf("%d Updates got a slot and %d were refused, want %d and %d", ok.Load(), full.Load(), budget, n-budget)
		}
		if cs, err := s.Calls(ctx, "b", 100); err != nil || len(cs) != budget {
			t.Errorf("Calls(b) = %d calls, %v; want %d", len(cs), err, budget)
		}
		if as, err := s.Approvals(ctx, store.ApprovalPending, 100); err != nil || len(as) != budget {
			t.Errorf("Approvals(pending) = %d approvals, %v; want %d", len(as), err, budget)
		}
	})

	t.Run("calls per day", func(t *testing.T) {
		const n, budget = 30, 7
		errFull := errors.New("storetest: budget spent")
		var ok, full atomic.Int32
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				err := s.Update(ctx, func(tx store.Tx) error {
					if c := tx.CallCounts("c"); c.Since(th) >= budget {
						return errFull
					}
					return tx.Append(issue("c", fmt.Sprint("day-", i), at(time.Duration(i)*time.Millisecond)))
				})
				switch {
				case err == nil:
					ok.Add(1)
				case errors.Is(err, errFull):
					full.Add(1)
				default:
					t.Errorf("Update %d: %v", i, err)
				}
			})
		}
		wg.Wait()
		if ok.Load() != budget || full.Load() != n-budget {
			t.Errorf("%d Updates got a call and %d were refused, want %d and %d", ok.Load(), full.Load(), budget, n-budget)
		}
		if cs, err := s.Calls(ctx, "c", 100); err != nil || len(cs) != budget {
			t.Errorf("Calls(c) = %d calls, %v; want %d", len(cs), err, budget)
		}
	})
}

func testReadsDuringWrites(t *testing.T, s store.Store) {
	ctx := t.Context()
	const writers, perWriter, readers = 4, 20, 4
	agents := []string{"w0", "w1", "w2", "w3"}
	insertAgents(t, s, agents...)

	type sample struct {
		size int64
		root tlog.Hash
	}
	samples := make([][]sample, readers)
	stop := make(chan struct{})
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
					t.Errorf("reader: TreeSize: %v", err)
					return
				}
				if n == 0 {
					continue
				}
				root, err := tlog.TreeHash(n, hr)
				if err != nil {
					t.Errorf("reader: TreeHash(%d) after TreeSize %d: %v", n, n, err)
					return
				}
				es, err := s.Entries(ctx, n-1, 1)
				if err != nil || len(es) != 1 || es[0].Index != n-1 {
					t.Errorf("reader: Entries(%d, 1) after TreeSize %d = %v, %v", n-1, n, es, err)
					return
				}
				samples[r] = append(samples[r], sample{n, root})
			}
		})
	}
	for w := range writers {
		wg.Go(func() {
			for i := range perWriter {
				id := fmt.Sprintf("w%d-%02d", w, i)
				err := s.Update(ctx, appendAll(issue(agents[w], id, at(time.Duration(i)*time.Second))))
				if err != nil {
					t.Errorf("writer: Update: %v", err)
					return
				}
				// What a returned Update wrote is visible at once, lists
				// included.
				if _, err := s.Call(ctx, id); err != nil {
					t.Errorf("writer: Call(%s) after its Update returned: %v", id, err)
				}
				if i%5 == 4 {
					cs, err := s.Calls(ctx, agents[w], 100)
					if err != nil || len(cs) != i+1 || cs[0].ID != id {
						t.Errorf("writer: Calls(%s) after %s returned = %q, %v", agents[w], id, callIDs(cs), err)
					}
				}
			}
		})
	}
	wg.Wait()
	close(stop)
	rg.Wait()

	es := verify(t, s)
	if len(es) != writers*perWriter {
		t.Fatalf("the log has %d entries, want %d", len(es), writers*perWriter)
	}
	// One writer's Updates are in the log in the order they returned.
	next := map[string]int{}
	for _, e := range es {
		if want := fmt.Sprintf("%s-%02d", e.Agent, next[e.Agent]); e.Call != want {
			t.Errorf("entry %d is for %s, want %s", e.Index, e.Call, want)
		}
		next[e.Agent]++
	}
	// Roots seen while the log grew are still its roots at those sizes.
	hr := store.HashReader(ctx, s)
	for _, ss := range samples {
		for _, x := range ss {
			if th, err := tlog.TreeHash(x.size, hr); err != nil || th != x.root {
				t.Errorf("a reader saw root %v at size %d, now it is %v, %v", x.root, x.size, th, err)
			}
		}
	}
}

func testCancelledContext(t *testing.T, s store.Store) {
	insertAgents(t, s, "a")
	for _, tc := range []struct {
		name string
		ctx  func() (context.Context, context.CancelFunc)
	}{
		{"cancelled", func() (context.Context, context.CancelFunc) {
			ctx, cancel := context.WithCancel(t.Context())
			cancel()
			return ctx, cancel
		}},
		{"deadline passed", func() (context.Context, context.CancelFunc) {
			return context.WithDeadline(t.Context(), time.Now().Add(-time.Second))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for i := range 20 {
				ctx, cancel := tc.ctx()
				id := fmt.Sprintf("%s-%d", tc.name, i)
				ran := false
				err := s.Update(ctx, func(tx store.Tx) error {
					ran = true
					return tx.Append(issue("a", id, at(0)))
				})
				cancel()
				if !errors.Is(err, ctx.Err()) {
					t.Fatalf("Update with a done context returned %v, want %v", err, ctx.Err())
				}
				if n := treeSize(t, s); n != 0 {
					t.Fatalf("Update with a done context appended: TreeSize %d", n)
				}
				if ran {
					t.Errorf("Update with a done context ran its function")
				}
				_, err = s.Call(t.Context(), id)
				mustNotFound(t, "call of an Update with a done context", err)
				probe(t, s, func(tx store.Tx) error {
					_, err := tx.CallByIdempotencyKey("a", key(id))
					mustNotFound(t, "idempotency key of an Update with a done context", err)
					return nil
				})
			}
		})
	}
	update(t, s, appendAll(issue("a", "after", at(0))))
	verify(t, s)
}

func testClose(t *testing.T, s store.Store) {
	ctx := t.Context()
	insertAgents(t, s, "a")

	// Updates racing Close each end, committed or refused with ErrClosed.
	const racers = 16
	var committed atomic.Int64
	var wg sync.WaitGroup
	for w := range racers {
		wg.Go(func() {
			for i := 0; ; i++ {
				err := s.Update(ctx, appendAll(entry("a", record.TypeGatewayRequest, fmt.Sprintf("close-%d-%d", w, i), nil)))
				if err != nil {
					if !errors.Is(err, store.ErrClosed) {
						t.Errorf("Update racing Close returned %v, want nil or store.ErrClosed", err)
					}
					return
				}
				committed.Add(1)
			}
		})
	}
	for deadline := time.Now().Add(10 * time.Second); committed.Load() < racers && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	within(t, 10*time.Second, "Close with Updates in flight", func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	within(t, 10*time.Second, "Updates racing Close", wg.Wait)

	for i := range 100 {
		within(t, 5*time.Second, "Update after Close", func() {
			ran := false
			err := s.Update(ctx, func(tx store.Tx) error { ran = true; return nil })
			if !errors.Is(err, store.ErrClosed) {
				t.Errorf("Update %d after Close returned %v, want store.ErrClosed", i, err)
			}
			if ran {
				t.Errorf("Update %d after Close ran its function", i)
			}
		})
	}
	within(t, 5*time.Second, "a second Close", func() {
		defer func() {
			if r := recover(); r != nil {
				t.Errorf("a second Close panicked: %v", r)
			}
		}()
		s.Close()
	})
}
