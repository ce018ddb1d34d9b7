package witness

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/arxsec/arx/record"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// testLog is a log in memory that signs checkpoints like arx serve.
type testLog struct {
	t      *testing.T
	signer note.Signer
	vkey   string
	leaves []tlog.Hash
	hashes []tlog.Hash // stored hashes, by tlog.StoredHashIndex
}

func newTestLog(t *testing.T, origin string) *testLog {
	skey, vkey, err := record.GenerateKey(origin)
	if err != nil {
		t.Fatal(err)
	}
	s, _ := record.NewSigner(skey)
	return &testLog{t: t, signer: s, vkey: vkey}
}

func (l *testLog) add(n int, salt string) {
	for i := 0; i < n; i++ {
		hs, err := tlog.StoredHashes(int64(len(l.leaves)), []byte(fmt.Sprintf("%s-%d", salt, len(l.leaves))), l)
		if err != nil {
			l.t.Fatal(err)
		}
		l.leaves = append(l.leaves, hs[0])
		l.hashes = append(l.hashes, hs...)
	}
}

func (l *testLog) ReadHashes(idx []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(idx))
	for i, x := range idx {
		out[i] = l.hashes[x]
	}
	return out, nil
}

func (l *testLog) checkpoint() []byte {
	root, err := tlog.TreeHash(int64(len(l.leaves)), l)
	if err != nil {
		l.t.Fatal(err)
	}
	cp, err := record.SignCheckpoint(l.signer, int64(len(l.leaves)), root)
	if err != nil {
		l.t.Fatal(err)
	}
	return cp
}

func (l *testLog) proof(old int64) tlog.TreeProof {
	if old == 0 || old == int64(len(l.leaves)) {
		return nil
	}
	p, err := tlog.ProveTree(int64(len(l.leaves)), old, l)
	if err != nil {
		l.t.Fatal(err)
	}
	return p
}

func newWitness(t *testing.T, dir string, logs ...*testLog) (*Witness, string) {
	t.Helper()
	skey, vkey, err := record.GenerateWitnessKey("witness.test/w1")
	if err != nil {
		t.Fatal(err)
	}
	s, _ := record.NewCosigner(skey)
	cfg := Config{Signer: s, StateDir: dir}
	for _, l := range logs {
		v, _ := note.NewVerifier(l.vkey)
		cfg.Logs = append(cfg.Logs, Log{Origin: l.signer.Name(), Keys: []note.Verifier{v}})
	}
	w, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return w, vkey
}

