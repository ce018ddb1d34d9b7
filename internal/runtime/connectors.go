package runtime

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"sync"
	"time"

	"github.com/arxsec/arx/arxerr"
	"github.com/arxsec/arx/internal/connector"
	"github.com/arxsec/arx/internal/store"
	"github.com/arxsec/arx/record"
)

// Record entry types of the connector layer.
const (
	TypeGatewayRequest  = record.TypeGatewayRequest // before a request is forwarded (fail closed)
	TypeGatewayResponse = "gateway.response"        // after the answer streamed: status and sizes
	TypeGatewayRefused  = "gateway.refused"         // a live call's request that its action does not allow
	TypeRoleDropped     = "connector.role_dropped"  // a call's database role is gone
)

// Timings of the connector layer.
const (
	// LeftoverInterval is how often roles of closed calls are looked for
	// (also once at start).
	LeftoverInterval = time.Minute
	// responseQueue bounds the gateway.response entries waiting to be
	// written; a full queue makes gateway requests wait.
	responseQueue = 4096
	// dropKind is the outbox kind that drops a call's role.
	dropKind = "connector.drop"
	// passwordPurpose derives the password of a call's database role.
	passwordPurpose = "postgres-password"
)

// connectors are the systems of record configured on this server.
type connectors struct {
	list         []connector.Connector
	gateways     map[string]connector.Gateway
	provisioners map[string]connector.Provisioner
	responses    chan *record.Entry
	verified     verifiedCache
	inflight     inflight // gateway_cut.go
}

func newConnectors(list []connector.Connector) *connectors {
	cs := &connectors{list: list, gateways: map[string]connector.Gateway{}, provisioners: map[string]connector.Provisioner{},
		responses: make(chan *record.Entry, responseQueue), verified: verifiedCache{m: map[string]verified{}}}
	for _, c := range list {
		if g, ok := c.(connector.Gateway); ok {
			cs.gateways[c.Name()] = g
		}
		if p, ok := c.(connector.Provisioner); ok {
			cs.provisioners[c.Name()] = p
		}
	}
	sort.Slice(cs.list, func(i, j int) bool { return cs.list[i].Name() < cs.list[j].Name() })
	return cs
}

// Connectors describes the connectors configured on this server, without
// their secrets.
func (r *Runtime) Connectors() []connector.Info {
	out := make([]connector.Info, 0, len(r.conn.list))
	for _, c := range r.conn.list {
		out = append(out, c.Info())
	}
	return out
}

// connectorCredential adds what a connector makes per call (postgres: the
// DSN of the call's role) to a result that carries a credential. It runs
// after the credential.issued entry committed. When the call closed while
// the role was made, the role is taken back (through the outbox, recorded)
// and the result loses its credential.
func (r *Runtime) connectorCredential(res *CallResult) error {
	c := res.Call
	p, ok := r.conn.provisioners[c.Connector]
	if !ok || res.Credential == "" {
		return nil
	}
	ctx := context.Background()
	dsn, err := p.Provision(ctx, connector.Call{ID: c.ID, Action: c.Action, Expiry: c.ExpiresAt,
		Password: r.issuer.CallSecret(passwordPurpose, c.ID)})
	if err != nil {
		r.log.Warn("connector: provision failed", "connector", c.Connector, "call", c.ID, "err", err)
		return arxerr.New(arxerr.ConnectorUnavailable, "connector %s could not make the database role of call %s", c.Connector, c.ID)
	}
	cur, err := r.store.Call(ctx, c.ID)
	if err != nil {
		return r.internal("connector credential", err)
	}
	if EffectiveStatus(cur, r.now()) != store.CallApproved {
		if err := r.store.Update(ctx, func(tx store.Tx) error { return r.enqueueDrop(tx, cur, "closed while provisioned") }); err != nil {
			r.log.Warn("connector: enqueue drop", "call", c.ID, "err", err)
		}
		r.kickOutbox()
		res.Credential = ""
		return arxerr.New(arxerr.CredentialClosed, "call %s closed while its database role was made", c.ID)
	}
	res.DSN = dsn
	return nil
}

// dropJob is the outbox payload that drops one call's role.
type dropJob struct {
	Connector string `json:"connector"`
	Call      string `json:"call"`
	Agent     string `json:"agent"`
	Action    string `json:"action"`
	Risk      string `json:"risk"`
	Reason    string `json:"reason"`
}

// onCallClosed runs in the transaction that closes a call (completed,
// failed, expired, revoked): when the call's connector made something for
// it, the drop is enqueued in the same transaction, so it cannot be lost.
func (r *Runtime) onCallClosed(tx store.Tx, c *store.Call) error {
	if _, ok := r.conn.provisioners[c.Connector]; !ok {
		return nil
	}
	return r.enqueueDrop(tx, c, c.Status)
}

