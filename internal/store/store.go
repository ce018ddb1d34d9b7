// Package store is ARX's storage: the log of record entries, the state they
// describe (agents, calls, approvals), and what the record does not hold
// (tokens by hash, people, sessions, the outbox).
//
// The promise every implementation keeps: when Update returns nil, the
// state changes and the record entries its function made are durable
// together; when it returns an error, none of them happened. Entries get
// contiguous indexes, and each names the leaf hash of its agent's previous
// entry. The state of agents, calls and approvals is a fold of the log
// (package state), so it can always be rebuilt from it.
//
// One sequencer, shared by every backend (package sequencer), orders
// Updates and runs them against that state in memory; a backend only makes
// a batch durable (sqlite: segment files and a database for the rest;
// postgres: one transaction per batch). Backends pass the conformance
// suite in storetest.
package store

import (
	"context"
	"errors"
	"fmt"
	"math"
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
	ID       string
	Name     string
	Owner    string
	Status   string
	Manifest []byte // the job_description.yaml as hired
	// ManifestHash names the job description it is held to now: the
	// hired one's (Manifest), or one applied later (manifest.changed),
	// whose text ManifestText reads. ShadowHash names a job description
	// evaluated beside it on every call without being enforced; "" none.
	ManifestHash string
	ShadowHash   string
	ShadowSince  int64 // the log index of the entry that set ShadowHash
	CreatedAt    time.Time
	TerminatedAt *time.Time
}

// ChatLink is a person's account in a chat tool, linked to the person
// once, from the console: a decision made there by that account is the
// person's. Provider is "slack" or the name a signed-webhook integration
// gives; Subject the account's stable id there (Slack: team/user ids),
// never a display name; Name is what the chat tool showed as its name
// when it was linked, for people to recognise it.
type ChatLink struct {
	Provider  string
	Subject   string
	UserID    string
	Name      string
	CreatedAt time.Time
}

// Group is a group of people an identity provider keeps in ARX through
// SCIM: its members' roles follow it where the server maps the group's
// name to a role.
type Group struct {
	ID         string
	Name       string
	ExternalID string
	Members    []string // user ids, sorted
	CreatedAt  time.Time
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
	// Args are the call's arguments as recorded (canonical JSON text; ""
	// when it had none or its action records their hash only), ArgsHash
	// their SHA-256 (hex; "" when it had none).
	Args        string
	ArgsHash    string
	CreatedAt   time.Time
	ExpiresAt   time.Time
	CompletedAt *time.Time
	Outcome     string
	Error       string
	DurationMS  int64
}

// Entry is a record entry as stored: its canonical bytes, its leaf hash and
// the Merkle hashes its append stored (tlog.StoredHashes: the leaf first).
type Entry struct {
	Index  int64
	Agent  string
	Type   string
	Call   string
	Leaf   tlog.Hash
	Hashes []tlog.Hash // filled by Append; reads may leave it nil
	Data   []byte      // canonical encoding (record.Entry.Marshal)
}

// Checkpoint is a signed checkpoint kept by the store.
type Checkpoint struct {
	Size      int64
	Signed    []byte
	CreatedAt time.Time
}

// Store is the storage of one deployment: the log of record entries, the
// state they describe, and what is not in the record (people, sessions,
// the outbox). It is the union of the role interfaces below, each of which
// its consumers take alone (the publisher a LogReader, the login limiter
// People, ...).
type Store interface {
	// Update runs fn in a read-write transaction. Concurrent Updates are
	// committed together (group commit), each isolated: an error from fn
	// undoes only fn's changes. fn must do all its work through tx, must
	// not block on anything else, and may be called at most once. Update
	// returns nil only once everything fn did is durable.
	//
	// The state of agents, calls and approvals is what the log says: an
	// Update changes it by appending the entries that record the change
	// (record/events.go), and the store folds them (internal/store/state).
	Update(ctx context.Context, fn func(tx Tx) error) error

	LogReader
	Checkpoints
	Agents
	Calls
	Approvals
	People
	Outbox
	Settings

	Ping(ctx context.Context) error
	Close() error
}

