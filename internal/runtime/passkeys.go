package runtime

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/arxsec/arx/arxerr"
	"github.com/arxsec/arx/internal/store"
	"github.com/arxsec/arx/manifest"
	"github.com/arxsec/arx/record"
	"github.com/arxsec/arx/record/passkeys"
	"github.com/go-webauthn/webauthn/protocol"
	"github.com/go-webauthn/webauthn/protocol/webauthncbor"
	"github.com/go-webauthn/webauthn/protocol/webauthncose"
	"github.com/go-webauthn/webauthn/webauthn"
)

// Passkeys: an approver registers WebAuthn credentials in the console; the
// registration is an entry in the log (witnessed before the key is used);
// a decision signed with one carries the assertion in its entry, and its
// challenge is the digest of the decision itself (record.Decision), so the
// auditor can check that the named person's own authenticator signed
// exactly what was recorded.

// Limits of the passkey ceremonies.
const (
	// CeremonyTimeout is how long a person has to answer their
	// authenticator, and how old a signed decision may be when it arrives.
	CeremonyTimeout = 5 * time.Minute
	// MaxPasskeysPerPerson bounds a person's registered passkeys.
	MaxPasskeysPerPerson = 20
	// MaxCeremonyBytes bounds a WebAuthn response a browser sends.
	MaxCeremonyBytes = 12 << 10
)

// relyingParty derives the WebAuthn relying party from the URL people use:
// its host name (never an IP address, which WebAuthn does not accept) and
// its origin. A browser allows WebAuthn on https, and on http only for
// localhost.
func relyingParty(publicURL string) (rpID, origin string, err error) {
	u, perr := url.Parse(publicURL)
	if perr != nil || u.Host == "" {
		return "", "", errors.New("the server has no public URL")
	}
	host := u.Hostname()
	switch {
	case net.ParseIP(host) != nil:
		return "", "", fmt.Errorf("people reach this server at %s, an IP address; passkeys need a host name", u.Host)
	case u.Scheme != "https" && host != "localhost" && !strings.HasSuffix(host, ".localhost"):
		return "", "", fmt.Errorf("people reach this server over %s; passkeys need https (or http://localhost)", u.Scheme)
	}
	return strings.ToLower(host), u.Scheme + "://" + u.Host, nil
}

// passkeyState is the runtime's WebAuthn relying party and the
// registrations under way (one per person, for CeremonyTimeout).
type passkeyState struct {
	once   sync.Once
	wa     *webauthn.WebAuthn
	rpID   string
	err    error
	mu     sync.Mutex
	begins map[string]pendingRegistration // user id →
}

type pendingRegistration struct {
	session webauthn.SessionData
	name    string
	expires time.Time
}

func (r *Runtime) relyingParty() (*webauthn.WebAuthn, string, error) {
	s := &r.passkeys
	s.once.Do(func() {
		rpID, origin, err := relyingParty(r.publicURL)
		if err != nil {
			s.err = err
			return
		}
		s.rpID = rpID
		s.wa, s.err = webauthn.New(&webauthn.Config{RPID: rpID, RPDisplayName: "ARX", RPOrigins: []string{origin},
			AuthenticatorSelection: protocol.AuthenticatorSelection{ResidentKey: protocol.ResidentKeyRequirementPreferred,
				UserVerification: protocol.VerificationPreferred},
			Timeouts: webauthn.TimeoutsConfig{
				Login:        webauthn.TimeoutConfig{Enforce: true, Timeout: CeremonyTimeout, TimeoutUVD: CeremonyTimeout},
				Registration: webauthn.TimeoutConfig{Enforce: true, Timeout: CeremonyTimeout, TimeoutUVD: CeremonyTimeout},
			}})
	})
	if s.err != nil {
		e := arxerr.New(arxerr.PasskeyUnavailable, "passkeys are not available here: %v", s.err)
		return nil, "", e
	}
	return s.wa, s.rpID, nil
}

// PasskeysAvailable says whether people can use passkeys with this server,
// and if not, why.
func (r *Runtime) PasskeysAvailable() error {
	_, _, err := r.relyingParty()
	return err
}

// waUser is a person as the WebAuthn library sees them.
type waUser struct {
	u    *store.User
	keys []store.Passkey
}

