// Package store is ARX's storage: agents, tokens, calls, and the log of
// record entries, sequenced in the same transaction as the state change each
// entry describes.
//
// The promise every implementation keeps: when Update returns nil, the
// state changes and the record entries its function made are durable
// together; when it returns an error, none of them happened. Entries get
// contiguous indexes, and each names the leaf hash of its agent's previous
// entry. Implementations live in sub-packages (sqlite, postgres) and pass the
// conformance suite in storetest.
package store

import (
	"context"
	"errors"
	"time"

	"github.com/arxsec/arx/record"
	"golang.org/x/mod/sumdb/tlog"
)

// Errors a caller decides on.
var (
	ErrNotFound = errors.New("store: not found")
	ErrConflict = errors.New("store: conflict") // a unique key is taken
	// ErrClosed is returned once the store is closing.
	ErrClosed = errors.New("store: closed")
	// ErrLedElsewhere is TryLead's answer when another process leads.
	ErrLedElsewhere = errors.New("store: another process leads")
	// ErrStorageFailed is wrapped in every Update's error once the disk
	// failed to make a commit durable (a failed fsync): what reached the
	// disk is then unknown until the process restarts and recovery
	// decides, so the store refuses every write for good, as PostgreSQL
	// does. A caller maps it like any failed write (503
	// record.unavailable, /readyz not ready); only a restart clears it.
	ErrStorageFailed = errors.New("store: storage failed, restart after checking the disk")
)

// Agent statuses.
const (
	AgentActive     = "active"
	AgentSuspended  = "suspended"
	AgentTerminated = "terminated"
)

// Agent is a hired agent.
type Agent struct {
	ID           string
	Name         string
	Owner        string
	Status       string
	Manifest     []byte // the job_description.yaml as hired
	ManifestHash string
	CreatedAt    time.Time
	TerminatedAt *time.Time
}

// Token kinds.
const (
	TokenAgent = "agent" // an agent's bearer token (ARX_TOKEN)
	TokenAdmin = "admin" // an operator's token
	TokenUser  = "user"  // a person's API token (arx login)
)

// Token is a bearer token, known only by its hash.
type Token struct {
	ID        string
	Hash      []byte // SHA-256 of the token
	Kind      string
	AgentID   string // for agent tokens
	UserID    string // for user tokens
	IssuedBy  string // the actor that asked for it ("admin:<id>", "user:<email>")
	Label     string
	CreatedAt time.Time
	RevokedAt *time.Time
}

// Call statuses.
const (
	CallPending   = "pending_approval"
	CallApproved  = "approved"
	CallCompleted = "completed"
	CallFailed    = "failed"
	CallExpired   = "expired"
	CallRefused   = "refused"
	CallDenied    = "denied"
	CallRevoked   = "revoked"
)

// Call is one governed action.
type Call struct {
	ID             string
	AgentID        string
	Connector      string
	Action         string
	DeclaredRisk   string
	Risk           string
	Status         string
	IdempotencyKey string
	Summary        string
	Refusal        string // the error code of a refused call
	RaisedBy       string // the person whose token made the call, when a person's (arx run), else ""
	CreatedAt      time.Time
	ExpiresAt      time.Time
	CompletedAt    *time.Time
	Outcome        string
	Error          string
	DurationMS     int64
}

// Entry is a record entry as stored: its canonical bytes and leaf hash.
type Entry struct {
	Index int64
	Agent string
	Type  string
	Call  string
	Leaf  tlog.Hash
	Data  []byte // canonical encoding (record.Entry.Marshal)
}

// Checkpoint is a signed checkpoint kept by the store.
type Checkpoint struct {
	Size      int64
	Signed    []byte
	CreatedAt time.Time
}

