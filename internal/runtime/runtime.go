// Package runtime holds ARX's rules: hiring, tokens, governed calls and their
// credentials. Every state change it makes commits in one store transaction
// with the record entry that describes it, and nothing leaves the runtime (a
// credential, an acknowledgement) before that commit is durable: if the
// record cannot be written, the call is refused (fail closed).
package runtime

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/arxsec/arx/arxerr"
	"github.com/arxsec/arx/credential"
	"github.com/arxsec/arx/internal/connector"
	"github.com/arxsec/arx/internal/sso"
	"github.com/arxsec/arx/internal/store"
	"github.com/arxsec/arx/internal/tracing"
	"github.com/arxsec/arx/manifest"
	"github.com/arxsec/arx/record"
	"github.com/google/uuid"
	"golang.org/x/mod/sumdb/note"
)

// Config configures a Runtime.
type Config struct {
	Store     store.Store
	LogSigner note.Signer        // signs checkpoints; its name is the log's origin
	Issuer    *credential.Issuer // signs call credentials
	Logger    *slog.Logger
	Metrics   *Metrics // optional
	// CheckpointInterval is how often a new checkpoint is signed when the
	// log has grown.
	CheckpointInterval time.Duration
	// SweepInterval is how often calls past their expiry are closed.
	SweepInterval time.Duration
	Now           func() time.Time
	// Webhooks are told when approvals are requested and decided.
	Webhooks []Webhook
	// PublicURL is where people reach this deployment (links in notifications).
	PublicURL string
	// Connectors are the systems of record configured on this server
	// (connectors.go); the runtime closes them when Run ends.
	Connectors []connector.Connector
	// UserTokenLifetime is how long a person's API token (arx login)
	// lives; 0 means DefaultUserTokenLifetime.
	UserTokenLifetime time.Duration
	// SlackButtons: approval requests sent to Slack webhooks carry
	// Approve and Deny buttons (the server takes Slack's interactions).
	SlackButtons bool
	// ChatVerifiers check, before a chat account is linked to a person,
	// that the chat tool says the account is that person's (by provider:
	// "slack" checks the account's email with Slack). A Slack account is
	// never linked without one.
	ChatVerifiers map[string]func(ctx context.Context, subject, email string) error
	// SSO is the deployment's OpenID Connect identity provider (sso.go);
	// nil for none.
	SSO *sso.Client
	// NoLocalPasswords turns ARX's own passwords off: people sign in only
	// through SSO.
	NoLocalPasswords bool
	// SCIMToken is the bearer token of the identity provider's SCIM
	// client (scim.go); nil turns SCIM off. Only its hash is kept.
	SCIMToken []byte
	// Tracing exports a span per stage of each governed call (nil: off).
	Tracing *tracing.Tracing
}

// Defaults.
const (
	DefaultCheckpointInterval = time.Second
	DefaultSweepInterval      = time.Second
	DefaultUserTokenLifetime  = 30 * 24 * time.Hour
	// MaxWait bounds a long poll.
	MaxWait = 60 * time.Second
)

// Runtime applies the rules.
type Runtime struct {
	// watchers counts, per agent, the status long polls waiting on this
	// replica (arx mcp gateways, SDK watchers): a termination wakes them,
	// and its receipt says how many were told.
	watchers sync.Map // agent id → *atomic.Int64 (receipt.go)

	store   store.Store
	signer  note.Signer
	issuer  *credential.Issuer
	keys    *credential.KeySet
	log     *slog.Logger
	metrics *Metrics
	now     func() time.Time
	cpEvery time.Duration
	swEvery time.Duration

	manifests  sync.Map // manifest hash -> *manifest.Manifest; content-addressed, so never stale
	waiters    waiters
	badTokens  limiter // unknown or revoked bearer tokens per client address
	loginTurns turns   // an account's login attempts, one at a time

	userTokenLife time.Duration
	events        *Hub
	webhooks      []Webhook
	slackButtons  bool
	chatVerifiers map[string]func(ctx context.Context, subject, email string) error
	publicURL     string
	outboxKick    chan struct{}
	stopping      chan struct{} // closed by Shutdown: long polls and streams end
	stopOnce      sync.Once
	replica       replica // this process among replicas sharing the store (notify.go)
	// conn are the configured connectors (connectors.go).
	conn *connectors
	// ready tracks whether the store takes writes (ready.go).
	ready readiness
	// passkeys is the WebAuthn relying party (passkeys.go).
	passkeys passkeyState
	// agentTokens are agent tokens the store vouched for (tokencache.go).
	agentTokens agentTokenCache
	// sso is the identity provider, if any (sso.go).
	sso              *sso.Client
	noLocalPasswords bool
	scimToken        []byte // SHA-256 of the SCIM client's token; nil: SCIM is off
	tracing          *tracing.Tracing
}