func (r *Runtime) enqueueDrop(tx store.Tx, c *store.Call, reason string) error {
	b, err := json.Marshal(dropJob{Connector: c.Connector, Call: c.ID, Agent: c.AgentID, Action: c.Action, Risk: c.Risk, Reason: reason})
	if err != nil {
		return err
	}
	return tx.Enqueue(dropKind, b, r.now())
}

// afterCallClosed runs once the close committed: the outbox drops the role
// now rather than at its next tick.
func (r *Runtime) afterCallClosed(c *store.Call) {
	if _, ok := r.conn.provisioners[c.Connector]; ok {
		r.kickOutbox()
	}
	r.cutCall(c.ID, cutReason(c.Status))
}

// deliverDropItem is the outbox's work for dropKind: drop the role, then,
// in one transaction, record that it is gone and finish the item. A
// failure is retried by the outbox (the drop is idempotent).
func (r *Runtime) deliverDropItem(ctx context.Context, it *store.OutboxItem) {
	var j dropJob
	if err := json.Unmarshal(it.Payload, &j); err != nil {
		r.finishOutbox(ctx, it, fmt.Errorf("bad drop job: %w", err))
		return
	}
	err := r.drop(ctx, j, func(tx store.Tx) error {
		now := r.now()
		return tx.FinishOutbox(it.ID, now, "", now)
	})
	if err != nil {
		r.finishOutbox(ctx, it, err)
	}
}

