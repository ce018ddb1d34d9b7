package publish_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/arxsec/arx/audit"
	"github.com/arxsec/arx/internal/publish"
	"github.com/arxsec/arx/internal/publish/file"
	"github.com/arxsec/arx/internal/publish/publishtest"
	"github.com/arxsec/arx/internal/witness"
	"github.com/arxsec/arx/record"
)

// Faults a witness, or the network in front of it, can show. The proxy
// forwards every request to the real witness first (so the witness
// advances, as when an answer is lost or mangled on its way back), except
// in fault "other key", where an impostor with the witness's name answers.
const (
	faultPass         = "pass"
	faultRandom       = "200 random bytes"
	faultTruncated    = "200 truncated cosignature line"
	faultFlipped      = "200 signature bytes flipped"
	faultTimestamp    = "200 timestamp altered"
	faultValidFlipped = "200 genuine line then a flipped copy"
	faultFlippedValid = "200 flipped line then the genuine one"
	faultOtherKey     = "200 same name, another key"
	faultReplay       = "200 replay of an older cosignature"
	faultSkewed       = "200 genuine cosignature, clock an hour behind"
	faultHuge         = "200 body of 50 MB"
	faultSlow         = "answer after the timeout"
	fault500          = "500 garbage"
	fault404          = "404 garbage"
	fault409          = "409 garbage"
	fault409Ahead     = "409 a size far ahead"
	faultReset        = "connection reset mid-answer"
)

// faultWitnessTimeout is the publisher's WitnessTimeout here: short, so a
// slow answer costs the test a second.
const faultWitnessTimeout = time.Second

const hugeBody = 50 << 20

// faultProxy stands between the publisher and a real witness (loopback,
// standard library only) and answers as its mode says.
type faultProxy struct {
	srv      *httptest.Server
	target   string // the witness
	impostor string // a witness of the same name with another key
	skey     string // the witness's private key, for fault "skewed"

	mu   sync.Mutex
	mode string
	good []byte // the last genuine 200 answer passed through

	faults   atomic.Int64 // faulty answers given
	holding  atomic.Int64 // slow answers being held back now
	streamed atomic.Int64 // bytes of oversized bodies written
}

func startFaultProxy(t *testing.T, target, impostor string) *faultProxy {
	t.Helper()
	p := &faultProxy{target: target, impostor: impostor, mode: faultPass}
	p.srv = httptest.NewServer(p)
	t.Cleanup(p.srv.Close)
	return p
}

func (p *faultProxy) set(mode string) {
	p.mu.Lock()
	p.mode = mode
	p.mu.Unlock()
}

func (p *faultProxy) forward(ctx context.Context, base string, body []byte) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, "POST", base+"/add-checkpoint", bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, b, err
}