// LogReader reads the log.
type LogReader interface {
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
}

// Checkpoints keeps the log's signed checkpoints. PutCheckpoint is not
// part of an Update: a checkpoint is a statement about the log, made after
// the entries it covers are durable, and writing it must never hold up the
// governed calls that are being sequenced.
type Checkpoints interface {
	// PutCheckpoint keeps a checkpoint; one of a size already kept is
	// ignored.
	PutCheckpoint(ctx context.Context, c *Checkpoint) error
}

// Agents reads agents and tokens.
type Agents interface {
	Agent(ctx context.Context, id string) (*Agent, error)
	Agents(ctx context.Context) ([]Agent, error)
	TokenByHash(ctx context.Context, hash []byte) (*Token, error)
	// AgentByToken reads an agent token and its agent: the check every
	// agent request makes.
	AgentByToken(ctx context.Context, hash []byte) (*Token, *Agent, error)
	// TokenRevocations counts the agent-token revocations the log holds,
	// as far as this process has folded it (and more: it may only grow
	// when in doubt). An agent token read by AgentByToken after the count
	// was n is unrevoked for an Update whose Tx.TokenRevocations is n.
	// wait is how long an Update made for a token answered from memory
	// may wait to be run before it is withdrawn (Update: its context
	// ended), so that a request is refused within the bound of the read
	// it saved; 0 while writes are stalled (StallAfter): requests then read
	// first.
	TokenRevocations() (n uint64, wait time.Duration)
	// ManifestText reads a job description stored with PutManifest by
	// its hash (manifest.Hash); ErrNotFound when there is none.
	ManifestText(ctx context.Context, hash string) ([]byte, error)
}

// Calls reads calls.
type Calls interface {
	Call(ctx context.Context, id string) (*Call, error)
	// Calls lists an agent's calls, newest first.
	Calls(ctx context.Context, agentID string, limit int) ([]Call, error)
	// OverdueCalls lists approved calls whose expiry is before t.
	OverdueCalls(ctx context.Context, t time.Time, limit int) ([]Call, error)
}

// Approvals reads approvals.
type Approvals interface {
	Approval(ctx context.Context, callID string) (*Approval, error)
	// Approvals lists approvals in a status ("" for all), newest first.
	Approvals(ctx context.Context, status string, limit int) ([]Approval, error)
	// OverdueApprovals lists pending approvals whose expiry is before t.
	OverdueApprovals(ctx context.Context, t time.Time, limit int) ([]Approval, error)
}

// People reads people, their sessions and the failures rate limits count.
type People interface {
	User(ctx context.Context, id string) (*User, error)
	UserByEmail(ctx context.Context, email string) (*User, error) // case-insensitive
	Users(ctx context.Context) ([]User, error)
	// UserTokens lists a person's API tokens, revoked ones included,
	// newest first.
	UserTokens(ctx context.Context, userID string) ([]Token, error)
	Passkeys(ctx context.Context, userID string) ([]Passkey, error) // oldest first
	// ChatLink finds the person a chat account is linked to; ChatLinks
	// lists a person's, oldest first.
	ChatLink(ctx context.Context, provider, subject string) (*ChatLink, error)
	ChatLinks(ctx context.Context, userID string) ([]ChatLink, error)
	// Groups lists the groups SCIM keeps, by name.
	Groups(ctx context.Context) ([]Group, error)
	SessionByHash(ctx context.Context, hash []byte) (*Session, error)
	// Failures counts the failures recorded under key (Tx.AddFailure) at
	// or after since, outside a transaction: a cheap early refusal.
	Failures(ctx context.Context, key []byte, since time.Time) (int, error)
}

// Outbox reads the outbox.
type Outbox interface {
	// DueOutbox lists undone outbox items due at t, oldest first. A store
	// shared by replicas may lease them: an item listed at t is not listed
	// again before t+OutboxLease unless FinishOutbox reschedules it.
	DueOutbox(ctx context.Context, t time.Time, limit int) ([]OutboxItem, error)
	// PendingOutbox lists undone outbox items of kind, oldest first, at
	// most limit, whether due or not, and leases nothing: a look at what
	// is still to be delivered, not a delivery.
	PendingOutbox(ctx context.Context, kind string, limit int) ([]OutboxItem, error)
}

