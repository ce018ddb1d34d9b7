package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/arxsec/arx/internal/publish"
	"github.com/arxsec/arx/internal/publish/file"
	"github.com/arxsec/arx/internal/publish/publishtest"
	"github.com/arxsec/arx/internal/witness"
	"github.com/arxsec/arx/record"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// auditRun is a real run: arx serve publishing to a file:// bucket with two
// witnesses in processes of their own, and the files an auditor holds.
type auditRun struct {
	bucket    string // the untouched bucket
	logPub    string // file with the log's public key
	logKey    string // file with the log's private key (the operator's, for forging)
	wit       []*publishtest.Witness
	witPubs   []string
	oldCP     []byte // a cosigned checkpoint published earlier
	entries   [][]byte
	cpSize    int64
	stateFile string // an auditor's state after verifying the untouched bucket
}

func newAuditRun(t *testing.T) *auditRun {
	t.Helper()
	root := t.TempDir()
	data := filepath.Join(root, "data")
	r := &auditRun{bucket: filepath.Join(root, "bucket"), logPub: filepath.Join(data, "log.pub"), logKey: filepath.Join(data, "log.key")}
	vkey := publishtest.LogKey(t, data, "arx.test/audit")
	for _, name := range []string{"w1.witness.test", "w2.witness.test"} {
		w := publishtest.StartWitness(t, name, vkey)
		r.wit = append(r.wit, w)
		p := filepath.Join(root, name+".pub")
		os.WriteFile(p, []byte(w.VKey+"\n"), 0o644)
		r.witPubs = append(r.witPubs, p)
	}
	b, err := file.New(r.bucket)
	if err != nil {
		t.Fatal(err)
	}
	pc := &publish.Config{Bucket: b, Quorum: 2, PublishInterval: 20 * time.Millisecond, WitnessInterval: time.Hour,
		Witnesses: []publish.Witness{{URL: r.wit[0].URL, VKey: r.wit[0].VKey}, {URL: r.wit[1].URL, VKey: r.wit[1].VKey}}}
	s := publishtest.StartServer(t, data, pc)
	s.Calls(40)
	s.Publish()
	r.oldCP, _ = os.ReadFile(filepath.Join(r.bucket, "checkpoint"))
	s.Calls(110) // 2 + 300 entries: one full bundle and a partial one
	s.Publish()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	es, err := readAllEntries(r.bucket)
	if err != nil {
		t.Fatal(err)
	}
	r.entries, r.cpSize = es, int64(len(es))
	if r.cpSize < 300 {
		t.Fatalf("the bucket holds %d entries", r.cpSize)
	}
	r.stateFile = filepath.Join(root, "auditor.state")
	code, out, errOut := r.verify(t, r.bucket, "--state", r.stateFile)
	if code != 0 {
		t.Fatalf("audit of the untouched bucket: exit %d\n%s%s", code, out, errOut)
	}
	return r
}

func (r *auditRun) verify(t *testing.T, bucket string, extra ...string) (int, string, string) {
	t.Helper()
	args := []string{"audit", "verify", "--bucket", "file://" + bucket, "--log-key", r.logPub,
		"--witness-key", r.witPubs[0], "--witness-key", r.witPubs[1], "--quorum", "2"}
	return arx(t, append(args, extra...)...)
}

// readAllEntries reads the entries the bucket's checkpoint covers.
func readAllEntries(bucket string) ([][]byte, error) {
	cp, err := os.ReadFile(filepath.Join(bucket, "checkpoint"))
	if err != nil {
		return nil, err
	}
	var c record.Checkpoint
	if _, err := c.Unmarshal(cp); err != nil {
		return nil, err
	}
	var out [][]byte
	for n := int64(0); int64(len(out)) < int64(c.Size); n++ {
		w := int(min(int64(c.Size)-n*256, 256))
		b, err := os.ReadFile(filepath.Join(bucket, record.BundlePath(n, w)))
		if err != nil {
			return nil, err
		}
		es, err := record.ParseEntryBundle(b)
		if err != nil {
			return nil, err
		}
		for _, e := range es {
			out = append(out, bytes.Clone(e))
		}
	}
	return out, nil
}