func (p *faultProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	mode, good := p.mode, p.good
	p.mu.Unlock()
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		http.Error(w, "proxy: cannot read the request", http.StatusBadRequest)
		return
	}
	target := p.target
	if mode == faultOtherKey {
		target = p.impostor
	}
	status, answer, err := p.forward(r.Context(), target, body)
	if err != nil {
		http.Error(w, "proxy: witness unreachable", http.StatusBadGateway)
		return
	}
	if mode == faultPass {
		if status == http.StatusOK {
			p.mu.Lock()
			p.good = answer
			p.mu.Unlock()
		}
		if status == http.StatusConflict {
			w.Header().Set("Content-Type", witness.ContentTypeSize)
		}
		w.WriteHeader(status)
		w.Write(answer)
		return
	}
	switch mode {
	case faultTruncated, faultFlipped, faultTimestamp, faultValidFlipped, faultFlippedValid, faultSkewed:
		if status != http.StatusOK {
			// The protocol's own 409 (the publisher's idea of the
			// witness's size is stale) goes through; its retry gets the
			// fault.
			w.Header().Set("Content-Type", witness.ContentTypeSize)
			w.WriteHeader(status)
			w.Write(answer)
			return
		}
	}
	p.faults.Add(1)
	switch mode {
	case faultRandom:
		w.WriteHeader(http.StatusOK)
		w.Write(randomBytes(4096))
	case faultTruncated:
		w.WriteHeader(http.StatusOK)
		w.Write(answer[:len(answer)/2])
	case faultFlipped:
		w.WriteHeader(http.StatusOK)
		w.Write(alterSig(answer, func(sig []byte) { sig[len(sig)-1] ^= 0x01 }))
	case faultTimestamp:
		w.WriteHeader(http.StatusOK)
		w.Write(alterSig(answer, func(sig []byte) {
			binary.BigEndian.PutUint64(sig[4:12], binary.BigEndian.Uint64(sig[4:12])+1)
		}))
	case faultValidFlipped, faultFlippedValid:
		bad := alterSig(answer, func(sig []byte) { sig[len(sig)-1] ^= 0x01 })
		w.WriteHeader(http.StatusOK)
		if mode == faultValidFlipped {
			w.Write(append(append([]byte(nil), answer...), bad...))
		} else {
			w.Write(append(bad, answer...))
		}
	case faultOtherKey:
		// The impostor's answer as it is: its 409s and its cosignatures.
		if status == http.StatusConflict {
			w.Header().Set("Content-Type", witness.ContentTypeSize)
		}
		w.WriteHeader(status)
		w.Write(answer)
	case faultReplay:
		w.WriteHeader(http.StatusOK)
		w.Write(good)
	case faultSkewed:
		req, err := witness.ParseAddCheckpoint(body)
		if err != nil {
			panic(err)
		}
		w.WriteHeader(http.StatusOK)
		w.Write(cosignAt(p.skey, req.Checkpoint, time.Now().Add(-time.Hour)))
	case faultHuge:
		w.Header().Set("Content-Length", strconv.Itoa(hugeBody))
		w.WriteHeader(http.StatusOK)
		chunk := bytes.Repeat([]byte("garbage\n"), 4096)
		for n := 0; n < hugeBody; n += len(chunk) {
			if _, err := w.Write(chunk); err != nil {
				break
			}
			p.streamed.Add(int64(len(chunk)))
		}
	case faultSlow:
		p.holding.Add(1)
		select {
		case <-r.Context().Done():
		case <-time.After(5 * faultWitnessTimeout):
		}
		p.holding.Add(-1)
		w.WriteHeader(status) // the genuine answer, too late
		w.Write(answer)
	case fault500, fault404, fault409:
		code := map[string]int{fault500: 500, fault404: 404, fault409: 409}[mode]
		if code == 409 {
			w.Header().Set("Content-Type", witness.ContentTypeSize)
		}
		w.WriteHeader(code)
		w.Write(randomBytes(4096))
	case fault409Ahead:
		w.Header().Set("Content-Type", witness.ContentTypeSize)
		w.WriteHeader(http.StatusConflict)
		fmt.Fprintf(w, "%d\n", int64(1)<<40)
	case faultReset:
		conn, bw, err := w.(http.Hijacker).Hijack()
		if err != nil {
			return
		}
		fmt.Fprintf(bw, "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\n\r\n", len(answer)+64)
		bw.Write(answer[:len(answer)/2])
		bw.Flush()
		if tc, ok := conn.(*net.TCPConn); ok {
			tc.SetLinger(0) // close with a RST
		}
		conn.Close()
	default:
		panic("unknown fault " + mode)
	}
}

// cosignAt makes the C2SP cosignature/v1 line of the witness key skey
// ("PRIVATE+KEY+name+hash+base64(0x04 || seed)") on the signed checkpoint,
// with the timestamp at: what a witness with a wrong clock answers.
func cosignAt(skey string, signed []byte, at time.Time) []byte {
	parts := strings.SplitN(skey, "+", 5)
	key, err := base64.StdEncoding.DecodeString(parts[4])
	if len(parts) != 5 || err != nil || len(key) != 1+ed25519.SeedSize {
		panic("not a witness key")
	}
	hash, err := hex.DecodeString(parts[3])
	if err != nil {
		panic(err)
	}
	text, _, _ := bytes.Cut(signed, []byte("\n\n"))
	msg := fmt.Sprintf("cosignature/v1\ntime %d\n%s\n", at.Unix(), text)
	sig := binary.BigEndian.AppendUint64(hash, uint64(at.Unix()))
	sig = append(sig, ed25519.Sign(ed25519.NewKeyFromSeed(key[1:]), []byte(msg))...)
	return []byte("— " + parts[2] + " " + base64.StdEncoding.EncodeToString(sig) + "\n")
}

