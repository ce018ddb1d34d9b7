package server

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/arxsec/arx/internal/store"
)

// Replicas given the same bucket elect one publisher: the one that holds
// the store's lead for leaderName (a PostgreSQL session advisory lock; a
// SQLite store always leads). The others try again every leadRetry and
// meanwhile read the publisher's progress from the store, so their
// console and metrics show it too. A leader stops publishing as soon as
// its lease is lost; a replica that shuts down publishes what its last
// checkpoint covers, then gives the lead up.
const (
	leaderName = "publish"
	leadRetry  = time.Second
)

// publish runs the publisher whenever this replica leads, until ctx ends.
func (s *Server) publish(ctx context.Context) {
	p, log := s.Publisher, s.cfg.Logger
	leader, ok := s.store.(store.Leader)
	if !ok {
		p.SetLeading(true)
		p.Run(ctx)
		return
	}
	var failing string
	for {
		l, err := leader.TryLead(ctx, leaderName)
		switch {
		case err == nil:
			failing = ""
			s.lease.set(l)
			p.SetLeading(true)
			log.Info("publishing: this replica leads, and publishes to the bucket", "bucket", p.Bucket())
			pctx, cancel := context.WithCancel(ctx)
			go func() {
				select {
				case <-l.Done():
					cancel()
				case <-pctx.Done():
				}
			}()
			p.Run(pctx)
			cancel()
			if ctx.Err() != nil {
				return // shutting down: Close publishes the last checkpoint under the lease, then releases it
			}
			s.lease.set(nil)
			l.Release()
			p.SetLeading(false)
			log.Warn("publishing: this replica lost the lead and stopped publishing; another replica takes over", "bucket", p.Bucket())
		case errors.Is(err, store.ErrLedElsewhere):
			failing = ""
			if err := p.Follow(ctx); err != nil && ctx.Err() == nil {
				log.Debug("publishing: read the publisher's progress", "err", err)
			}
		case ctx.Err() != nil:
			return
		default:
			if msg := err.Error(); msg != failing { // once per kind of failure, not every second
				failing = msg
				log.Warn("publishing: cannot try to lead; retrying", "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(leadRetry):
		}
	}
}

// lease is the publisher's lead while this replica holds it.
type lease struct {
	mu sync.Mutex
	l  store.Lease
}

func (x *lease) set(l store.Lease) {
	x.mu.Lock()
	x.l = l
	x.mu.Unlock()
}

func (x *lease) get() store.Lease {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.l
}

var errNotLeading = errors.New("this replica does not lead")

// check is the publisher's Leading: a round trip confirms the lead.
func (x *lease) check(ctx context.Context) error {
	l := x.get()
	if l == nil {
		return errNotLeading
	}
	return l.Check(ctx)
}

// held reports whether the lead is held and not known to be lost.
func (x *lease) held() bool {
	l := x.get()
	if l == nil {
		return false
	}
	select {
	case <-l.Done():
		return false
	default:
		return true
	}
}

// release gives the lead up at shutdown.
func (x *lease) release(log *slog.Logger) {
	l := x.get()
	if l == nil {
		return
	}
	x.set(nil)
	l.Release()
	log.Info("publishing: this replica gave up the lead")
}