// drop drops a call's role and records that it is gone; also, when not
// nil, runs in the transaction of the record entry.
func (r *Runtime) drop(ctx context.Context, j dropJob, also func(store.Tx) error) error {
	p, ok := r.conn.provisioners[j.Connector]
	if !ok {
		return fmt.Errorf("connector %s is not configured: cannot drop the role of call %s", j.Connector, j.Call)
	}
	existed, err := p.Revoke(ctx, j.Call)
	if err != nil {
		if ctx.Err() == nil {
			// Loud: what the call was given is not all gone. (A postgres
			// role that cannot be dropped has lost its login first.)
			r.log.Error("connector: the access of a call could not be removed; retrying", "connector", j.Connector,
				"call", j.Call, "resource", p.Resource(j.Call), "reason", j.Reason, "err", err)
		}
		return err
	}
	err = r.store.Update(ctx, func(tx store.Tx) error {
		if err := tx.Append(&record.Entry{Agent: j.Agent, Call: j.Call, Connector: j.Connector, Action: j.Action, Risk: j.Risk,
			Actor: "system", Type: TypeRoleDropped, Time: r.now(),
			Data: map[string]any{"role": p.Resource(j.Call), "reason": j.Reason, "existed": existed}}); err != nil {
			return err
		}
		if also != nil {
			return also(tx)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("record the drop: %w", err)
	}
	r.log.Info("connector: role dropped", "connector", j.Connector, "call", j.Call, "reason", j.Reason, "existed", existed)
	return nil
}

// maxPendingDrops bounds the drops the look for leftover roles reads from
// the outbox; with more queued, it waits for the outbox to deliver them.
const maxPendingDrops = 10_000

// dropLeftovers drops the roles whose calls are no longer open: left
// behind by a crash, a drop that gave up, or a connector that was down.
// Roles of calls this deployment does not know are left alone, and so are
// those whose drop the outbox still holds.
func (r *Runtime) dropLeftovers(ctx context.Context) {
	// A call that ends from now on has its role dropped by the outbox:
	// only what ended before is left over (racing the outbox would record
	// the drop under the wrong reason).
	start := r.now()
	// Nor is a call that ended before, but whose drop the outbox has yet
	// to deliver (a call closed a moment ago, or before a restart).
	queued, err := r.store.PendingOutbox(ctx, dropKind, maxPendingDrops+1)
	if err != nil {
		if ctx.Err() == nil {
			r.log.Warn("connector: list the drops to deliver", "err", err)
		}
		return
	}
	if len(queued) > maxPendingDrops {
		r.log.Warn("connector: the outbox holds more drops than a look for leftover roles reads; looking again later",
			"drops", len(queued))
		return
	}
	pending := make(map[string]bool, len(queued))
	for _, it := range queued {
		var j dropJob
		if json.Unmarshal(it.Payload, &j) == nil {
			pending[j.Connector+"\x00"+j.Call] = true
		}
	}
	for name, p := range r.conn.provisioners {
		ids, err := p.Provisioned(ctx)
		if err != nil {
			if ctx.Err() == nil {
				r.log.Warn("connector: list roles", "connector", name, "err", err)
			}
			continue
		}
		var jobs []dropJob
		for _, id := range ids {
			c, err := r.store.Call(ctx, id)
			if errors.Is(err, store.ErrNotFound) {
				continue
			}
			if err != nil {
				r.log.Warn("connector: leftover", "call", id, "err", err)
				continue
			}
			if !leftover(c, name, start, r.now(), pending[name+"\x00"+c.ID]) {
				continue
			}
			jobs = append(jobs, dropJob{Connector: name, Call: c.ID, Agent: c.AgentID, Action: c.Action, Risk: c.Risk, Reason: "leftover"})
		}
		bounded(dropWorkers, len(jobs), func(i int) {
			if err := r.drop(ctx, jobs[i], nil); err != nil && ctx.Err() == nil {
				r.log.Warn("connector: drop leftover", "call", jobs[i].Call, "err", err)
			}
		})
	}
}

// leftover decides whether the role connector made for call c is left
// over, at now, for a look that began at start: the call is closed, ended
// before the look began (one that ends later is the outbox's), and no drop
// of it waits in the outbox (queued). Either way the role is dropped; the
// rule decides which drop records it, and so under which reason.
func leftover(c *store.Call, connector string, start, now time.Time, queued bool) bool {
	if c.Connector != connector || queued || EffectiveStatus(c, now) == store.CallApproved {
		return false
	}
	if ended := c.CompletedAt; ended != nil {
		return ended.Before(start)
	}
	return c.ExpiresAt.Before(start)
}

// checkConnectors logs what the connectors find wrong with their
// upstreams (connector.Checker), once at start.
func (r *Runtime) checkConnectors(ctx context.Context) {
	for name, p := range r.conn.provisioners {
		ch, ok := p.(connector.Checker)
		if !ok {
			continue
		}
		warnings, err := ch.Check(ctx)
		if err != nil {
			if ctx.Err() == nil {
				r.log.Warn("connector: check the upstream", "connector", name, "err", err)
			}
			continue
		}
		for _, w := range warnings {
			r.log.Warn("connector: upstream weakness", "connector", name, "warning", w)
		}
	}
}

// startConnectors starts the connector layer's background work (writing
// gateway.response entries, dropping leftover roles) and returns a function
// that waits for it to end after ctx is done, with every queued entry
// written and the connectors closed.
func (r *Runtime) startConnectors(ctx context.Context) (wait func()) {
	if len(r.conn.list) == 0 {
		return func() {}
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		r.writeResponses(ctx)
	}()
	go func() {
		defer wg.Done()
		if len(r.conn.provisioners) == 0 {
			return
		}
		r.checkConnectors(ctx)
		t := time.NewTicker(LeftoverInterval)
		defer t.Stop()
		for {
			r.dropLeftovers(ctx)
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return func() {
		wg.Wait()
		for _, c := range r.conn.list {
			if cl, ok := c.(io.Closer); ok {
				cl.Close()
			}
		}
	}
}

// writeResponses appends queued gateway.response entries, many to one
// update, until ctx ends and the queue is empty.
func (r *Runtime) writeResponses(ctx context.Context) {
	batch := make([]*record.Entry, 0, 256)
	for {
		batch = batch[:0]
		select {
		case e := <-r.conn.responses:
			batch = append(batch, e)
		case <-ctx.Done():
			for {
				batch = batch[:0]
			drain:
				for len(batch) < cap(batch) {
					select {
					case e := <-r.conn.responses:
						batch = append(batch, e)
					default:
						break drain
					}
				}
				if len(batch) == 0 {
					return
				}
				r.appendEntries(batch)
			}
		}
	fill:
		for len(batch) < cap(batch) {
			select {
			case e := <-r.conn.responses:
				batch = append(batch, e)
			default:
				break fill
			}
		}
		r.appendEntries(batch)
	}
}

func (r *Runtime) appendEntries(batch []*record.Entry) {
	var err error
	for attempt := range 5 {
		if attempt > 0 {
			time.Sleep(time.Duration(100<<attempt) * time.Millisecond)
		}
		err = r.store.Update(context.Background(), func(tx store.Tx) error {
			for _, e := range batch {
				cp := *e
				if err := tx.Append(&cp); err != nil {
					return err
				}
			}
			return nil
		})
		if err == nil {
			return
		}
	}
	r.metrics.recordFailures.Inc()
	r.log.Error("gateway: response entries lost", "entries", len(batch), "err", err)
}
