package store

import "time"

// User roles.
const (
	RoleManager = "manager" // decides approvals the manifests name them for
	RoleAdmin   = "admin"   // also hires agents and manages people
)

// User is a person: a manager or an admin.
type User struct {
	ID           string
	Email        string
	Role         string
	PasswordHash string // argon2id, in its PHC string form; "" until set
	CreatedAt    time.Time
	DisabledAt   *time.Time
}

// Passkey is a person's WebAuthn credential: what signs their approval
// decisions. Its public half is also in the log (passkey.registered).
type Passkey struct {
	ID          []byte // the credential id
	UserID      string
	Name        string // the person's label
	PublicKey   []byte // COSE_Key
	Algorithm   int64  // COSE algorithm
	Attestation string // attestation format
	AAGUID      []byte
	RPID        string
	SignCount   uint32
	Flags       uint8 // authenticator flags at registration (backup eligible, backed up)
	CreatedAt   time.Time
	LastUsedAt  *time.Time
}

// SetupToken lets a person set (or reset) their password once.
type SetupToken struct {
	Hash      []byte
	UserID    string
	ExpiresAt time.Time
	UsedAt    *time.Time
}

// Session is a console login.
type Session struct {
	Hash      []byte // SHA-256 of the cookie value
	UserID    string
	CSRF      string // the synchronizer token of this session's forms
	CreatedAt time.Time
	ExpiresAt time.Time
	// IdPIssuer and IdPSubject name who the identity provider said signed
	// in (single sign-on); empty for a session started with a password.
	IdPIssuer  string
	IdPSubject string
}

// Approval statuses.
const (
	ApprovalPending   = "pending"
	ApprovalGranted   = "granted"
	ApprovalDenied    = "denied"
	ApprovalExpired   = "expired"
	ApprovalWithdrawn = "withdrawn"
	ApprovalCancelled = "cancelled" // the agent was terminated
)

// Approval is a pending or past decision about one high-risk call.
type Approval struct {
	CallID      string
	AgentID     string
	Status      string
	Approvers   []string // approvers and delegates the manifest named at request time
	RequestedAt time.Time
	ExpiresAt   time.Time
	DecidedBy   string // "user:<email>" or "system"
	DecidedAt   *time.Time
	Reason      string
	// Passkey names the passkey that signed the decision (its credential
	// id as record.EncodeID writes it); "" for an unsigned decision.
	Passkey string
	// Quorum is how many different approvers must grant (0 or 1: one);
	// Grants are the emails of those who granted so far.
	Quorum int
	Grants []string
}

// OutboxItem is work that reaches outside the database (webhooks,
// notifications), written in the transaction that caused it and done,
// with retries, after it commits.
type OutboxItem struct {
	ID        int64
	Kind      string
	Payload   []byte
	CreatedAt time.Time
	Attempts  int
	NextAt    time.Time
	DoneAt    *time.Time
	LastError string
}
