// Package salesresearchpy tests the Python reference agent (app/main.py, a
// FastAPI app) as its README runs it: under uvicorn from its folder, in
// local-only mode and hired against arx dev.
//
// It needs a python3 with fastapi, uvicorn and httpx (Debian:
// python3-fastapi python3-uvicorn python3-httpx). Without one the tests
// skip, unless ARX_TEST_REQUIRE_SERVERS=1 (set by CI), when they fail.
package salesresearchpy

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/arxsec/arx/internal/arxtest"
)

// python finds an interpreter with the app's dependencies.
func python(t *testing.T) string {
	t.Helper()
	for _, cand := range []string{"/usr/bin/python3", "python3"} {
		p, err := exec.LookPath(cand)
		if err != nil {
			continue
		}
		if exec.Command(p, "-c", "import fastapi, uvicorn, httpx").Run() == nil {
			return p
		}
	}
	msg := "no python3 with fastapi, uvicorn and httpx (Debian: apt-get install python3-fastapi python3-uvicorn python3-httpx)"
	if os.Getenv("ARX_TEST_REQUIRE_SERVERS") == "1" {
		t.Fatal(msg + "; CI requires it")
	}
	t.Skip(msg + ", so the Python reference agent's tests do not run")
	return ""
}

// builtIn is the directory arxBin built arx in, removed by TestMain.
var builtIn string

var arxBin = sync.OnceValues(func() (string, error) {
	d, err := os.MkdirTemp("", "arx-bin-")
	if err != nil {
		return "", err
	}
	builtIn = d
	bin := filepath.Join(d, "arx")
	out, err := exec.Command("go", "build", "-o", bin, "../../cmd/arx").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build ./cmd/arx: %v\n%s", err, out)
	}
	return bin, nil
})

