package postgres

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"strconv"
	"sync"
	"time"

	"github.com/arxsec/arx/internal/store"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

var _ store.Leader = (*Store)(nil)

// Leadership (store.Leader). The leader of a name holds a session advisory
// lock, pg_try_advisory_lock(LeaderLockSpace, key of the name), on a
// connection of its own outside the pool, for as long as it leads. Locks of
// the two-key form never collide with LogLockKey and the migration lock
// (one bigint key each), and are per database like the log.
//
// The lock is freed when its session ends: at once when the holder closes
// the connection or its process dies (the kernel closes the socket), and
// after LeaderSessionTimeout when the holder stops answering with its
// connection open (a hung process, a path that drops everything): the
// session's idle_session_timeout (PostgreSQL 14 or later) and TCP
// keepalives end it. The holder checks the lock every LeaderCheckInterval,
// each check bounded by LeaderCheckTimeout; a failed check ends the lease
// before the server can have freed the lock, since interval plus timeout
// is less than LeaderSessionTimeout.
const (
	LeaderLockSpace      int32 = 0x61727845 // "arxE"
	LeaderCheckInterval        = time.Second
	LeaderCheckTimeout         = 2 * time.Second
	LeaderSessionTimeout       = 5 * time.Second
)

// leaderKey is the advisory lock's second key for a name.
func leaderKey(name string) int32 {
	h := fnv.New32a()
	h.Write([]byte(name))
	return int32(h.Sum32())
}

// errLeaseLost is what Check answers once the lease is gone.
var errLeaseLost = errors.New("postgres: the lead is lost")

// TryLead implements store.Leader. A process that does not get the lock
// keeps its connection for the next try.
func (s *Store) TryLead(ctx context.Context, name string) (store.Lease, error) {
	key := leaderKey(name)
	conn, cached, err := s.candidate(ctx, name)
	if err != nil {
		return nil, err
	}
	got, err := tryLock(ctx, conn, key)
	if err != nil && cached { // the kept connection was ended meanwhile: once more on a new one
		conn.Close(context.Background())
		if conn, err = s.leaderConn(ctx); err != nil {
			return nil, err
		}
		got, err = tryLock(ctx, conn, key)
	}
	if err != nil {
		conn.Close(context.Background())
		return nil, fmt.Errorf("postgres: try to lead %s: %w", name, err)
	}
	if !got {
		s.keepCandidate(name, conn)
		return nil, store.ErrLedElsewhere
	}
	l := &lease{s: s, name: name, key: key, conn: conn, done: make(chan struct{})}
	go l.watch()
	return l, nil
}

func tryLock(ctx context.Context, conn *pgx.Conn, key int32) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, LeaderCheckTimeout)
	defer cancel()
	var got bool
	err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1::int4, $2::int4)`, LeaderLockSpace, key).Scan(&got)
	return got, err
}

// candidate returns the connection kept from the last try for name, or a
// new one.
func (s *Store) candidate(ctx context.Context, name string) (*pgx.Conn, bool, error) {
	s.leadMu.Lock()
	if s.leadClosed {
		s.leadMu.Unlock()
		return nil, false, store.ErrClosed
	}
	conn := s.candidates[name]
	delete(s.candidates, name)
	s.leadMu.Unlock()
	if conn != nil && !conn.IsClosed() {
		return conn, true, nil
	}
	conn, err := s.leaderConn(ctx)
	return conn, false, err
}

func (s *Store) keepCandidate(name string, conn *pgx.Conn) {
	s.leadMu.Lock()
	defer s.leadMu.Unlock()
	if s.leadClosed || s.candidates[name] != nil {
		conn.Close(context.Background())
		return
	}
	if s.candidates == nil {
		s.candidates = map[string]*pgx.Conn{}
	}
	s.candidates[name] = conn
}

// closeLeadership closes the kept connections; leases end with s.bg.
func (s *Store) closeLeadership() {
	s.leadMu.Lock()
	defer s.leadMu.Unlock()
	s.leadClosed = true
	for name, conn := range s.candidates {
		conn.Close(context.Background())
		delete(s.candidates, name)
	}
}

// leaderConn opens a connection whose session the server ends once it
// idles LeaderSessionTimeout or its peer stops answering TCP keepalives.
func (s *Store) leaderConn(ctx context.Context) (*pgx.Conn, error) {
	cfg := s.connCfg.Copy()
	secs := strconv.Itoa(int(LeaderSessionTimeout / time.Second))
	rp := cfg.RuntimeParams
	rp["tcp_keepalives_idle"] = strconv.Itoa(int(LeaderSessionTimeout/time.Second) - 3)
	rp["tcp_keepalives_interval"] = "1"
	rp["tcp_keepalives_count"] = "3"
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("postgres: connect: %w", err)
	}
	// Not a startup parameter: PostgreSQL 13 would refuse the connection.
	if _, err := conn.Exec(ctx, `SET idle_session_timeout = '`+secs+`s'`); err != nil {
		var pe *pgconn.PgError
		if !errors.As(err, &pe) || pe.Code != "42704" { // undefined_object: before PostgreSQL 14
			conn.Close(context.Background())
			return nil, fmt.Errorf("postgres: leader session: %w", err)
		}
		s.log.Debug("postgres: no idle_session_timeout (PostgreSQL 13): a hung leader keeps the lead until it answers or its host goes silent")
	}
	return conn, nil
}

// lease is a held leader lock.
type lease struct {
	s    *Store
	name string
	key  int32

	mu   sync.Mutex // one query at a time on conn
	conn *pgx.Conn  // nil once lost or released
	done chan struct{}
}

// watch checks the lock every LeaderCheckInterval until the lease ends.
func (l *lease) watch() {
	t := time.NewTicker(LeaderCheckInterval)
	defer t.Stop()
	for {
		select {
		case <-l.done:
			return
		case <-l.s.bg.Done():
			l.end()
			return
		case <-t.C:
			if err := l.Check(l.s.bg); err != nil {
				return
			}
		}
	}
}

// Done implements store.Lease.
func (l *lease) Done() <-chan struct{} { return l.done }

// Check implements store.Lease: the session that took the lock still
// answers, so still holds it.
func (l *lease) Check(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.conn == nil {
		return errLeaseLost
	}
	ctx, cancel := context.WithTimeout(ctx, LeaderCheckTimeout)
	defer cancel()
	var held bool
	err := l.conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory'
		AND pid = pg_backend_pid() AND granted AND objsubid = 2 AND classid::int8 = $1 AND objid::int8 = $2)`,
		int64(uint32(LeaderLockSpace)), int64(uint32(l.key))).Scan(&held)
	if err == nil && !held {
		err = errors.New("the session no longer holds the lock")
	}
	if err != nil {
		l.s.log.Warn("postgres: lost the lead", "name", l.name, "err", err)
		l.endLocked()
		return fmt.Errorf("%w: %v", errLeaseLost, err)
	}
	return nil
}

// Release implements store.Lease: closing the session frees the lock.
func (l *lease) Release() { l.end() }

func (l *lease) end() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.endLocked()
}

func (l *lease) endLocked() {
	if l.conn == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	l.conn.Close(ctx)
	cancel()
	l.conn = nil
	close(l.done)
}
