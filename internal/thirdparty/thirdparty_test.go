package thirdparty

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/arxsec/arx/internal/publish"
	"github.com/arxsec/arx/internal/publish/file"
	"github.com/arxsec/arx/internal/publish/publishtest"
	"github.com/arxsec/arx/record"
)

// tool is the path of a third-party tool from its environment variable;
// without it the test skips, or fails when servers are required (CI).
func tool(t *testing.T, env string) string {
	t.Helper()
	p := os.Getenv(env)
	if p != "" {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	msg := fmt.Sprintf("%s is not set (or not a file): skipping the test against third-party transparency-log tools (hint: source .ci/setup-tlog-tools.sh)", env)
	if os.Getenv("ARX_TEST_REQUIRE_SERVERS") == "1" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// run runs a command with a small environment and returns its output.
func run(t *testing.T, env []string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}, env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", filepath.Base(name), strings.Join(args, " "), err, out)
	}
	return string(out)
}

// freeAddr is a loopback address nothing listens on now.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// waitListening waits until something accepts connections on addr.
func waitListening(t *testing.T, addr string, what string, logs func() string) {
	t.Helper()
	for i := 0; ; i++ {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return
		}
		if i == 200 {
			t.Fatalf("%s did not start on %s:\n%s", what, addr, logs())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// output is a process's output, read while the process writes it.
type output struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (o *output) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.b.Write(p)
}

func (o *output) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.b.String()
}

// start starts a process until the test ends; its output is kept.
func start(t *testing.T, env []string, name string, args ...string) *output {
	t.Helper()
	out := &output{}
	cmd := exec.Command(name, args...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}, env...)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	return out
}

// litewitness is a running litewitness for one log.
type litewitness struct {
	URL, VKey string
}