// New returns a Runtime.
func New(cfg Config) (*Runtime, error) {
	if cfg.Store == nil || cfg.LogSigner == nil || cfg.Issuer == nil {
		return nil, errors.New("runtime: store, log signer and credential issuer are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.CheckpointInterval <= 0 {
		cfg.CheckpointInterval = DefaultCheckpointInterval
	}
	if cfg.SweepInterval <= 0 {
		cfg.SweepInterval = DefaultSweepInterval
	}
	if cfg.Metrics == nil {
		cfg.Metrics = NewMetrics(nil)
	}
	if cfg.UserTokenLifetime <= 0 {
		cfg.UserTokenLifetime = DefaultUserTokenLifetime
	}
	var scimToken []byte
	if len(cfg.SCIMToken) > 0 {
		h := sha256.Sum256(cfg.SCIMToken)
		scimToken = h[:]
	}
	return &Runtime{scimToken: scimToken, tracing: cfg.Tracing, store: cfg.Store, signer: cfg.LogSigner, issuer: cfg.Issuer, keys: cfg.Issuer.KeySet(),
		log: cfg.Logger, metrics: cfg.Metrics, now: cfg.Now, cpEvery: cfg.CheckpointInterval, swEvery: cfg.SweepInterval,
		waiters:   waiters{m: map[string][]chan struct{}{}},
		badTokens: limiter{fails: map[string][]time.Time{}, max: BadTokensPerIP, window: BadTokenWindow},
		events:    NewHub(), webhooks: cfg.Webhooks, slackButtons: cfg.SlackButtons, chatVerifiers: cfg.ChatVerifiers, publicURL: cfg.PublicURL, outboxKick: make(chan struct{}, 1), stopping: make(chan struct{}),
		conn: newConnectors(cfg.Connectors), userTokenLife: cfg.UserTokenLifetime, sso: cfg.SSO, noLocalPasswords: cfg.NoLocalPasswords}, nil
}

// Shutdown ends long polls (they answer with the call as it stands) and
// event streams, so a graceful shutdown does not wait for them. Clients
// poll again, on another replica if there is one.
func (r *Runtime) Shutdown() { r.stopOnce.Do(func() { close(r.stopping) }) }

// Stopping is closed once Shutdown was called.
func (r *Runtime) Stopping() <-chan struct{} { return r.stopping }

// Origin names the log (and the deployment).
func (r *Runtime) Origin() string { return r.signer.Name() }

// KeySet is the public key set of call credentials (the JWKS document).
func (r *Runtime) KeySet() *credential.KeySet { return r.keys }

// Tracing is where spans go (nil: nowhere).
func (r *Runtime) Tracing() *tracing.Tracing { return r.tracing }

// Store is the runtime's store, for read-only views.
func (r *Runtime) Store() store.Store { return r.store }

// Principal is an authenticated caller.
type Principal struct {
	Kind     string       // store.TokenAgent, store.TokenAdmin or store.TokenUser
	TokenID  string       // "" for console sessions
	IssuedBy string       // for agent tokens: who asked for the token
	Agent    *store.Agent // for agents
	User     *store.User  // for people
	IdP      *IdP         // for people signed in through the identity provider (a console session)

	// For an agent token from memory (AuthenticateAgent): its hash, and
	// the store's count of token revocations when the token was read.
	tokenHash   []byte
	revocations uint64
	wait        time.Duration // how long its Update may wait to be run (Runtime.update)
	remembered  bool
}

// Actor names the principal in record entries.
func (p *Principal) Actor() string {
	switch p.Kind {
	case store.TokenAgent:
		return "agent:" + p.Agent.ID
	case store.TokenUser:
		return "user:" + p.User.Email
	}
	return "admin:" + p.TokenID
}

// IsAdmin says whether the principal may operate: the admin token, or a
// person with the admin role.
func (p *Principal) IsAdmin() bool {
	return p.Kind == store.TokenAdmin || p.Kind == store.TokenUser && p.User.Role == store.RoleAdmin
}

// IsPerson says whether the principal is a person (console session or a
// person's API token).
func (p *Principal) IsPerson() bool { return p.Kind == store.TokenUser }

// Token prefixes make leaked tokens easy to recognise and scan for.
const (
	agentTokenPrefix = "arxa_"
	adminTokenPrefix = "arxk_"
)

func newToken(prefix string) (token string, hash []byte) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand does not fail on supported platforms
	}
	token = prefix + base64.RawURLEncoding.EncodeToString(b[:])
	return token, HashToken(token)
}

