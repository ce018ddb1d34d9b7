package runtime

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"sync"
	"time"

	"github.com/arxsec/arx/internal/store"
)

// Several replicas.
//
// Long polls (waiters) and console streams (the Hub) live in one process.
// When the store is shared by several replicas (store.Notifier), a change
// that someone may be waiting for is also announced to the others after it
// commits: each replica wakes its own waiters, which then read the call from
// the database, and publishes the event to its own Hub. A wake-up carries no
// authority: what a woken long poll answers comes from the database.
//
// Announcements are sent after the commit and before the request that made
// the change is answered. If one is lost (a replica dies between the two,
// or a listener reconnects), waiters fall back on their deadline and
// listeners on the "" the store sends when it may have missed something:
// every local waiter is woken to recheck, and consoles are told to resync.

// notifyTimeout bounds one announcement; the change itself is committed.
const notifyTimeout = 5 * time.Second

// wakeChunk bounds the call ids of one message (well under store.Notifier's
// 7,000 bytes).
const wakeChunk = 100

// replica names this process among the replicas, so that it ignores its own
// announcements (it has acted on them already).
type replica struct {
	once sync.Once
	id   string
}

func (r *Runtime) replicaID() string {
	r.replica.once.Do(func() {
		var b [8]byte
		rand.Read(b[:])
		r.replica.id = hex.EncodeToString(b[:])
	})
	return r.replica.id
}

// announcement is what replicas tell each other.
type announcement struct {
	From  string   `json:"from"`
	Wake  []string `json:"wake,omitempty"` // calls whose long polls should recheck
	Event *Event   `json:"event,omitempty"`
}

// broadcast wakes this replica's long polls on the calls, publishes e (when
// not nil) to its Hub, and tells the other replicas to do the same. Call it
// after the commit.
func (r *Runtime) broadcast(ctx context.Context, e *Event, wake ...string) {
	for _, id := range wake {
		r.waiters.wake(id)
	}
	if e != nil {
		r.events.Publish(*e)
	}
	n, ok := r.store.(store.Notifier)
	if !ok {
		return
	}
	// The request may be gone; the others must still hear of its change.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), notifyTimeout)
	defer cancel()
	for first := true; first || len(wake) > 0; first = false {
		a := announcement{From: r.replicaID()}
		if first {
			a.Event = e
		}
		k := min(len(wake), wakeChunk)
		a.Wake, wake = wake[:k], wake[k:]
		b, err := json.Marshal(a)
		if err == nil {
			err = n.Notify(ctx, string(b))
		}
		if err != nil {
			r.log.Warn("replicas: announcement not sent; other replicas' waiters will recheck at their deadline", "err", err)
			return
		}
	}
}

// listenReplicas acts on other replicas' announcements until ctx ends.
func (r *Runtime) listenReplicas(ctx context.Context) {
	n, ok := r.store.(store.Notifier)
	if !ok {
		return
	}
	ch, err := n.Listen(ctx)
	if err != nil {
		if ctx.Err() == nil {
			r.log.Warn("replicas: cannot listen for other replicas", "err", err)
		}
		return
	}
	self := r.replicaID()
	for msg := range ch {
		if msg == "" { // something may have been missed: everyone rechecks
			r.waiters.wakeAll()
			r.events.Publish(Event{Type: "resync", At: r.now()})
			continue
		}
		var a announcement
		if err := json.Unmarshal([]byte(msg), &a); err != nil {
			r.log.Warn("replicas: bad announcement", "err", err)
			continue
		}
		if a.From == self {
			continue
		}
		for _, id := range a.Wake {
			r.waiters.wake(id)
		}
		if a.Event != nil {
			r.events.Publish(*a.Event)
		}
	}
}

// wakeAll wakes every long poll of this replica.
func (w *waiters) wakeAll() {
	w.mu.Lock()
	m := w.m
	w.m = map[string][]chan struct{}{}
	w.mu.Unlock()
	for _, list := range m {
		for _, ch := range list {
			close(ch)
		}
	}
}