// startLitewitness starts litewitness as its README says: a dedicated
// ssh-agent holding an Ed25519 key, the log and its key added with
// witnessctl, litewitness on loopback. Its verifier key is read from its
// log.
func startLitewitness(t *testing.T, origin, logVKey string) *litewitness {
	t.Helper()
	lw, ctl := tool(t, "ARX_TEST_LITEWITNESS"), tool(t, "ARX_TEST_WITNESSCTL")
	for _, b := range []string{"ssh-agent", "ssh-add", "ssh-keygen"} {
		if _, err := exec.LookPath(b); err != nil {
			tool(t, "ARX_TEST_NO_SUCH_TOOL_"+strings.ToUpper(strings.ReplaceAll(b, "-", "_"))) // skips, or fails in CI
		}
	}
	dir, err := os.MkdirTemp("", "lw") // a short path: a socket's path is at most 107 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	key, sock, db := filepath.Join(dir, "key"), filepath.Join(dir, "agent.sock"), filepath.Join(dir, "lw.db")
	run(t, nil, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "litewitness", "-f", key)
	fp := strings.Fields(run(t, nil, "ssh-keygen", "-l", "-E", "sha256", "-f", key+".pub"))[1]
	agentOut := start(t, nil, "ssh-agent", "-D", "-a", sock)
	for i := 0; ; i++ {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		if i == 200 {
			t.Fatalf("ssh-agent did not start:\n%s", agentOut.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	run(t, []string{"SSH_AUTH_SOCK=" + sock}, "ssh-add", "-q", key)
	run(t, nil, ctl, "add-log", "-db", db, "-origin", origin)
	run(t, nil, ctl, "add-key", "-db", db, "-origin", origin, "-key", logVKey)
	addr := freeAddr(t)
	logs := start(t, nil, lw, "-db", db, "-name", "litewitness.arx.test", "-key", fp, "-ssh-agent", sock, "-listen", addr)
	waitListening(t, addr, "litewitness", logs.String)
	m := regexp.MustCompile(`vkey=(\S+)`).FindStringSubmatch(logs.String())
	if m == nil {
		t.Fatalf("litewitness did not log its verifier key:\n%s", logs.String())
	}
	return &litewitness{URL: "http://" + addr, VKey: strings.Trim(m[1], `"`)}
}

// serveDir serves a directory over HTTP on loopback, as a bucket behind a
// web server or a CDN would be.
func serveDir(t *testing.T, dir string) string {
	t.Helper()
	srv := httptest.NewServer(http.FileServer(http.Dir(dir)))
	t.Cleanup(srv.Close)
	return srv.URL + "/"
}

// fsck runs Tessera's fsck over a tlog-tiles log served at url.
func fsck(t *testing.T, url, pubFile string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, tool(t, "ARX_TEST_TESSERA_FSCK"), "--storage_url", url, "--public_key", pubFile, "--ui=false", "--N", "4")
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}
	out, err := cmd.CombinedOutput()
	return string(out), err
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

// arx runs the arx binary and returns its exit code and output.
func arx(t *testing.T, args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(publishtest.Arx(t), args...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode(), string(out)
	}
	if err != nil {
		t.Fatal(err)
	}
	return 0, string(out)
}

// TestLitewitnessAndTesseraFsck: litewitness witnesses a running ARX; every
// checkpoint ARX publishes carries its cosignature; Tessera's fsck accepts
// the bucket, and an older checkpoint ARX published; `arx audit verify`
// trusts litewitness's key and, asking litewitness, catches the bucket
// rolled back to that older, validly cosigned checkpoint.
func TestLitewitnessAndTesseraFsck(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	const origin = "arx.test/thirdparty"
	root := t.TempDir()
	data := filepath.Join(root, "data")
	vkey := publishtest.LogKey(t, data, origin)
	lw := startLitewitness(t, origin, vkey)
	bucketDir := filepath.Join(root, "bucket")
	fb, err := file.New(bucketDir)
	if err != nil {
		t.Fatal(err)
	}
	s := publishtest.StartServer(t, data, &publish.Config{Bucket: fb, PublishInterval: time.Hour, WitnessTimeout: 10 * time.Second,
		Witnesses: []publish.Witness{{URL: lw.URL, VKey: lw.VKey}}})

	var published [][]byte
	for range 3 { // the first from old size 0, the others with consistency proofs
		s.Calls(150)
		s.Publish()
		cp, err := fb.Get(t.Context(), record.CheckpointPath)
		if err != nil {
			t.Fatal(err)
		}
		cs, err := record.OpenCosigned(cp, vkey, []string{lw.VKey})
		if err != nil || len(cs.Cosigs) != 1 || len(cs.Invalid) != 0 {
			t.Fatalf("checkpoint without litewitness's cosignature: %+v %v\n%s", cs, err, cp)
		}
		published = append(published, cp)
	}
	if st := s.Publisher.Status(); st.Size != st.CheckpointSize {
		t.Fatalf("publisher status %+v", st)
	}
	logPub := filepath.Join(data, "log.pub")

	// Tessera's fsck over the bucket, served over HTTP, and over the
	// bucket with each older checkpoint.
	out, err := fsck(t, serveDir(t, bucketDir), logPub)
	t.Logf("fsck: %s", out)
	if err != nil {
		t.Fatalf("Tessera's fsck refuses ARX's bucket: %v\n%s", err, out)
	}
	for i, cp := range published[:len(published)-1] {
		old := copyDir(t, bucketDir)
		os.WriteFile(filepath.Join(old, "checkpoint"), cp, 0o644)
		if out, err := fsck(t, serveDir(t, old), logPub); err != nil {
			t.Errorf("Tessera's fsck refuses checkpoint %d, published earlier: %v\n%s", i, err, out)
		}
	}

	// arx audit verify with litewitness's key, asking litewitness.
	verify := []string{"audit", "verify", "--log-key", logPub, "--witness-key", lw.VKey, "--witness-url", lw.URL}
	if code, out := arx(t, append(verify, "--bucket", "file://"+bucketDir)...); code != 0 || !strings.Contains(out, "consistent") {
		t.Fatalf("arx audit verify, litewitness asked: exit %d\n%s", code, out)
	}
	rolledBack := copyDir(t, bucketDir)
	os.WriteFile(filepath.Join(rolledBack, "checkpoint"), published[0], 0o644)
	if code, out := arx(t, "audit", "verify", "--log-key", logPub, "--witness-key", lw.VKey, "--bucket", "file://"+rolledBack); code != 0 {
		t.Fatalf("the older checkpoint alone verifies (as it should): exit %d\n%s", code, out)
	}
	code, out := arx(t, append(verify, "--bucket", "file://"+rolledBack, "--json")...)
	if code != 1 || !strings.Contains(out, `"replaced_checkpoint"`) || !strings.Contains(out, "rolled back") {
		t.Fatalf("a bucket rolled back to an older cosigned checkpoint, litewitness asked: exit %d, want 1 naming replaced_checkpoint\n%s", code, out)
	}
}

// TestTesseraLogCosignedByArxWitness: a log written by Tessera (its
// posix-oneshot example, with a witness policy naming `arx witness serve`)
// is cosigned by ARX's witness, first from size 0 and then with a
// consistency proof, and the witness refuses that log rolled back.
func TestTesseraLogCosignedByArxWitness(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	oneshot := tool(t, "ARX_TEST_TESSERA_ONESHOT")
	const origin = "tessera.arx.test/log"
	skey, vkey, err := record.GenerateKey(origin)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	keyFile, policy, logDir := filepath.Join(dir, "log.key"), filepath.Join(dir, "policy"), filepath.Join(dir, "log")
	os.WriteFile(keyFile, []byte(skey), 0o600)
	w := publishtest.StartWitness(t, "arx-witness.arx.test", vkey)
	os.WriteFile(policy, []byte(fmt.Sprintf("witness arx %s %s\nquorum arx\n", w.VKey, w.URL)), 0o644)

	var first []byte
	for round, n := range []int{5, 300} {
		entries := filepath.Join(dir, fmt.Sprintf("entries-%d", round))
		os.MkdirAll(entries, 0o755)
		for i := range n {
			os.WriteFile(filepath.Join(entries, fmt.Sprintf("%04d", i)), fmt.Appendf(nil, "round %d entry %d", round, i), 0o644)
		}
		run(t, nil, oneshot, "--storage_dir", logDir, "--entries", filepath.Join(entries, "*"), "--private_key", keyFile, "--witness_policy_file", policy)
		cp, err := os.ReadFile(filepath.Join(logDir, "checkpoint"))
		if err != nil {
			t.Fatal(err)
		}
		cs, err := record.OpenCosigned(cp, vkey, []string{w.VKey})
		if err != nil || len(cs.Cosigs) != 1 {
			t.Fatalf("round %d: Tessera's checkpoint is not cosigned by arx witness serve: %+v %v\n%s", round, cs, err, cp)
		}
		if cs.Checkpoint.Size != uint64(5+300*round) {
			t.Fatalf("round %d: checkpoint of %d entries", round, cs.Checkpoint.Size)
		}
		if first == nil {
			first = cp
		}
	}
	// The older checkpoint, offered as the latest: refused with the size
	// the witness holds (409), never cosigned.
	body := fmt.Sprintf("old 5\n\n%s", first)
	resp, err := http.Post(w.URL+"/add-checkpoint", "text/plain", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(bufio.NewReader(resp.Body))
	resp.Body.Close()
	if resp.StatusCode != http.StatusConflict || string(b) != "305\n" {
		t.Fatalf("rolled-back Tessera checkpoint: %d %q, want 409 305", resp.StatusCode, b)
	}
}