func readKey(t *testing.T, file string) string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// alterSig changes the signature bytes (key hash, timestamp, Ed25519
// signature) of each signature line of a witness's answer.
func alterSig(answer []byte, f func(sig []byte)) []byte {
	var out []byte
	for _, l := range strings.SplitAfter(string(answer), "\n") {
		i := strings.LastIndexByte(l, ' ')
		if !strings.HasPrefix(l, "— ") || i < 0 {
			out = append(out, l...)
			continue
		}
		sig, err := base64.StdEncoding.DecodeString(strings.TrimSuffix(l[i+1:], "\n"))
		if err != nil || len(sig) < 12+64 {
			out = append(out, l...)
			continue
		}
		f(sig)
		out = append(out, l[:i+1]+base64.StdEncoding.EncodeToString(sig)+"\n"...)
	}
	return out
}

// watchedBucket checks every checkpoint put into the bucket the moment it
// is put, so "never" covers the moments between the test's looks.
type watchedBucket struct {
	*file.Bucket
	logKey string
	keys   []string
	quorum int

	puts atomic.Int64
	bad  atomic.Int64
	mu   sync.Mutex
	why  []string
}

func (b *watchedBucket) Put(ctx context.Context, p string, data []byte, o publish.PutOptions) error {
	if p == record.CheckpointPath {
		b.puts.Add(1)
		if err := checkCosigned(data, b.logKey, b.quorum, b.keys); err != nil {
			b.bad.Add(1)
			b.mu.Lock()
			b.why = append(b.why, err.Error())
			b.mu.Unlock()
		}
	}
	return b.Bucket.Put(ctx, p, data, o)
}

// checkCosigned holds a checkpoint to more than an auditor's quorum: every
// signature line on it is the log's or a trusted witness's that verifies on
// its own, and at least quorum witnesses cosigned.
func checkCosigned(cp []byte, logKey string, quorum int, keys []string) error {
	cs, err := record.OpenCosigned(cp, logKey, keys)
	if err != nil {
		return err
	}
	if len(cs.Invalid) > 0 || len(cs.Cosigs) < quorum {
		return fmt.Errorf("%d cosignatures (quorum %d), invalid ones by %v", len(cs.Cosigs), quorum, cs.Invalid)
	}
	i := bytes.LastIndex(cp, []byte("\n\n"))
	text, sigs := cp[:i+2], strings.SplitAfter(string(cp[i+2:]), "\n")
	origin := cs.Checkpoint.Origin
	var logSig []string
	for _, l := range sigs {
		if strings.HasPrefix(l, "— "+origin+" ") {
			logSig = append(logSig, l)
		}
	}
	signed := record.AppendSignatures(text, logSig...)
	for _, l := range sigs {
		if l == "" || strings.HasPrefix(l, "— "+origin+" ") {
			continue
		}
		one, err := record.OpenCosigned(record.AppendSignatures(signed, l), logKey, keys)
		if err != nil || len(one.Cosigs) != 1 || len(one.Invalid) != 0 {
			return fmt.Errorf("signature line %q is not a trusted witness's valid cosignature", strings.TrimSpace(l))
		}
	}
	return nil
}

// faultRun drives one server through faults of one witness.
type faultRun struct {
	s      *publishtest.Server
	b      *watchedBucket
	proxy  *faultProxy
	name   string // the faulty witness's name
	secret string // in the faulty witness's URL: must show nowhere

	acked   int64 // entries the log had after the last acknowledged call
	maxCall time.Duration
}

// calls makes n governed calls; each must succeed whatever the witness does.
func (r *faultRun) calls(t *testing.T, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		start := time.Now()
		if err := r.s.Call(); err != nil {
			t.Fatalf("a governed call failed while the witness misbehaves: %v", err)
		}
		r.maxCall = max(r.maxCall, time.Since(start))
	}
	size, err := r.s.Runtime.Store().TreeSize(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	r.acked = max(r.acked, size)
}

