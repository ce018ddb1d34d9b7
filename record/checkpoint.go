package record

import (
	"crypto/rand"
	"errors"
	"fmt"

	"github.com/transparency-dev/formats/log"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// Checkpoint is a C2SP tlog-checkpoint body: origin, size and root hash.
type Checkpoint = log.Checkpoint

// GenerateKey makes an Ed25519 note key pair for a log whose origin is
// name, in the x/mod note text formats ("PRIVATE+KEY+name+hash+key" and
// "name+hash+key").
func GenerateKey(name string) (skey, vkey string, err error) {
	return note.GenerateKey(rand.Reader, name)
}

// SignCheckpoint signs the checkpoint of a tree of the given size and root
// as a C2SP signed note.
func SignCheckpoint(s note.Signer, size int64, root tlog.Hash) ([]byte, error) {
	cp := Checkpoint{Origin: s.Name(), Size: uint64(size), Hash: root[:]}
	return note.Sign(&note.Note{Text: string(cp.Marshal())}, s)
}

// OpenCheckpoint verifies a signed checkpoint with the log's verifier key
// (the origin must be the key's name) and returns its body. Other
// signatures on the note (witness cosignatures) are left for the caller.
func OpenCheckpoint(signed []byte, vkey string) (*Checkpoint, *note.Note, error) {
	v, err := note.NewVerifier(vkey)
	if err != nil {
		return nil, nil, fmt.Errorf("record: log key: %w", err)
	}
	if _, err := OpenNote(signed, note.VerifierList(v)); err != nil {
		var invalid *note.InvalidSignatureError
		if errors.As(err, &invalid) {
			return nil, nil, fmt.Errorf("record: checkpoint: %w", err)
		}
	}
	cp, _, n, err := log.ParseCheckpoint(signed, v.Name(), v)
	if err != nil {
		var unk *note.UnverifiedNoteError
		if errors.As(err, &unk) {
			return nil, nil, errors.New("record: checkpoint is not signed by the log key")
		}
		return nil, nil, fmt.Errorf("record: checkpoint: %w", err)
	}
	if len(cp.Hash) != tlog.HashSize {
		return nil, nil, fmt.Errorf("record: checkpoint root hash has %d bytes, want %d", len(cp.Hash), tlog.HashSize)
	}
	return cp, n, nil
}

// NewSigner parses a private note key as written by GenerateKey.
func NewSigner(skey string) (note.Signer, error) { return note.NewSigner(skey) }
