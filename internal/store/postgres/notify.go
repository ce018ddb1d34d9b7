package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// NotifyChannel is the LISTEN/NOTIFY channel replicas share. Channels are
// per database, like the log.
const NotifyChannel = "arx_events"

// MaxNotify is the longest message Notify sends (PostgreSQL's limit is
// 8000 bytes).
const MaxNotify = 7000

// listenCheck is how long a listener waits for a notification before it
// checks that its connection still answers.
const listenCheck = 15 * time.Second

// Notify implements store.Notifier.
func (s *Store) Notify(ctx context.Context, msg string) error {
	if len(msg) > MaxNotify {
		return fmt.Errorf("postgres: notification of %d bytes is over %d", len(msg), MaxNotify)
	}
	if _, err := s.pool.Exec(ctx, `SELECT pg_notify($1, $2)`, NotifyChannel, msg); err != nil {
		return fmt.Errorf("postgres: notify: %w", err)
	}
	return nil
}

// Listen implements store.Notifier, on a connection of its own outside the
// pool. It reconnects, with backoff, whenever the connection is lost, and
// then sends "" (notifications may have been missed meanwhile). While it
// is reconnecting after a failure, Ping fails, so readiness reflects that
// wake-ups from other replicas are not arriving. The channel is closed when ctx ends or
// the store closes.
func (s *Store) Listen(ctx context.Context) (<-chan string, error) {
	select {
	case <-s.quit:
		return nil, errors.New("postgres: store closed")
	default:
	}
	ctx, cancel := context.WithCancel(ctx)
	go func() {
		select {
		case <-ctx.Done():
		case <-s.bg.Done():
			cancel()
		}
	}()
	out := make(chan string, 256)
	go func() {
		defer close(out)
		defer cancel()
		l := &listener{s: s}
		defer l.setDown(false)
		backoff := 50 * time.Millisecond
		for ctx.Err() == nil {
			err := s.listen(ctx, out, l)
			if ctx.Err() != nil {
				return
			}
			l.setDown(true)
			s.log.Warn("postgres: notification listener lost its connection; reconnecting", "err", err, "in", backoff)
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 5*time.Second)
		}
	}()
	return out, nil
}

// listener tracks whether one listener is cut off, for Ping. It starts
// up: until its first connection, the "" it then sends covers what came
// before.
type listener struct {
	s    *Store
	down bool
}

func (l *listener) setDown(down bool) {
	if down == l.down {
		return
	}
	l.down = down
	if down {
		l.s.listeners.Add(1)
	} else {
		l.s.listeners.Add(-1)
	}
}

// listen runs one listener connection until it fails or ctx ends.
func (s *Store) listen(ctx context.Context, out chan<- string, l *listener) error {
	conn, err := pgx.ConnectConfig(ctx, s.connCfg)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, `LISTEN `+NotifyChannel); err != nil {
		return err
	}
	l.setDown(false)
	// From here nothing is missed; what was sent before may have been.
	select {
	case out <- "":
	case <-ctx.Done():
		return ctx.Err()
	}
	for {
		wctx, cancel := context.WithTimeout(ctx, listenCheck)
		n, err := conn.WaitForNotification(wctx)
		cancel()
		switch {
		case err == nil:
			select {
			case out <- n.Payload:
			case <-ctx.Done():
				return ctx.Err()
			}
		case ctx.Err() != nil:
			return ctx.Err()
		case errors.Is(err, context.DeadlineExceeded) && !conn.IsClosed():
			pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			err := conn.Ping(pctx)
			cancel()
			if err != nil {
				return err
			}
		default:
			return err
		}
	}
}
