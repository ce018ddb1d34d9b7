package gcfloor

import (
	"runtime"
	"runtime/metrics"
	"testing"
	"time"
)

func TestPercent(t *testing.T) {
	const mb = 1 << 20
	for _, c := range []struct {
		live, headroom uint64
		want           int
	}{
		{0, 64 * mb, 1600},                  // not collected yet: 4 MB * 16 = 64 MB
		{1, 64 * mb, 1600},                  // bounded by the runtime's 4 MB minimum
		{1 * mb, 64 * mb, 1600},             // 6,400 is past the bound
		{16 * mb, 64 * mb, 400},             // grows by 64 MB, not 16
		{20 * mb, 64 * mb, 320},             //
		{24 * mb, 64 * mb, 266},             // rounded down
		{64 * mb, 64 * mb, 100},             // Go's own from here on
		{500 * mb, 64 * mb, 100},            // never below Go's default
		{16 * mb, 0, 100},                   // no headroom: Go's default
		{3, 1<<64 - 1, 1 << 30},             // no overflow
		{1<<64 - 1, 1<<64 - 1, minPercent},  // both at the top
		{1<<63 + 1, 1<<64 - 1, 199},         // a little under 2x
		{(1<<64 - 1) / 3, 1<<64 - 1, 300},   // exactly 3x
		{(1<<64 - 1) / 40, 1<<64 - 1, 4000}, // still in range
	} {
		if got := Percent(c.live, c.headroom); got != c.want {
			t.Errorf("Percent(%d, %d) = %d, want %d", c.live, c.headroom, got, c.want)
		}
	}
}

func TestSettled(t *testing.T) {
	for _, c := range []struct {
		cur, want int
		ok        bool
	}{
		{400, 400, true},
		{400, 360, true},  // 40 off, an eighth is 45
		{400, 350, false}, // 50 off, an eighth is 43
		{100, 112, true},
		{100, 120, false},
		{1600, 100, false},
	} {
		if got := settled(c.cur, c.want); got != c.ok {
			t.Errorf("settled(%d, %d) = %t, want %t", c.cur, c.want, got, c.ok)
		}
	}
}

func gogc() int {
	s := []metrics.Sample{{Name: "/gc/gogc:percent"}}
	metrics.Read(s)
	return int(s[0].Value.Uint64())
}

// TestStart runs the tuner against the real collector: after collections
// the percent in force is what Percent says for the live heap, and stop
// puts back the percent there was.
func TestStart(t *testing.T) {
	before := gogc()
	live := make([]byte, 8<<20) // a live heap of at least 8 MB
	const headroom = 256 << 20
	stop := Start(headroom)
	defer stop()
	Start(1)() // a second Start while the first is in force: nothing
	follows := func(when string) int {
		t.Helper()
		var got, want int
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
			runtime.GC()
			time.Sleep(10 * time.Millisecond) // cleanups run on their own goroutine
			got, want = gogc(), Percent(liveHeap(), headroom)
			if want > 100 && settled(got, want) {
				return got
			}
		}
		t.Fatalf("%s: after collections GOGC is %d, want about %d (live heap %d bytes)", when, got, want, liveHeap())
		return 0
	}
	first := follows("a live heap of 8 MB")
	// The live heap grows eightfold: the percent must follow, so the
	// cleanup has been armed again after each collection, not run once.
	more := make([]byte, 56<<20)
	if again := follows("a live heap of 64 MB"); settled(again, first) {
		t.Fatalf("GOGC stayed at about %d when the live heap grew from 8 MB to 64 MB", again)
	}
	runtime.KeepAlive(live)
	runtime.KeepAlive(more)
	stop()
	if g := gogc(); g != before {
		t.Fatalf("after stop GOGC is %d, want %d as before", g, before)
	}
	// Stopped: a collection changes nothing.
	runtime.GC()
	time.Sleep(10 * time.Millisecond)
	if g := gogc(); g != before {
		t.Fatalf("a collection after stop set GOGC to %d", g)
	}
}