// Settings reads deployment settings.
type Settings interface {
	// Meta reads a deployment setting; ErrNotFound when unset.
	Meta(ctx context.Context, key string) (string, error)
}

// Tx is a read-write transaction: the union of the ports below.
type Tx interface {
	Log
	AgentsTx
	CallsTx
	PeopleTx
	OutboxTx
	SettingsTx
}

// Log appends to the record.
type Log interface {
	// Append adds e to the log. It sets e.Index, e.Prev (the leaf hash of
	// e.Agent's previous entry) and, when zero, e.Time, and folds e into
	// the state: an entry about a call, approval or agent that does not
	// exist fails (and fails the Update).
	Append(e *record.Entry) error
}

// AgentsTx reads agents and writes what the record does not hold of them:
// an agent's profile (its manifest), and tokens (by hash).
type AgentsTx interface {
	Agent(id string) (*Agent, error)
	// TokenRevocations is Agents.TokenRevocations as this transaction
	// sees the log: revocations committed before it, by any replica, and
	// those of the Updates before it in its batch.
	TokenRevocations() uint64
	// InsertAgent adds a hired agent's profile; its agent.hired entry,
	// appended after, makes it active.
	InsertAgent(a *Agent) error
	InsertToken(t *Token) error
	// RevokeToken revokes agent agentID's token id (keeping an earlier
	// revocation's time); ErrNotFound when the agent has no such token, so
	// that one agent's token is never revoked in another's name.
	RevokeToken(agentID, id string, at time.Time) error
	// RevokeAgentTokens revokes every live token of an agent and counts them.
	RevokeAgentTokens(agentID string, at time.Time) (int, error)
	// PutManifest keeps a job description's text under its hash
	// (manifest.Hash of text), for agents to be held to it or shadowed by
	// it once an entry says so; storing the same one again is harmless.
	PutManifest(hash string, text []byte) error
}

// CallsTx reads calls, approvals and the counts budgets are checked
// against, as the log says they stand (this Update's own appends
// included). None of them reads an agent's history.
type CallsTx interface {
	Call(id string) (*Call, error)
	// CallByIdempotencyKey finds the call an agent made with a key, for
	// as long as the store remembers keys (IdempotencyWindow).
	CallByIdempotencyKey(agentID, key string) (*Call, error)
	// AgentOpenCalls lists an agent's calls in status approved or pending.
	AgentOpenCalls(agentID string) ([]Call, error)
	// CallCounts is an agent's recent calls.
	CallCounts(agentID string) Counts
	Approval(callID string) (*Approval, error)
}