func arx(t *testing.T) string {
	t.Helper()
	bin, err := arxBin()
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

func TestMain(m *testing.M) {
	code := m.Run()
	if builtIn != "" {
		os.RemoveAll(builtIn)
	}
	os.Exit(code)
}

// agentDir copies the app and its job description to a fresh folder, as
// an author's checkout would have them (arx-records/ lands there).
func agentDir(t *testing.T) string {
	t.Helper()
	d := t.TempDir()
	for _, name := range []string{"app/__init__.py", "app/crm.py", "app/main.py", "manifests/job_description.yaml"} {
		b, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		os.MkdirAll(filepath.Join(d, filepath.Dir(name)), 0o755)
		if err := os.WriteFile(filepath.Join(d, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return d
}

// uvicorn runs `python -m uvicorn app.main:app` in dir on a loopback port
// it is handed (--fd), with only the environment given, and returns the
// app's URL once it answers.
func uvicorn(t *testing.T, py, dir string, env []string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f, err := ln.(*net.TCPListener).File()
	ln.Close()
	if err != nil {
		t.Fatal(err)
	}
	sdk, _ := filepath.Abs(filepath.Join("..", "..", "sdks", "agentvault-py", "src"))
	cmd := exec.Command(py, "-m", "uvicorn", "app.main:app", "--fd", "3", "--log-level", "warning")
	cmd.Dir = dir
	cmd.Env = append([]string{"PATH=/usr/bin:/bin", "HOME=" + dir, "PYTHONPATH=" + sdk, "PYTHONDONTWRITEBYTECODE=1"}, env...)
	cmd.ExtraFiles = []*os.File{f}
	var logs strings.Builder
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("uvicorn:\n%s", logs.String())
		}
	})
	url := "http://" + ln.Addr().String()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(url + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return url
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("uvicorn did not answer within 30s: %v\n%s", err, logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

type research struct {
	Mode    string `json:"mode"`
	Account struct {
		Name string `json:"name"`
	} `json:"account"`
	Opportunities []json.RawMessage `json:"opportunities"`
	OpenTotal     int               `json:"open_total_eur"`
	Contacts      []json.RawMessage `json:"contacts"`
	Refused       []struct {
		Connector string `json:"connector"`
		Code      string `json:"code"`
		CallID    string `json:"call_id"`
	} `json:"refused"`
}

func post(t *testing.T, url string) (int, []byte) {
	t.Helper()
	resp, err := http.Post(url, "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func checkResearch(t *testing.T, body []byte, mode string) {
	t.Helper()
	var r research
	if err := json.Unmarshal(body, &r); err != nil {
		t.Fatalf("%v: %s", err, body)
	}
	if r.Mode != mode || r.Account.Name != "Nordwind Logistik GmbH" || len(r.Opportunities) != 1 || r.OpenTotal != 180000 ||
		len(r.Contacts) != 1 || len(r.Refused) != 1 || r.Refused[0].Code != "manifest.connector_not_declared" || r.Refused[0].CallID == "" {
		t.Errorf("research of 0017 (%s): %s", mode, body)
	}
}

// TestLocalMode: ARX_LOCAL_MODE=1 uvicorn app.main:app, as the SDK's README
// runs it; the calls, the drift and the refusal are in arx-records/.
func TestLocalMode(t *testing.T) {
	py, bin := python(t), arx(t)
	d := agentDir(t)
	url := uvicorn(t, py, d, []string{"ARX_LOCAL_MODE=1", "ARX_BIN=" + bin})

	code, body := post(t, url+"/research?account=0017")
	if code != 200 {
		t.Fatalf("POST /research: %d %s", code, body)
	}
	checkResearch(t, body, "local")
	if code, body := post(t, url+"/research?account=9999"); code != 404 || !strings.Contains(string(body), "crm.not_found") {
		t.Errorf("unknown account: %d %s", code, body)
	}
	if code, body := post(t, url+"/research?account=x%1b%5b2J"); code != 400 || !strings.Contains(string(body), "request.invalid_account") {
		t.Errorf("account with an escape sequence: %d %s", code, body)
	}
	// Python's "$" matches before a trailing newline: the check is a fullmatch.
	if code, body := post(t, url+"/research?account=0017%0a"); code != 400 || !strings.Contains(string(body), "request.invalid_account") {
		t.Errorf("account with a trailing newline: %d %s", code, body)
	}

	types := arxtest.LocalRecordTypes(t, filepath.Join(d, "arx-records"))
	// 0017: account, opportunities, contacts (drift), hubspot (refused);
	// 9999: its account read, which the CRM does not have.
	if types["credential.issued"] != 4 || types["drift.detected"] != 1 || types["credential.refused"] != 1 {
		t.Errorf("arx-records/ holds %v", types)
	}
	// What the app recorded is well formed and chained.
	if out, err := exec.Command(bin, "record", "verify", filepath.Join(d, "arx-records")).CombinedOutput(); err != nil {
		t.Errorf("arx record verify arx-records: %v\n%s", err, out)
	}
}

// TestHiredAgainstArxDev: arx dev running, the app hired with its job
// description, its reads go through the gateway to the demo CRM and land in
// the agent's personnel record.
func TestHiredAgainstArxDev(t *testing.T) {
	py, bin := python(t), arx(t)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	dev := exec.CommandContext(ctx, bin, "dev", "--listen", "127.0.0.1:0", "--data", t.TempDir())
	dev.Cancel = func() error { return dev.Process.Signal(os.Interrupt) }
	dev.WaitDelay = 15 * time.Second
	stdout, err := dev.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var devErr strings.Builder
	dev.Stderr = &devErr
	if err := dev.Start(); err != nil {
		t.Fatal(err)
	}
	var server, admin string
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "export ARX_SERVER="); ok {
			server, admin, _ = strings.Cut(rest, " ARX_ADMIN_TOKEN=")
			break
		}
	}
	if server == "" || admin == "" {
		t.Fatalf("arx dev printed no server and admin token\n%s", devErr.String())
	}
	go io.Copy(io.Discard, stdout)

	d := agentDir(t)
	hire := exec.Command(bin, "hire", "manifests/job_description.yaml", "--server", server, "--token", admin)
	hire.Dir = d
	out, err := hire.CombinedOutput()
	if err != nil {
		t.Fatalf("arx hire: %v\n%s", err, out)
	}
	var env []string
	for line := range strings.Lines(string(out)) {
		if kv, ok := strings.CutPrefix(strings.TrimSpace(line), "export "); ok {
			env = append(env, kv)
		}
	}
	if len(env) != 3 {
		t.Fatalf("arx hire printed %q", out)
	}
	url := uvicorn(t, py, d, env)
	code, body := post(t, url+"/research?account=0017")
	if code != 200 {
		t.Fatalf("POST /research: %d %s", code, body)
	}
	checkResearch(t, body, "hired")

	show := exec.Command(bin, "record", "show", "sales-research-py", "--json", "--server", server, "--token", admin)
	out, err = show.CombinedOutput()
	if err != nil {
		t.Fatalf("arx record show: %v\n%s", err, out)
	}
	for _, want := range []string{`"type":"gateway.request"`, `"path":"/accounts/0017"`, `"path":"/accounts/0017/contacts"`, `"type":"drift.detected"`, `"type":"credential.refused"`} {
		if !strings.Contains(string(out), want) {
			t.Errorf("the record lacks %s:\n%s", want, out)
		}
	}
	cancel()
	if err := dev.Wait(); err != nil && ctx.Err() == nil {
		t.Errorf("arx dev: %v\n%s", err, devErr.String())
	}
}
