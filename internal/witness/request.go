package witness

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"

	"golang.org/x/mod/sumdb/tlog"
)

// AddCheckpoint is the body of a C2SP tlog-witness add-checkpoint request:
// the size of the checkpoint the client believes the witness last cosigned,
// a consistency proof from that size to the new checkpoint, and the new
// checkpoint as a signed note.
type AddCheckpoint struct {
	OldSize    int64
	Proof      tlog.TreeProof
	Checkpoint []byte
}

// MaxProofLines is the most consistency proof lines a request may carry.
const MaxProofLines = 63

// Marshal encodes the request body.
func (r *AddCheckpoint) Marshal() []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "old %d\n", r.OldSize)
	for _, h := range r.Proof {
		b.WriteString(base64.StdEncoding.EncodeToString(h[:]))
		b.WriteByte('\n')
	}
	b.WriteByte('\n')
	b.Write(r.Checkpoint)
	return b.Bytes()
}

// ErrMalformed is a request body that does not follow the spec (400).
var ErrMalformed = errors.New("malformed add-checkpoint request")

// ParseAddCheckpoint decodes a request body strictly: "old N" with N in
// canonical decimal, at most 63 base64 hashes one a line, an empty line,
// then the checkpoint (checked later, by the note parser).
func ParseAddCheckpoint(body []byte) (*AddCheckpoint, error) {
	line, rest, ok := bytes.Cut(body, []byte("\n"))
	if !ok {
		return nil, fmt.Errorf("%w: no old size line", ErrMalformed)
	}
	num, ok := bytes.CutPrefix(line, []byte("old "))
	if !ok {
		return nil, fmt.Errorf("%w: first line is not \"old SIZE\"", ErrMalformed)
	}
	old, err := strconv.ParseInt(string(num), 10, 64)
	if err != nil || old < 0 || strconv.FormatInt(old, 10) != string(num) {
		return nil, fmt.Errorf("%w: old size %q is not a decimal without leading zeros", ErrMalformed, num)
	}
	r := &AddCheckpoint{OldSize: old}
	for {
		line, rest, ok = bytes.Cut(rest, []byte("\n"))
		if !ok {
			return nil, fmt.Errorf("%w: no empty line before the checkpoint", ErrMalformed)
		}
		if len(line) == 0 {
			break
		}
		if len(r.Proof) == MaxProofLines {
			return nil, fmt.Errorf("%w: more than %d proof lines", ErrMalformed, MaxProofLines)
		}
		b, err := base64.StdEncoding.DecodeString(string(line))
		if err != nil || len(b) != tlog.HashSize || base64.StdEncoding.EncodeToString(b) != string(line) {
			return nil, fmt.Errorf("%w: proof line %q is not a base64 hash", ErrMalformed, line)
		}
		h := tlog.Hash(b)
		r.Proof = append(r.Proof, h)
	}
	if len(rest) == 0 {
		return nil, fmt.Errorf("%w: no checkpoint", ErrMalformed)
	}
	r.Checkpoint = rest
	return r, nil
}

// ContentTypeSize is the type of a 409 answer's body: the stored size.
const ContentTypeSize = "text/x.tlog.size"
