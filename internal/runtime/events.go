package runtime

import (
	"sync"
	"time"
)

// Event is something people watching the console should see at once.
type Event struct {
	Type    string    `json:"type"` // approval.requested, approval.decided, call.updated, agent.updated
	AgentID string    `json:"agent_id,omitempty"`
	CallID  string    `json:"call_id,omitempty"`
	Status  string    `json:"status,omitempty"`
	At      time.Time `json:"at"`
}

// Hub fans events out to subscribers (server-sent event streams). A slow
// subscriber loses events rather than slowing the call path; it is told to
// resynchronise.
type Hub struct {
	mu   sync.Mutex
	subs map[chan Event]struct{}
}

// NewHub returns an empty hub.
func NewHub() *Hub { return &Hub{subs: map[chan Event]struct{}{}} }

// Subscribe returns a channel of events and a function to stop.
func (h *Hub) Subscribe() (<-chan Event, func()) {
	ch := make(chan Event, 64)
	h.mu.Lock()
	h.subs[ch] = struct{}{}
	h.mu.Unlock()
	return ch, func() {
		h.mu.Lock()
		if _, ok := h.subs[ch]; ok {
			delete(h.subs, ch)
			close(ch)
		}
		h.mu.Unlock()
	}
}

// Publish sends e to every subscriber without blocking.
func (h *Hub) Publish(e Event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for ch := range h.subs {
		select {
		case ch <- e:
		default:
			select { // full: make room for a resync marker
			case <-ch:
			default:
			}
			select {
			case ch <- Event{Type: "resync", At: e.At}:
			default:
			}
		}
	}
}

// Events is the runtime's event hub.
func (r *Runtime) Events() *Hub { return r.events }
