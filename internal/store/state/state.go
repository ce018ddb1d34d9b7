// Package state is the in-memory state of ARX's hot path: what a governed
// call is decided against (its agent's status, its open calls, its budget
// counters, the idempotency keys it used lately) and the chain heads the
// log appends to. It is a fold of the log: Apply takes one committed record
// entry at a time, so the same state is rebuilt after a restart from the
// tables the store projects it to plus the entries logged after them, and
// a replica catches up with another's batches by folding their entries.
//
// Changes are made in layers: a batch's Txn over the committed State, and
// each Update's own Txn over the batch's. A layer that fails is dropped; one
// that commits is merged into the layer below. Readers outside the store's
// sequencer see committed state only (State's read methods take a read
// lock), so nothing an uncommitted batch decided can leak (fail closed).
//
// The package does no I/O: what is not in memory (a closed call, an agent
// not loaded yet) comes from the Loader the store gives it.
package state

import (
	"crypto/sha256"
	"maps"
	"sync"
	"time"

	"github.com/arxsec/arx/internal/store"
	"golang.org/x/mod/sumdb/tlog"
)

// Loader reads what the state does not hold from the store's tables: a
// call or approval that is closed and was flushed (Call, Approval), an
// agent (Agent). Each returns store.ErrNotFound when there is none.
type Loader interface {
	Agent(id string) (*store.Agent, error)
	Call(id string) (*store.Call, error)
	Approval(callID string) (*store.Approval, error)
}

// Config bounds the state.
type Config struct {
	// IdempotencyWindow is how long a call's idempotency key is
	// remembered; IdempotencyKeys bounds how many are, the oldest
	// forgotten first.
	IdempotencyWindow time.Duration
	IdempotencyKeys   int
}

// Defaults.
const (
	DefaultIdempotencyWindow = 24 * time.Hour
	DefaultIdempotencyKeys   = 1 << 20
)

// Head is the last entry of an agent's chain.
type Head struct {
	Hash  tlog.Hash
	Index int64
}

// IdemKey identifies an idempotency key of an agent.
type IdemKey [16]byte

// KeyOf is the IdemKey of an agent's key.
func KeyOf(agent, key string) IdemKey {
	h := sha256.New()
	h.Write([]byte(agent))
	h.Write([]byte{0})
	h.Write([]byte(key))
	var k IdemKey
	copy(k[:], h.Sum(nil))
	return k
}

// State is the committed state.
type State struct {
	cfg Config

	mu        sync.RWMutex
	agents    map[string]*store.Agent
	calls     map[string]*store.Call     // open, or not flushed yet
	approvals map[string]*store.Approval // pending, or not flushed yet
	counts    map[string]*store.Counts
	heads     map[string]Head
	idem      map[IdemKey]idemCall // key -> call (idem.go)
	oddIDs    map[IdemKey]string   // the calls whose ids are not UUIDs
	idemOrder []idemSeen           // oldest first, from idemStart
	idemStart int
	size      int64 // entries folded (the log's size)
	// revocations counts the entries folded that revoke agent tokens
	// (token.revoked, agent.terminated) and loads of a snapshot, which may
	// hold any: a token checked while it was n is still unrevoked as long
	// as it is n (Revocations).
	revocations uint64

	evictMu   sync.Mutex
	evictions []eviction
}

// New returns an empty state.
func New(cfg Config) *State {
	if cfg.IdempotencyWindow <= 0 {
		cfg.IdempotencyWindow = DefaultIdempotencyWindow
	}
	if cfg.IdempotencyKeys <= 0 {
		cfg.IdempotencyKeys = DefaultIdempotencyKeys
	}
	return &State{cfg: cfg, agents: map[string]*store.Agent{}, calls: map[string]*store.Call{},
		approvals: map[string]*store.Approval{}, counts: map[string]*store.Counts{}, heads: map[string]Head{},
		idem: map[IdemKey]idemCall{}}
}

// Snapshot is state loaded from a store's tables, as of a log size.
type Snapshot struct {
	Size      int64
	Agents    []store.Agent
	Calls     []store.Call     // open calls (approved or pending)
	Approvals []store.Approval // pending approvals
	Counts    map[string]*store.Counts
	Heads     map[string]Head
	Keys      []Key // recent idempotency keys, oldest first
}

// Key is an idempotency key a call used.
type Key struct {
	Agent, Key, Call string
	At               time.Time
}

