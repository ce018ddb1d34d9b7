//go:build linux

package faults

import (
	"maps"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/arxsec/arx/internal/faults/faultfs"
)

// TestFsyncFailed makes fsync alone fail in arx serve's data directory (a
// disk whose writes succeed but whose writeback fails, through a
// fault-injecting FUSE mount) under a load of governed calls. Calls are
// refused with record.unavailable and carry no credential. The store has
// failed for good, by design: once the disk heals, calls are still refused
// and /readyz stays 503, since nothing says what reached the disk. Restarted
// on the same directory, arx serve serves again, and the record verifies
// with every acknowledged call in it.
func TestFsyncFailed(t *testing.T) {
	if testing.Short() {
		t.Skip("fault test skipped in -short mode")
	}
	ff := faultfs.MountForTest(t)
	p := startServe(t, ff.Dir)
	t.Cleanup(p.kill) // runs before the unmount when the test fails early
	admin := storeFaultAdmin(t, ff.Dir)
	load := storeFaultStart(t, p, admin, "fsync", 4)

	load.waitAcks(t, 20, 10*time.Second)
	ff.FailSync(syscall.EIO)
	failedAt := time.Now()
	load.waitRefusals(t, failedAt, 20, 10*time.Second)
	storeFaultReadyz(t, p, 503, 10*time.Second)

	ff.Heal()
	healedAt := time.Now()
	load.waitRefusals(t, healedAt, 20, 10*time.Second)
	for range 5 {
		if code, b, err := storeFaultDo(t.Context(), p.url, "GET", "/readyz", "", nil); err != nil || code != 503 {
			t.Fatalf("/readyz after the disk healed: %d %s %v, want 503 until a restart", code, b, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	load.stop()
	if n := load.count(func(a storeFaultAnswer) bool { return a.ok() && a.sent.After(failedAt) }); n > 0 {
		t.Fatalf("%d calls or completions sent after fsync failed were acknowledged", n)
	}
	if n := strings.Count(p.logText(), "refusing every write until restart"); n != 1 {
		t.Errorf("the store logged its failure %d times, want once:\n%s", n, p.logText())
	}
	if n := ff.Failed(); n == 0 {
		t.Fatal("the fault refused no fsync: the test proves nothing")
	}
	refusedWith := load.check(t)
	p.stop(t)

	// Restarted on the healed directory, recovery decides and service
	// comes back.
	p2 := startServe(t, ff.Dir)
	t.Cleanup(p2.kill)
	storeFaultReadyz(t, p2, 200, 10*time.Second)
	again := storeFaultStart(t, p2, admin, "fsync-restarted", 2)
	again.waitAcks(t, 20, 10*time.Second)
	again.stop()
	if n := again.refusals(); n > 0 {
		t.Errorf("%d calls or completions refused after the restart", n)
	}
	p2.stop(t)
	if err := ff.Close(); err != nil {
		t.Fatal(err)
	}

	// What is durable is what reached the backing directory: start over
	// from it alone, and find there every call acknowledged before and
	// after the restart.
	load.mu.Lock()
	load.answers = append(load.answers, again.answers...)
	maps.Copy(load.completed, again.completed)
	load.mu.Unlock()
	lost := storeFaultVerify(t, ff.Backing, admin, load)
	t.Logf("CAMPAIGN fsync_failed refused_with=%s stays_failed=true recovered_after_restart=true lost=%d acknowledged=%d refused=%d fsyncs_failed=%d",
		refusedWith, lost, load.acks(), load.refusals(), ff.Failed())
}
