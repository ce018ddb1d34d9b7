//go:build linux

package faults

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestDiskFull runs arx serve on a small tmpfs and fills it: calls are
// refused with record.unavailable (fail closed: no credential without its
// entry), nothing acknowledged is lost, and service recovers by itself when
// space comes back.
func TestDiskFull(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("ARX_TEST_REQUIRE_SERVERS") != "" {
			t.Fatal("the disk-full test needs root to mount a tmpfs")
		}
		t.Skip("the disk-full test needs root to mount a tmpfs (CI runs it)")
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=24m", "arx-test", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs here: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", dir).Run() })

	p := startServe(t, dir)
	defer p.stop(t)
	adminB, _ := os.ReadFile(filepath.Join(dir, "admin.token"))
	admin := strings.TrimSpace(string(adminB))
	code, b, err := call(t.Context(), p.url, "POST", "/v1/agents", admin, map[string]string{"manifest": fmt.Sprintf(crashManifest, "disk")})
	if err != nil || code != 201 {
		t.Fatalf("hire: %d %s %v", code, b, err)
	}
	var hired struct {
		Token string `json:"token"`
	}
	json.Unmarshal(b, &hired)
	var acknowledged []string
	var mu sync.Mutex
	req := func(key string) (int, string) {
		code, b, err := call(t.Context(), p.url, "POST", "/v1/calls", hired.Token, map[string]string{"connector": "crm", "action": "account.read", "idempotency_key": key})
		if err != nil {
			t.Fatal(err)
		}
		var e struct {
			Error struct {
				Code string `json:"code"`
			} `json:"error"`
			Credential *struct{ Token string } `json:"credential"`
			ID         string                  `json:"id"`
		}
		json.Unmarshal(b, &e)
		if code == 201 {
			mu.Lock()
			acknowledged = append(acknowledged, e.ID)
			mu.Unlock()
		}
		if code != 201 && e.Credential != nil {
			t.Errorf("a refused call carries a credential: %s", b)
		}
		return code, e.Error.Code
	}
	if code, _ := req("before"); code != 201 {
		t.Fatalf("before the disk fills: %d", code)
	}
	// Fill the disk.
	filler := filepath.Join(dir, "filler")
	f, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 1<<20)
	for {
		if _, err := f.Write(chunk); err != nil {
			break
		}
	}
	f.Sync()
	f.Close()
	// Calls go on while the log's segment has zero-filled room left (on a
	// nearly full disk it zero-fills only what each frame needs, leaving
	// freed space to the state database), then are refused. Many callers
	// use it up quickly; bounded in time.
	var refused atomic.Int64
	var wrong atomic.Value
	var wg sync.WaitGroup
	deadline := time.Now().Add(60 * time.Second)
	for w := range 16 {
		wg.Go(func() {
			for i := 0; refused.Load() == 0 && time.Now().Before(deadline); i++ {
				code, errCode := req(fmt.Sprint("full-", w, "-", i))
				if code == 503 && errCode == "record.unavailable" {
					refused.Add(1)
					return
				}
				if code != 201 {
					wrong.Store(fmt.Sprintf("%d %s", code, errCode))
					refused.Add(1)
					return
				}
			}
		})
	}
	wg.Wait()
	if w := wrong.Load(); w != nil {
		t.Fatalf("with the disk full: %s, want 201 or 503 record.unavailable", w)
	}
	if refused.Load() == 0 {
		t.Fatal("the disk never filled up enough to refuse a call")
	}
	t.Logf("%d calls acknowledged before the first refusal", len(acknowledged))
	// Space comes back: service recovers without a restart.
	os.Remove(filler)
	deadline = time.Now().Add(10 * time.Second)
	for {
		code, errCode := req(fmt.Sprint("after-", time.Now().UnixNano()))
		if code == 201 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no recovery after space came back: %d %s\n%s", code, errCode, p.logText())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if code, b, _ := call(t.Context(), p.url, "GET", "/readyz", "", nil); code != 200 {
		t.Fatalf("readyz after recovery: %d %s", code, b)
	}
	// Nothing acknowledged was lost, and the log still verifies.
	issued, _, _ := verifyLog(t, p, dir, admin)
	lost := 0
	for _, id := range acknowledged {
		if !issued[id] {
			lost++
			t.Errorf("acknowledged call %s has no credential.issued entry", id)
		}
	}
	t.Logf("CAMPAIGN disk_full refused_with=record.unavailable recovered=true acknowledged=%d lost=%d", len(acknowledged), lost)
}