// Store is the storage of one deployment.
type Store interface {
	// Update runs fn in a read-write transaction. Concurrent Updates may be
	// committed together (group commit), each isolated by a savepoint: an
	// error from fn undoes only fn's changes. fn must do all its work
	// through tx, must not block on anything else, and may be called at
	// most once. Update returns nil only once everything fn did is durable.
	// A Tx method's error other than ErrNotFound and ErrConflict may leave
	// the transaction unusable (PostgreSQL): the Update then fails even if
	// fn goes on.
	Update(ctx context.Context, fn func(tx Tx) error) error

	Agent(ctx context.Context, id string) (*Agent, error)
	Agents(ctx context.Context) ([]Agent, error)
	TokenByHash(ctx context.Context, hash []byte) (*Token, error)
	// AgentByToken reads an agent token and its agent in one query: the
	// check every agent request makes.
	AgentByToken(ctx context.Context, hash []byte) (*Token, *Agent, error)
	Call(ctx context.Context, id string) (*Call, error)
	// Calls lists an agent's calls, newest first.
	Calls(ctx context.Context, agentID string, limit int) ([]Call, error)
	// OverdueCalls lists approved calls whose expiry is before t.
	OverdueCalls(ctx context.Context, t time.Time, limit int) ([]Call, error)

	// Entries returns entries with start <= index < start+limit, in order.
	Entries(ctx context.Context, start int64, limit int) ([]Entry, error)
	// AgentEntries returns an agent's entries with index > after, in order.
	AgentEntries(ctx context.Context, agent string, after int64, limit int) ([]Entry, error)
	// TreeSize is the number of entries in the log.
	TreeSize(ctx context.Context) (int64, error)
	// ReadHashes returns stored Merkle hashes by tlog.StoredHashIndex; it
	// makes the store a tlog.HashReader for proofs.
	ReadHashes(ctx context.Context, indexes []int64) ([]tlog.Hash, error)
	// LatestCheckpoint returns the newest signed checkpoint, or ErrNotFound.
	LatestCheckpoint(ctx context.Context) (*Checkpoint, error)

	// Meta reads a deployment setting; ErrNotFound when unset.
	Meta(ctx context.Context, key string) (string, error)

	// Failures counts the failures recorded under key (Tx.AddFailure) at
	// or after since, outside a transaction: a cheap early refusal.
	Failures(ctx context.Context, key []byte, since time.Time) (int, error)

	User(ctx context.Context, id string) (*User, error)
	UserByEmail(ctx context.Context, email string) (*User, error) // case-insensitive
	Users(ctx context.Context) ([]User, error)
	SessionByHash(ctx context.Context, hash []byte) (*Session, error)

	Approval(ctx context.Context, callID string) (*Approval, error)
	// Approvals lists approvals in a status ("" for all), newest first.
	Approvals(ctx context.Context, status string, limit int) ([]Approval, error)
	// OverdueApprovals lists pending approvals whose expiry is before t.
	OverdueApprovals(ctx context.Context, t time.Time, limit int) ([]Approval, error)
	// DueOutbox lists undone outbox items due at t, oldest first. A store
	// shared by replicas may lease them: an item listed at t is not listed
	// again before t+OutboxLease unless FinishOutbox reschedules it.
	DueOutbox(ctx context.Context, t time.Time, limit int) ([]OutboxItem, error)

	Ping(ctx context.Context) error
	Close() error
}