func copyDir(t *testing.T, src string) string {
	t.Helper()
	dst := t.TempDir()
	err := filepath.Walk(src, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if fi.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	return dst
}

// editBundle rewrites bundle 0 of a bucket with f applied to its entries.
func editBundle(t *testing.T, bucket string, f func([][]byte) [][]byte) {
	t.Helper()
	p := filepath.Join(bucket, record.BundlePath(0, 256))
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	es, err := record.ParseEntryBundle(b)
	if err != nil {
		t.Fatal(err)
	}
	var out []byte
	for _, e := range f(es) {
		if out, err = record.AppendBundleEntry(out, e); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(p, out, 0o644); err != nil {
		t.Fatal(err)
	}
}

// forge writes entries as a complete log into a new bucket, checkpoint
// signed with the operator's log key (no witness would cosign it).
func (r *auditRun) forge(t *testing.T, entries [][]byte) (string, []byte, *memTree) {
	t.Helper()
	dir := t.TempDir()
	b, _ := file.New(dir)
	w := publish.NewLogWriter(context.Background(), b)
	mt := &memTree{}
	for _, e := range entries {
		if err := w.Add(e); err != nil {
			t.Fatal(err)
		}
		mt.add(e)
	}
	size, root, err := w.Finish()
	if err != nil {
		t.Fatal(err)
	}
	skey, _ := os.ReadFile(r.logKey)
	s, err := record.NewSigner(strings.TrimSpace(string(skey)))
	if err != nil {
		t.Fatal(err)
	}
	cp, err := record.SignCheckpoint(s, size, root)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "checkpoint"), cp, 0o644)
	return dir, cp, mt
}

// memTree keeps a tree's stored hashes, for consistency proofs.
type memTree struct {
	n      int64
	hashes []tlog.Hash
}

func (m *memTree) add(e []byte) {
	hs, _ := tlog.StoredHashes(m.n, e, m)
	m.hashes = append(m.hashes, hs...)
	m.n++
}

func (m *memTree) ReadHashes(idx []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(idx))
	for i, x := range idx {
		out[i] = m.hashes[x]
	}
	return out, nil
}

func edited(e []byte) []byte {
	return bytes.Replace(e, []byte(`"account.read"`), []byte(`"account.wipe"`), 1)
}

type auditJSON struct {
	OK       bool             `json:"ok"`
	Problems []record.Problem `json:"problems"`
}

func kinds(t *testing.T, out string) (bool, map[string]bool) {
	t.Helper()
	var rep auditJSON
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("audit --json: %v\n%s", err, out)
	}
	k := map[string]bool{}
	for _, p := range rep.Problems {
		k[p.Kind] = true
	}
	return rep.OK, k
}

