package runtime

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/arxsec/arx/internal/connector"
	"github.com/arxsec/arx/internal/store"
)

// A gateway request lives no longer than its call: once the call is
// completed, expired or revoked, or its agent terminated, a request still
// in flight (a stream, an upload) is cut within CutInterval, on every
// replica, and its gateway.response entry says why. The process that
// closed the call cuts its own requests at once; every process also looks
// at the calls of its requests in flight every CutInterval, from the
// store, so a termination committed on another replica reaches them too.
// A store that cannot be read to confirm a call is live cuts its requests
// (fail closed).

// CutInterval is how often the calls of requests in flight are checked.
const CutInterval = 250 * time.Millisecond

// inflight is the gateway requests being forwarded now.
type inflight struct {
	mu      sync.Mutex
	passes  map[*GatewayPass]struct{}
	running bool // the checking loop runs
}

// track registers a pass, and starts the checking loop when it is the
// first.
func (r *Runtime) track(p *GatewayPass) {
	f := &r.conn.inflight
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.passes == nil {
		f.passes = map[*GatewayPass]struct{}{}
	}
	f.passes[p] = struct{}{}
	if !f.running {
		f.running = true
		go r.checkInflight()
	}
}

func (r *Runtime) untrack(p *GatewayPass) {
	f := &r.conn.inflight
	f.mu.Lock()
	delete(f.passes, p)
	f.mu.Unlock()
	p.cancel(nil)
}

// cut ends the requests in flight that match, with reason.
func (r *Runtime) cut(match func(*GatewayPass) bool, reason string) int {
	f := &r.conn.inflight
	f.mu.Lock()
	var hit []*GatewayPass
	for p := range f.passes {
		if match(p) {
			hit = append(hit, p)
		}
	}
	f.mu.Unlock()
	for _, p := range hit {
		p.cancel(fmt.Errorf("%w: %s", connector.ErrCut, reason))
	}
	return len(hit)
}

// cutCall and cutAgent cut at once what this process forwards for a call,
// or for an agent, closed here.
func (r *Runtime) cutCall(id, reason string) {
	r.cut(func(p *GatewayPass) bool { return p.call.ID == id }, reason)
}

func (r *Runtime) cutAgent(id, reason string) int {
	return r.cut(func(p *GatewayPass) bool { return p.call.AgentID == id }, reason)
}

// checkInflight looks at the calls of the requests in flight every
// CutInterval while there are any.
func (r *Runtime) checkInflight() {
	f := &r.conn.inflight
	t := time.NewTicker(CutInterval)
	defer t.Stop()
	stopping := r.stopping
	for {
		select {
		case <-t.C:
		case <-stopping:
			r.cut(func(*GatewayPass) bool { return true }, "ARX is shutting down")
			stopping = nil
		}
		f.mu.Lock()
		if len(f.passes) == 0 {
			f.running = false
			f.mu.Unlock()
			return
		}
		calls := map[string]*GatewayPass{}
		for p := range f.passes {
			calls[p.call.ID] = p
		}
		f.mu.Unlock()
		for id, p := range calls {
			if reason := r.liveness(p); reason != "" {
				r.cutCall(id, reason)
			}
		}
	}
}

// liveness says why a pass's call may no longer be forwarded, or "".
func (r *Runtime) liveness(p *GatewayPass) string {
	ctx, cancel := context.WithTimeout(context.Background(), CutInterval*4)
	defer cancel()
	now := r.now()
	if !now.Before(p.call.ExpiresAt) {
		return cutReason(store.CallExpired)
	}
	a, err := r.store.Agent(ctx, p.call.AgentID)
	if err != nil {
		return "the record cannot be read to confirm the call is live"
	}
	if err := agentUsable(a); err != nil {
		var what string
		if a.Status == store.AgentTerminated {
			what = "the agent was terminated"
		} else {
			what = "the agent is " + a.Status
		}
		return what
	}
	c, err := r.store.Call(ctx, p.call.ID)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return "the call is gone"
		}
		return "the record cannot be read to confirm the call is live"
	}
	if st := EffectiveStatus(c, now); st != store.CallApproved {
		return cutReason(st)
	}
	return ""
}

// cutReason is why a request in flight is cut, in its gateway.response
// entry, once its call has the status st: the same words whichever
// noticed first, the process that closed the call or the check of
// requests in flight.
func cutReason(st string) string {
	switch st {
	case store.CallExpired:
		return "the call's credential expired"
	case store.CallFailed:
		return "the call ended as failed"
	case store.CallPending:
		return "the call is waiting for approval"
	case store.CallCompleted, store.CallRevoked, store.CallDenied, store.CallRefused:
		return "the call was " + st
	}
	return "the call is " + st
}
