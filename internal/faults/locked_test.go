package faults

import (
	"database/sql"
	"net/url"
	"path/filepath"
	"testing"
	"time"

	_ "modernc.org/sqlite"
)

// TestDatabaseLocked: another process (an operator's backup tool, a sqlite3
// shell) holds the write lock on data/arx.db under a load of governed calls.
// Calls are refused with record.unavailable within about SQLite's busy
// timeout and carry no credential, reads go on, nothing acknowledged is
// lost, and when the lock is released service comes back by itself.
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
	// Writes are refused once the busy timeout has run out.
	load.waitRefusals(t, lockedAt, 3, busy+5*time.Second)
	storeFaultReadyz(t, p, 503, 10*time.Second) // out of a load balancer's rotation
	time.Sleep(time.Second)
	if _, err := conn.ExecContext(t.Context(), "ROLLBACK"); err != nil {
		t.Fatal(err)
	}
	releasedAt := time.Now()
	recovery := load.waitRecovery(t, releasedAt, 5*time.Second)
	storeFaultReadyz(t, p, 200, 15*time.Second)
	load.waitAcks(t, load.acks()+20, 10*time.Second)
	load.stop()

	// No call, refused or not, waited much longer than the busy timeout.
	bound := busy + 3*time.Second // -race on two cores
	var refuse, slowest time.Duration
	refused := 0
	load.mu.Lock()
	for _, a := range load.answers {
		d := a.at.Sub(a.sent)
		slowest = max(slowest, d)
		if a.err == nil && !a.ok() {
			refused++
			refuse = max(refuse, d)
		}
		if d > bound {
			t.Errorf("a request sent at %s was answered %d after %v, beyond the busy timeout (%v)", a.sent.Format(time.StampMilli), a.status, d, busy)
		}
	}
	load.mu.Unlock()
	refusedWith := load.check(t)
	p.stop(t)
	lost := storeFaultVerify(t, dir, admin, load)
	t.Logf("CAMPAIGN db_locked refused_with=%s refuse_ms=%d recovered=true lost=%d busy_timeout_ms=%d recovery_ms=%d slowest_ms=%d acknowledged=%d refused=%d",
		refusedWith, refuse.Milliseconds(), lost, busy.Milliseconds(), recovery.Milliseconds(), slowest.Milliseconds(), load.acks(), refused)
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
