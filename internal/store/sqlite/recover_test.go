package sqlite

import (
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/arxsec/arx/internal/store"
	"github.com/arxsec/arx/internal/store/segment"
	"github.com/arxsec/arx/record"
	"golang.org/x/mod/sumdb/tlog"
)

func openAt(t *testing.T, path string, cfg Config) *Store {
	t.Helper()
	cfg.Path = path
	s, err := Open(t.Context(), cfg)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func hire(t *testing.T, s *Store, id string) {
	t.Helper()
	now := time.Now()
	err := s.Update(t.Context(), func(tx store.Tx) error {
		if err := tx.InsertAgent(&store.Agent{ID: id, Name: id, Owner: "o", Status: store.AgentActive, Manifest: []byte("m"),
			ManifestHash: "h", CreatedAt: now}); err != nil {
			return err
		}
		return tx.Append(record.AgentHired(id, "admin:test", now, record.Hire{Name: id}))
	})
	if err != nil {
		t.Fatal(err)
	}
}

func issue(agent, call string) func(store.Tx) error {
	return func(tx store.Tx) error {
		now := time.Now()
		return tx.Append(record.CredentialIssued(record.CallRef{Agent: agent, Call: call, Connector: "crm", Action: "read", Risk: "low"},
			"agent:"+agent, now, record.Ask{DeclaredRisk: "low", IdempotencyKey: call}, now.Add(time.Minute), ""))
	}
}

// TestRedoAfterCrash: a batch whose entries reached the log but whose
// database writes did not commit (a crash between the two) is whole after
// the next open; one whose entries never reached the log leaves nothing.
func TestRedoAfterCrash(t *testing.T) {
	path := filepath.Join(t.TempDir(), "arx.db")
	var refuseLog bool
	s := openAt(t, path, Config{LogFault: func() error {
		if refuseLog {
			return errors.New("disk refused")
		}
		return nil
	}})
	hire(t, s, "a")
	addUser := func(email string) func(store.Tx) error {
		return func(tx store.Tx) error {
			if err := tx.InsertUser(&store.User{ID: email, Email: email, Role: store.RoleManager, CreatedAt: time.Now()}); err != nil {
				return err
			}
			return tx.Append(record.UserAdded("admin:test", time.Now(), email, store.RoleManager, record.LinkShown))
		}
	}
	// The database commit fails after the log's: the Update committed.
	s.commitFault = func() error { return errors.New("crash before the database commit") }
	if err := s.Update(t.Context(), addUser("kept@example.com")); err != nil {
		t.Fatalf("Update whose entries are durable: %v", err)
	}
	s.commitFault = nil
	// The log refuses the entries: the Update failed, and its writes,
	// though in the redo log, must never be applied.
	refuseLog = true
	if err := s.Update(t.Context(), addUser("lost@example.com")); err == nil {
		t.Fatal("Update with the log refused returned nil")
	}
	// Close without applying the pending writes, as a crash would.
	s.pendingRedo = nil
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openAt(t, path, Config{})
	if u, err := s.UserByEmail(t.Context(), "kept@example.com"); err != nil || u.Email != "kept@example.com" {
		t.Errorf("the committed batch's user after reopen: %+v, %v", u, err)
	}
	if _, err := s.UserByEmail(t.Context(), "lost@example.com"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("the failed batch's user after reopen: %v", err)
	}
	es, err := s.Entries(t.Context(), 0, 10)
	if err != nil || len(es) != 2 || es[1].Type != record.TypeUserAdded {
		t.Fatalf("log after reopen: %d entries, %v", len(es), err)
	}
	// And the next open applies nothing twice.
	if err := s.Update(t.Context(), addUser("next@example.com")); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = openAt(t, path, Config{})
	if us, err := s.Users(t.Context()); err != nil || len(us) != 2 {
		t.Errorf("users after a second reopen: %d, %v", len(us), err)
	}
}

// TestPendingWritesBeforeNextBatch: without a restart, the writes of a
// batch whose database commit failed are applied before the next batch.
func TestPendingWritesBeforeNextBatch(t *testing.T) {
	s := openAt(t, filepath.Join(t.TempDir(), "arx.db"), Config{})
	hire(t, s, "a")
	s.commitFault = func() error { return errors.New("disk hiccup") }
	err := s.Update(t.Context(), func(tx store.Tx) error {
		if err := tx.SetMeta("k", "v"); err != nil {
			return err
		}
		return tx.Append(record.TokenIssued("a", "admin:test", time.Now(), "tok", "", "x"))
	})
	s.commitFault = nil
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Update(t.Context(), issue("a", "c1")); err != nil {
		t.Fatal(err)
	}
	if v, err := s.Meta(t.Context(), "k"); err != nil || v != "v" {
		t.Errorf("Meta after the next batch: %q, %v", v, err)
	}
}

// TestScrubFindsEdit: an entry changed at rest in a sealed segment is
// found after the next open, by index; the store then refuses writes.
func TestScrubFindsEdit(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "arx.db")
	s := openAt(t, path, Config{SegmentSize: 4 << 10})
	hire(t, s, "a")
	for i := range 60 {
		if err := s.Update(t.Context(), issue("a", fmt.Sprint("c", i))); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	const edited = 7
	seg, off, n, err := segment.Locate(filepath.Join(dir, "log"), edited)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(seg, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, n)
	f.ReadAt(b, off)
	i := strings.Index(string(b), `"c6"`)
	if i < 0 {
		t.Fatalf("entry %d: %s", edited, b)
	}
	f.WriteAt([]byte(`"c9"`), off+int64(i))
	f.Close()

	s = openAt(t, path, Config{SegmentSize: 4 << 10})
	deadline := time.Now().Add(10 * time.Second)
	var uerr error
	for time.Now().Before(deadline) {
		if uerr = s.Update(t.Context(), issue("a", "after")); uerr != nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !errors.Is(uerr, store.ErrStorageFailed) || !strings.Contains(uerr.Error(), fmt.Sprintf("entry %d:", edited)) {
		t.Fatalf("Update after the log was edited at rest: %v", uerr)
	}
	if err := s.Ping(t.Context()); err == nil {
		t.Error("Ping is fine after the log was edited at rest")
	}
}

// v5 is a version-5 database, as the last release wrote it: the log in the
// entries table.
func v5(t *testing.T, path string, calls int) (root tlog.Hash, size int64) {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+(&url.URL{Path: path}).EscapedPath())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	exec := func(q string, a ...any) {
		t.Helper()
		if _, err := db.Exec(q, a...); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	exec(`CREATE TABLE schema_version (version INTEGER NOT NULL)`)
	exec(`INSERT INTO schema_version (version) VALUES (5)`)
	for _, m := range migrations {
		exec(m)
	}
	now := time.Now().Add(-time.Hour)
	exec(`INSERT INTO agents (id, name, owner, status, manifest, manifest_hash, created_at, terminated_at) VALUES ('a', 'a', 'o', 'active', 'm', 'h', ?, NULL)`, nanos(now))
	var tree record.Tree
	heads := map[string]string{}
	add := func(e *record.Entry) {
		e.Index, e.Prev = tree.Size(), heads[e.Agent]
		body, err := e.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		stored := tree.Append(record.LeafHash(body))
		var hs []byte
		for _, h := range stored {
			hs = append(hs, h[:]...)
		}
		exec(`INSERT INTO entries (idx, agent, type, call, body, hashes) VALUES (?, ?, ?, ?, ?, ?)`, e.Index, e.Agent, e.Type, e.Call, body, hs)
		heads[e.Agent] = record.HashString(stored[0])
	}
	add(record.AgentHired("a", "admin:x", now, record.Hire{Name: "a"}))
	for i := range calls {
		at := now.Add(time.Duration(i) * time.Second)
		ms := fmt.Sprintf("%012x", at.UnixMilli())
		id := fmt.Sprintf("%s-%s-7000-8000-%012x", ms[:8], ms[8:], i) // a UUIDv7 of its time, as calls have
		ref := record.CallRef{Agent: "a", Call: id, Connector: "crm", Action: "read", Risk: "low"}
		status := store.CallCompleted
		if i%10 == 9 {
			status = store.CallApproved // open
		}
		exec(`INSERT INTO calls (`+callColsV6+`) VALUES (?, 'a', 'crm', 'read', 'low', 'low', ?, ?, '', '', ?, ?, NULL, '', '', 0, '')`,
			id, status, "key-"+id, nanos(at), nanos(at.Add(time.Hour)))
		add(record.CredentialIssued(ref, "agent:a", at, record.Ask{DeclaredRisk: "low", IdempotencyKey: "key-" + id}, at.Add(time.Hour), ""))
		if status == store.CallCompleted {
			add(record.CallCompleted(ref, "agent:a", at, record.Outcome{Outcome: "success"}))
		}
	}
	return tree.Root(), tree.Size()
}

// TestMigrateV5: a version-5 data directory is moved to the new layout at
// the first open: the same log, root and chains, the calls and their
// counts, and the state to go on with.
func TestMigrateV5(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "arx.db")
	root, size := v5(t, path, 50)
	s := openAt(t, path, Config{})
	if n, _ := s.TreeSize(t.Context()); n != size {
		t.Fatalf("TreeSize after migration = %d, want %d", n, size)
	}
	if got, err := tlog.TreeHash(size, store.HashReader(t.Context(), s)); err != nil || got != root {
		t.Fatalf("root after migration = %v, %v; want %v", got, err, root)
	}
	es, err := s.AgentEntries(t.Context(), "a", -1, 1000)
	if err != nil || int64(len(es)) != size {
		t.Fatalf("AgentEntries after migration: %d, %v", len(es), err)
	}
	calls, err := s.Calls(t.Context(), "a", 100)
	if err != nil || len(calls) != 50 {
		t.Fatalf("calls after migration: %d, %v", len(calls), err)
	}
	err = s.Update(t.Context(), func(tx store.Tx) error {
		if n := tx.CallCounts("a").Open; n != 5 {
			return fmt.Errorf("open calls %d, want 5", n)
		}
		for _, want := range calls {
			c, err := tx.CallByIdempotencyKey("a", want.IdempotencyKey)
			if err != nil || c.ID != want.ID {
				return fmt.Errorf("idempotency key %s after migration: %+v, %w", want.IdempotencyKey, c, err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// It goes on: the next entry continues the index and a's chain.
	e := record.TokenIssued("a", "admin:x", time.Now(), "t", "", "l")
	if err := s.Update(t.Context(), func(tx store.Tx) error { return tx.Append(e) }); err != nil {
		t.Fatal(err)
	}
	if e.Index != size || e.Prev != record.HashString(es[len(es)-1].Leaf) {
		t.Fatalf("next entry: index %d prev %s", e.Index, e.Prev)
	}
	s.Close()
	db, err := sql.Open("sqlite", "file:"+(&url.URL{Path: path}).EscapedPath())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int
	if err := db.QueryRow(`SELECT COUNT(*) FROM sqlite_master WHERE name = 'entries'`).Scan(&n); err != nil || n != 0 {
		t.Errorf("the entries table is still there: %d, %v", n, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "log.migrating")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("log.migrating left behind: %v", err)
	}
}