func post(t *testing.T, url string, body []byte) (int, string, string) {
	t.Helper()
	resp, err := http.Post(url+"/add-checkpoint", "text/plain", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("Content-Type"), string(b)
}

func TestAddCheckpoint(t *testing.T) {
	lg := newTestLog(t, "example.com/log")
	other := newTestLog(t, "example.com/other") // a log the witness does not know
	dir := t.TempDir()
	w, wkey := newWitness(t, dir, lg)
	srv := httptest.NewServer(w.Handler())
	defer srv.Close()

	add := func(old int64, proof tlog.TreeProof, cp []byte) (int, string, string) {
		return post(t, srv.URL, (&AddCheckpoint{OldSize: old, Proof: proof, Checkpoint: cp}).Marshal())
	}
	lg.add(10, "a")
	code, _, body := add(0, nil, lg.checkpoint())
	if code != 200 || !strings.HasPrefix(body, "— witness.test/w1 ") {
		t.Fatalf("first checkpoint: %d %q", code, body)
	}
	c, err := record.OpenCosigned(record.AppendSignatures(lg.checkpoint(), body), lg.vkey, []string{wkey})
	if err != nil || len(c.Cosigs) != 1 {
		t.Fatalf("the cosignature does not verify: %+v %v", c, err)
	}
	first := lg.checkpoint()
	lg.add(7, "a")
	if code, _, body := add(10, lg.proof(10), lg.checkpoint()); code != 200 {
		t.Fatalf("consistent checkpoint: %d %s", code, body)
	}
	// The same checkpoint again is cosigned again.
	if code, _, body := add(17, nil, lg.checkpoint()); code != 200 {
		t.Fatalf("same checkpoint again: %d %s", code, body)
	}

	// A fork: another log of 20 entries under the same key whose first 10
	// are the same, and a fork of the same size as the cosigned one.
	fork := &testLog{t: t, signer: lg.signer, vkey: lg.vkey}
	fork.add(10, "a")
	fork.add(10, "forked")
	sameSize := &testLog{t: t, signer: lg.signer, vkey: lg.vkey}
	sameSize.add(17, "b")

	lg.add(3, "a")
	for _, tc := range []struct {
		name  string
		body  []byte
		code  int
		size  string
		cType string
	}{
		{"unknown log", (&AddCheckpoint{OldSize: 0, Checkpoint: other.checkpoint()}).Marshal(), 404, "", ""},
		{"bad signature", (&AddCheckpoint{OldSize: 17, Proof: lg.proof(17), Checkpoint: bytes.Replace(lg.checkpoint(), []byte("— example.com/log "), []byte("— example.com/log AAAA"), 1)}).Marshal(), 403, "", ""},
		{"signed by another key", (&AddCheckpoint{OldSize: 17, Checkpoint: resign(t, lg.checkpoint())}).Marshal(), 403, "", ""},
		{"old larger than new", (&AddCheckpoint{OldSize: 21, Checkpoint: lg.checkpoint()}).Marshal(), 400, "", ""},
		{"malformed body", []byte("old 01\n\n" + string(lg.checkpoint())), 400, "", ""},
		{"rolled back (old checkpoint)", (&AddCheckpoint{OldSize: 10, Checkpoint: first}).Marshal(), 409, "17\n", ContentTypeSize},
		{"stale old size", (&AddCheckpoint{OldSize: 10, Proof: lg.proof(10), Checkpoint: lg.checkpoint()}).Marshal(), 409, "17\n", ContentTypeSize},
		{"fork of the same size", (&AddCheckpoint{OldSize: 17, Checkpoint: sameSize.checkpoint()}).Marshal(), 422, "", ""},
		{"fork with a bad proof", (&AddCheckpoint{OldSize: 17, Proof: fork.proofFrom(17, lg), Checkpoint: fork.checkpoint()}).Marshal(), 422, "", ""},
		{"garbage proof", (&AddCheckpoint{OldSize: 17, Proof: tlog.TreeProof{{1}, {2}}, Checkpoint: lg.checkpoint()}).Marshal(), 422, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, ct, body := post(t, srv.URL, tc.body)
			if code != tc.code || tc.size != "" && body != tc.size || tc.cType != "" && ct != tc.cType {
				t.Fatalf("%d %q %q, want %d %q %q", code, ct, body, tc.code, tc.size, tc.cType)
			}
		})
	}
	if code, _, body := add(17, lg.proof(17), lg.checkpoint()); code != 200 {
		t.Fatalf("consistent checkpoint after refusals: %d %s", code, body)
	}

	// The state survives a restart: a new witness on the same directory
	// refuses what the old one would have.
	w2, _ := newWitness(t, dir, lg)
	if _, err := w2.Add(&AddCheckpoint{OldSize: 0, Checkpoint: lg.checkpoint()}); err == nil || err.(*Error).Size != 20 {
		t.Fatalf("restarted witness forgot its state: %v", err)
	}
	if latest, _ := w2.Latest("example.com/log"); !bytes.HasPrefix(latest, lg.checkpoint()) {
		t.Fatalf("latest = %q", latest)
	}

	// Auditors ask for the latest cosigned checkpoint.
	for _, tc := range []struct {
		origin string
		code   int
	}{{"example.com/log", 200}, {"example.com/other", 404}} {
		resp, err := http.Get(srv.URL + "/latest-checkpoint?origin=" + tc.origin)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.code {
			t.Fatalf("latest of %s: %d %s", tc.origin, resp.StatusCode, b)
		}
		if tc.code == 200 {
			c, err := record.OpenCosigned(b, lg.vkey, []string{wkey})
			if err != nil || len(c.Cosigs) != 1 || c.Checkpoint.Size != 20 {
				t.Fatalf("latest checkpoint: %+v %v\n%s", c, err, b)
			}
		}
	}
}

// proofFrom is l's own proof from old: for a fork, it does not lead from
// the tree the witness holds.
func (l *testLog) proofFrom(old int64, _ *testLog) tlog.TreeProof {
	p, err := tlog.ProveTree(int64(len(l.leaves)), old, l)
	if err != nil {
		l.t.Fatal(err)
	}
	return p
}

func resign(t *testing.T, signed []byte) []byte {
	skey, _, _ := record.GenerateKey("example.com/log")
	s, _ := record.NewSigner(skey)
	text := string(signed[:bytes.Index(signed, []byte("\n\n"))+1])
	out, err := note.Sign(&note.Note{Text: text}, s)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestServerLimits(t *testing.T) {
	lg := newTestLog(t, "example.com/log")
	w, _ := newWitness(t, t.TempDir(), lg)
	srv := httptest.NewServer(w.Handler())
	defer srv.Close()
	if code, _, _ := post(t, srv.URL, bytes.Repeat([]byte("x"), MaxBodySize+1)); code != http.StatusRequestEntityTooLarge {
		t.Fatalf("oversized body: %d", code)
	}
	resp, err := http.Get(srv.URL + "/add-checkpoint")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("GET: %d", resp.StatusCode)
	}
	s := w.Server("127.0.0.1:0")
	if s.ReadHeaderTimeout == 0 || s.ReadTimeout == 0 || s.WriteTimeout == 0 || s.MaxHeaderBytes == 0 {
		t.Fatal("server without timeouts")
	}
}

func FuzzParseAddCheckpoint(f *testing.F) {
	f.Add([]byte("old 0\n\nexample.com/log\n1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n\n— example.com/log AAAA\n"))
	f.Add([]byte("old 20852014\nPlRNCrwHpqhGrupue0L7gxbjbMiKA9temvuZZDDpkaw=\njrJZDmY8Y7SyJE0MWLpLozkIVMSMZcD5kvuKxPC3swk=\n\ncheckpoint"))
	f.Add([]byte("old 1\nPlRNCrwHpqhGrupue0L7gxbjbMiKA9temvuZZDDpkaw\n\nx"))
	f.Fuzz(func(t *testing.T, body []byte) {
		r, err := ParseAddCheckpoint(body)
		if err != nil {
			return
		}
		if again := r.Marshal(); !bytes.Equal(again, body) {
			t.Fatalf("request does not round-trip:\n%q\n%q", body, again)
		}
	})
}
