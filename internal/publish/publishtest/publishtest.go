// Package publishtest runs what publishing needs in tests: an arx binary
// for witnesses in processes of their own, a server that publishes to a
// bucket, and governed calls to fill its log.
package publishtest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/arxsec/arx/internal/arxtest"
	"github.com/arxsec/arx/internal/publish"
	"github.com/arxsec/arx/internal/server"
	"github.com/arxsec/arx/record"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// Arx builds cmd/arx once per test binary and returns its path.
func Arx(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		// One binary per test process, in a directory named by its pid;
		// those of processes that are gone are removed (no test owns the
		// binary, so no test's cleanup can).
		old, _ := filepath.Glob(filepath.Join(os.TempDir(), "arx-publishtest-*"))
		for _, d := range old {
			var pid int
			if _, err := fmt.Sscanf(filepath.Base(d), "arx-publishtest-%d", &pid); err == nil && pid > 0 &&
				syscall.Kill(pid, 0) == syscall.ESRCH {
				os.RemoveAll(d)
			}
		}
		dir := filepath.Join(os.TempDir(), fmt.Sprintf("arx-publishtest-%d", os.Getpid()))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "arx")
		goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
		if _, err := os.Stat(goBin); err != nil {
			goBin = "go"
		}
		cmd := exec.Command(goBin, "build", "-o", binPath, "github.com/arxsec/arx/cmd/arx")
		out, err := cmd.CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build ./cmd/arx: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// LogKey makes the log key of a data directory before the server's first
// start (so witnesses can be configured with it), and returns the public key.
func LogKey(t testing.TB, dataDir, origin string) string {
	t.Helper()
	skey, vkey, err := record.GenerateKey(origin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		t.Fatal(err)
	}
	// A data directory holds keys: the server refuses one others may read
	// (t.TempDir makes its directories 0755).
	if err := os.Chmod(dataDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dataDir, server.LogKeyFile), []byte(skey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dataDir, server.LogPubFile), []byte(vkey+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return vkey
}

// Witness is an `arx witness serve` process.
type Witness struct {
	URL, VKey, Name string
	KeyFile, State  string
	args            []string
	cmd             *exec.Cmd
	t               testing.TB
}

// StartWitness makes a witness key and starts `arx witness serve` for the
// log with the given public key; it stops when the test ends.
func StartWitness(t testing.TB, name, logVKey string) *Witness {
	t.Helper()
	bin := Arx(t)
	dir := t.TempDir()
	w := &Witness{Name: name, KeyFile: filepath.Join(dir, "witness.key"), State: filepath.Join(dir, "state"), t: t}
	out, err := exec.Command(bin, "witness", "keygen", "--name", name, "--key", w.KeyFile, "--pub", filepath.Join(dir, "witness.pub")).Output()
	if err != nil {
		t.Fatalf("witness keygen: %v", err)
	}
	w.VKey = strings.TrimSpace(string(out))
	w.args = []string{"witness", "serve", "--listen", "127.0.0.1:0", "--key", w.KeyFile, "--state", w.State, "--log", logVKey}
	w.Start()
	t.Cleanup(w.Stop)
	return w
}

// Start starts the process (again), on the same address when it had one.
func (w *Witness) Start() {
	w.t.Helper()
	args := w.args
	if w.URL != "" {
		args = append(append([]string(nil), args...), "--listen", strings.TrimPrefix(w.URL, "http://"))
	}
	cmd := exec.Command(Arx(w.t), args...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		w.t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		w.t.Fatal(err)
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		w.t.Fatalf("witness did not start: %v\n%s", err, stderr.String())
	}
	go io.Copy(io.Discard, stdout)
	i := strings.Index(line, "http://")
	w.URL = strings.Fields(line[i:])[0]
	w.cmd = cmd
}

// Stop ends the process (SIGTERM, then SIGKILL).
func (w *Witness) Stop() {
	if w.cmd == nil {
		return
	}
	w.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { w.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		w.cmd.Process.Kill()
		<-done
	}
	w.cmd = nil
}

// Server is a running server that publishes to a bucket.
type Server struct {
	*server.Server
	DataDir string
	Admin   string
	agent   string // token of the hired agent
	t       testing.TB
	n       int
}

// StartServer starts a server on dataDir publishing as pc says.
func StartServer(t testing.TB, dataDir string, pc *publish.Config) *Server {
	t.Helper()
	s, err := server.Open(context.Background(), server.Config{DataDir: dataDir, Listen: "127.0.0.1:0",
		CheckpointInterval: 50 * time.Millisecond, ShutdownTimeout: 5 * time.Second, Publish: pc})
	if err != nil {
		t.Fatalf("start server: %v", err)
	}
	s.Start()
	b, err := os.ReadFile(filepath.Join(dataDir, server.AdminTokenFile))
	if err != nil {
		t.Fatal(err)
	}
	ps := &Server{Server: s, DataDir: dataDir, Admin: strings.TrimSpace(string(b)), t: t}
	t.Cleanup(func() { ps.Close() })
	return ps
}

var closed sync.Map

// Close stops the server once.
func (s *Server) Close() error {
	if _, dup := closed.LoadOrStore(s.Server, true); dup {
		return nil
	}
	return s.Server.Close()
}

func (s *Server) do(method, path, token string, body any, out any) (int, error) {
	data, _ := json.Marshal(body)
	req, err := http.NewRequest(method, s.URL+path, bytes.NewReader(data))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if out != nil {
		json.Unmarshal(b, out)
	}
	if resp.StatusCode >= 300 {
		return resp.StatusCode, fmt.Errorf("%s %s: %d %s", method, path, resp.StatusCode, b)
	}
	return resp.StatusCode, nil
}

// Calls makes n governed calls, each requested and completed (two entries),
// hiring an agent first if none was hired.
func (s *Server) Calls(n int) {
	s.t.Helper()
	for i := 0; i < n; i++ {
		if err := s.Call(); err != nil {
			s.t.Fatal(err)
		}
	}
}

// Call makes one governed call; it may run on any goroutine (one at a time).
func (s *Server) Call() error {
	if s.agent == "" {
		var out struct {
			Token string `json:"token"`
		}
		if _, err := s.do("POST", "/v1/agents", s.Admin, map[string]string{"manifest": arxtest.Manifest}, &out); err != nil {
			return err
		}
		s.agent = out.Token
	}
	s.n++
	var c struct {
		ID string `json:"id"`
	}
	if _, err := s.do("POST", "/v1/calls", s.agent, map[string]string{"connector": "crm", "action": "account.read",
		"idempotency_key": fmt.Sprintf("k%d", s.n)}, &c); err != nil {
		return err
	}
	_, err := s.do("POST", "/v1/calls/"+c.ID+"/complete", s.agent, map[string]string{"outcome": "success"}, nil)
	return err
}

// Publish signs a checkpoint of the log as it stands and publishes it with
// its cosignatures now.
func (s *Server) Publish() {
	s.t.Helper()
	ctx := context.Background()
	if err := s.Runtime.Checkpoint(ctx); err != nil {
		s.t.Fatal(err)
	}
	if err := s.Publisher.PublishNow(ctx); err != nil {
		s.t.Fatalf("publish: %v", err)
	}
}
