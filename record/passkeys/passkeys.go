// Package passkeys checks approval decisions signed with an approver's
// passkey (a WebAuthn assertion whose challenge is the digest of the
// decision, record.Decision), against the key the log registered for that
// person earlier. It is the one implementation of that rule: the runtime
// runs Verify before it records a signed decision, the console before it
// shows one as signed, and the auditor (package audit, `arx audit verify`)
// runs Checker over the whole log from the bucket, trusting neither ARX nor
// whoever runs it.
package passkeys

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/arxsec/arx/record"
	"github.com/go-webauthn/webauthn/protocol"
	"github.com/go-webauthn/webauthn/protocol/webauthncose"
)

// Problem kinds the Checker reports, beside record's and audit's.
const (
	// KindUnsigned: a decision without a passkey signature about an agent
	// whose manifest requires one (approval.require_passkey).
	KindUnsigned = "approval_unsigned"
	// KindSignatureInvalid: the signature does not verify over the
	// decision as the log shows it (another summary, action, risk,
	// verdict, reason or time; another relying party; a forged or altered
	// assertion).
	KindSignatureInvalid = "approval_signature_invalid"
	// KindKeyUnknown: the decision names a key the log never registered,
	// one of another person, or one removed before the decision.
	KindKeyUnknown = "approval_key_unknown"
	// KindKeyRegisteredAfterUse: the key was registered in the log only
	// after the decision it signed: it was not witnessed when it was used.
	KindKeyRegisteredAfterUse = "approval_key_registered_after_use"
)

// ErrSignature is wrapped by every error of Verify.
var ErrSignature = errors.New("the passkey signature does not verify")

// clientData is the part of WebAuthn's clientDataJSON that is checked.
type clientData struct {
	Type      string `json:"type"`
	Challenge string `json:"challenge"`
	Origin    string `json:"origin"`
}

// Verify checks that s is an assertion by key k over decision d: the
// credential is k's, the client data is of a webauthn.get ceremony whose
// challenge is d's digest, the authenticator data is scoped to k's relying
// party with the user present, and the signature over authenticator data
// and the client data's hash verifies with k's public key.
func Verify(k record.Passkey, d record.Decision, s *record.Signature) error {
	fail := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrSignature, fmt.Sprintf(format, args...))
	}
	if s == nil {
		return fail("the decision is not signed")
	}
	if !bytes.Equal(s.CredentialID, k.CredentialID) {
		return fail("it names another credential")
	}
	if !s.DecidedAt.Equal(d.At) {
		return fail("it was made for a decision at another time")
	}
	var cd clientData
	if err := json.Unmarshal(s.ClientData, &cd); err != nil {
		return fail("the client data is not JSON")
	}
	if cd.Type != string(protocol.AssertCeremony) {
		return fail("the client data is of a %q ceremony, not webauthn.get", truncate(cd.Type))
	}
	digest := d.Digest()
	want := record.EncodeID(digest[:])
	if subtle.ConstantTimeCompare([]byte(cd.Challenge), []byte(want)) != 1 {
		return fail("it signs another decision than the one recorded (the summary, action, risk, verdict, reason or time differ)")
	}
	var ad protocol.AuthenticatorData
	if err := ad.Unmarshal(s.AuthenticatorData); err != nil {
		return fail("the authenticator data does not parse")
	}
	rp := sha256.Sum256([]byte(k.RPID))
	if !bytes.Equal(ad.RPIDHash, rp[:]) {
		return fail("it is scoped to another relying party than %s", k.RPID)
	}
	if !ad.Flags.UserPresent() {
		return fail("the authenticator did not see the person present")
	}
	key, err := webauthncose.ParsePublicKey(k.PublicKey)
	if err != nil {
		return fail("the registered public key does not parse")
	}
	cdHash := sha256.Sum256(s.ClientData)
	signed := make([]byte, 0, len(s.AuthenticatorData)+len(cdHash))
	signed = append(append(signed, s.AuthenticatorData...), cdHash[:]...)
	ok, err := webauthncose.VerifySignature(key, signed, s.Signature)
	if err != nil || !ok {
		return fail("the signature is not the key's")
	}
	return nil
}

func truncate(s string) string {
	if len(s) > 32 {
		return s[:32] + "…"
	}
	return s
}
