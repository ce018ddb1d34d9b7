package record

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"

	"golang.org/x/mod/sumdb/note"
)

// OpenNote is note.Open as the signed-note spec (c2sp.org/signed-note)
// asks of a verifier: every signature line whose key name and ID match a
// known key is verified, and one that fails rejects the whole note
// (*note.InvalidSignatureError). note.Open skips a known key's later lines
// once it has seen one, so a corrupted duplicate line would pass.
func OpenNote(msg []byte, known note.Verifiers) (*note.Note, error) {
	n, err := note.Open(msg, known)
	if err != nil {
		return nil, err
	}
	// note.Open checked the layout: text, "\n\n", "— name base64\n" lines.
	split := bytes.LastIndex(msg, []byte("\n\n"))
	text, sigs := msg[:split+1], msg[split+2:]
	for len(sigs) > 0 {
		i := bytes.IndexByte(sigs, '\n')
		line := sigs[:i]
		sigs = sigs[i+1:]
		name, b64, _ := bytes.Cut(bytes.TrimPrefix(line, []byte("— ")), []byte(" "))
		sig, err := base64.StdEncoding.DecodeString(string(b64))
		if err != nil || len(sig) < 5 {
			continue // note.Open refused such lines already
		}
		hash := binary.BigEndian.Uint32(sig)
		v, err := known.Verifier(string(name), hash)
		if err != nil {
			continue // unknown keys are ignored
		}
		if !v.Verify(text, sig[4:]) {
			return nil, &note.InvalidSignatureError{Name: string(name), Hash: hash}
		}
	}
	return n, nil
}
