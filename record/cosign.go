package record

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"time"

	fnote "github.com/transparency-dev/formats/note"
	"golang.org/x/mod/sumdb/note"
)

// Witness cosignatures, C2SP tlog-cosignature (https://c2sp.org/tlog-cosignature):
// an Ed25519 note signature (key type 0x04) over "cosignature/v1\ntime T\n"
// followed by the checkpoint body, with the timestamp in front of the
// signature. A cosignature says: as of time T, this is the largest tree
// consistent with everything the witness has seen of the log.

// cosignatureAlg is the signature type of Ed25519 cosignature/v1 keys.
const cosignatureAlg = 0x04

// GenerateWitnessKey makes an Ed25519 cosignature/v1 key pair for a
// witness named name, in the note key text formats
// ("PRIVATE+KEY+name+hash+key" and "name+hash+key", key type 0x04).
func GenerateWitnessKey(name string) (skey, vkey string, err error) {
	if name == "" || strings.ContainsAny(name, "+ \t\n") {
		return "", "", fmt.Errorf("record: witness name %q is empty or has a space or a plus", name)
	}
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return "", "", err
	}
	pk := append([]byte{cosignatureAlg}, pub...)
	sk := append([]byte{cosignatureAlg}, priv.Seed()...)
	h := sha256.New()
	h.Write([]byte(name + "\n"))
	h.Write(pk)
	hash := binary.BigEndian.Uint32(h.Sum(nil))
	skey = fmt.Sprintf("PRIVATE+KEY+%s+%08x+%s", name, hash, base64.StdEncoding.EncodeToString(sk))
	vkey = fmt.Sprintf("%s+%08x+%s", name, hash, base64.StdEncoding.EncodeToString(pk))
	if _, err := NewCosigner(skey); err != nil {
		return "", "", err
	}
	return skey, vkey, nil
}

// NewCosigner parses a witness's private key (GenerateWitnessKey) into a
// signer that makes timestamped cosignature/v1 signatures.
func NewCosigner(skey string) (note.Signer, error) {
	s, err := fnote.NewSignerForCosignatureV1(skey)
	if err != nil {
		return nil, fmt.Errorf("record: witness key: %w", err)
	}
	return s, nil
}

// NewCosignatureVerifier parses a witness's public key. A plain Ed25519
// note key (type 0x01) is taken as the same key used for cosignature/v1.
func NewCosignatureVerifier(vkey string) (note.Verifier, error) {
	v, err := fnote.NewVerifierForCosignatureV1(vkey)
	if err != nil {
		return nil, fmt.Errorf("record: witness key %q: %w", vkey, err)
	}
	return v, nil
}

// Cosign returns the cosignature line ("— name base64\n") of signer on a
// checkpoint body (the note text, ending in a newline).
func Cosign(signer note.Signer, body string) (string, error) {
	signed, err := note.Sign(&note.Note{Text: body}, signer)
	if err != nil {
		return "", err
	}
	return string(signed[len(body)+1:]), nil
}

// Cosignature is one verified witness cosignature.
type Cosignature struct {
	Witness string    `json:"witness"`
	Time    time.Time `json:"time"`
}

// Cosigned is a checkpoint opened with the log's key and the keys of the
// witnesses an auditor trusts.
type Cosigned struct {
	Checkpoint *Checkpoint
	Body       string        // the note text the signatures cover
	Cosigs     []Cosignature // witnesses whose cosignatures verify, in the order of the keys
	// Invalid names trusted witnesses whose signature line is present but
	// does not verify: a forged or altered cosignature.
	Invalid []string
}

// OpenCosigned verifies a checkpoint's log signature (an error if it does
// not hold) and each trusted witness's cosignature. Signatures by other
// keys are ignored, as the signed-note format says.
func OpenCosigned(signed []byte, logVKey string, witnessVKeys []string) (*Cosigned, error) {
	cp, n, err := OpenCheckpoint(signed, logVKey)
	if err != nil {
		return nil, err
	}
	c := &Cosigned{Checkpoint: cp, Body: n.Text}
	for _, vk := range witnessVKeys {
		v, err := NewCosignatureVerifier(vk)
		if err != nil {
			return nil, err
		}
		wn, err := OpenNote(signed, note.VerifierList(v))
		var invalid *note.InvalidSignatureError
		switch {
		case errors.As(err, &invalid):
			c.Invalid = append(c.Invalid, v.Name())
			continue
		case err != nil:
			continue // no cosignature by this witness
		}
		for _, s := range wn.Sigs {
			if s.Name == v.Name() && s.Hash == v.KeyHash() {
				t, _ := fnote.CoSigV1Timestamp(s)
				c.Cosigs = append(c.Cosigs, Cosignature{Witness: v.Name(), Time: t.UTC()})
				break
			}
		}
	}
	return c, nil
}

// AppendSignatures adds signature lines (each "— name base64\n") to a signed
// note.
func AppendSignatures(signed []byte, lines ...string) []byte {
	out := append([]byte(nil), signed...)
	for _, l := range lines {
		out = append(out, l...)
	}
	return out
}
