//go:build linux

package faults

import (
	"database/sql"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	_ "modernc.org/sqlite"
)

// TestDatabaseLocked: another process (an operator's backup tool, a sqlite3
// shell) holds the write lock on data/arx.db under a load of governed calls.
// Governed calls go on: they need only the log, which is not in the
// database. What needs the database (adding a person) is refused with
// record.unavailable within about SQLite's busy timeout, and /readyz says
// so; reads answer at once; nothing acknowledged is lost; and when the lock
// is released the state tables catch up and service is whole again by
// itself.
func TestDatabaseLocked(t *testing.T) {
	if testing.Short() {
		t.Skip("fault test skipped in -short mode")
	}
	dir := t.TempDir()
	// The operator's flag, shorter than the default so that the test is
	// quick; the default (busy) behaves the same.
	const busy = 3 * time.Second
	p := startServe(t, dir, "--db-busy-timeout", busy.String())
	t.Cleanup(p.kill) // when the test fails early
	admin := storeFaultAdmin(t, dir)
	load := storeFaultStart(t, p, admin, "locked", 4)
	load.waitAcks(t, 20, 10*time.Second)

	// The other process: its own connection to the file, as sqlite3 would
	// open it, in a write transaction it does not end.
	conn := lockedTake(t, filepath.Join(dir, "arx.db"))
	lockedAt := time.Now()
	acksBefore := load.acks()

	// While the lock is held, reads answer at once.
	time.Sleep(500 * time.Millisecond)
	acked := load.lastAck()
	for _, path := range []string{"/v1/agents", "/v1/calls/" + acked, "/v1/log/checkpoint", "/readyz"} {
		start := time.Now()
		code, b, err := storeFaultDo(t.Context(), p.url, "GET", path, admin, nil)
		if err != nil || code != 200 {
			t.Errorf("GET %s with the database locked: %d %s %v", path, code, b, err)
		}
		if d := time.Since(start); d > time.Second {
			t.Errorf("GET %s with the database locked took %v", path, d)
		}
	}
	// A write that needs the database is refused once the busy timeout
	// has run out, and the replica says it is not ready.
	start := time.Now()
	code, b, err := storeFaultDo(t.Context(), p.url, "POST", "/v1/users", admin, map[string]any{"email": "locked@example.com", "role": "manager", "show_link": true})
	refuse := time.Since(start)
	if err != nil || code != 503 || !strings.Contains(string(b), "record.unavailable") {
		t.Errorf("adding a person with the database locked: %d %s %v", code, b, err)
	}
	if refuse > busy+3*time.Second {
		t.Errorf("adding a person with the database locked was refused after %v, beyond the busy timeout (%v)", refuse, busy)
	}
	storeFaultReadyz(t, p, 503, 10*time.Second)
	// Governed calls went on all along.
	load.waitAcks(t, acksBefore+50, 10*time.Second)
	if n := load.count(func(a storeFaultAnswer) bool { return a.sent.After(lockedAt) && a.err == nil && !a.ok() }); n > 0 {
		t.Errorf("%d governed calls or completions were refused while only the database was locked", n)
	}
	if _, err := conn.ExecContext(t.Context(), "ROLLBACK"); err != nil {
		t.Fatal(err)
	}
	releasedAt := time.Now()
	storeFaultReadyz(t, p, 200, 15*time.Second)
	recovered := time.Since(releasedAt)
	if code, b, err := storeFaultDo(t.Context(), p.url, "POST", "/v1/users", admin, map[string]any{"email": "locked@example.com", "role": "manager", "show_link": true}); err != nil || code != 201 {
		t.Errorf("adding a person after the lock was released: %d %s %v", code, b, err)
	}
	load.waitAcks(t, load.acks()+20, 10*time.Second)
	load.stop()

	if refusedWith := load.check(t); refusedWith != "none" {
		t.Errorf("governed calls were refused (%s) though only the database was locked", refusedWith)
	}
	p.stop(t)
	lost := storeFaultVerify(t, dir, admin, load)
	t.Logf("CAMPAIGN db_locked calls_refused=%d people_refused_with=record.unavailable refuse_ms=%d recovered=true lost=%d busy_timeout_ms=%d recovery_ms=%d acknowledged=%d",
		load.refusals(), refuse.Milliseconds(), lost, busy.Milliseconds(), recovered.Milliseconds(), load.acks())
}

// lockedTake opens the database file as another process would and takes its
// write lock (in WAL mode BEGIN EXCLUSIVE takes the same lock as IMMEDIATE),
// holding it until the returned connection runs ROLLBACK or the test ends.
func lockedTake(t *testing.T, path string) *sql.Conn {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+(&url.URL{Path: path}).EscapedPath()+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	conn, err := db.Conn(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if _, err := conn.ExecContext(t.Context(), "BEGIN IMMEDIATE"); err != nil {
		t.Fatalf("taking the write lock: %v", err)
	}
	return conn
}