// Tx is a read-write transaction.
type Tx interface {
	Agent(id string) (*Agent, error)
	Call(id string) (*Call, error)
	CallByIdempotencyKey(agentID, key string) (*Call, error)
	// OpenCalls counts an agent's calls in status approved or pending.
	OpenCalls(agentID string) (int, error)
	// CallsOn is how many calls CountCall counted for an agent on a day
	// ("2006-01-02" in the agent's time zone).
	CallsOn(agentID, day string) (int, error)
	// CountCall adds one to an agent's calls on a day.
	CountCall(agentID, day string) error
	// CountMinute adds one to an agent's calls in a minute (Unix seconds
	// / 60) and returns that minute's count with this call, and the sum of
	// the agent's counts in the minutes from since up to minute, excluded.
	// Minutes before since may be forgotten.
	CountMinute(agentID string, minute, since int64) (n, earlier int64, err error)
	// AgentOpenCalls lists an agent's calls in status approved or pending.
	AgentOpenCalls(agentID string) ([]Call, error)

	InsertAgent(a *Agent) error
	SetAgentStatus(id, status string, at time.Time) error
	InsertToken(t *Token) error
	RevokeToken(id string, at time.Time) error
	// RevokeAgentCredentials closes every approved call of an agent as
	// revoked at t, in one statement, and counts them.
	RevokeAgentCredentials(agentID string, at time.Time) (int, error)
	// RevokeAgentTokens revokes every live token of an agent and counts them.
	RevokeAgentTokens(agentID string, at time.Time) (int, error)
	InsertCall(c *Call) error
	UpdateCall(c *Call) error
	SetMeta(key, value string) error
	PutCheckpoint(c *Checkpoint) error

	User(id string) (*User, error)
	UserByEmail(email string) (*User, error)
	InsertUser(u *User) error
	UpdateUser(u *User) error
	InsertSetupToken(t *SetupToken) error
	// UseSetupToken marks an unused, unexpired token used at t and returns it.
	UseSetupToken(hash []byte, t time.Time) (*SetupToken, error)
	InsertSession(s *Session) error
	DeleteSession(hash []byte) error
	// DeleteUserSessions ends every session of a user (password reset, disable).
	DeleteUserSessions(userID string) error

	Approval(callID string) (*Approval, error)
	InsertApproval(a *Approval) error
	UpdateApproval(a *Approval) error

	// Enqueue adds an outbox item; it becomes visible when the transaction commits.
	Enqueue(kind string, payload []byte, at time.Time) error
	// FinishOutbox records an attempt: done when errMsg is "", else retried at next.
	FinishOutbox(id int64, at time.Time, errMsg string, next time.Time) error

	// Failures counts the failures recorded under key at or after since.
	// Failures are what rate limits count across replicas (login attempts);
	// a key is a hash chosen by the caller, never a secret or an address in
	// clear.
	Failures(key []byte, since time.Time) (int, error)
	// AddFailure records a failure under key at t and returns its id.
	AddFailure(key []byte, at time.Time) (int64, error)
	// DeleteFailure forgets one failure (an attempt counted in advance
	// that succeeded); an unknown id is not an error.
	DeleteFailure(id int64) error
	// PruneFailures forgets every failure recorded before t.
	PruneFailures(before time.Time) error

	// Append adds e to the log. It sets e.Index, e.Prev (the leaf hash of
	// e.Agent's previous entry) and, when zero, e.Time.
	Append(e *record.Entry) error
}

// HashReader adapts a Store to tlog.HashReader for proofs.
func HashReader(ctx context.Context, s Store) tlog.HashReader {
	return tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) { return s.ReadHashes(ctx, idx) })
}

// OutboxLease is the longest a store may hold back an outbox item it listed
// (DueOutbox), so that one replica delivers it while the others skip it.
const OutboxLease = 10 * time.Minute

// Notifier is what a store shared by several replicas offers so that a
// change committed on one wakes the others (long polls, live console
// updates). Messages are small (under 7,000 bytes) and carry no secrets.
type Notifier interface {
	// Notify sends msg to every replica listening, this one included.
	Notify(ctx context.Context, msg string) error
	// Listen delivers messages until ctx ends, in the order sent. It sends
	// "" whenever messages may have been missed (on start and after a lost
	// connection): the listener should then recheck what it waits for.
	Listen(ctx context.Context) (<-chan string, error)
}

// Leader is what a store shared by several replicas offers so that exactly
// one of them at a time does a job that must not run twice at once (the
// bucket publisher). A store used by one process only leads always.
type Leader interface {
	// TryLead tries once, without waiting, to take the lead for name. It
	// returns ErrLedElsewhere while another process holds it; a caller
	// that wants to lead tries again every second or two.
	TryLead(ctx context.Context, name string) (Lease, error)
}

// Lease is the lead, held until it is released or lost. The store checks
// it by itself about every second; once a check fails or times out, or
// the database ends the session that holds it, Done is closed and the
// holder must stop the job at once. A shared store frees the lead of a
// holder that stops answering after a bounded time (postgres:
// LeaderSessionTimeout), longer than the holder takes to notice.
type Lease interface {
	// Done is closed once the lease is lost or released.
	Done() <-chan struct{}
	// Check confirms by a round trip to the database that the lease is
	// still held, just before a step that must not be taken twice. An
	// error means it is not (and Done is then closed).
	Check(ctx context.Context) error
	// Release gives the lead up; the next TryLead of another process
	// takes it. It may be called more than once.
	Release()
}