// Load replaces the state with a snapshot.
func (s *State) Load(snap *Snapshot) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.agents = make(map[string]*store.Agent, len(snap.Agents))
	for i := range snap.Agents {
		a := snap.Agents[i]
		s.agents[a.ID] = &a
	}
	s.calls = make(map[string]*store.Call, len(snap.Calls))
	for i := range snap.Calls {
		c := snap.Calls[i]
		s.calls[c.ID] = &c
	}
	s.approvals = make(map[string]*store.Approval, len(snap.Approvals))
	for i := range snap.Approvals {
		a := snap.Approvals[i]
		s.approvals[a.CallID] = &a
	}
	s.counts = map[string]*store.Counts{}
	for a, c := range snap.Counts {
		cc := *c
		s.counts[a] = &cc
	}
	for _, c := range s.calls {
		if open(c.Status) {
			s.countsOf(c.AgentID).Open++
		}
	}
	s.heads = maps.Clone(snap.Heads)
	if s.heads == nil {
		s.heads = map[string]Head{}
	}
	s.idem, s.oddIDs, s.idemOrder, s.idemStart = make(map[IdemKey]idemCall, len(snap.Keys)), nil, nil, 0
	for _, k := range snap.Keys {
		s.remember(KeyOf(k.Agent, k.Key), k.Call, k.At)
	}
	s.size = snap.Size
	s.revocations++ // what the snapshot revoked is not counted: assume something
	s.evictMu.Lock()
	s.evictions = nil
	s.evictMu.Unlock()
}

// Revocations is the committed count of token revocations (see the field).
func (s *State) Revocations() uint64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.revocations
}

// Counts returns an agent's committed counts.
func (s *State) Counts(agent string) store.Counts {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if c, ok := s.counts[agent]; ok {
		return *c
	}
	return store.Counts{}
}

func (s *State) countsOf(agent string) *store.Counts {
	c, ok := s.counts[agent]
	if !ok {
		c = &store.Counts{}
		s.counts[agent] = c
	}
	return c
}

// Size is the number of entries folded.
func (s *State) Size() int64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.size
}

// Call returns a committed call held in memory (open, or not flushed yet).
func (s *State) Call(id string) (store.Call, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	c, ok := s.calls[id]
	if !ok {
		return store.Call{}, false
	}
	return *c, true
}

// Approval returns a committed approval held in memory.
func (s *State) Approval(callID string) (store.Approval, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	a, ok := s.approvals[callID]
	if !ok {
		return store.Approval{}, false
	}
	return *a, true
}

// Agent returns a committed agent held in memory.
func (s *State) Agent(id string) (store.Agent, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	a, ok := s.agents[id]
	if !ok {
		return store.Agent{}, false
	}
	return *a, true
}

// Agents lists every agent held in memory.
func (s *State) Agents() []store.Agent {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]store.Agent, 0, len(s.agents))
	for _, a := range s.agents {
		out = append(out, *a)
	}
	return out
}

// OverdueCalls lists approved calls whose expiry is before t, and
// OverdueApprovals pending approvals whose expiry is before t; at most
// limit of each. Only open calls are looked at, never the history.
func (s *State) OverdueCalls(t time.Time, limit int) []store.Call {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var out []store.Call
	for _, c := range s.calls {
		if len(out) >= limit {
			break
		}
		if c.Status == store.CallApproved && c.ExpiresAt.Before(t) {
			out = append(out, *c)
		}
	}
	return out
}

// OverdueApprovals: see OverdueCalls.
func (s *State) OverdueApprovals(t time.Time, limit int) []store.Approval {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var out []store.Approval
	for _, a := range s.approvals {
		if len(out) >= limit {
			break
		}
		if a.Status == store.ApprovalPending && a.ExpiresAt.Before(t) {
			out = append(out, *a)
		}
	}
	return out
}

// PendingApprovals lists the pending approvals.
func (s *State) PendingApprovals() []store.Approval {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var out []store.Approval
	for _, a := range s.approvals {
		if a.Status == store.ApprovalPending {
			out = append(out, *a)
		}
	}
	return out
}

// Heads returns a copy of every chain head.
func (s *State) Heads() map[string]Head {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return maps.Clone(s.heads)
}

// Evict forgets closed calls and decided approvals the store has flushed
// to its tables: those whose committed version is still the one flushed.
// It takes effect with the next batch's commit (the sequencer reads the
// committed state without a lock, so only it changes it).
func (s *State) Evict(calls map[string]*store.Call, approvals map[string]*store.Approval) {
	s.evictMu.Lock()
	s.evictions = append(s.evictions, eviction{calls, approvals})
	s.evictMu.Unlock()
}

type eviction struct {
	calls     map[string]*store.Call
	approvals map[string]*store.Approval
}

// evict applies the evictions queued (s.mu held).
func (s *State) evict() {
	s.evictMu.Lock()
	q := s.evictions
	s.evictions = nil
	s.evictMu.Unlock()
	for _, e := range q {
		s.evictOne(e.calls, e.approvals)
	}
}

func (s *State) evictOne(calls map[string]*store.Call, approvals map[string]*store.Approval) {
	for id, c := range calls {
		if cur, ok := s.calls[id]; ok && cur == c && !open(c.Status) {
			delete(s.calls, id)
		}
	}
	for id, a := range approvals {
		if cur, ok := s.approvals[id]; ok && cur == a && a.Status != store.ApprovalPending {
			delete(s.approvals, id)
		}
	}
}

// Held is how many calls and approvals the state holds (a gauge).
func (s *State) Held() (calls, approvals, keys int) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.calls), len(s.approvals), len(s.idem)
}

func open(status string) bool { return status == store.CallApproved || status == store.CallPending }