// HashToken is how tokens are stored: SHA-256. Tokens carry 256 random bits,
// so a fast hash is enough; no token is ever stored in clear.
func HashToken(token string) []byte {
	h := sha256.Sum256([]byte(token))
	return h[:]
}

// Bearer token guessing: after this many unknown tokens from one client
// address in a window, its unknown tokens are answered request.rate_limited
// (with Retry-After) until the window passes. A valid token is never
// refused by the throttle, whatever its address sent before: the throttle
// only changes how a token that would be refused anyway is refused, so a
// stranger cannot lock an operator out (arx terminate included).
const (
	BadTokensPerIP = 50
	BadTokenWindow = time.Minute
)

// AuthenticateFrom is Authenticate for a request from clientIP, with
// guessing counted per address.
func (r *Runtime) AuthenticateFrom(ctx context.Context, token, clientIP string) (*Principal, error) {
	p, unknown, err := r.authenticate(ctx, token)
	if !unknown {
		// Valid, or refused for what it is (revoked, a terminated agent):
		// a revoked token does not punish the address it comes from.
		return p, err
	}
	key, now := "t:"+clientIP, r.now()
	if r.badTokens.blocked(key, now) {
		e := arxerr.New(arxerr.RateLimited, "too many unknown tokens from this address; wait a minute")
		e.Hint = "a valid token is still accepted from this address; check the token you send"
		return nil, e
	}
	r.badTokens.fail(key, now)
	return p, err
}

// Authenticate resolves a bearer token. Agents that are terminated or
// suspended are refused here, on every request, from the database.
func (r *Runtime) Authenticate(ctx context.Context, token string) (*Principal, error) {
	p, _, err := r.authenticate(ctx, token)
	return p, err
}

// invalidToken refuses a token, with the hint for its kind: an agent's, a
// person's or an operator's token each has its own way out.
func invalidToken(token string) *arxerr.Error {
	e := arxerr.New(arxerr.InvalidToken, "unknown or revoked token")
	switch {
	case strings.HasPrefix(token, agentTokenPrefix):
		// The code's own hint: hire again, or ask the operator.
	case strings.HasPrefix(token, adminTokenPrefix):
		e.Hint = "this operator token is unknown or revoked: use this server's own (DATA_DIR/admin.token, in ARX_ADMIN_TOKEN)"
	case strings.HasPrefix(token, userTokenPrefix):
		e.Hint = "your personal token is unknown, revoked or ended (a reset or a disable ends it): run `arx login` again"
	default:
		e.Hint = "ARX tokens start with arxa_ (agents), arxu_ (people) or arxk_ (operators): check the token you send"
	}
	return e
}

