package state

import (
	"crypto/sha256"
	"strings"
	"time"

	"github.com/google/uuid"
)

// The idempotency keys are the state's one large part: up to
// Config.IdempotencyKeys (a million by default) of them. They are held
// without a pointer, so that the garbage collector, which scans every
// pointer of the live heap at each collection, has nothing in them to
// scan: with call ids as strings, a million keys were about 145 MB of
// pointers and strings, and under load at 10 million entries the
// collector's mark workers took 13% of arx serve's CPU (2% when fresh).

// idemCall is the call an idempotency key names. ARX's call ids are UUIDs
// in their canonical text: held as their 16 bytes. Any other id (none is
// made today) is held in State.oddIDs, and here as the first 16 bytes of
// its SHA-256, which tells two such ids apart.
type idemCall struct {
	id  [16]byte
	odd bool
}

// packCall is how a call id is held in the idempotency memory.
func packCall(id string) idemCall {
	// Of 36-byte texts, uuid.Parse takes the canonical form and the same
	// in capitals, which would read back in lower case.
	if len(id) == 36 && !strings.ContainsAny(id, "ABCDEF") {
		if u, err := uuid.Parse(id); err == nil {
			return idemCall{id: u}
		}
	}
	h := sha256.Sum256([]byte(id))
	var c idemCall
	copy(c.id[:], h[:16])
	c.odd = true
	return c
}

// idemSeen is a key remembered, in the order they came.
type idemSeen struct {
	key  IdemKey
	call idemCall
	at   int64 // Unix nanoseconds
}

// callOf is the call id key names, if it is remembered.
func (s *State) callOf(k IdemKey) (string, bool) {
	c, ok := s.idem[k]
	switch {
	case !ok:
		return "", false
	case c.odd:
		id, ok := s.oddIDs[k]
		return id, ok
	}
	return uuid.UUID(c.id).String(), true
}

func (s *State) remember(k IdemKey, call string, at time.Time) {
	c := packCall(call)
	if c.odd {
		if s.oddIDs == nil {
			s.oddIDs = map[IdemKey]string{}
		}
		s.oddIDs[k] = call
	} else if s.oddIDs != nil {
		delete(s.oddIDs, k)
	}
	s.idem[k] = c
	s.idemOrder = append(s.idemOrder, idemSeen{key: k, call: c, at: at.UnixNano()})
}

// forget drops idempotency keys past the window or the bound.
func (s *State) forget(now time.Time) {
	cut := now.Add(-s.cfg.IdempotencyWindow).UnixNano()
	for s.idemStart < len(s.idemOrder) {
		o := s.idemOrder[s.idemStart]
		if len(s.idemOrder)-s.idemStart <= s.cfg.IdempotencyKeys && o.at >= cut {
			break
		}
		if s.idem[o.key] == o.call { // not remembered again since
			delete(s.idem, o.key)
			if o.call.odd {
				delete(s.oddIDs, o.key)
			}
		}
		s.idemOrder[s.idemStart] = idemSeen{}
		s.idemStart++
	}
	if s.idemStart > 4096 && s.idemStart > len(s.idemOrder)/2 {
		s.idemOrder = append(s.idemOrder[:0], s.idemOrder[s.idemStart:]...)
		s.idemStart = 0
	}
}
