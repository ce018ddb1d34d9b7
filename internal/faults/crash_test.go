//go:build linux

// Package faults holds the tests that prove ARX's promises under faults:
// crashes at random moments, a failing disk, hostile input.
package faults

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"github.com/arxsec/arx/internal/arxtest"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/arxsec/arx/record"
)

func arxBinary(t *testing.T) string { return arxtest.Binary(t) }

func TestMain(m *testing.M) {
	code := m.Run()
	arxtest.RemoveBinary()
	os.Exit(code)
}

// proc is a running arx serve.
type proc struct {
	cmd *exec.Cmd
	url string
	log *arxtest.ServeLog
}

// startServe starts arx serve on dir and waits until it serves.
func startServe(t *testing.T, dir string, extra ...string) *proc {
	t.Helper()
	args := append([]string{"serve", "--data", dir, "--listen", "127.0.0.1:0", "--log-format", "json"}, extra...)
	cmd := exec.Command(arxBinary(t), args...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, log: arxtest.WatchServe(stderr)}
	select {
	case p.url = <-p.log.URL():
	case <-time.After(20 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("arx serve did not start:\n%s", p.logText())
	}
	return p
}

func (p *proc) logText() string { return p.log.String() }

func (p *proc) kill() {
	p.cmd.Process.Signal(syscall.SIGKILL)
	p.cmd.Wait()
}

func (p *proc) stop(t *testing.T) {
	t.Helper()
	p.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- p.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("arx serve exited with %v:\n%s", err, p.logText())
		}
	case <-time.After(15 * time.Second):
		p.cmd.Process.Kill()
		t.Errorf("arx serve did not stop on SIGTERM")
	}
}

var client = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}

func call(ctx context.Context, base, method, path, token string, body any) (int, []byte, error) {
	return callWith(ctx, client, base, method, path, token, body)
}

// callWith sends one JSON request with c and returns the answer's status
// and body.
func callWith(ctx context.Context, c *http.Client, base, method, path, token string, body any) (int, []byte, error) {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, base+path, rd)
	if err != nil {
		return 0, nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

const crashManifest = `apiVersion: arx.dev/v1
kind: JobDescription
agent:
  name: %s
  owner: owner@example.com
scope:
  connectors:
    crm:
      actions:
        account.read: {risk: low}
approval:
  approvers: [boss@example.com]
budget:
  max_call_duration: 5m
termination:
  notify: []
`

// TestCrashSafety kills arx serve with SIGKILL at random moments under a
// load of governed calls, at least 20 times, restarting it each time. Then
// every call the client saw acknowledged has its entries, indexes are
// contiguous, and the whole log verifies against a signed checkpoint.
func TestCrashSafety(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test skipped in -short mode")
	}
	dir := t.TempDir()
	crashes := 20
	if n := os.Getenv("ARX_CRASHES"); n != "" {
		fmt.Sscan(n, &crashes)
	}
	p := startServe(t, dir)
	adminB, err := os.ReadFile(filepath.Join(dir, "admin.token"))
	if err != nil {
		t.Fatal(err)
	}
	admin := strings.TrimSpace(string(adminB))
	const agents = 8
	tokens := make([]string, agents)
	for i := range tokens {
		code, b, err := call(t.Context(), p.url, "POST", "/v1/agents", admin, map[string]string{"manifest": fmt.Sprintf(crashManifest, fmt.Sprint("crash-", i))})
		if err != nil || code != 201 {
			t.Fatalf("hire: %d %s %v", code, b, err)
		}
		var out struct {
			Token string `json:"token"`
		}
		json.Unmarshal(b, &out)
		tokens[i] = out.Token
	}

	issued := map[string]bool{}    // calls acknowledged with a credential
	completed := map[string]bool{} // completions acknowledged
	var mu sync.Mutex
	rng := rand.New(rand.NewPCG(1, uint64(time.Now().UnixNano())))
	for crash := 0; crash < crashes; crash++ {
		ctx, cancel := context.WithCancel(t.Context())
		var wg sync.WaitGroup
		for i, tok := range tokens {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for n := 0; ctx.Err() == nil && n < 10000; n++ {
					key := fmt.Sprintf("c%d-a%d-%d", crash, i, n)
					code, b, err := call(ctx, p.url, "POST", "/v1/calls", tok, map[string]string{"connector": "crm", "action": "account.read", "idempotency_key": key})
					if err != nil || code != 201 {
						continue // the server died under us, or answered with a refusal: not acknowledged
					}
					var c struct {
						ID string `json:"id"`
					}
					json.Unmarshal(b, &c)
					mu.Lock()
					issued[c.ID] = true
					mu.Unlock()
					code, _, err = call(ctx, p.url, "POST", "/v1/calls/"+c.ID+"/complete", tok, map[string]string{"outcome": "success"})
					if err == nil && code == 200 {
						mu.Lock()
						completed[c.ID] = true
						mu.Unlock()
					}
				}
			}()
		}
		time.Sleep(time.Duration(50+rng.IntN(300)) * time.Millisecond)
		p.kill()
		cancel()
		wg.Wait()
		p = startServe(t, dir)
	}

	// After the last restart: sign a checkpoint, read every entry, verify.
	seenIssued, seenCompleted, size := verifyLog(t, p, dir, admin)
	mu.Lock()
	defer mu.Unlock()
	for id := range issued {
		if !seenIssued[id] {
			t.Errorf("call %s was acknowledged with a credential but its credential.issued entry is missing", id)
		}
	}
	for id := range completed {
		if !seenCompleted[id] {
			t.Errorf("completion of %s was acknowledged but its call.completed entry is missing", id)
		}
	}
	if len(issued) == 0 {
		t.Fatal("no call was acknowledged: the test proves nothing")
	}
	t.Logf("CAMPAIGN crash crashes=%d acknowledged_calls=%d acknowledged_completions=%d entries_verified=%d lost=0", crashes, len(issued), len(completed), size)
	p.stop(t)
}