// authenticate also says whether the token is unknown (never issued).
func (r *Runtime) authenticate(ctx context.Context, token string) (_ *Principal, unknown bool, err error) {
	if token == "" {
		return nil, false, arxerr.New(arxerr.Unauthenticated, "missing bearer token")
	}
	if len(token) > 256 || !(strings.HasPrefix(token, agentTokenPrefix) || strings.HasPrefix(token, adminTokenPrefix) || strings.HasPrefix(token, userTokenPrefix)) {
		return nil, true, invalidToken(token)
	}
	hash := HashToken(token)
	if strings.HasPrefix(token, agentTokenPrefix) {
		return r.agentByToken(ctx, hash, token)
	}
	t, err := r.store.TokenByHash(ctx, hash)
	if errors.Is(err, store.ErrNotFound) {
		return nil, true, invalidToken(token)
	}
	if err != nil {
		return nil, false, r.ReadFailed("authenticate", err)
	}
	if subtle.ConstantTimeCompare(t.Hash, hash) != 1 || t.RevokedAt != nil {
		return nil, false, invalidToken(token)
	}
	p := &Principal{Kind: t.Kind, TokenID: t.ID, IssuedBy: t.IssuedBy}
	if t.Kind == store.TokenUser && !r.now().Before(t.CreatedAt.Add(r.userTokenLife)) {
		e := arxerr.New(arxerr.InvalidToken, "the token has expired")
		e.Hint = "run `arx login` again"
		return nil, false, e
	}
	if t.Kind == store.TokenUser {
		u, err := r.store.User(ctx, t.UserID)
		if err != nil {
			return nil, false, r.ReadFailed("authenticate", err)
		}
		if u.DisabledAt != nil {
			return nil, false, invalidToken(token)
		}
		p.User = u
	}
	if t.Kind == store.TokenAgent {
		a, err := r.store.Agent(ctx, t.AgentID)
		if err != nil {
			return nil, false, r.ReadFailed("authenticate", err)
		}
		if err := agentUsable(a); err != nil {
			return nil, false, err
		}
		p.Agent = a
	}
	return p, false, nil
}

// agentByToken reads an agent token from the store (token is only for the
// error's hint).
func (r *Runtime) agentByToken(ctx context.Context, hash []byte, token string) (_ *Principal, unknown bool, err error) {
	t, a, err := r.store.AgentByToken(ctx, hash)
	if errors.Is(err, store.ErrNotFound) {
		return nil, true, invalidToken(token)
	}
	if err != nil {
		return nil, false, r.ReadFailed("authenticate", err)
	}
	if subtle.ConstantTimeCompare(t.Hash, hash) != 1 || t.RevokedAt != nil || t.Kind != store.TokenAgent {
		return nil, false, invalidToken(token)
	}
	if err := agentUsable(a); err != nil {
		return nil, false, err
	}
	return &Principal{Kind: store.TokenAgent, TokenID: t.ID, IssuedBy: t.IssuedBy, Agent: a}, false, nil
}

func agentUsable(a *store.Agent) error {
	switch a.Status {
	case store.AgentActive:
		return nil
	case store.AgentTerminated:
		return arxerr.New(arxerr.AgentTerminated, "agent %s is terminated", a.Name)
	default:
		return arxerr.New(arxerr.AgentSuspended, "agent %s is %s", a.Name, a.Status)
	}
}

