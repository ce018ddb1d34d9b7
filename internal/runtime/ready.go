package runtime

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/arxsec/arx/internal/store"
)

// ErrNotReady is Ready's error when the store does not take writes.
var ErrNotReady = errors.New("the personnel record cannot be written")

// readiness remembers that a write to the record failed (a full or
// read-only disk, a locked database, a lost PostgreSQL), so that /readyz
// takes this replica out of a load balancer's rotation until a write
// succeeds again. Without traffic nothing would show that it recovered, so
// Ready probes with a write of its own, one at a time, in the background.
type readiness struct {
	failedAt atomic.Int64 // unix nanoseconds of the last failed write; 0 when writes work

	mu      sync.Mutex
	probing chan struct{} // closed when the running probe ends; nil when none runs
}

func (rd *readiness) writeFailed() { rd.failedAt.Store(time.Now().UnixNano()) }

// Ready reports whether this replica can serve governed calls: the
// database answers and, after a failed write, takes writes again.
func (r *Runtime) Ready(ctx context.Context) error {
	if err := r.store.Ping(ctx); err != nil {
		return fmt.Errorf("the database does not answer: %w", err)
	}
	since := r.ready.failedAt.Load()
	if since == 0 {
		return nil
	}
	done := r.ready.probe(func() {
		// A write through the same group commit as every call: if it
		// commits, so would theirs. Only the probe's own failure is left
		// alone: a newer failure of a call keeps the replica not ready.
		pctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		err := r.store.Update(pctx, func(tx store.Tx) error {
			return tx.SetMeta("ready_probe", strconv.FormatInt(time.Now().UnixNano(), 10))
		})
		if p, ok := r.store.(store.Prober); ok && err == nil {
			err = p.Probe(pctx) // the log, which governed calls write apart from the database
		}
		if err == nil {
			r.ready.failedAt.CompareAndSwap(since, 0)
			r.log.Info("the record takes writes again")
		}
	})
	select {
	case <-done:
		if r.ready.failedAt.Load() == 0 {
			return nil
		}
	case <-ctx.Done():
	}
	return ErrNotReady
}

// probe runs fn unless a probe already runs, and returns a channel closed
// when the running probe ends.
func (rd *readiness) probe(fn func()) <-chan struct{} {
	rd.mu.Lock()
	defer rd.mu.Unlock()
	if rd.probing != nil {
		return rd.probing
	}
	done := make(chan struct{})
	rd.probing = done
	go func() {
		defer func() {
			rd.mu.Lock()
			rd.probing = nil
			rd.mu.Unlock()
			close(done)
		}()
		fn()
	}()
	return done
}
