package record

import (
	"bytes"
	"encoding/base64"
	"errors"
	"strings"
	"testing"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// corruptLastSig flips a bit in the signature of the note's last line.
func corruptLastSig(t *testing.T, signed []byte) []byte {
	t.Helper()
	lines := strings.Split(strings.TrimSuffix(string(signed), "\n"), "\n")
	last := lines[len(lines)-1]
	i := strings.LastIndex(last, " ")
	sig, err := base64.StdEncoding.DecodeString(last[i+1:])
	if err != nil {
		t.Fatal(err)
	}
	sig[len(sig)-1] ^= 1
	lines[len(lines)-1] = last[:i+1] + base64.StdEncoding.EncodeToString(sig)
	return []byte(strings.Join(lines, "\n") + "\n")
}

// TestOpenNoteRejectsABadLineOfAKnownKey: a note that carries a valid
// signature of a known key and, beside it, a corrupted line of the same
// key is rejected (c2sp.org/signed-note: a signature from a known key is
// always verified), for the log's signature and for a cosignature, in
// either order; lines of unknown keys are still ignored.
func TestOpenNoteRejectsABadLineOfAKnownKey(t *testing.T) {
	skey, vkey, _ := GenerateKey("arx.test/note")
	signer, _ := NewSigner(skey)
	cp, err := SignCheckpoint(signer, 5, tlog.Hash{1})
	if err != nil {
		t.Fatal(err)
	}
	wskey, wvkey, _ := GenerateWitnessKey("w.note.test")
	ws, _ := NewCosigner(wskey)
	body := cp[:bytes.LastIndex(cp, []byte("\n\n"))+1]
	line, err := Cosign(ws, string(body))
	if err != nil {
		t.Fatal(err)
	}
	cosigned := AppendSignatures(cp, line)

	logLine := string(cp[bytes.LastIndex(cp, []byte("\n\n"))+2:])
	badLog := corruptLastSig(t, cp)
	badLogLine := string(badLog[bytes.LastIndex(badLog, []byte("\n\n"))+2:])
	badCosig := corruptLastSig(t, cosigned)
	badCosigLine := string(badCosig[bytes.LastIndex(badCosig, []byte("\n\n"))+2+len(logLine):])

	otherSkey, _, _ := GenerateKey("other.test/key")
	other, _ := NewSigner(otherSkey)
	foreign, _ := note.Sign(&note.Note{Text: string(body)}, other)
	foreignLine := string(foreign[bytes.LastIndex(foreign, []byte("\n\n"))+2:])

	for _, tc := range []struct {
		name    string
		note    []byte
		logOK   bool
		cosigOK bool
	}{
		{"as signed", cosigned, true, true},
		{"a foreign key's line", AppendSignatures(cosigned, foreignLine), true, true},
		{"log line, then a bad duplicate", AppendSignatures(cp, badLogLine, line), false, false},
		{"bad duplicate, then the log line", append(append([]byte(nil), body...), []byte("\n"+badLogLine+logLine+line)...), false, false},
		{"cosignature, then a bad duplicate", AppendSignatures(cosigned, badCosigLine), true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := OpenCheckpoint(tc.note, vkey)
			if tc.logOK != (err == nil) {
				t.Fatalf("OpenCheckpoint: %v, want ok=%v", err, tc.logOK)
			}
			if !tc.logOK {
				var invalid *note.InvalidSignatureError
				if !errors.As(err, &invalid) {
					t.Errorf("OpenCheckpoint: %v, want an invalid signature", err)
				}
				return
			}
			cs, err := OpenCosigned(tc.note, vkey, []string{wvkey})
			if err != nil {
				t.Fatal(err)
			}
			if ok := len(cs.Cosigs) == 1 && len(cs.Invalid) == 0; ok != tc.cosigOK {
				t.Errorf("cosignatures %+v invalid %v, want ok=%v", cs.Cosigs, cs.Invalid, tc.cosigOK)
			}
		})
	}
}