// PeopleTx reads and writes people, setup tokens, sessions and failures.
type PeopleTx interface {
	User(id string) (*User, error)
	UserByEmail(email string) (*User, error)
	InsertUser(u *User) error
	UpdateUser(u *User) error
	// InsertPasskey adds a person's passkey; UserPasskeys lists them,
	// oldest first; UsePasskey keeps the signature counter an assertion
	// reported and when; DeletePasskey removes one, only in its owner's
	// name (ErrNotFound otherwise).
	InsertPasskey(k *Passkey) error
	UserPasskeys(userID string) ([]Passkey, error)
	UsePasskey(id []byte, signCount uint32, at time.Time) error
	DeletePasskey(userID string, id []byte) error
	// InsertSetupToken adds a person's setup token, and removes their
	// others: one outstanding link per person.
	InsertSetupToken(t *SetupToken) error
	// DeleteSetupTokens removes every setup token of a person.
	DeleteSetupTokens(userID string) error
	// RevokeUserTokens revokes every live token of a person and counts
	// them; RevokeUserToken revokes one, only in its owner's name
	// (ErrNotFound otherwise).
	RevokeUserTokens(userID string, at time.Time) (int, error)
	RevokeUserToken(userID, id string, at time.Time) error
	// UseSetupToken marks an unused, unexpired token used at t and returns it.
	UseSetupToken(hash []byte, t time.Time) (*SetupToken, error)
	// LinkChat links a chat account to a person, replacing an earlier
	// link of the same account; UnlinkChat removes one, only in its
	// owner's name (ErrNotFound otherwise).
	LinkChat(l *ChatLink) error
	UnlinkChat(userID, provider, subject string) error
	// Groups lists the groups (by name); PutGroup adds or replaces one
	// (ErrConflict when another group has its name); DeleteGroup removes
	// one (ErrNotFound otherwise).
	Groups() ([]Group, error)
	PutGroup(g *Group) error
	DeleteGroup(id string) error
	InsertSession(s *Session) error
	DeleteSession(hash []byte) error
	// DeleteUserSessions ends every session of a user (password reset, disable).
	DeleteUserSessions(userID string) error
	// EndLocalPasswords ends what local passwords opened, when the server
	// turns them off: every session not started through the identity
	// provider, and every person's API token. It returns both counts.
	EndLocalPasswords(at time.Time) (sessions, tokens int, err error)

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
}

// OutboxTx writes the outbox.
type OutboxTx interface {
	// Enqueue adds an outbox item; it becomes visible when the transaction commits.
	Enqueue(kind string, payload []byte, at time.Time) error
	// FinishOutbox records an attempt: done when errMsg is "", else retried at next.
	FinishOutbox(id int64, at time.Time, errMsg string, next time.Time) error
}

// SettingsTx writes deployment settings and checkpoints.
type SettingsTx interface {
	// Meta reads a setting in the transaction (ErrNotFound if unset): a
	// read-then-set that replicas must agree on.
	Meta(key string) (string, error)
	SetMeta(key, value string) error
	PutCheckpoint(c *Checkpoint) error
}

// StallAfter is how long one turn of the sequencer may take before the
// store says writes are not flowing (Agents.TokenRevocations).
const StallAfter = time.Second

// ErrWithdrawn is Update's error, with its context's, for an Update whose
// context ended before its batch ran it: it never ran, nothing of it was
// written.
var ErrWithdrawn = errors.New("store: the update was withdrawn before it ran")

// TokenWait is Agents.TokenRevocations's wait for a store whose reads have
// no bound of their own (SQLite).
const TokenWait = 5 * time.Second

// Counting windows of Counts: calls per minute for the last RateMinutes
// minutes, and per quarter hour for CountHours hours (a budget day in any
// time zone starts on a quarter hour and lasts at most 25 hours).
const (
	RateMinutes = 60
	CountHours  = 25
	quarter     = 15 * 60              // seconds
	quarters    = (CountHours + 1) * 4 // one hour of margin
)

// Counts is an agent's recent calls: every call it asked for (refused ones
// too) by minute, the calls it was let make or wait for (not refused) by
// quarter hour, and how many are open now.
type Counts struct {
	Minutes  [RateMinutes + 1]Bucket // by minute % len
	Quarters [quarters]Bucket        // by quarter % len
	Open     int                     // calls approved or pending
	// Usage is what the calls cost, by quarter hour % len: declared costs
	// when calls were let through or held, reported costs and tokens
	// when they were completed. Nil until the agent's first cost. Copies
	// of a Counts share it: Charge puts a new one in place rather than
	// write to it, so that a copy made for an Update (and dropped if the
	// Update fails) never changes the one it was copied from, and the
	// copy costs a pointer, not the window (2.5 KB), for the agents that
	// declare no cost.
	Usage *UsageWindow
}

// UsageWindow is an agent's costs by quarter hour % len.
type UsageWindow [quarters]Usage

// Usage is what calls cost in one quarter hour: money in millionths of
// the budget's currency, and tokens.
type Usage struct {
	At     int32 // Unix quarter hour
	Micros int64
	Tokens int64
}

