package runtime

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/arxsec/arx/internal/store"
	"github.com/arxsec/arx/record"
)

// waiters wakes long polls when a call changes on this replica.
type waiters struct {
	mu sync.Mutex
	m  map[string][]chan struct{}
}

func (w *waiters) add(id string) chan struct{} {
	ch := make(chan struct{})
	w.mu.Lock()
	w.m[id] = append(w.m[id], ch)
	w.mu.Unlock()
	return ch
}

func (w *waiters) remove(id string, ch chan struct{}) {
	w.mu.Lock()
	defer w.mu.Unlock()
	list := w.m[id]
	for i, c := range list {
		if c == ch {
			list = append(list[:i], list[i+1:]...)
			break
		}
	}
	if len(list) == 0 {
		delete(w.m, id)
	} else {
		w.m[id] = list
	}
}

func (w *waiters) wake(id string) {
	w.mu.Lock()
	list := w.m[id]
	delete(w.m, id)
	w.mu.Unlock()
	for _, ch := range list {
		close(ch)
	}
}

// Run does the runtime's background work until ctx ends: signing
// checkpoints as the log grows, and closing calls whose credentials expired.
func (r *Runtime) Run(ctx context.Context) error {
	if err := r.Checkpoint(ctx); err != nil {
		r.log.Warn("checkpoint", "err", err)
	}
	go r.runOutbox(ctx)
	go r.listenReplicas(ctx) // wake-ups from other replicas (notify.go)
	// connectors.go: gateway.response entries, leftover database roles.
	defer r.startConnectors(ctx)()
	cp := time.NewTicker(r.cpEvery)
	defer cp.Stop()
	sw := time.NewTicker(r.swEvery)
	defer sw.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-cp.C:
			if err := r.Checkpoint(ctx); err != nil && ctx.Err() == nil {
				r.log.Warn("checkpoint", "err", err)
			}
		case <-sw.C:
			if err := r.Sweep(ctx); err != nil && ctx.Err() == nil {
				r.log.Warn("sweep", "err", err)
			}
			if err := r.SweepApprovals(ctx); err != nil && ctx.Err() == nil {
				r.log.Warn("sweep approvals", "err", err)
			}
		}
	}
}

// Checkpoint signs a checkpoint of the log as it stands, when it has grown
// since the last one. Checkpoints of one append-only tree are consistent
// with each other by construction.
func (r *Runtime) Checkpoint(ctx context.Context) error {
	size, err := r.store.TreeSize(ctx)
	if err != nil {
		return err
	}
	last, err := r.store.LatestCheckpoint(ctx)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	if last != nil && last.Size >= size {
		return nil
	}
	fr, err := r.store.ReadHashes(ctx, record.FrontierIndexes(size))
	if err != nil {
		return err
	}
	tree, err := record.NewTree(size, fr)
	if err != nil {
		return err
	}
	signed, err := record.SignCheckpoint(r.signer, size, tree.Root())
	if err != nil {
		return err
	}
	err = r.store.PutCheckpoint(ctx, &store.Checkpoint{Size: size, Signed: signed, CreatedAt: r.now()})
	if err == nil {
		r.metrics.treeSize.Set(float64(size))
	}
	return err
}

// Sweep closes approved calls whose credentials have expired, recording a
// call.expired entry for each.
func (r *Runtime) Sweep(ctx context.Context) error {
	now := r.now()
	overdue, err := r.store.OverdueCalls(ctx, now, 500)
	if err != nil {
		return err
	}
	for _, c := range overdue {
		var closed *store.Call // as the update left it, when it closed the call
		err := r.store.Update(ctx, func(tx store.Tx) error {
			closed = nil
			cur, err := tx.Call(c.ID)
			if err != nil {
				return err
			}
			if cur.Status != store.CallApproved || now.Before(cur.ExpiresAt) {
				return nil // completed meanwhile
			}
			ref := callRef(cur)
			if err := tx.Append(record.CallExpired(ref, now, cur.ExpiresAt)); err != nil {
				return err
			}
			a, err := tx.Agent(cur.AgentID)
			if err != nil {
				return err
			}
			m, err := r.Manifest(a)
			if err != nil {
				return err
			}
			if err := tx.Append(record.DriftDetected(ref, "system", now, durationDrift(m, cur, now, "open_after_ms"))); err != nil {
				return err
			}
			if cur, err = tx.Call(cur.ID); err != nil {
				return err
			}
			closed = cur
			return r.onCallClosed(tx, cur) // connectors.go: drop the call's database role
		})
		if err != nil {
			return err
		}
		if closed != nil {
			// Not c: that is the call as it was before, still approved.
			r.afterCallClosed(closed)
		}
		r.waiters.wake(c.ID)
	}
	return nil
}
