// Package passkeytest is a software WebAuthn authenticator for tests of
// code that checks passkey-signed decisions without a browser (the
// browser tests use Chromium's virtual authenticator): it makes a P-256
// key, its COSE form, and assertions as a platform authenticator would.
package passkeytest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"time"

	"github.com/arxsec/arx/record"
	"github.com/go-webauthn/webauthn/protocol/webauthncbor"
	"github.com/go-webauthn/webauthn/protocol/webauthncose"
)

// Authenticator holds one credential.
type Authenticator struct {
	RPID   string
	Origin string
	ID     []byte
	key    *ecdsa.PrivateKey
	count  uint32
	// Flags of the authenticator data (default user present and verified).
	Flags byte
}

// New makes an authenticator with a fresh credential for rpID.
func New(rpID string) *Authenticator {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	id := make([]byte, 16)
	rand.Read(id)
	return &Authenticator{RPID: rpID, Origin: "https://" + rpID, ID: id, key: k, Flags: 0x05}
}

// COSEKey is the credential's public key as a COSE_Key.
func (a *Authenticator) COSEKey() []byte {
	pub := a.key.PublicKey
	raw, err := pub.Bytes() // 0x04 || X || Y
	if err != nil {
		panic(err)
	}
	k := webauthncose.EC2PublicKeyData{
		PublicKeyData: webauthncose.PublicKeyData{KeyType: int64(webauthncose.EllipticKey), Algorithm: int64(webauthncose.AlgES256)},
		Curve:         int64(webauthncose.P256), XCoord: raw[1:33], YCoord: raw[33:],
	}
	b, err := webauthncbor.Marshal(k)
	if err != nil {
		panic(err)
	}
	return b
}

// Passkey is what passkey.registered records of this credential for user.
func (a *Authenticator) Passkey(user string) record.Passkey {
	return record.Passkey{User: user, CredentialID: a.ID, PublicKey: a.COSEKey(), Algorithm: int64(webauthncose.AlgES256),
		Attestation: "none", AAGUID: make([]byte, 16), RPID: a.RPID, Name: "test key"}
}

// Sign makes an assertion over d's digest.
func (a *Authenticator) Sign(d record.Decision) *record.Signature {
	digest := d.Digest()
	return a.SignChallenge(digest[:], d.At)
}

// SignChallenge makes an assertion over any challenge.
func (a *Authenticator) SignChallenge(challenge []byte, at time.Time) *record.Signature {
	a.count++
	rp := sha256.Sum256([]byte(a.RPID))
	ad := append(rp[:], a.Flags, 0, 0, 0, 0)
	binary.BigEndian.PutUint32(ad[33:], a.count)
	cd, _ := json.Marshal(map[string]any{"type": "webauthn.get", "challenge": record.EncodeID(challenge), "origin": a.Origin, "crossOrigin": false})
	h := sha256.Sum256(cd)
	msg := sha256.Sum256(append(append([]byte{}, ad...), h[:]...))
	sig, err := ecdsa.SignASN1(rand.Reader, a.key, msg[:])
	if err != nil {
		panic(err)
	}
	return &record.Signature{CredentialID: a.ID, AuthenticatorData: ad, ClientData: cd, Signature: sig, DecidedAt: at}
}

// Register answers a registration ceremony: options is the JSON the
// server handed the browser ({"publicKey": {...}}); the answer is the
// PublicKeyCredential as JSON, with a "none" attestation, as the browser
// would post it.
func (a *Authenticator) Register(options []byte) ([]byte, error) {
	var o struct {
		PublicKey struct {
			Challenge string `json:"challenge"`
		} `json:"publicKey"`
	}
	if err := json.Unmarshal(options, &o); err != nil {
		return nil, err
	}
	cd, _ := json.Marshal(map[string]any{"type": "webauthn.create", "challenge": o.PublicKey.Challenge, "origin": a.Origin, "crossOrigin": false})
	rp := sha256.Sum256([]byte(a.RPID))
	ad := append(rp[:], a.Flags|0x40, 0, 0, 0, 0) // attested credential data follows
	ad = append(ad, make([]byte, 16)...)          // AAGUID
	ad = append(ad, byte(len(a.ID)>>8), byte(len(a.ID)))
	ad = append(append(ad, a.ID...), a.COSEKey()...)
	att, err := webauthncbor.Marshal(map[string]any{"fmt": "none", "attStmt": map[string]any{}, "authData": ad})
	if err != nil {
		return nil, err
	}
	return json.Marshal(map[string]any{"id": record.EncodeID(a.ID), "rawId": record.EncodeID(a.ID), "type": "public-key",
		"clientExtensionResults": map[string]any{},
		"response":               map[string]any{"clientDataJSON": record.EncodeID(cd), "attestationObject": record.EncodeID(att)}})
}

// AssertionJSON is s as the browser posts it: a PublicKeyCredential.
func AssertionJSON(s *record.Signature) []byte {
	b, _ := json.Marshal(map[string]any{"id": record.EncodeID(s.CredentialID), "rawId": record.EncodeID(s.CredentialID), "type": "public-key",
		"clientExtensionResults": map[string]any{},
		"response": map[string]any{"clientDataJSON": record.EncodeID(s.ClientData), "authenticatorData": record.EncodeID(s.AuthenticatorData),
			"signature": record.EncodeID(s.Signature)}})
	return b
}