// Charge counts a cost at t, in a new window (see Usage).
func (c *Counts) Charge(t time.Time, micros, tokens int64) {
	if micros == 0 && tokens == 0 {
		return
	}
	w := new(UsageWindow)
	if c.Usage != nil {
		*w = *c.Usage
	}
	w.Charge(t, micros, tokens)
	c.Usage = w
}

// Charge counts a cost at t in the window itself: for a window that no
// other Counts shares (Counts.Charge copies it first).
func (w *UsageWindow) Charge(t time.Time, micros, tokens int64) {
	q := int32(t.Unix() / quarter)
	u := &w[q%int32(len(w))]
	if u.At != q {
		*u = Usage{At: q}
	}
	u.Micros = satAdd(u.Micros, micros)
	u.Tokens = satAdd(u.Tokens, tokens)
}

// satAdd adds without wrapping: a day's usage stops at the largest int64.
func satAdd(a, b int64) int64 {
	if b > 0 && a > math.MaxInt64-b {
		return math.MaxInt64
	}
	return a + b
}

// Spent is what was charged at or after t, by quarter hour (t should fall
// on one), at most CountHours back.
func (c *Counts) Spent(t time.Time) (micros, tokens int64) {
	if c.Usage == nil {
		return 0, 0
	}
	q := t.Unix() / quarter
	for _, u := range c.Usage {
		if int64(u.At) >= q {
			micros = satAdd(micros, u.Micros)
			tokens = satAdd(tokens, u.Tokens)
		}
	}
	return micros, tokens
}

// Bucket is a count of calls in one minute or quarter hour. Counts is
// copied whenever an Update changes it: it is kept small.
type Bucket struct {
	At int32 // Unix minute or quarter hour
	N  int32
}

// Add counts a call asked for at t; allowed says it was not refused.
func (c *Counts) Add(t time.Time, allowed bool) {
	m := int32(t.Unix() / 60)
	b := &c.Minutes[m%int32(len(c.Minutes))]
	if b.At != m {
		*b = Bucket{At: m}
	}
	b.N++
	if !allowed {
		return
	}
	q := int32(t.Unix() / quarter)
	b = &c.Quarters[q%int32(len(c.Quarters))]
	if b.At != q {
		*b = Bucket{At: q}
	}
	b.N++
}

// Minute is the count of minute m (Unix seconds / 60), and the sum of the
// minutes from since up to m, excluded (at most RateMinutes back).
func (c *Counts) Minute(m, since int64) (n, earlier int64) {
	for _, b := range c.Minutes {
		switch at := int64(b.At); {
		case at == m:
			n = int64(b.N)
		case at >= since && at < m:
			earlier += int64(b.N)
		}
	}
	return n, earlier
}

// Since is how many calls were let through or held at or after t, counted
// by quarter hour (t should fall on one, as every budget day's start
// does), at most CountHours back.
func (c *Counts) Since(t time.Time) int64 {
	q := t.Unix() / quarter
	var n int64
	for _, b := range c.Quarters {
		if int64(b.At) >= q {
			n += int64(b.N)
		}
	}
	return n
}

// CallIDFloor is the smallest call id (a UUIDv7, which sorts by time) of
// a call made at t: calls made since t have ids at or above it.
func CallIDFloor(t time.Time) string {
	ms := max(t.UnixMilli(), 0)
	h := fmt.Sprintf("%012x", ms)
	return h[:8] + "-" + h[8:12] + "-7000-8000-000000000000"
}

// HashReader adapts a LogReader to tlog.HashReader for proofs.
func HashReader(ctx context.Context, s LogReader) tlog.HashReader {
	return tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) { return s.ReadHashes(ctx, idx) })
}

// OutboxLease is the longest a store may hold back an outbox item it listed
// (DueOutbox), so that one replica delivers it while the others skip it.
const OutboxLease = 10 * time.Minute

// Prober is what a store whose log is written apart from its database
// offers: Probe writes to the log, durably, without adding to it (a
// readiness check that the write path of governed calls works).
type Prober interface {
	Probe(ctx context.Context) error
}

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
