package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/arxsec/arx/internal/arxtest"
)

// TestTerminateReceipt: arx terminate prints a receipt of what it
// confirmed and saves it signed with the log key; arx audit receipt checks
// the signature, and refuses an altered receipt.
func TestTerminateReceipt(t *testing.T) {
	s := arxtest.Start(t)
	t.Setenv("ARX_SERVER", s.URL)
	t.Setenv("ARX_ADMIN_TOKEN", s.AdminToken)
	_, token := s.Hire(arxtest.Manifest)
	s.Do("POST", "/v1/calls", token, map[string]string{"connector": "crm", "action": "account.read", "idempotency_key": "live"})
	s.Do("POST", "/v1/calls", token, map[string]string{"connector": "crm", "action": "account.delete", "risk": "high", "idempotency_key": "waits"})
	file := filepath.Join(t.TempDir(), "receipt.note")
	code, out, stderr := arx(t, "terminate", "test-agent", "--reason", "replaced", "--receipt", file)
	if code != 0 || !strings.Contains(out, "receipt (record entry") || !strings.Contains(out, "confirmed    tokens revoked: 1") ||
		!strings.Contains(out, "confirmed    credentials revoked: 1") || !strings.Contains(out, "confirmed    approvals cancelled: 1") ||
		!strings.Contains(out, "confirmed    gateway requests cut: 0") {
		t.Fatalf("terminate: %d\n%s%s", code, out, stderr)
	}
	logKey := filepath.Join(s.DataDir, "log.pub")
	code, out, stderr = arx(t, "audit", "receipt", file, "--log-key", logKey)
	if code != 0 || !strings.Contains(out, "OK: a termination receipt signed with the log key") || !strings.Contains(out, "credentials revoked: 1") {
		t.Fatalf("audit receipt: %d\n%s%s", code, out, stderr)
	}
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	forged := filepath.Join(t.TempDir(), "forged.note")
	os.WriteFile(forged, []byte(strings.Replace(string(b), `"count":1,"what":"credentials_revoked"`, `"count":9,"what":"credentials_revoked"`, 1)), 0o644)
	if code, _, stderr := arx(t, "audit", "receipt", forged, "--log-key", logKey); code != 1 || !strings.Contains(stderr, "not signed by the log key") {
		t.Errorf("an altered receipt: %d %s", code, stderr)
	}
	// --json prints the answer, receipt included.
	_, token2 := s.Hire(strings.Replace(arxtest.Manifest, "name: test-agent", "name: second", 1))
	_ = token2
	code, out, _ = arx(t, "terminate", "second", "--reason", "done", "--json")
	if code != 0 || !strings.Contains(out, `"receipt"`) || !strings.Contains(out, `"note"`) {
		t.Errorf("terminate --json: %d %s", code, out)
	}
}
