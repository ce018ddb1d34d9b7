package record

import (
	"crypto/sha256"
	"encoding/base64"
	"strings"
	"time"
)

// Entries about passkeys (WebAuthn credentials of approvers), and the
// signed form of an approval decision. A passkey is registered in the log
// (witnessed) before it signs anything, so an auditor can check every
// signed decision against the key the log named for that person earlier,
// without trusting whoever runs ARX. Checking is in package record/passkeys.
const (
	TypePasskeyRegistered = "passkey.registered"
	TypePasskeyRemoved    = "passkey.removed"
)

// DecisionVersion names the encoding of Decision that a passkey signs.
const DecisionVersion = "arx.decision/1"

// Decision verbs, as signed.
const (
	DecisionApprove = "approve"
	DecisionDeny    = "deny"
)

// Decision is what an approver's passkey signs: the call as it was shown
// (from its call.requested entry: agent, connector, action, effective risk
// and the agent's summary) and what the person decided, why and when.
type Decision struct {
	Call, Agent, Connector, Action, Risk string
	Summary                              string
	// Args and ArgsHash are the call's arguments as shown (its
	// call.requested entry's args and args_hash); "" when none.
	Args, ArgsHash string
	By             string // the approver's email
	Verdict        string // DecisionApprove or DecisionDeny
	Reason         string
	At             time.Time // when the person decided (UTC, TimeFormat)
}

// Bytes is the canonical JSON the digest is taken over; an auditor's own
// tools can rebuild it from the record.
func (d Decision) Bytes() []byte {
	m := map[string]any{"v": DecisionVersion, "call": d.Call, "agent": d.Agent, "connector": d.Connector, "action": d.Action,
		"risk": d.Risk, "summary": d.Summary, "by": d.By, "decision": d.Verdict, "reason": d.Reason,
		"decided_at": FormatTime(d.At)}
	// Only when there are any: a decision without arguments signs the
	// same bytes as before arguments existed.
	if d.Args != "" {
		m["args"] = d.Args
	}
	if d.ArgsHash != "" {
		m["args_hash"] = d.ArgsHash
	}
	for k, v := range m {
		m[k] = strings.ToValidUTF8(v.(string), "\uFFFD") // entries hold valid UTF-8; anything else cannot match
	}
	b, err := appendCanonical(nil, m, 0)
	if err != nil {
		panic("record: decision does not encode: " + err.Error()) // flat strings, valid UTF-8: unreachable
	}
	return b
}

// Digest is SHA-256 of Bytes: the WebAuthn challenge the passkey signs.
func (d Decision) Digest() [sha256.Size]byte { return sha256.Sum256(d.Bytes()) }

// Signature is a WebAuthn assertion over a Decision's digest, as the
// decision's entry keeps it.
type Signature struct {
	CredentialID      []byte
	AuthenticatorData []byte
	ClientData        []byte // clientDataJSON, as the browser made it
	Signature         []byte
	DecidedAt         time.Time // Decision.At
}

var b64 = base64.RawURLEncoding

func (s *Signature) data() map[string]any {
	return map[string]any{"credential_id": b64.EncodeToString(s.CredentialID),
		"authenticator_data": b64.EncodeToString(s.AuthenticatorData), "client_data": b64.EncodeToString(s.ClientData),
		"signature": b64.EncodeToString(s.Signature), "decided_at": FormatTime(s.DecidedAt)}
}

// SignatureOf reads the passkey signature of an approval.granted or
// approval.denied entry: nil when the decision was not signed; ok false
// when the entry names a signature that does not decode.
func SignatureOf(e *Entry) (s *Signature, ok bool) {
	m, present := e.Data["passkey"].(map[string]any)
	if !present {
		return nil, e.Data["passkey"] == nil
	}
	var err error
	s = &Signature{DecidedAt: Time(m, "decided_at")}
	for key, dst := range map[string]*[]byte{"credential_id": &s.CredentialID, "authenticator_data": &s.AuthenticatorData,
		"client_data": &s.ClientData, "signature": &s.Signature} {
		if *dst, err = b64.DecodeString(Str(m, key)); err != nil || len(*dst) == 0 {
			return s, false
		}
	}
	return s, !s.DecidedAt.IsZero()
}

// ApprovalSigned records an approval (verdict DecisionApprove) or a
// denial signed with the approver's passkey: the fields of
// ApprovalGranted or ApprovalDenied, and the signature.
func ApprovalSigned(c CallRef, actor string, t time.Time, verdict, by, reason string, s *Signature) *Entry {
	var e *Entry
	if verdict == DecisionApprove {
		e = ApprovalGranted(c, actor, t, by, reason)
	} else {
		e = ApprovalDenied(c, actor, t, by, reason)
	}
	e.Data["passkey"] = s.data()
	return e
}

// Passkey is what passkey.registered records: the public half of a
// person's WebAuthn credential, so that the log names the key before it
// signs.
type Passkey struct {
	User         string // email
	CredentialID []byte
	PublicKey    []byte // COSE_Key, as the authenticator made it
	Algorithm    int64  // COSE algorithm identifier (-7 ES256, -8 EdDSA, -257 RS256)
	Attestation  string // attestation statement format ("none", "packed", ...)
	AAGUID       []byte // the authenticator model, as it says
	RPID         string // the relying party id the key is scoped to
	Name         string // the person's label for it
}

// PasskeyRegistered records a person's new passkey.
func PasskeyRegistered(actor string, t time.Time, k Passkey) *Entry {
	return &Entry{Type: TypePasskeyRegistered, Actor: actor, Time: t, Data: map[string]any{"user": k.User,
		"credential_id": b64.EncodeToString(k.CredentialID), "public_key": b64.EncodeToString(k.PublicKey),
		"algorithm": k.Algorithm, "attestation": k.Attestation, "aaguid": b64.EncodeToString(k.AAGUID),
		"rp_id": k.RPID, "name": k.Name}}
}

// PasskeyOf reads a passkey.registered entry; ok false when a field does
// not decode.
func PasskeyOf(e *Entry) (k Passkey, ok bool) {
	k = Passkey{User: Str(e.Data, "user"), Algorithm: Int(e.Data, "algorithm"), Attestation: Str(e.Data, "attestation"),
		RPID: Str(e.Data, "rp_id"), Name: Str(e.Data, "name")}
	var err1, err2, err3 error
	k.CredentialID, err1 = b64.DecodeString(Str(e.Data, "credential_id"))
	k.PublicKey, err2 = b64.DecodeString(Str(e.Data, "public_key"))
	k.AAGUID, err3 = b64.DecodeString(Str(e.Data, "aaguid"))
	return k, err1 == nil && err2 == nil && err3 == nil && len(k.CredentialID) > 0 && len(k.PublicKey) > 0 && k.User != "" && k.RPID != ""
}

// PasskeyRemoved records a passkey withdrawn (lost, replaced): it signs
// nothing from then on.
func PasskeyRemoved(actor string, t time.Time, user string, credentialID []byte, reason string) *Entry {
	return &Entry{Type: TypePasskeyRemoved, Actor: actor, Time: t, Data: map[string]any{"user": user,
		"credential_id": b64.EncodeToString(credentialID), "reason": reason}}
}

// EncodeID is the text form of a credential id in the record, the API and
// the console (base64url, unpadded, as WebAuthn writes it).
func EncodeID(id []byte) string { return b64.EncodeToString(id) }

// DecodeID reads EncodeID's form.
func DecodeID(s string) ([]byte, error) { return b64.DecodeString(s) }
