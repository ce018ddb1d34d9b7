// Package gcfloor gives the garbage collector of a server a floor of
// headroom. With Go's default, GOGC=100, the heap may grow by as much as is
// live before the next collection: arx serve keeps a small live heap (tens
// of megabytes) and allocates about 30 KB per governed call, so at a few
// thousand calls a second it collected ten times a second, and each
// collection's fixed cost (waking every P, scanning every goroutine's stack,
// the assists) was about a tenth of the CPU of a governed call.
//
// Start lets the heap grow by max(live heap, headroom) instead: the
// collector's own rule once the live heap is larger than the headroom, and
// at most headroom bytes more than it would otherwise use when it is not.
// The percent is set again after every collection, from that collection's
// live heap, so it follows the heap as it grows and shrinks; an idle server
// that collects only every two minutes (the runtime's forced collection)
// does next to no work for it. A memory limit (GOMEMLIMIT)
// still holds: the collector runs earlier to keep under it.
package gcfloor

import (
	"math/bits"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"sync/atomic"
)

// DefaultHeadroom is the heap growth allowed between two collections when
// the live heap is smaller.
const DefaultHeadroom = 64 << 20

const (
	minPercent = 100 // Go's default
	// minHeap is the runtime's smallest heap goal at GOGC=100 (4 MB, scaled
	// by the percent): a percent above headroom*100/minHeap would let a
	// small heap grow by more than headroom.
	minHeap = 4 << 20
)

// Percent is the GOGC that lets a heap of live bytes grow by
// max(live, headroom) before the next collection: Go's default, 100, once
// live is at least headroom; more below it, up to a bound for a heap that
// has barely started (live 0 is one that has not been collected yet).
func Percent(live, headroom uint64) int {
	top := min(max(headroom/minHeap*100, minPercent), 1<<30)
	hi, lo := bits.Mul64(headroom, 100)
	if live == 0 || hi >= live { // not collected yet, or past 2^64
		return int(top)
	}
	p, _ := bits.Div64(hi, lo, live)
	return int(min(max(p, minPercent), top))
}

// settled reports whether the percent in force, cur, is close enough to
// want that changing it is not worth it (within an eighth): the live heap
// moves a little at every collection.
func settled(cur, want int) bool {
	d := cur - want
	return d <= want/8 && -d <= want/8
}

// Start keeps GOGC at Percent of the live heap, set again after every
// collection, until stop is called; stop puts back the percent there was
// before. One Start is in force in a process at a time: a second, while
// the first is, changes nothing and its stop does nothing. The caller
// leaves it out when the environment sets GOGC (the operator's choice).
func Start(headroom uint64) (stop func()) {
	if !active.CompareAndSwap(false, true) {
		return func() {}
	}
	t := &tuner{headroom: headroom, cur: Percent(liveHeap(), headroom)}
	t.before = debug.SetGCPercent(t.cur)
	t.arm()
	return t.stop
}

var active atomic.Bool

type tuner struct {
	headroom uint64
	before   int

	mu      sync.Mutex
	stopped bool
	cur     int
}

// arm asks to be called back after the next collection: an object nothing
// refers to becomes unreachable at the next collection, which then runs
// its cleanup.
func (t *tuner) arm() {
	p := new([16]byte) // large enough not to share a tiny block
	runtime.AddCleanup(p, (*tuner).collected, t)
}

// collected runs after each collection: it sets the percent for the live
// heap that collection found and arms again.
func (t *tuner) collected() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.stopped {
		return
	}
	if want := Percent(liveHeap(), t.headroom); !settled(t.cur, want) {
		debug.SetGCPercent(want)
		t.cur = want
	}
	t.arm()
}

func (t *tuner) stop() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.stopped {
		t.stopped = true
		debug.SetGCPercent(t.before)
		active.Store(false)
	}
}

// liveHeap is the heap the last collection marked live (0 before the
// first).
func liveHeap() uint64 {
	s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return s[0].Value.Uint64()
}