func (w waUser) WebAuthnID() []byte          { return []byte(w.u.ID) }
func (w waUser) WebAuthnName() string        { return w.u.Email }
func (w waUser) WebAuthnDisplayName() string { return w.u.Email }
func (w waUser) WebAuthnCredentials() []webauthn.Credential {
	out := make([]webauthn.Credential, len(w.keys))
	for i, k := range w.keys {
		out[i] = webauthn.Credential{ID: k.ID, PublicKey: k.PublicKey, AttestationFormat: k.Attestation,
			Flags:         webauthn.NewCredentialFlags(protocol.AuthenticatorFlags(k.Flags)),
			Authenticator: webauthn.Authenticator{AAGUID: k.AAGUID, SignCount: k.SignCount}}
	}
	return out
}

func (r *Runtime) person(ctx context.Context, p *Principal) (waUser, error) {
	if !p.IsPerson() {
		return waUser{}, arxerr.New(arxerr.Forbidden, "passkeys belong to people; sign in to the console")
	}
	keys, err := r.store.Passkeys(ctx, p.User.ID)
	if err != nil {
		return waUser{}, r.ReadFailed("passkeys", err)
	}
	return waUser{u: p.User, keys: keys}, nil
}

// ceremony is what every passkey step starts with: the relying party,
// and the person with their passkeys.
func (r *Runtime) ceremony(ctx context.Context, p *Principal) (*webauthn.WebAuthn, string, waUser, error) {
	wa, rpID, err := r.relyingParty()
	if err != nil {
		return nil, "", waUser{}, err
	}
	u, err := r.person(ctx, p)
	return wa, rpID, u, err
}

// Passkeys lists the person's own passkeys.
func (r *Runtime) Passkeys(ctx context.Context, p *Principal) ([]store.Passkey, error) {
	u, err := r.person(ctx, p)
	return u.keys, err
}

// PersonPasskeys lists anyone's passkeys by email, for people and
// operators (which key signed a decision): public keys, nothing secret.
// None when nobody has that email.
func (r *Runtime) PersonPasskeys(ctx context.Context, p *Principal, email string) ([]store.Passkey, error) {
	if !p.IsAdmin() && !p.IsPerson() {
		return nil, arxerr.New(arxerr.Forbidden, "passkeys are listed for people and operators")
	}
	keys, _, err := r.passkeysOf(ctx, email)
	return keys, err
}

// passkeysOf reads the passkeys of the person with that email, and
// whether there is such a person.
func (r *Runtime) passkeysOf(ctx context.Context, email string) ([]store.Passkey, bool, error) {
	u, err := r.store.UserByEmail(ctx, email)
	if errors.Is(err, store.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, r.ReadFailed("person", err)
	}
	keys, err := r.store.Passkeys(ctx, u.ID)
	if err != nil {
		return nil, true, r.ReadFailed("passkeys", err)
	}
	return keys, true, nil
}

// BeginPasskey starts registering a passkey named name for the person:
// the options to hand to navigator.credentials.create.
func (r *Runtime) BeginPasskey(ctx context.Context, p *Principal, name string) (*protocol.CredentialCreation, error) {
	wa, _, u, err := r.ceremony(ctx, p)
	if err != nil {
		return nil, err
	}
	name = strings.TrimSpace(name)
	if name == "" {
		name = fmt.Sprintf("Passkey %d", len(u.keys)+1)
	}
	if problem := record.TextProblem(name, 64); problem != "" {
		return nil, arxerr.New(arxerr.BadRequest, "the passkey's name %s", problem)
	}
	if len(u.keys) >= MaxPasskeysPerPerson {
		e := arxerr.New(arxerr.BadRequest, "you have %d passkeys, the most one person may have", len(u.keys))
		e.Hint = "remove one you no longer use"
		return nil, e
	}
	exclude := make([]protocol.CredentialDescriptor, len(u.keys))
	for i, k := range u.keys {
		exclude[i] = protocol.CredentialDescriptor{Type: protocol.PublicKeyCredentialType, CredentialID: k.ID}
	}
	creation, session, err := wa.BeginRegistration(u, webauthn.WithExclusions(exclude))
	if err != nil {
		return nil, r.internal("begin passkey registration", err)
	}
	s := &r.passkeys
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.begins == nil {
		s.begins = map[string]pendingRegistration{}
	}
	now := r.now()
	for id, b := range s.begins { // bounded by the people registering within CeremonyTimeout
		if now.After(b.expires) {
			delete(s.begins, id)
		}
	}
	s.begins[p.User.ID] = pendingRegistration{session: *session, name: name, expires: now.Add(CeremonyTimeout)}
	return creation, nil
}