// verifyLog waits for a checkpoint covering everything, reads every entry
// and verifies the whole log; it returns the calls with credential.issued
// and call.completed entries.
func verifyLog(t *testing.T, p *proc, dir, admin string) (issued, completed map[string]bool, size int64) {
	t.Helper()
	// The checkpoint that covers the whole log: signed every second, it
	// may lag after a fault; it must catch up.
	vkey, _ := os.ReadFile(filepath.Join(dir, "log.pub"))
	var cp *record.Checkpoint
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		code, signed, err := call(t.Context(), p.url, "GET", "/v1/log/checkpoint", "", nil)
		if err != nil || code != 200 {
			t.Fatalf("checkpoint: %d %v", code, err)
		}
		if cp, _, err = record.OpenCheckpoint(signed, strings.TrimSpace(string(vkey))); err != nil {
			t.Fatal(err)
		}
		code, b, err := call(t.Context(), p.url, "GET", fmt.Sprintf("/v1/log/entries?start=%d&limit=1", cp.Size), admin, nil)
		if err != nil || code != 200 {
			t.Fatalf("entries after the checkpoint: %d %v", code, err)
		}
		var after struct {
			Entries []json.RawMessage `json:"entries"`
		}
		json.Unmarshal(b, &after)
		if len(after.Entries) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the checkpoint stays at %d entries while the log has more:\n%s", cp.Size, p.logText())
		}
	}
	var v record.Verifier
	issued, completed = map[string]bool{}, map[string]bool{}
	for start := int64(0); start < int64(cp.Size); {
		code, b, err := call(t.Context(), p.url, "GET", fmt.Sprintf("/v1/log/entries?start=%d&limit=5000", start), admin, nil)
		if err != nil || code != 200 {
			t.Fatalf("entries: %d %v", code, err)
		}
		var page struct {
			Entries []struct {
				Index int64  `json:"index"`
				Data  []byte `json:"data"`
			} `json:"entries"`
		}
		json.Unmarshal(b, &page)
		if len(page.Entries) == 0 {
			break
		}
		for _, e := range page.Entries {
			if v.Size() >= int64(cp.Size) {
				break
			}
			v.Add(e.Data)
			pe, err := record.Parse(e.Data)
			if err != nil {
				t.Fatal(err)
			}
			switch pe.Type {
			case record.TypeCredentialIssued:
				issued[pe.Call] = true
			case record.TypeCallCompleted:
				completed[pe.Call] = true
			}
		}
		start = v.Size()
	}
	if problems := v.Finish(cp); len(problems) > 0 {
		t.Fatalf("the log does not verify: %v", problems)
	}
	return issued, completed, v.Size()
}
