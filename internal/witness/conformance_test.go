package witness

import (
	"bytes"
	"encoding/base64"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/arxsec/arx/record"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// TestSpecConformance turns the MUSTs of c2sp.org/tlog-witness (the
// add-checkpoint call and the monitor retrieval mechanism) into cases, in
// the spec's order, each against the witness's HTTP handler. The witness
// starts having cosigned lg at 10; fresh is a log it knows and never
// cosigned.
func TestSpecConformance(t *testing.T) {
	lg := newTestLog(t, "example.com/log")
	fresh := newTestLog(t, "example.com/fresh")
	unknown := newTestLog(t, "example.com/unknown")
	w, _ := newWitness(t, t.TempDir(), lg, fresh)
	srv := httptest.NewServer(w.Handler())
	defer srv.Close()
	lg.add(10, "a")
	first := lg.checkpoint()
	if code, _, body := post(t, srv.URL, (&AddCheckpoint{Checkpoint: first}).Marshal()); code != 200 {
		t.Fatalf("setup: %d %s", code, body)
	}
	lg.add(5, "a")
	sameSize := &testLog{t: t, signer: lg.signer, vkey: lg.vkey}
	sameSize.add(10, "b")
	emptyWithRoot := func(l *testLog, root tlog.Hash) []byte {
		cp, err := record.SignCheckpoint(l.signer, 0, root)
		if err != nil {
			t.Fatal(err)
		}
		return cp
	}
	withForeignSig := func(cp []byte) []byte { // a signature line of a key the witness does not know
		skey, _, _ := record.GenerateKey("someone.else/key")
		s, _ := record.NewSigner(skey)
		n, _ := note.Sign(&note.Note{Text: string(cp[:bytes.Index(cp, []byte("\n\n"))+1])}, s)
		return append(bytes.Clone(cp), n[bytes.Index(n, []byte("\n\n"))+2:]...)
	}
	corruptDuplicate := func(cp []byte) []byte { // the log's line again, its signature broken
		i := bytes.Index(cp, []byte("\n\n")) + 2
		// "— name base64\n": flip a bit of the signature itself, not a
		// base64 character whose low bits are only padding.
		line := strings.TrimSuffix(string(cp[i:]), "\n")
		sp := strings.LastIndexByte(line, ' ')
		raw, err := base64.StdEncoding.DecodeString(line[sp+1:])
		if err != nil {
			t.Fatal(err)
		}
		raw[len(raw)/2] ^= 0x01
		return append(bytes.Clone(cp), line[:sp+1]+base64.StdEncoding.EncodeToString(raw)+"\n"...)
	}

	for _, tc := range []struct {
		must string // the spec's requirement
		body string
		code int
		size string // the 409 body
	}{
		{"old size line: ASCII decimal, no leading zeroes", "old 010\n\n" + string(lg.checkpoint()), 400, ""},
		{"old size line: the string old and a single space", "old  10\n\n" + string(lg.checkpoint()), 400, ""},
		{"each line terminates in a newline", "old 10", 400, ""},
		{"no more than 63 proof lines", "old 10\n" + strings.Repeat("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n", 64) + "\n" + string(lg.checkpoint()), 400, ""},
		{"unknown origin: 404", string((&AddCheckpoint{Checkpoint: unknown.checkpoint()}).Marshal()), 404, ""},
		{"no signature from a trusted key: 403", string((&AddCheckpoint{OldSize: 10, Proof: lg.proof(10), Checkpoint: resign(t, lg.checkpoint())}).Marshal()), 403, ""},
		{"a trusted key's line that fails to verify: 403", string((&AddCheckpoint{OldSize: 10, Proof: lg.proof(10), Checkpoint: corruptDuplicate(lg.checkpoint())}).Marshal()), 403, ""},
		{"old size larger than the checkpoint's: 400", string((&AddCheckpoint{OldSize: 16, Checkpoint: lg.checkpoint()}).Marshal()), 400, ""},
		{"old size not the latest cosigned: 409 with the size", string((&AddCheckpoint{OldSize: 0, Checkpoint: lg.checkpoint()}).Marshal()), 409, "10\n"},
		{"a rolled-back checkpoint: 409 with the size", string((&AddCheckpoint{OldSize: 5, Checkpoint: first}).Marshal()), 409, "10\n"},
		{"size 0 must have the empty tree's root: 422", string((&AddCheckpoint{Checkpoint: emptyWithRoot(fresh, tlog.Hash{1})}).Marshal()), 422, ""},
		{"old size 0 with a proof: 422", string((&AddCheckpoint{Proof: tlog.TreeProof{{1}}, Checkpoint: fresh.checkpoint()}).Marshal()), 422, ""},
		{"a proof that does not verify: 422", string((&AddCheckpoint{OldSize: 10, Proof: tlog.TreeProof{{1}, {2}}, Checkpoint: lg.checkpoint()}).Marshal()), 422, ""},
		{"same size, another root: 422", string((&AddCheckpoint{OldSize: 10, Checkpoint: sameSize.checkpoint()}).Marshal()), 422, ""},
		{"same size, same root: cosigned", string((&AddCheckpoint{OldSize: 10, Checkpoint: first}).Marshal()), 200, ""},
		{"signatures of unknown keys are ignored", string((&AddCheckpoint{OldSize: 10, Proof: lg.proof(10), Checkpoint: withForeignSig(lg.checkpoint())}).Marshal()), 200, ""},
		{"size 0 with the empty root: cosigned", string((&AddCheckpoint{Checkpoint: emptyWithRoot(fresh, emptyRoot)}).Marshal()), 200, ""},
	} {
		t.Run(tc.must, func(t *testing.T) {
			code, ct, body := post(t, srv.URL, []byte(tc.body))
			if code != tc.code {
				t.Fatalf("%d %q, want %d", code, body, tc.code)
			}
			switch code {
			case 409:
				if ct != ContentTypeSize || body != tc.size {
					t.Errorf("409 answer %q of type %q, want %q of type %s", body, ct, tc.size, ContentTypeSize)
				}
			case 200:
				// One or more cosignature lines, each "— name base64\n",
				// with a timestamp that is not zero.
				for line := range strings.Lines(body) {
					if !strings.HasPrefix(line, "— witness.test/w1 ") || !strings.HasSuffix(line, "\n") {
						t.Errorf("answer line %q", line)
					}
				}
			}
		})
	}

	// After a 200 the state is updated: the next call needs the new size.
	if code, _, body := post(t, srv.URL, (&AddCheckpoint{OldSize: 10, Checkpoint: lg.checkpoint()}).Marshal()); code != 409 || body != "15\n" {
		t.Errorf("after cosigning 15: %d %q, want 409 15", code, body)
	}

	// Monitor retrieval: GET <prefix>/<sha256 of the origin, hex>/checkpoint
	// is the latest cosigned checkpoint with the log's signature the
	// witness verified and the cosignature add-checkpoint returned; 404
	// when the witness never cosigned one.
	never := newTestLog(t, "example.com/never")
	w2, w2key := newWitness(t, t.TempDir(), lg, never)
	srv2 := httptest.NewServer(w2.Handler())
	defer srv2.Close()
	code, _, answer := post(t, srv2.URL, (&AddCheckpoint{Checkpoint: withForeignSig(lg.checkpoint())}).Marshal())
	if code != 200 {
		t.Fatalf("add: %d %s", code, answer)
	}
	get := func(path string) (int, []byte) {
		resp, err := http.Get(srv2.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	code, got := get("/" + OriginHash("example.com/log") + "/checkpoint")
	if code != 200 || !bytes.Equal(got, append(lg.checkpoint(), answer...)) {
		t.Errorf("monitor checkpoint: %d\n%s\nwant the checkpoint, its log signature and the answered cosignature:\n%s%s", code, got, lg.checkpoint(), answer)
	}
	if c, err := record.OpenCosigned(got, lg.vkey, []string{w2key}); err != nil || len(c.Cosigs) != 1 {
		t.Errorf("monitor checkpoint does not verify: %+v %v", c, err)
	}
	for _, p := range []string{"/" + OriginHash("example.com/never") + "/checkpoint", "/" + OriginHash("example.com/unknown") + "/checkpoint"} {
		if code, _ := get(p); code != 404 {
			t.Errorf("GET %s: %d, want 404", p, code)
		}
	}
}