func waitFor(t *testing.T, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (r *faultRun) checkpoint(t *testing.T) ([]byte, int64) {
	t.Helper()
	cp, err := r.b.Get(t.Context(), record.CheckpointPath)
	if err != nil {
		t.Fatal(err)
	}
	c, _, err := record.OpenCheckpoint(cp, r.b.logKey)
	if err != nil {
		t.Fatal(err)
	}
	return cp, int64(c.Size)
}

// audit verifies the bucket as an auditor would, with the witnesses' keys
// and the quorum, and returns the report.
func (r *faultRun) audit(t *testing.T, want int64) *audit.Report {
	t.Helper()
	rep, err := audit.Verify(t.Context(), r.b.Bucket, audit.Options{LogKey: r.b.logKey, WitnessKeys: r.b.keys, Quorum: r.b.quorum})
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK || rep.Size != want || rep.Entries != want {
		t.Fatalf("audit: ok=%v size=%d entries=%d, want %d: %v", rep.OK, rep.Size, rep.Entries, want, rep.Problems)
	}
	return rep
}

// recover puts the witness right and waits until the publisher, on its own
// (its Run loop, no PublishNow), publishes a cosigned checkpoint of every
// acknowledged entry; it returns the cosignatures on it.
func (r *faultRun) recover(t *testing.T) *audit.Report {
	t.Helper()
	r.proxy.set(faultPass)
	r.calls(t, 1)
	var last string
	ok := func() bool {
		last = r.s.Publisher.LastError()
		return r.s.Publisher.Status().CheckpointSize >= r.acked && last == ""
	}
	for deadline := time.Now().Add(15 * time.Second); !ok(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no cosigned checkpoint of all %d acknowledged entries after the fault cleared: status %+v, last error %q",
				r.acked, r.s.Publisher.Status(), last)
		}
	}
	_, size := r.checkpoint(t)
	return r.audit(t, size)
}

// witnessFailures reads the publisher's failure count of a witness from
// /metrics, and checks that the secret is not in what /metrics shows.
func (r *faultRun) witnessFailures(t *testing.T) float64 {
	t.Helper()
	resp, err := http.Get(r.s.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if strings.Contains(string(body), r.secret) {
		t.Fatal("/metrics shows the witness URL's password")
	}
	prefix := `arx_publish_witness_failures_total{witness="` + r.name + `"} `
	sc := bufio.NewScanner(bytes.NewReader(body))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), prefix); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	return 0
}

// checkError checks what the publisher says is wrong: it names the
// witness, is short and printable, and has no secret in it.
func (r *faultRun) checkError(t *testing.T, msg string) {
	t.Helper()
	switch {
	case !strings.Contains(msg, r.name):
		t.Errorf("the publisher's error does not name the witness %s: %q", r.name, msg)
	case strings.Contains(msg, r.secret):
		t.Errorf("the publisher's error shows the witness URL's password: %q", msg)
	case len(msg) > 1024:
		t.Errorf("the publisher's error has %d bytes: %.200q...", len(msg), msg)
	case !utf8.ValidString(msg) || strings.IndexFunc(msg, unicode.IsControl) >= 0:
		t.Errorf("the publisher's error has unprintable bytes: %q", msg)
	}
}

// witnessURL is the proxy's URL with a password in it, as an operator may
// configure a witness behind basic authentication.
func witnessURL(p *faultProxy, secret string) string {
	return strings.Replace(p.srv.URL, "http://", "http://arx:"+secret+"@", 1)
}

