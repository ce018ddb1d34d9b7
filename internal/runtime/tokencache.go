package runtime

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/arxsec/arx/arxerr"
	"github.com/arxsec/arx/internal/store"
)

// An agent's bearer token is read from the store on every request, which
// on PostgreSQL is a round trip per request (two per governed call). For
// the requests whose every effect happens in an Update (asking for a call,
// completing one), AuthenticateAgent answers from memory instead, and the
// Update checks what memory cannot know:
//   - the agent's status, from the state the Update runs against (a
//     termination or suspension on any replica is in it);
//   - that no token was revoked since the token was read: the store
//     counts revocations (token.revoked entries folded, by this replica's
//     Updates and, under the log lock, by the other replicas'); an Update
//     that sees another count than the one the token was read at answers
//     errReauth, and the request reads the token from the store again
//     (then goes on as a request without memory does).
// So a revoked token does nothing once its revocation has committed, on
// any replica, as when every request read the store.
//
// A request that saved its read is still refused within that read's
// bound when the database is out of reach: its Update is withdrawn when
// it has not run within the store's wait (update), which on PostgreSQL is
// the read timeout (an Update runs once its batch holds the log lock, a
// round trip to the database). While the store's writes are stalled (a
// turn of its sequencer over store.StallAfter), tokens are read first
// again.

// agentTokenCacheSize bounds the tokens kept; the cache is emptied when full.
const agentTokenCacheSize = 1 << 14

type agentTokenCache struct {
	mu sync.Mutex
	m  map[string]rememberedToken
}

type rememberedToken struct {
	p           Principal
	revocations uint64
}

// errReauth: a token was revoked since the request's token was read.
var errReauth = errors.New("runtime: a token was revoked since this one was read")

// AuthenticateAgent resolves an agent's bearer token for a request whose
// effects all happen in one Update (RequestCall, CompleteCall), from
// memory when the store vouched for it and no token was revoked since.
// Any other token is resolved as AuthenticateFrom does.
func (r *Runtime) AuthenticateAgent(ctx context.Context, token, clientIP string) (*Principal, error) {
	if !strings.HasPrefix(token, agentTokenPrefix) || len(token) > 256 {
		return r.AuthenticateFrom(ctx, token, clientIP)
	}
	n, wait := r.store.TokenRevocations() // before the read: a revocation after it changes the count
	if wait <= 0 {
		// Writes are stalled (a database cut off): read first, so that
		// the request is refused within a read's bound, not a write's.
		return r.AuthenticateFrom(ctx, token, clientIP)
	}
	hash := HashToken(token)
	c := &r.agentTokens
	c.mu.Lock()
	m, ok := c.m[string(hash)]
	c.mu.Unlock()
	if ok && m.revocations == n {
		p := m.p
		p.tokenHash, p.revocations, p.wait, p.remembered = hash, n, wait, true
		return &p, nil
	}
	p, err := r.AuthenticateFrom(ctx, token, clientIP)
	if err != nil || p.Kind != store.TokenAgent {
		return p, err
	}
	c.mu.Lock()
	if c.m == nil || len(c.m) >= agentTokenCacheSize {
		c.m = make(map[string]rememberedToken)
	}
	c.m[string(hash)] = rememberedToken{p: *p, revocations: n}
	c.mu.Unlock()
	p.tokenHash, p.revocations, p.wait, p.remembered = hash, n, wait, true
	return p, nil
}

// revokedSince says whether a token was revoked since p was read from
// memory, as tx sees the log (false for a principal read from the store).
func (p *Principal) revokedSince(tx store.Tx) bool {
	return p.remembered && tx.TokenRevocations() != p.revocations
}

// checkRemembered is what an Update checks for a principal from memory:
// no token revoked since it was read, and its agent usable as the log
// stands.
func checkRemembered(tx store.Tx, p *Principal) error {
	if !p.remembered {
		return nil
	}
	if p.revokedSince(tx) {
		return errReauth
	}
	a, err := tx.Agent(p.Agent.ID)
	if err != nil {
		return err
	}
	return agentUsable(a)
}

// withReauth runs do with p, and once more with p's token read from the
// store when do answered errReauth (a token was revoked since p was read
// from memory): what a request without memory would have done.
func withReauth[T any](ctx context.Context, r *Runtime, p *Principal, do func(*Principal) (T, error)) (T, error) {
	out, err := do(p)
	if !errors.Is(err, errReauth) {
		return out, err
	}
	fresh, _, err := r.agentByToken(ctx, p.tokenHash, agentTokenPrefix)
	if err != nil {
		var zero T
		return zero, err
	}
	return do(fresh)
}

// update runs fn in one Update for p. A principal from memory saved the
// read that would have bounded the request when the database is out of
// reach: its Update is withdrawn when it has not run within the store's
// wait, and the request is refused (record.unavailable), nothing written.
func (r *Runtime) update(ctx context.Context, p *Principal, what string, fn func(store.Tx) error) error {
	if !p.remembered {
		return r.store.Update(ctx, fn)
	}
	uctx, cancel := context.WithTimeout(ctx, p.wait)
	defer cancel()
	err := r.store.Update(uctx, fn)
	if errors.Is(err, store.ErrWithdrawn) && ctx.Err() == nil { // not the request's own end
		r.metrics.recordFailures.Inc()
		r.log.Error("record write failed", "op", what, "err", fmt.Sprintf("no batch ran it within %s: the database slow or out of reach, or the writes queued too deep", p.wait))
		return arxerr.New(arxerr.RecordUnavailable, "the personnel record could not be written within %s, so nothing was done", p.wait)
	}
	return err
}
