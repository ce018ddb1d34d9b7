package sqlite

import (
	"context"
	"errors"
	"sync"

	"github.com/arxsec/arx/internal/store"
)

var _ store.Leader = (*Store)(nil)

// TryLead implements store.Leader. One process uses a SQLite database, so
// it leads whenever no lease of its own holds name; a lease ends only when
// released or when the store closes.
func (s *Store) TryLead(ctx context.Context, name string) (store.Lease, error) {
	select {
	case <-s.quit:
		return nil, store.ErrClosed
	default:
	}
	s.leadMu.Lock()
	defer s.leadMu.Unlock()
	if s.leases[name] != nil {
		return nil, store.ErrLedElsewhere
	}
	if s.leases == nil {
		s.leases = map[string]*lease{}
	}
	l := &lease{s: s, name: name, done: make(chan struct{})}
	s.leases[name] = l
	go func() {
		select {
		case <-s.quit:
			l.Release()
		case <-l.done:
		}
	}()
	return l, nil
}

type lease struct {
	s    *Store
	name string
	once sync.Once
	done chan struct{}
}

func (l *lease) Done() <-chan struct{} { return l.done }

func (l *lease) Check(ctx context.Context) error {
	select {
	case <-l.done:
		return errors.New("sqlite: the lead was released")
	default:
		return ctx.Err()
	}
}

func (l *lease) Release() {
	l.once.Do(func() {
		l.s.leadMu.Lock()
		delete(l.s.leases, l.name)
		l.s.leadMu.Unlock()
		close(l.done)
	})
}