// TestAuditTamperingMatrix tampers with the bucket of a real run in every
// way promise 5 names, and shows arx audit verify fails and names it.
func TestAuditTamperingMatrix(t *testing.T) {
	if testing.Short() {
		t.Skip("starts witness processes")
	}
	r := newAuditRun(t)
	firstRead := -1 // an entry of the agent's call.requested/credential.issued kind
	for i, e := range r.entries[:256] {
		if bytes.Contains(e, []byte(`"account.read"`)) && i > 3 {
			firstRead = i
			break
		}
	}
	if firstRead < 0 {
		t.Fatal("no entry to edit")
	}

	t.Run("untouched", func(t *testing.T) {
		code, out, errOut := r.verify(t, r.bucket, "--json")
		if ok, k := kinds(t, out); code != 0 || !ok || len(k) != 0 {
			t.Fatalf("exit %d: %s%s", code, out, errOut)
		}
		code, out, _ = r.verify(t, r.bucket)
		if code != 0 || !strings.Contains(out, "OK: ") || !strings.Contains(out, "2 cosigned, 2 required") {
			t.Fatalf("human report: %d\n%s", code, out)
		}
	})

	for _, tc := range []struct {
		name   string
		tamper func(t *testing.T, dir string)
		state  bool
		want   string
	}{
		{"edited entry", func(t *testing.T, dir string) {
			editBundle(t, dir, func(es [][]byte) [][]byte { es[firstRead] = edited(es[firstRead]); return es })
		}, false, "edited"},
		{"deleted entry", func(t *testing.T, dir string) {
			editBundle(t, dir, func(es [][]byte) [][]byte { return append(es[:7:7], es[8:]...) })
		}, false, "deleted"},
		{"inserted entry", func(t *testing.T, dir string) {
			editBundle(t, dir, func(es [][]byte) [][]byte {
				return append(es[:firstRead:firstRead], append([][]byte{edited(es[firstRead])}, es[firstRead:]...)...)
			})
		}, false, "inserted"},
		{"reordered entries", func(t *testing.T, dir string) {
			editBundle(t, dir, func(es [][]byte) [][]byte { es[3], es[5] = es[5], es[3]; return es })
		}, false, "reordered"},
		{"truncated log", func(t *testing.T, dir string) {
			w := int(r.cpSize - 256)
			os.Remove(filepath.Join(dir, record.BundlePath(1, w)))
			os.Remove(filepath.Join(dir, record.TilePath(0, 1, w)))
		}, false, "truncated"},
		{"checkpoint signed by another key", func(t *testing.T, dir string) {
			skey, _, _ := record.GenerateKey("arx.test/audit")
			s, _ := record.NewSigner(skey)
			cp, _ := record.SignCheckpoint(s, r.cpSize, tlog.Hash{})
			os.WriteFile(filepath.Join(dir, "checkpoint"), cp, 0o644)
		}, false, "replaced_checkpoint"},
		{"checkpoint without the witnesses", func(t *testing.T, dir string) {
			cp, _ := os.ReadFile(filepath.Join(dir, "checkpoint"))
			lines := strings.SplitAfter(string(cp), "\n")
			var kept []string
			for _, l := range lines {
				if !strings.Contains(l, "witness.test ") {
					kept = append(kept, l)
				}
			}
			os.WriteFile(filepath.Join(dir, "checkpoint"), []byte(strings.Join(kept, "")), 0o644)
		}, false, "replaced_checkpoint"},
		{"rolled back to an older cosigned checkpoint", func(t *testing.T, dir string) {
			os.WriteFile(filepath.Join(dir, "checkpoint"), r.oldCP, 0o644)
		}, true, "replaced_checkpoint"},
		{"tile rewritten", func(t *testing.T, dir string) {
			p := filepath.Join(dir, record.TilePath(0, 0, 256))
			b, _ := os.ReadFile(p)
			b[40] ^= 1
			os.WriteFile(p, b, 0o644)
		}, false, "tile_mismatch"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := copyDir(t, r.bucket)
			tc.tamper(t, dir)
			var args []string
			if tc.state {
				st := filepath.Join(t.TempDir(), "state")
				b, _ := os.ReadFile(r.stateFile)
				os.WriteFile(st, b, 0o644)
				args = append(args, "--state", st)
			}
			code, out, errOut := r.verify(t, dir, append(args, "--json")...)
			ok, k := kinds(t, out)
			if code != 1 || ok || !k[tc.want] {
				t.Fatalf("exit %d, want 1 naming %s:\n%s%s", code, tc.want, out, errOut)
			}
			code, out, _ = r.verify(t, dir, args...)
			if code != 1 || !strings.Contains(out, "FAILED") || !strings.Contains(out, tc.want) {
				t.Fatalf("human report: exit %d\n%s", code, out)
			}
		})
	}

	// Forks: the operator, holding the log key, rewrites history and signs
	// it. The witnesses refuse to cosign; an auditor with state names it.
	t.Run("fork", func(t *testing.T) {
		forkedEntries := append([][]byte(nil), r.entries...)
		forkedEntries[firstRead] = edited(forkedEntries[firstRead])
		for _, tc := range []struct {
			name    string
			entries [][]byte
			status  int
		}{
			{"same size", forkedEntries, http.StatusUnprocessableEntity},
			{"extended", append(forkedEntries, r.entries[len(r.entries)-1]), http.StatusUnprocessableEntity},
		} {
			t.Run(tc.name, func(t *testing.T) {
				dir, cp, mt := r.forge(t, tc.entries)
				for _, w := range r.wit {
					var proof tlog.TreeProof
					if mt.n > r.cpSize {
						proof, _ = tlog.ProveTree(mt.n, r.cpSize, mt)
					}
					body := (&witness.AddCheckpoint{OldSize: r.cpSize, Proof: proof, Checkpoint: cp}).Marshal()
					resp, err := http.Post(w.URL+"/add-checkpoint", "text/plain", bytes.NewReader(body))
					if err != nil {
						t.Fatal(err)
					}
					b, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					if resp.StatusCode != tc.status {
						t.Fatalf("witness %s cosigned a fork: %d %s", w.Name, resp.StatusCode, b)
					}
				}
				st := filepath.Join(t.TempDir(), "state")
				b, _ := os.ReadFile(r.stateFile)
				os.WriteFile(st, b, 0o644)
				code, out, _ := arx(t, "audit", "verify", "--bucket", "file://"+dir, "--log-key", r.logPub, "--quorum", "0", "--state", st, "--json")
				ok, k := kinds(t, out)
				if code != 1 || ok || !k["fork"] {
					t.Fatalf("exit %d, want 1 naming fork:\n%s", code, out)
				}
				after, _ := os.ReadFile(st)
				if !bytes.Equal(after, b) {
					t.Fatal("a failed audit changed the state file")
				}
				// Without state, the forged log is self-consistent; only
				// the missing cosignatures give it away.
				code, out, _ = r.verify(t, dir, "--json")
				if _, k := kinds(t, out); code != 1 || !k["replaced_checkpoint"] {
					t.Fatalf("forged checkpoint without cosignatures: exit %d\n%s", code, out)
				}
			})
		}
	})

	// Asking the witnesses catches a rollback without any state of one's own.
	t.Run("witnesses asked", func(t *testing.T) {
		ask := []string{"--witness-url", r.wit[0].URL, "--witness-url", r.wit[1].URL, "--json"}
		if code, out, errOut := r.verify(t, r.bucket, ask...); code != 0 {
			t.Fatalf("untouched bucket, witnesses asked: %d\n%s%s", code, out, errOut)
		}
		dir := copyDir(t, r.bucket)
		os.WriteFile(filepath.Join(dir, "checkpoint"), r.oldCP, 0o644)
		if code, out, _ := r.verify(t, dir); code != 0 {
			t.Fatalf("the older checkpoint alone verifies (as it should): %d\n%s", code, out)
		}
		code, out, errOut := r.verify(t, dir, ask...)
		if ok, k := kinds(t, out); code != 1 || ok || !k["replaced_checkpoint"] || !strings.Contains(out, "witness w1.witness.test") {
			t.Fatalf("rolled back, witnesses asked: exit %d\n%s%s", code, out, errOut)
		}

		// A witness that offers only the spec's add-checkpoint (no monitor
		// endpoint, as some do): asked that way, it tells the size it
		// cosigned, and the rollback is caught all the same.
		target, _ := url.Parse(r.wit[0].URL)
		proxy := httputil.NewSingleHostReverseProxy(target)
		onlyAdd := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			if req.Method == "POST" && req.URL.Path == "/add-checkpoint" {
				proxy.ServeHTTP(w, req)
				return
			}
			http.NotFound(w, req)
		}))
		defer onlyAdd.Close()
		if code, out, errOut := r.verify(t, r.bucket, "--witness-url", onlyAdd.URL); code != 0 || !strings.Contains(out, "consistent") {
			t.Fatalf("untouched bucket, add-checkpoint-only witness asked: %d\n%s%s", code, out, errOut)
		}
		code, out, errOut = r.verify(t, dir, "--witness-url", onlyAdd.URL, "--json")
		if ok, k := kinds(t, out); code != 1 || ok || !k["replaced_checkpoint"] || !strings.Contains(out, "rolled back") {
			t.Fatalf("rolled back, add-checkpoint-only witness asked: exit %d\n%s%s", code, out, errOut)
		}

		// A witness that cannot be asked is an error naming it, never
		// "nothing cosigned yet": a mistyped prefix, nothing listening.
		dead := httptest.NewServer(http.NotFoundHandler())
		dead.Close()
		for _, u := range []string{r.wit[0].URL + "/typo", dead.URL} {
			code, out, errOut := r.verify(t, dir, "--witness-url", u)
			if code != 2 || !strings.Contains(errOut, u) {
				t.Errorf("witness %s cannot be asked: exit %d, want an error naming it\n%s%s", u, code, out, errOut)
			}
		}
	})

	t.Run("prove", func(t *testing.T) {
		code, out, errOut := arx(t, "audit", "prove", "--bucket", "file://"+r.bucket, "--log-key", r.logPub,
			"--witness-key", r.witPubs[0], "--witness-key", r.witPubs[1], "--index", "261", "--json")
		var p struct {
			Index int64    `json:"index"`
			Proof []string `json:"proof"`
		}
		if code != 0 || json.Unmarshal([]byte(out), &p) != nil || p.Index != 261 || len(p.Proof) == 0 {
			t.Fatalf("prove: %d %s%s", code, out, errOut)
		}
		dir := copyDir(t, r.bucket)
		editBundle(t, dir, func(es [][]byte) [][]byte {
			es[9] = edited(es[9])
			es[9] = bytes.Replace(es[9], []byte("c"), []byte("C"), 1)
			return es
		})
		if code, _, errOut := arx(t, "audit", "prove", "--bucket", "file://"+dir, "--log-key", r.logPub, "--quorum", "0", "--index", "9"); code != 1 || !strings.Contains(errOut, "not the one the log committed to") {
			t.Fatalf("prove of an edited entry: %d %s", code, errOut)
		}
	})

	t.Run("state grows", func(t *testing.T) {
		st := filepath.Join(t.TempDir(), "state")
		old := copyDir(t, r.bucket)
		os.WriteFile(filepath.Join(old, "checkpoint"), r.oldCP, 0o644)
		if code, out, _ := r.verify(t, old, "--state", st); code != 0 {
			t.Fatalf("older checkpoint, first run: %d\n%s", code, out)
		}
		code, out, _ := r.verify(t, r.bucket, "--state", st)
		if code != 0 || !strings.Contains(out, "consistent: yes") {
			t.Fatalf("newer checkpoint with state: %d\n%s", code, out)
		}
		var s struct {
			Size int64 `json:"size"`
		}
		b, _ := os.ReadFile(st)
		if json.Unmarshal(b, &s); s.Size != r.cpSize {
			t.Fatalf("state not updated: %s", b)
		}
	})
}

