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