// TestWitnessGarbage: a witness that answers garbage, or slowly, or not at
// all, is not on the path of a governed call, never gets a bad or
// missing-quorum cosignature into the bucket, is reported by name, and
// once it answers properly again the publisher recovers by itself.
func TestWitnessGarbage(t *testing.T) {
	if testing.Short() {
		t.Skip("starts witness processes")
	}
	var modes, refused, bad int64
	recovered := true
	defer func() {
		t.Logf("CAMPAIGN witness_garbage modes=%d refused=%d published_bad=%d recovered=%v", modes, refused, bad, recovered && !t.Failed())
	}()

	// One witness, quorum 1: every fault must keep the bucket's checkpoint
	// as it was, and the entries must still stream.
	t.Run("quorum 1 of 1", func(t *testing.T) {
		root := t.TempDir()
		data := filepath.Join(root, "data")
		vkey := publishtest.LogKey(t, data, "arx.test/witnessfault")
		w := publishtest.StartWitness(t, "w.fault.test", vkey)
		imp := publishtest.StartWitness(t, "w.fault.test", vkey) // same name, another key
		proxy := startFaultProxy(t, w.URL, imp.URL)
		proxy.skey = readKey(t, w.KeyFile)
		fb, err := file.New(filepath.Join(root, "bucket"))
		if err != nil {
			t.Fatal(err)
		}
		b := &watchedBucket{Bucket: fb, logKey: vkey, keys: []string{w.VKey}, quorum: 1}
		defer func() { bad += b.bad.Load() }()
		secret := "s3cr3t-" + base64.RawURLEncoding.EncodeToString(randomBytes(9))
		s := publishtest.StartServer(t, data, &publish.Config{Bucket: b,
			PublishInterval: 20 * time.Millisecond, WitnessInterval: 50 * time.Millisecond, WitnessTimeout: faultWitnessTimeout,
			Witnesses: []publish.Witness{{URL: witnessURL(proxy, secret), VKey: w.VKey}}})
		r := &faultRun{s: s, b: b, proxy: proxy, name: w.Name, secret: secret}
		r.calls(t, 5)
		r.recover(t)

		for _, mode := range []string{faultRandom, faultTruncated, faultFlipped, faultTimestamp, faultValidFlipped,
			faultFlippedValid, faultOtherKey, faultReplay, faultSkewed, faultHuge, faultSlow, fault500, fault404, fault409,
			fault409Ahead, faultReset} {
			ok := t.Run(mode, func(t *testing.T) {
				modes++
				before, failures := proxy.faults.Load(), r.witnessFailures(t)
				proxy.set(mode)
				r.calls(t, 3)
				if mode == faultSlow {
					// Calls go on while the witness holds an answer back.
					waitFor(t, "the proxy to hold an answer", func() bool { return proxy.holding.Load() > 0 })
					r.calls(t, 3)
					if r.maxCall >= faultWitnessTimeout {
						t.Errorf("a governed call took %v while the witness was slow: is the witness on the call path?", r.maxCall)
					}
				}
				waitFor(t, "a faulty answer and the publisher's error", func() bool {
					return proxy.faults.Load() > before && r.s.Publisher.LastError() != ""
				})
				// A round that began before the fault may have published;
				// from here on nothing may replace the checkpoint.
				cp, size := r.checkpoint(t)
				waitFor(t, "a second faulty answer", func() bool { return proxy.faults.Load() > before+1 })
				msg := r.s.Publisher.LastError()
				r.checkError(t, msg)
				t.Logf("publisher's error: %s", msg)
				// The entries stream on; only the checkpoint waits.
				waitFor(t, "the acknowledged entries in the bucket", func() bool { return r.s.Publisher.Status().Size >= r.acked })
				if now, _ := r.checkpoint(t); !bytes.Equal(now, cp) {
					t.Errorf("the bucket's checkpoint was replaced while the only witness answered %s:\n%s", mode, now)
				}
				if st := r.s.Publisher.Status(); st.CheckpointSize != size || size >= r.acked {
					t.Errorf("status %+v: the checkpoint of size %d moved, or covers all %d entries without a witness", st, size, r.acked)
				}
				r.audit(t, size)
				if f := r.witnessFailures(t); f <= failures {
					t.Errorf("arx_publish_witness_failures_total{witness=%q} stayed at %v", r.name, f)
				}
				refused += proxy.faults.Load() - before
				if mode == faultHuge {
					if n := proxy.streamed.Load(); n >= hugeBody {
						t.Errorf("the publisher read the whole %d-byte answer", n)
					}
				}
				rep := r.recover(t)
				if len(rep.Cosignatures) != 1 {
					t.Errorf("after recovery: cosignatures %v", rep.Cosignatures)
				}
			})
			if !ok {
				recovered = false
			}
		}
		if n := b.bad.Load(); n > 0 {
			t.Errorf("%d of %d checkpoints put in the bucket fail verification: %v", n, b.puts.Load(), b.why)
		}
	})

	// Three witnesses, quorum 2, one answering garbage: the checkpoint is
	// published with the two good cosignatures only.
	t.Run("quorum 2 of 3", func(t *testing.T) {
		root := t.TempDir()
		data := filepath.Join(root, "data")
		vkey := publishtest.LogKey(t, data, "arx.test/witnessfault2")
		w1 := publishtest.StartWitness(t, "w1.fault.test", vkey)
		w2 := publishtest.StartWitness(t, "w2.fault.test", vkey)
		w3 := publishtest.StartWitness(t, "w3.fault.test", vkey)
		imp := publishtest.StartWitness(t, "w3.fault.test", vkey)
		proxy := startFaultProxy(t, w3.URL, imp.URL)
		proxy.skey = readKey(t, w3.KeyFile)
		fb, err := file.New(filepath.Join(root, "bucket"))
		if err != nil {
			t.Fatal(err)
		}
		b := &watchedBucket{Bucket: fb, logKey: vkey, keys: []string{w1.VKey, w2.VKey, w3.VKey}, quorum: 2}
		defer func() { bad += b.bad.Load() }()
		secret := "s3cr3t-" + base64.RawURLEncoding.EncodeToString(randomBytes(9))
		s := publishtest.StartServer(t, data, &publish.Config{Bucket: b, Quorum: 2,
			PublishInterval: 20 * time.Millisecond, WitnessInterval: 50 * time.Millisecond, WitnessTimeout: faultWitnessTimeout,
			Witnesses: []publish.Witness{{URL: w1.URL, VKey: w1.VKey}, {URL: w2.URL, VKey: w2.VKey},
				{URL: witnessURL(proxy, secret), VKey: w3.VKey}}})
		r := &faultRun{s: s, b: b, proxy: proxy, name: w3.Name, secret: secret}
		r.calls(t, 5)
		if rep := r.recover(t); len(rep.Cosignatures) != 3 {
			t.Fatalf("cosignatures %v, want 3", rep.Cosignatures)
		}

		for _, mode := range []string{faultRandom, faultFlipped, faultValidFlipped, faultOtherKey, faultReplay, faultSkewed,
			faultSlow, fault500, fault409Ahead, faultReset} {
			ok := t.Run(mode, func(t *testing.T) {
				modes++
				before, failures := proxy.faults.Load(), r.witnessFailures(t)
				proxy.set(mode)
				r.calls(t, 3)
				waitFor(t, "a checkpoint of every acknowledged entry cosigned by the two good witnesses", func() bool {
					return proxy.faults.Load() > before && r.s.Publisher.Status().CheckpointSize >= r.acked
				})
				cp, size := r.checkpoint(t)
				rep := r.audit(t, size)
				var names []string
				for _, c := range rep.Cosignatures {
					names = append(names, c.Witness)
				}
				if strings.Join(names, " ") != w1.Name+" "+w2.Name {
					t.Errorf("cosignatures by %v, want %s and %s only", names, w1.Name, w2.Name)
				}
				if strings.Contains(string(cp), "— "+w3.Name+" ") {
					t.Errorf("the checkpoint carries a line of the faulty witness:\n%s", cp)
				}
				if f := r.witnessFailures(t); f <= failures {
					t.Errorf("arx_publish_witness_failures_total{witness=%q} stayed at %v", r.name, f)
				}
				refused += proxy.faults.Load() - before
				if rep := r.recover(t); len(rep.Cosignatures) != 3 {
					t.Errorf("after recovery: cosignatures %v, want 3", rep.Cosignatures)
				}
			})
			if !ok {
				recovered = false
			}
		}
		if n := b.bad.Load(); n > 0 {
			t.Errorf("%d of %d checkpoints put in the bucket fail verification: %v", n, b.puts.Load(), b.why)
		}
	})
}