func TestWitnessCLI(t *testing.T) {
	dir := t.TempDir()
	key, pub := filepath.Join(dir, "w.key"), filepath.Join(dir, "w.pub")
	code, out, errOut := arx(t, "witness", "keygen", "--name", "w.example", "--key", key, "--pub", pub)
	if code != 0 || !strings.HasPrefix(out, "w.example+") {
		t.Fatalf("keygen: %d %s %s", code, out, errOut)
	}
	if _, err := note.NewVerifier(strings.TrimSpace(out)); err == nil {
		// a cosignature/v1 key (type 0x04) is not a plain note key
		t.Log("witness key also parses as a plain note key")
	}
	if fi, err := os.Stat(key); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("private key file: %v %v", fi, err)
	}
	if code, _, errOut := arx(t, "witness", "keygen", "--name", "w.example", "--key", key, "--pub", pub); code != 1 || !strings.Contains(errOut, "exists") {
		t.Fatalf("keygen over an existing key: %d %s", code, errOut)
	}
	if code, _, errOut := arx(t, "witness", "serve", "--key", key, "--state", dir); code != 1 || !strings.Contains(errOut, "no logs") {
		t.Fatalf("serve without logs: %d %s", code, errOut)
	}
	for _, tc := range []struct{ in, origin string }{
		{"example.com/log+12345678+AQID", "example.com/log"},
		{"other.origin=example.com/log+12345678+AQID==", "other.origin"},
	} {
		o, k, err := parseLogArg(tc.in)
		if err != nil || o != tc.origin || !strings.HasPrefix(k, "example.com/log+") {
			t.Errorf("parseLogArg(%q) = %q, %q, %v", tc.in, o, k, err)
		}
	}
}