// FinishPasskey checks the browser's answer to BeginPasskey (body, the
// PublicKeyCredential as JSON), and records the passkey: its public half
// in the log (passkey.registered), the key in the state.
func (r *Runtime) FinishPasskey(ctx context.Context, p *Principal, body []byte) (*store.Passkey, error) {
	wa, rpID, u, err := r.ceremony(ctx, p)
	if err != nil {
		return nil, err
	}
	s := &r.passkeys
	s.mu.Lock()
	pending, ok := s.begins[p.User.ID]
	delete(s.begins, p.User.ID)
	s.mu.Unlock()
	if !ok || r.now().After(pending.expires) {
		e := arxerr.New(arxerr.PasskeyInvalid, "no passkey registration of yours is under way (it may have timed out)")
		e.Hint = "start again with Add a passkey"
		return nil, e
	}
	if len(body) > MaxCeremonyBytes {
		return nil, arxerr.New(arxerr.PasskeyInvalid, "the authenticator's answer is larger than %d bytes", MaxCeremonyBytes)
	}
	parsed, err := protocol.ParseCredentialCreationResponseBytes(body)
	if err != nil {
		return nil, arxerr.New(arxerr.PasskeyInvalid, "the authenticator's answer does not parse: %s", webauthnReason(err))
	}
	cred, err := wa.CreateCredential(u, pending.session, parsed)
	if err != nil {
		return nil, arxerr.New(arxerr.PasskeyInvalid, "the passkey was not registered: %s", webauthnReason(err))
	}
	var pk webauthncose.PublicKeyData
	if err := webauthncbor.Unmarshal(cred.PublicKey, &pk); err != nil {
		return nil, arxerr.New(arxerr.PasskeyInvalid, "the passkey's public key does not parse")
	}
	now := r.now()
	k := &store.Passkey{ID: cred.ID, UserID: p.User.ID, Name: pending.name, PublicKey: cred.PublicKey, Algorithm: pk.Algorithm,
		Attestation: cred.AttestationFormat, AAGUID: cred.Authenticator.AAGUID, RPID: rpID, SignCount: cred.Authenticator.SignCount,
		Flags: uint8(cred.Flags.ProtocolValue()), CreatedAt: now}
	if k.Attestation == "" {
		k.Attestation = string(protocol.AttestationFormatNone)
	}
	if k.AAGUID == nil {
		k.AAGUID = []byte{}
	}
	err = r.store.Update(ctx, func(tx store.Tx) error {
		if err := tx.InsertPasskey(k); err != nil {
			if errors.Is(err, store.ErrConflict) {
				return arxerr.New(arxerr.PasskeyInvalid, "this passkey is registered already")
			}
			return err
		}
		return tx.Append(record.PasskeyRegistered(p.Actor(), now, record.Passkey{User: p.User.Email, CredentialID: k.ID,
			PublicKey: k.PublicKey, Algorithm: k.Algorithm, Attestation: k.Attestation, AAGUID: k.AAGUID, RPID: rpID, Name: k.Name}))
	})
	if err != nil {
		return nil, r.writeFailed("register passkey", err)
	}
	r.log.Info("passkey registered", "user", p.User.Email, "credential", record.EncodeID(k.ID))
	return k, nil
}

// RemovePasskey removes one of the person's own passkeys (id as
// record.EncodeID writes it); the log records it, and it signs nothing
// from then on.
func (r *Runtime) RemovePasskey(ctx context.Context, p *Principal, id string) error {
	if !p.IsPerson() {
		return arxerr.New(arxerr.Forbidden, "passkeys belong to people; sign in to the console")
	}
	raw, err := record.DecodeID(id)
	if err != nil || len(raw) == 0 {
		return arxerr.New(arxerr.PasskeyNotFound, "you have no passkey %s", truncate(id, 64))
	}
	now := r.now()
	err = r.store.Update(ctx, func(tx store.Tx) error {
		if err := tx.DeletePasskey(p.User.ID, raw); errors.Is(err, store.ErrNotFound) {
			return arxerr.New(arxerr.PasskeyNotFound, "you have no passkey %s", truncate(id, 64))
		} else if err != nil {
			return err
		}
		return tx.Append(record.PasskeyRemoved(p.Actor(), now, p.User.Email, raw, "removed by its owner"))
	})
	if err != nil {
		return r.writeFailed("remove passkey", err)
	}
	return nil
}

// SignedDecision is a decision as the person's authenticator signed it:
// the time the decision was made (part of what is signed) and the
// PublicKeyCredential the browser returned, as JSON.
type SignedDecision struct {
	At        time.Time
	Assertion []byte
}

// DecisionChallenge is what BeginDecision hands the browser.
// It is answered as JSON as it is: publicKey for
// navigator.credentials.get, and the decision's time to send back.
type DecisionChallenge struct {
	PublicKey protocol.PublicKeyCredentialRequestOptions `json:"publicKey"`
	DecidedAt string                                     `json:"decided_at"` // record.FormatTime of the decision's time
}

