package postgres

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/arxsec/arx/internal/store"
	"github.com/arxsec/arx/internal/store/postgres/pgtest"
	"github.com/arxsec/arx/internal/store/storetest"
	"github.com/arxsec/arx/record"
	"github.com/jackc/pgx/v5"
	"golang.org/x/mod/sumdb/tlog"
)

func TestStore(t *testing.T) {
	pgtest.URL(t) // skip (or fail in CI) once, not in every subtest
	storetest.Run(t, func(t *testing.T) store.Store { return open(t, pgtest.Database(t)) })
}

// TestReopen: a replica that restarts loads the state from the tables.
func TestReopen(t *testing.T) {
	pgtest.URL(t)
	urls := map[store.Store]string{}
	storetest.RunReopen(t, func(t *testing.T) store.Store {
		url := pgtest.Database(t)
		s := open(t, url)
		urls[s] = url
		return s
	}, func(t *testing.T, s store.Store) store.Store {
		s.Close()
		r := open(t, urls[s])
		urls[r] = urls[s]
		return r
	})
}

// open opens a store (a replica) on the database and closes it when the
// test ends.
func open(t testing.TB, url string) *Store {
	t.Helper()
	s, err := Open(t.Context(), Config{URL: url, MaxConns: 8})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func side(t *testing.T, url string) *pgx.Conn {
	t.Helper()
	c, err := pgx.Connect(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

// entry is an entry the state does not fold (a gateway request).
func entry(agent, call string) *record.Entry {
	return &record.Entry{Agent: agent, Type: record.TypeGatewayRequest, Call: call, Connector: "crm",
		Action: "account.read", Risk: "low", Actor: "agent:" + agent}
}

func insertAgents(t testing.TB, s store.Store, ids ...string) {
	t.Helper()
	err := s.Update(t.Context(), func(tx store.Tx) error {
		for _, id := range ids {
			now := time.Now()
			if err := tx.InsertAgent(&store.Agent{ID: id, Name: id, Owner: "o", Status: store.AgentActive,
				Manifest: []byte("m"), ManifestHash: "h", CreatedAt: now}); err != nil {
				return err
			}
			if err := tx.Append(record.AgentHired(id, "admin:test", now, record.Hire{Name: id})); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("insert agents: %v", err)
	}
}

func ref(agent, id string) record.CallRef {
	return record.CallRef{Agent: agent, Call: id, Connector: "crm", Action: "account.read", Risk: "low"}
}

// callAndEntry is what the runtime does for a governed call: the entry
// that records its credential, which makes the call.
func callAndEntry(agent, id string) func(store.Tx) error {
	return func(tx store.Tx) error {
		now := time.Now()
		return tx.Append(record.CredentialIssued(ref(agent, id), "agent:"+agent, now,
			record.Ask{DeclaredRisk: "low", IdempotencyKey: id}, now.Add(time.Minute), ""))
	}
}

// verifyLog checks the whole log as an auditor would: canonical entries
// at their indexes, every agent's chain, the stored hashes' root.
func verifyLog(t *testing.T, s store.Store) []store.Entry {
	t.Helper()
	ctx := t.Context()
	var es []store.Entry
	for {
		page, err := s.Entries(ctx, int64(len(es)), 1000)
		if err != nil {
			t.Fatalf("Entries: %v", err)
		}
		es = append(es, page...)
		if len(page) < 1000 {
			break
		}
	}
	var v record.Verifier
	for i, e := range es {
		if e.Index != int64(i) {
			t.Fatalf("entry at position %d has index %d", i, e.Index)
		}
		v.Add(e.Data)
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

// TestReplicas runs three stores on one database, as three arx serve
// replicas would, appending for the same agents at once: one log, no gap,
// no duplicate, every chain unbroken, and serialisable Updates across them.
func TestReplicas(t *testing.T) {
	url := pgtest.Database(t)
	rs := []*Store{open(t, url), open(t, url), open(t, url)}
	insertAgents(t, rs[0], "a", "b", "c", "budget")
	const writers, each = 12, 25
	var wg sync.WaitGroup
	var budgetOK atomic.Int32
	errFull := errors.New("budget spent")
	for w := range writers {
		wg.Go(func() {
			r := rs[w%len(rs)]
			for i := range each {
				agent := string(rune('a' + (w+i)%3))
				id := fmt.Sprintf("w%d-%d", w, i)
				if err := r.Update(t.Context(), callAndEntry(agent, id)); err != nil {
					t.Errorf("replica %d: Update: %v", w%len(rs), err)
					return
				}
				// The concurrency budget holds across replicas too.
				if i == 0 {
					err := r.Update(t.Context(), func(tx store.Tx) error {
						if tx.CallCounts("budget").Open >= 5 {
							return errFull
						}
						now, c := time.Now(), ref("budget", fmt.Sprint("budget-", w))
						if err := tx.Append(record.CallRequested(c, "agent:budget", now, record.Ask{DeclaredRisk: "low", IdempotencyKey: c.Call})); err != nil {
							return err
						}
						return tx.Append(record.ApprovalRequested(c, "agent:budget", now, []string{"a@example.com"}, nil, now.Add(time.Hour)))
					})
					switch {
					case err == nil:
						budgetOK.Add(1)
					case !errors.Is(err, errFull):
						t.Errorf("budget Update: %v", err)
					}
				}
			}
		})
	}
	wg.Wait()
	if n := budgetOK.Load(); n != 5 {
		t.Errorf("%d Updates across replicas took one of 5 slots", n)
	}
	es := verifyLog(t, rs[1])
	if want := 4 + writers*each + 2*5; len(es) != want {
		t.Errorf("the log has %d entries, want %d", len(es), want)
	}
	// Each replica goes on from what the others appended.
	for i, r := range rs {
		e := entry("a", fmt.Sprint("last-", i))
		if err := r.Update(t.Context(), func(tx store.Tx) error { return tx.Append(e) }); err != nil {
			t.Fatalf("replica %d: %v", i, err)
		}
		if e.Index != int64(len(es)+i) {
			t.Errorf("replica %d appended at %d, want %d", i, e.Index, len(es)+i)
		}
	}
	verifyLog(t, rs[2])
}

// TestTakeover: a replica whose connection dies while it holds the log
// lock mid-batch loses the batch, and another replica appends at once.
func TestTakeover(t *testing.T) {
	url := pgtest.Database(t)
	a, b := open(t, url), open(t, url)
	insertAgents(t, a, "x")
	if err := a.Update(t.Context(), callAndEntry("x", "before")); err != nil {
		t.Fatal(err)
	}
	inside := make(chan int32)
	release := make(chan struct{})
	held := make(chan error, 1)
	go func() {
		held <- a.Update(t.Context(), func(x store.Tx) error {
			if err := callAndEntry("x", "doomed")(x); err != nil {
				return err
			}
			// The session that holds the log lock is this batch's.
			var pid int32
			if err := side(t, url).QueryRow(t.Context(), `SELECT pid FROM pg_locks
				WHERE locktype = 'advisory' AND granted AND classid = 0 AND objid = $1
				AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`, LogLockKey).Scan(&pid); err != nil {
				return err
			}
			inside <- pid
			<-release
			return nil
		})
	}()
	pid := <-inside
	// b waits for the lock meanwhile.
	bdone := make(chan error, 1)
	go func() { bdone <- b.Update(t.Context(), callAndEntry("x", "b-1")) }()
	select {
	case err := <-bdone:
		t.Fatalf("b appended while a held the log lock: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	// The connection dies, as with kill -9 of the replica's process.
	start := time.Now()
	if _, err := side(t, url).Exec(t.Context(), `SELECT pg_terminate_backend($1)`, pid); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-bdone:
		if err != nil {
			t.Fatalf("b: %v", err)
		}
		t.Logf("b appended %v after a's connection died", time.Since(start).Round(time.Millisecond))
	case <-time.After(5 * time.Second):
		t.Fatal("b did not take over within 5s")
	}
	close(release)
	if err := <-held; err == nil {
		t.Fatal("a's Update returned nil, but its connection died before COMMIT")
	}
	// a goes on, after b's append, with the right index and chain.
	e := entry("x", "a-2")
	if err := a.Update(t.Context(), func(tx store.Tx) error { return tx.Append(e) }); err != nil {
		t.Fatalf("a after losing its connection: %v", err)
	}
	es := verifyLog(t, b)
	if len(es) != 4 || e.Index != 3 {
		t.Fatalf("log has %d entries and a's last is at %d; want 4 and 3", len(es), e.Index)
	}
	for _, e := range es {
		if e.Call == "doomed" {
			t.Errorf("the lost batch's entry is in the log at %d", e.Index)
		}
	}
}

// TestLogIsAppendOnly: the database itself refuses a gap, a duplicate
// index, a change and a removal, whoever writes.
func TestLogIsAppendOnly(t *testing.T) {
	url := pgtest.Database(t)
	s := open(t, url)
	insertAgents(t, s, "x")
	for i := range 3 {
		if err := s.Update(t.Context(), callAndEntry("x", fmt.Sprint("c", i))); err != nil {
			t.Fatal(err)
		}
	}
	c := side(t, url)
	for _, q := range []string{
		`INSERT INTO entries (idx, agent, type, call, body, hashes) VALUES (5, 'x', 't', '', '\x00', '\x00')`,
		`INSERT INTO entries (idx, agent, type, call, body, hashes) VALUES (2, 'x', 't', '', '\x00', '\x00')`,
		`UPDATE entries SET body = '\x00' WHERE idx = 1`,
		`DELETE FROM entries WHERE idx = 2`,
		`TRUNCATE entries`,
	} {
		if _, err := c.Exec(t.Context(), q); err == nil {
			t.Errorf("%s: the database accepted it", q)
		}
	}
	verifyLog(t, s)
}

// TestForeignAppend: entries another replica appended between two of this
// replica's batches are seen: the next entry continues the index and the
// chain.
func TestForeignAppend(t *testing.T) {
	url := pgtest.Database(t)
	a, b := open(t, url), open(t, url)
	insertAgents(t, a, "x", "y")
	for i := range 5 {
		r := []*Store{a, b}[i%2]
		for _, agent := range []string{"x", "y"} {
			if err := r.Update(t.Context(), callAndEntry(agent, fmt.Sprint(agent, i))); err != nil {
				t.Fatal(err)
			}
		}
	}
	if es := verifyLog(t, a); len(es) != 12 {
		t.Fatalf("%d entries, want 12", len(es))
	}
	// Further behind than a batch catches up entry by entry: a rebuilds
	// its frontier from the stored hashes and forgets its chain heads.
	if err := b.Update(t.Context(), func(tx store.Tx) error {
		for i := range catchUpMax + 10 {
			if err := tx.Append(entry([]string{"x", "y", "z"}[i%3], fmt.Sprint("bulk-", i))); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for _, agent := range []string{"x", "y", "z"} {
		if err := a.Update(t.Context(), func(tx store.Tx) error { return tx.Append(entry(agent, "after-bulk")) }); err != nil {
			t.Fatal(err)
		}
	}
	if es := verifyLog(t, b); len(es) != 12+catchUpMax+10+3 {
		t.Fatalf("%d entries", len(es))
	}
}

// TestForeignUsage: what calls cost, charged by one replica's entries, is
// in every replica's counts: a budget cap holds across replicas.
func TestForeignUsage(t *testing.T) {
	url := pgtest.Database(t)
	a, b := open(t, url), open(t, url)
	insertAgents(t, a, "x")
	spent := func(s *Store) (micros, tokens int64) {
		if err := s.Update(t.Context(), func(tx store.Tx) error {
			c := tx.CallCounts("x")
			micros, tokens = c.Spent(time.Now().Add(-time.Hour).Truncate(15 * time.Minute))
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return micros, tokens
	}
	for i, s := range []*Store{a, b, a} {
		id := fmt.Sprint("u", i)
		if err := s.Update(t.Context(), func(tx store.Tx) error {
			now := time.Now()
			if err := tx.Append(record.CredentialIssued(ref("x", id), "agent:x", now,
				record.Ask{DeclaredRisk: "low", IdempotencyKey: id, Cost: "0.40 USD"}, now.Add(time.Minute), "")); err != nil {
				return err
			}
			return tx.Append(record.CallCompleted(ref("x", id), "agent:x", now, record.Outcome{Outcome: "success", Tokens: 100, Amount: "0.10 USD"}))
		}); err != nil {
			t.Fatal(err)
		}
		for _, r := range []*Store{a, b} {
			if m, tk := spent(r); m != int64(i+1)*400_000 || tk != int64(i+1)*100 {
				t.Fatalf("after %d calls: %d, %d; want %d, %d", i+1, m, tk, (i+1)*400_000, (i+1)*100)
			}
		}
	}
	// A replica opened later reads them from the tables and the log.
	if m, tk := spent(open(t, url)); m != 1_200_000 || tk != 300 {
		t.Fatalf("a new replica: %d, %d", m, tk)
	}
}

// TestAbortedStatement: once a statement fails inside an Update, the
// Update fails even if its function ignores the error, and the others in
// the batch commit.
func TestAbortedStatement(t *testing.T) {
	s := open(t, pgtest.Database(t))
	insertAgents(t, s, "x")
	err := s.Update(t.Context(), func(tx store.Tx) error {
		// No such agent: a foreign key error, ignored.
		_ = tx.InsertToken(&store.Token{ID: "t", Hash: []byte("h"), Kind: store.TokenAgent, AgentID: "nobody", CreatedAt: time.Now()})
		_ = tx.Append(entry("x", "ignored"))
		return nil
	})
	if err == nil {
		t.Fatal("Update returned nil after a failed statement")
	}
	if err := s.Update(t.Context(), callAndEntry("x", "after")); err != nil {
		t.Fatal(err)
	}
	if es := verifyLog(t, s); len(es) != 2 || es[1].Call != "after" {
		t.Fatalf("log = %v, want the hire and the one good entry", es)
	}
}

// TestNotify: a message sent through one replica reaches the listeners of
// every replica, in order, after the "" that opens each listener.
func TestNotify(t *testing.T) {
	url := pgtest.Database(t)
	a, b := open(t, url), open(t, url)
	var chans []<-chan string
	for _, s := range []*Store{a, b} {
		ch, err := s.Listen(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		select {
		case m := <-ch:
			if m != "" {
				t.Fatalf("first message %q, want \"\"", m)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("listener did not start")
		}
		chans = append(chans, ch)
	}
	if err := a.Ping(t.Context()); err != nil {
		t.Fatalf("Ping with a live listener: %v", err)
	}
	for i := range 3 {
		if err := a.Notify(t.Context(), fmt.Sprint("m", i)); err != nil {
			t.Fatal(err)
		}
	}
	for _, ch := range chans {
		for i := range 3 {
			select {
			case m := <-ch:
				if m != fmt.Sprint("m", i) {
					t.Errorf("got %q, want m%d", m, i)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("notification did not arrive")
			}
		}
	}
	if err := a.Notify(t.Context(), strings.Repeat("x", MaxNotify+1)); err == nil {
		t.Error("Notify accepted an oversized message")
	}

	// A lost connection: Ping says so, the listener comes back and says
	// "" (recheck), and then hears again.
	c := side(t, url)
	if _, err := c.Exec(t.Context(), `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
		WHERE datname = current_database() AND query LIKE 'LISTEN%' AND pid <> pg_backend_pid()`); err != nil {
		t.Fatal(err)
	}
	for _, ch := range chans {
		select {
		case m := <-ch:
			if m != "" {
				t.Fatalf("after reconnecting: %q, want \"\"", m)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("listener did not reconnect")
		}
	}
	if err := b.Notify(t.Context(), "again"); err != nil {
		t.Fatal(err)
	}
	for _, ch := range chans {
		select {
		case m := <-ch:
			if m != "again" {
				t.Errorf("got %q, want again", m)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("notification after reconnecting did not arrive")
		}
	}

	// Close ends the listeners.
	a.Close()
	select {
	case _, ok := <-chans[0]:
		for ok {
			_, ok = <-chans[0]
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not end the listener")
	}
}

// TestOutboxLease: of two replicas asking at once, one gets each item.
func TestOutboxLease(t *testing.T) {
	url := pgtest.Database(t)
	a, b := open(t, url), open(t, url)
	now := time.Now()
	if err := a.Update(t.Context(), func(tx store.Tx) error {
		for i := range 20 {
			if err := tx.Enqueue("webhook", fmt.Appendf(nil, "%d", i), now); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	seen := map[int64]int{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, s := range []*Store{a, b, a, b} {
		wg.Go(func() {
			items, err := s.DueOutbox(t.Context(), now, 7)
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			for _, it := range items {
				seen[it.ID]++
			}
			mu.Unlock()
		})
	}
	wg.Wait()
	if len(seen) != 20 {
		t.Errorf("%d of 20 items handed out", len(seen))
	}
	for id, n := range seen {
		if n != 1 {
			t.Errorf("item %d handed out %d times", id, n)
		}
	}
}

// TestLockTimeout: while another session holds the log lock, Updates fail
// within the batch timeout (nothing written, nothing hangs), and go on once
// it is free.
func TestLockTimeout(t *testing.T) {
	url := pgtest.Database(t)
	s, err := Open(t.Context(), Config{URL: url, BatchTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	insertAgents(t, s, "x")
	// Another session holds the log lock: batches time out, closed.
	c := side(t, url)
	if _, err := c.Exec(t.Context(), `BEGIN`); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Exec(t.Context(), `SELECT pg_advisory_xact_lock($1)`, LogLockKey); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err = s.Update(t.Context(), callAndEntry("x", "blocked"))
	if err == nil {
		t.Fatal("Update committed while another session held the log lock")
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("Update took %v to fail", d)
	}
	if _, err := c.Exec(t.Context(), `ROLLBACK`); err != nil {
		t.Fatal(err)
	}
	if err := s.Update(t.Context(), callAndEntry("x", "free")); err != nil {
		t.Fatalf("after the lock is free: %v", err)
	}
	if es := verifyLog(t, s); len(es) != 2 || es[1].Call != "free" {
		t.Fatalf("log = %v", es)
	}
}

// TestHungReplica: a replica that stops mid-batch with its connection open
// (a stopped process, a partition) holds the log lock only until the
// server ends its idle transaction; then another replica appends.
func TestHungReplica(t *testing.T) {
	url := pgtest.Database(t)
	hung, err := Open(t.Context(), Config{URL: url, IdleInTransactionTimeout: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer hung.Close()
	other := open(t, url)
	insertAgents(t, other, "x")
	inside, release := make(chan struct{}), make(chan struct{})
	held := make(chan error, 1)
	go func() {
		held <- hung.Update(t.Context(), func(x store.Tx) error {
			if err := callAndEntry("x", "hung")(x); err != nil {
				return err
			}
			close(inside)
			<-release // the process stops here, its connection open
			return nil
		})
	}()
	<-inside
	start := time.Now()
	if err := other.Update(t.Context(), callAndEntry("x", "other")); err != nil {
		t.Fatalf("other replica: %v", err)
	}
	t.Logf("the other replica appended %v after the hung one stopped", time.Since(start).Round(time.Millisecond))
	close(release)
	if err := <-held; err == nil {
		t.Fatal("the hung replica's Update returned nil after its session was ended")
	}
	if es := verifyLog(t, other); len(es) != 2 || es[1].Call != "other" {
		t.Fatalf("log = %v", es)
	}
	// The hung replica goes on once it runs again.
	if err := hung.Update(t.Context(), callAndEntry("x", "later")); err != nil {
		t.Fatal(err)
	}
	verifyLog(t, other)
}

// TestSessionTimeouts: every session of the pool carries the settings that
// end it on the server's side when its replica is cut off.
func TestSessionTimeouts(t *testing.T) {
	s := open(t, pgtest.Database(t))
	var idle, user string
	if err := s.pool.QueryRow(t.Context(), `SELECT current_setting('idle_in_transaction_session_timeout'), current_setting('tcp_user_timeout')`).Scan(&idle, &user); err != nil {
		t.Fatal(err)
	}
	if idle != "5s" || user != "15000" && user != "15s" {
		t.Fatalf("idle_in_transaction_session_timeout = %s, tcp_user_timeout = %s; want 5s and 15s", idle, user)
	}
}