// HasAdminToken says whether the first admin token was made.
func (r *Runtime) HasAdminToken(ctx context.Context) (bool, error) {
	_, err := r.store.Meta(ctx, "admin_token_id")
	if errors.Is(err, store.ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

// NewAdminToken makes an operator token that EnsureAdminToken can adopt
// later (arx keys init writes one beside the keys it makes).
func NewAdminToken() string {
	token, _ := newToken(adminTokenPrefix)
	return token
}

// ValidAdminToken says whether s has the shape of an operator token.
func ValidAdminToken(s string) bool {
	rest, ok := strings.CutPrefix(s, adminTokenPrefix)
	if !ok || len(rest) != 43 {
		return false
	}
	_, err := base64.RawURLEncoding.DecodeString(rest)
	return err == nil
}

// EnsureAdminToken creates the first admin token if none was ever made, and
// returns it (created is false, and token empty, when one exists already).
// With given (made by NewAdminToken) the first admin token is that one
// rather than a new one: a deployment whose keys come from a secret store
// has its operator token there too, and no replica prints or writes it.
func (r *Runtime) EnsureAdminToken(ctx context.Context, given string) (token string, created bool, err error) {
	if has, err := r.HasAdminToken(ctx); err != nil || has {
		return "", false, err
	}
	var hash []byte
	if given != "" {
		if !ValidAdminToken(given) {
			return "", false, errors.New("the admin token given is not one arx made (arxk_ and 43 base64url characters)")
		}
		token, hash = given, HashToken(given)
	} else {
		token, hash = newToken(adminTokenPrefix)
	}
	id := uuid.NewString()
	err = r.store.Update(ctx, func(tx store.Tx) error {
		// Two first replicas at once: one of them makes the token.
		if _, err := tx.Meta("admin_token_id"); err == nil {
			return errAdminTokenExists
		}
		if err := tx.InsertToken(&store.Token{ID: id, Hash: hash, Kind: store.TokenAdmin, Label: "first admin", CreatedAt: r.now()}); err != nil {
			return err
		}
		if err := tx.SetMeta("admin_token_id", id); err != nil {
			return err
		}
		return tx.Append(record.TokenIssued("", "system", r.now(), id, store.TokenAdmin, "first admin"))
	})
	if errors.Is(err, errAdminTokenExists) {
		return "", false, nil
	}
	if err != nil {
		return "", false, err
	}
	return token, true, nil
}

var errAdminTokenExists = errors.New("runtime: an admin token exists")

// Manifest returns the parsed job description an agent is held to now.
func (r *Runtime) Manifest(a *store.Agent) (*manifest.Manifest, error) {
	m, err := r.manifestByHash(a.ManifestHash, a.Manifest)
	if err != nil {
		return nil, fmt.Errorf("runtime: stored manifest of agent %s: %w", a.ID, err)
	}
	return m, nil
}

// manifestByHash parses the job description of a hash: hired, when it is
// that text, else the one stored under the hash (an agent's later job
// description, or its shadow). Job descriptions are content-addressed, so
// each is read and parsed once.
func (r *Runtime) manifestByHash(hash string, hired []byte) (*manifest.Manifest, error) {
	if m, ok := r.manifests.Load(hash); ok {
		return m.(*manifest.Manifest), nil
	}
	text, err := r.manifestText(hash, hired)
	if err != nil {
		return nil, err
	}
	m, err := manifest.ParseHired(text)
	if err != nil {
		return nil, err
	}
	r.manifests.Store(hash, m)
	return m, nil
}

// manifestText is the text of the job description of a hash.
func (r *Runtime) manifestText(hash string, hired []byte) ([]byte, error) {
	if hired != nil && manifest.Hash(hired) == hash {
		return hired, nil
	}
	text, err := r.store.ManifestText(context.Background(), hash)
	if err != nil {
		return nil, fmt.Errorf("job description %s: %w", hash, err)
	}
	if manifest.Hash(text) != hash {
		return nil, fmt.Errorf("job description %s: the stored text has another hash", hash)
	}
	return text, nil
}

// parseManifest parses a job description sent to the API: its problems
// are one manifest.invalid error.
func parseManifest(yaml []byte) (*manifest.Manifest, error) {
	m, err := manifest.Parse(yaml)
	if err == nil {
		return m, nil
	}
	var me *manifest.Error
	if errors.As(err, &me) {
		return nil, arxerr.New(arxerr.ManifestInvalid, "%s", strings.TrimSpace(me.Error()))
	}
	return nil, arxerr.New(arxerr.ManifestInvalid, "%v", err)
}

// Hire makes a new agent from a manifest and returns it with its token.
func (r *Runtime) Hire(ctx context.Context, p *Principal, yaml []byte) (*store.Agent, string, error) {
	return r.HireWith(ctx, p, yaml, false)
}

// HireWith is Hire; a name already on staff (an active agent of the same
// name) is refused with agent.name_taken unless replace is set, and then
// the agents on staff under that name are terminated in the transaction
// that hires the new one: both happen, or neither.
func (r *Runtime) HireWith(ctx context.Context, p *Principal, yaml []byte, replace bool) (*store.Agent, string, error) {
	if !p.IsAdmin() {
		return nil, "", arxerr.New(arxerr.Forbidden, "only an operator can hire agents")
	}
	m, err := parseManifest(yaml)
	if err != nil {
		return nil, "", err
	}
	now := r.now()
	a := &store.Agent{ID: uuid.NewString(), Name: m.Agent.Name, Owner: m.Agent.Owner, Status: store.AgentActive,
		Manifest: yaml, ManifestHash: manifest.Hash(yaml), CreatedAt: now}
	token, hash := newToken(agentTokenPrefix)
	tokenID := uuid.NewString()
	connectors := make([]string, 0, len(m.Scope.Connectors))
	for _, c := range m.Scope.Connectors {
		connectors = append(connectors, c.Name)
	}
	all, err := r.store.Agents(ctx)
	if err != nil {
		return nil, "", r.ReadFailed("list agents", err)
	}
	var onStaff []string
	for _, o := range all {
		if o.Name == a.Name && o.Status != store.AgentTerminated {
			onStaff = append(onStaff, o.ID)
		}
	}
	var replaced []string
	var woken []string
	err = r.store.Update(ctx, func(tx store.Tx) error {
		replaced, woken = nil, nil // a store may run fn again
		for _, id := range onStaff {
			o, err := tx.Agent(id)
			if err != nil {
				return err
			}
			if o.Status == store.AgentTerminated {
				continue // terminated meanwhile
			}
			if !replace {
				return arxerr.New(arxerr.AgentNameTaken, "agent %s (%s) is on staff already", o.Name, o.ID)
			}
			_, w, err := r.terminateIn(tx, p, o, "replaced by a new hire of the same name ("+a.ID+")", now)
			if err != nil {
				return err
			}
			replaced, woken = append(replaced, o.ID), append(woken, w...)
		}
		if err := tx.InsertAgent(a); err != nil {
			return err
		}
		if err := tx.InsertToken(&store.Token{ID: tokenID, Hash: hash, Kind: store.TokenAgent, AgentID: a.ID, Label: "hire",
			IssuedBy: p.Actor(), CreatedAt: now}); err != nil {
			return err
		}
		return tx.Append(record.AgentHired(a.ID, p.Actor(), now, record.Hire{Name: a.Name, Owner: a.Owner,
			ManifestHash: a.ManifestHash, Connectors: connectors, TokenID: tokenID, RequirePasskey: m.Approval.RequirePasskey}))
	})
	if err != nil {
		return nil, "", r.writeFailed("hire", err)
	}
	for _, id := range replaced {
		r.afterTerminate(ctx, p, id, woken, now)
		woken = nil
	}
	r.log.Info("agent hired", "agent", a.ID, "name", a.Name, "actor", p.Actor(), "replaced", replaced)
	return a, token, nil
}

// IssueToken makes an extra token for an agent (one per agent process,
// `arx run`), revocable alone.
func (r *Runtime) IssueToken(ctx context.Context, p *Principal, agentID, label string) (string, string, error) {
	if !p.IsAdmin() {
		return "", "", arxerr.New(arxerr.Forbidden, "only an operator can issue agent tokens")
	}
	if len(label) > 128 {
		return "", "", arxerr.New(arxerr.BadRequest, "label is longer than 128 characters")
	}
	token, hash := newToken(agentTokenPrefix)
	id := uuid.NewString()
	err := r.store.Update(ctx, func(tx store.Tx) error {
		a, err := tx.Agent(agentID)
		if err != nil {
			return err
		}
		if err := agentUsable(a); err != nil {
			return err
		}
		if err := tx.InsertToken(&store.Token{ID: id, Hash: hash, Kind: store.TokenAgent, AgentID: agentID, Label: label,
			IssuedBy: p.Actor(), CreatedAt: r.now()}); err != nil {
			return err
		}
		return tx.Append(record.TokenIssued(agentID, p.Actor(), r.now(), id, "", label))
	})
	if errors.Is(err, store.ErrNotFound) {
		return "", "", arxerr.New(arxerr.AgentNotFound, "no agent %s", agentID)
	}
	if err != nil {
		return "", "", r.writeFailed("issue token", err)
	}
	return id, token, nil
}

// RevokeToken revokes one agent token.
func (r *Runtime) RevokeToken(ctx context.Context, p *Principal, agentID, tokenID string) error {
	if !p.IsAdmin() {
		return arxerr.New(arxerr.Forbidden, "only an operator can revoke agent tokens")
	}
	err := r.store.Update(ctx, func(tx store.Tx) error {
		if _, err := tx.Agent(agentID); err != nil {
			return err
		}
		if err := tx.RevokeToken(agentID, tokenID, r.now()); err != nil {
			return err
		}
		return tx.Append(record.TokenRevoked(agentID, p.Actor(), r.now(), tokenID))
	})
	if errors.Is(err, store.ErrNotFound) {
		return arxerr.New(arxerr.NotFound, "no token %s for agent %s", tokenID, agentID)
	}
	if err != nil {
		return r.writeFailed("revoke token", err)
	}
	return nil
}

// ProcessStop is what `arx run` reports after it stopped a terminated
// agent's processes.
type ProcessStop struct {
	Pid     int    `json:"pid"`
	Signal  string `json:"signal"` // SIGTERM or SIGKILL
	TookMS  int64  `json:"took_ms"`
	TokenID string `json:"token_id"`
}

// RecordProcessStopped records that an operator's `arx run` stopped the
// processes of a terminated agent.
func (r *Runtime) RecordProcessStopped(ctx context.Context, p *Principal, agentID string, s ProcessStop) error {
	if !p.IsAdmin() {
		return arxerr.New(arxerr.Forbidden, "only an operator records an agent's processes")
	}
	switch {
	case s.Pid <= 0:
		return arxerr.New(arxerr.BadRequest, "pid must be positive")
	case s.Signal != "SIGTERM" && s.Signal != "SIGKILL":
		return arxerr.New(arxerr.BadRequest, "signal must be SIGTERM or SIGKILL")
	case s.TookMS < 0 || s.TookMS > int64(24*time.Hour/time.Millisecond):
		return arxerr.New(arxerr.BadRequest, "took_ms must be between 0 and a day")
	case record.TextProblem(s.TokenID, 64) != "":
		return arxerr.New(arxerr.BadRequest, "token_id %s", record.TextProblem(s.TokenID, 64))
	}
	now := r.now()
	err := r.store.Update(ctx, func(tx store.Tx) error {
		a, err := tx.Agent(agentID)
		if err != nil {
			return err
		}
		if a.Status != store.AgentTerminated {
			return arxerr.New(arxerr.Conflict, "agent %s is %s, not terminated", a.Name, a.Status)
		}
		return tx.Append(record.ProcessStopped(agentID, p.Actor(), now, s.Pid, s.Signal, s.TookMS, s.TokenID))
	})
	if errors.Is(err, store.ErrNotFound) {
		return arxerr.New(arxerr.AgentNotFound, "no agent %s", agentID)
	}
	if err != nil {
		return r.writeFailed("record process stopped", err)
	}
	return nil
}

// writeFailed maps a failed store update: errors the rules raised inside
// the transaction pass through; anything else means the record could not be
// written, so nothing happened (fail closed).
func (r *Runtime) writeFailed(what string, err error) error {
	var ae *arxerr.Error
	if errors.As(err, &ae) {
		return ae
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return arxerr.New(arxerr.RecordUnavailable, "request cancelled before the record was written")
	}
	r.metrics.recordFailures.Inc()
	r.ready.writeFailed()
	r.log.Error("record write failed", "op", what, "err", err)
	return arxerr.New(arxerr.RecordUnavailable, "the personnel record could not be written, so nothing was done")
}

// ReadFailed maps a failed store read other than "not found" (for the
// runtime and for the API and console handlers that read the store): the
// database did not answer (unreachable, or past the store's read timeout),
// so nothing was decided. The client gets the same stable 503 as for a
// write that could not be committed, and may retry; the cause is logged.
func (r *Runtime) ReadFailed(what string, err error) error {
	if errors.Is(err, context.Canceled) {
		return arxerr.New(arxerr.RecordUnavailable, "request cancelled before the record was read")
	}
	r.log.Error("record read failed", "op", what, "err", err)
	return arxerr.New(arxerr.RecordUnavailable, "the personnel record could not be read, so nothing was done")
}

func (r *Runtime) internal(what string, err error) error {
	r.log.Error("internal error", "op", what, "err", err)
	return arxerr.New(arxerr.Internal, "internal error")
}