// BeginDecision prepares the person's passkey signature of a decision on
// callID: the decision's time is fixed now, its digest is the challenge.
func (r *Runtime) BeginDecision(ctx context.Context, p *Principal, callID string, grant bool, reason string) (*DecisionChallenge, error) {
	wa, _, u, err := r.ceremony(ctx, p)
	if err != nil {
		return nil, err
	}
	if len(u.keys) == 0 {
		e := arxerr.New(arxerr.PasskeyRequired, "you have no passkey to sign with")
		e.Hint = "add one on the Passkeys page of the console"
		return nil, e
	}
	reason = strings.TrimSpace(reason)
	at := r.now().UTC().Truncate(time.Microsecond)
	d, err := r.decisionToSign(ctx, p, callID, grant, reason, at)
	if err != nil {
		return nil, err
	}
	digest := d.Digest()
	opts, _, err := wa.BeginLogin(u, webauthn.WithChallenge(digest[:]))
	if err != nil {
		return nil, r.internal("begin passkey signature", err)
	}
	return &DecisionChallenge{PublicKey: opts.Response, DecidedAt: record.FormatTime(at)}, nil
}

// decisionToSign is the decision on callID as it is shown to the person.
func (r *Runtime) decisionToSign(ctx context.Context, p *Principal, callID string, grant bool, reason string, at time.Time) (record.Decision, error) {
	c, err := r.store.Call(ctx, callID)
	if errors.Is(err, store.ErrNotFound) {
		return record.Decision{}, arxerr.New(arxerr.ApprovalNotFound, "no approval for call %s", truncate(callID, 64))
	}
	if err != nil {
		return record.Decision{}, r.ReadFailed("call", err)
	}
	verdict := record.DecisionDeny
	if grant {
		verdict = record.DecisionApprove
	}
	ref := callRef(c)
	return record.Decision{Call: c.ID, Agent: c.AgentID, Connector: ref.Connector, Action: ref.Action, Risk: ref.Risk,
		Summary: c.Summary, Args: c.Args, ArgsHash: c.ArgsHash, By: p.User.Email, Verdict: verdict, Reason: reason, At: at}, nil
}

// verifyDecision checks a signed decision before it is recorded: the
// WebAuthn ceremony (origin, relying party, challenge, counter) with the
// library, then the record's own rule (record/passkeys), which the auditor
// runs later. It returns the signature for the entry and the key used.
func (r *Runtime) verifyDecision(ctx context.Context, p *Principal, d record.Decision, sd *SignedDecision) (*record.Signature, *webauthn.Credential, error) {
	wa, rpID, u, err := r.ceremony(ctx, p)
	if err != nil {
		return nil, nil, err
	}
	now := r.now()
	if d.At.After(now.Add(time.Minute)) || now.Sub(d.At) > CeremonyTimeout {
		e := arxerr.New(arxerr.PasskeyInvalid, "the signed decision is from %s, more than %s ago", d.At.Format(time.RFC3339), CeremonyTimeout)
		e.Hint = "decide again"
		return nil, nil, e
	}
	if len(sd.Assertion) > MaxCeremonyBytes {
		return nil, nil, arxerr.New(arxerr.PasskeyInvalid, "the authenticator's answer is larger than %d bytes", MaxCeremonyBytes)
	}
	parsed, err := protocol.ParseCredentialRequestResponseBytes(sd.Assertion)
	if err != nil {
		return nil, nil, arxerr.New(arxerr.PasskeyInvalid, "the authenticator's answer does not parse: %s", webauthnReason(err))
	}
	digest := d.Digest()
	allowed := make([][]byte, len(u.keys))
	for i, k := range u.keys {
		allowed[i] = k.ID
	}
	session := webauthn.SessionData{Challenge: record.EncodeID(digest[:]), RelyingPartyID: rpID, UserID: []byte(p.User.ID),
		AllowedCredentialIDs: allowed, UserVerification: protocol.VerificationPreferred, Expires: d.At.Add(CeremonyTimeout)}
	cred, err := wa.ValidateLogin(u, session, parsed)
	if err != nil {
		return nil, nil, arxerr.New(arxerr.PasskeyInvalid, "the passkey signature was not accepted: %s", webauthnReason(err))
	}
	if cred.Authenticator.CloneWarning {
		e := arxerr.New(arxerr.PasskeyInvalid, "the passkey's signature counter went back: the authenticator may have been cloned")
		e.Hint = "remove this passkey and register a new one"
		return nil, nil, e
	}
	sig := &record.Signature{CredentialID: parsed.RawID, AuthenticatorData: parsed.Raw.AssertionResponse.AuthenticatorData,
		ClientData: parsed.Raw.AssertionResponse.ClientDataJSON, Signature: parsed.Raw.AssertionResponse.Signature, DecidedAt: d.At}
	for _, k := range u.keys {
		if string(k.ID) == string(cred.ID) {
			key := record.Passkey{User: p.User.Email, CredentialID: k.ID, PublicKey: k.PublicKey, RPID: k.RPID}
			if err := passkeys.Verify(key, d, sig); err != nil {
				return nil, nil, arxerr.New(arxerr.PasskeyInvalid, "%v", err)
			}
			return sig, cred, nil
		}
	}
	return nil, nil, arxerr.New(arxerr.PasskeyInvalid, "the passkey is not one of yours")
}

// webauthnReason is the library's error as one safe line.
func webauthnReason(err error) string {
	var pe *protocol.Error
	if errors.As(err, &pe) {
		msg := pe.Details
		if pe.DevInfo != "" {
			msg += " (" + pe.DevInfo + ")"
		}
		return truncate(msg, 200)
	}
	return truncate(err.Error(), 200)
}

// ApproverKeys is one approver or delegate of an agent and their passkeys.
type ApproverKeys struct {
	Email    string
	Delegate bool
	Account  bool // the person has an account here
	Keys     []store.Passkey
}

// ApproverPasskeys lists the passkeys of everyone agent a's job
// description names to decide, for people and operators: the keys their
// signed decisions are checked against.
func (r *Runtime) ApproverPasskeys(ctx context.Context, p *Principal, a *store.Agent) (required bool, out []ApproverKeys, err error) {
	if !p.IsAdmin() && !p.IsPerson() {
		return false, nil, arxerr.New(arxerr.Forbidden, "passkeys are listed for people and operators")
	}
	m, err := r.Manifest(a)
	if err != nil {
		return false, nil, err
	}
	add := func(email string, delegate bool) error {
		k := ApproverKeys{Email: email, Delegate: delegate}
		var err error
		if k.Keys, k.Account, err = r.passkeysOf(ctx, email); err != nil {
			return err
		}
		out = append(out, k)
		return nil
	}
	for _, e := range m.Approval.Approvers {
		if err := add(e, false); err != nil {
			return false, nil, err
		}
	}
	for _, e := range m.Approval.Delegates {
		if err := add(e, true); err != nil {
			return false, nil, err
		}
	}
	return m.Approval.RequirePasskey, out, nil
}

// checkSignedApproval is the last check before a credential of an approved
// high-risk call is handed out: where the agent's job description requires
// passkey-signed decisions, the approval must name a passkey of the person
// who decided. An approval written into the store behind the runtime's
// back (without a signature) gets no credential; one with a forged
// signature is the auditor's to catch (approval_key_unknown,
// approval_signature_invalid).
func (r *Runtime) checkSignedApproval(ctx context.Context, c *store.Call) error {
	ap, err := r.store.Approval(ctx, c.ID)
	switch {
	case errors.Is(err, store.ErrNotFound) && c.Risk != manifest.RiskHigh.String():
		return nil // approved at once: nobody decided
	case errors.Is(err, store.ErrNotFound):
		ap = nil // a high-risk call is always decided: checked below
	case err != nil:
		return r.ReadFailed("approval", err)
	}
	a, err := r.store.Agent(ctx, c.AgentID)
	if err != nil {
		return r.ReadFailed("agent", err)
	}
	m, err := r.Manifest(a)
	if err != nil {
		return err
	}
	if !m.Approval.RequirePasskey {
		return nil
	}
	refuse := func(why string) error {
		r.log.Warn("credential withheld: the approval is not passkey-signed", "agent", c.AgentID, "call", c.ID, "why", why)
		e := arxerr.New(arxerr.PasskeyRequired, "the approval of call %s is not signed with the approver's passkey (%s), so no credential is issued", c.ID, why)
		e.CallID = c.ID
		return e
	}
	if ap == nil {
		return refuse("there is no approval")
	}
	if ap.Passkey == "" {
		return refuse("it names no passkey")
	}
	keys, account, err := r.passkeysOf(ctx, strings.TrimPrefix(ap.DecidedBy, "user:"))
	if err != nil {
		return err
	}
	if !account {
		return refuse("the person who decided has no account")
	}
	for _, k := range keys {
		if record.EncodeID(k.ID) == ap.Passkey {
			return nil
		}
	}
	return refuse("the passkey it names is not the approver's")
}
