package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/arxsec/arx/internal/arxtest"
)

// TestManifestShadow: arx manifest apply --shadow, shadow, promote and
// discard against a real server, as an operator would type them.
func TestManifestShadow(t *testing.T) {
	s := arxtest.Start(t)
	t.Setenv("ARX_SERVER", s.URL)
	t.Setenv("ARX_ADMIN_TOKEN", s.AdminToken)
	_, token := s.Hire(arxtest.Manifest)
	strict := manifestFile(t, strings.Replace(arxtest.Manifest, "        account.export: {risk: medium}\n", "", 1)+"on_drift: refuse\n")
	if code, out, stderr := arx(t, "manifest", "apply", strict, "--agent", "test-agent", "--shadow"); code != 0 ||
		!strings.Contains(out, "is evaluated in shadow") {
		t.Fatalf("apply --shadow: %d\n%s%s", code, out, stderr)
	}
	if code, out, _ := arx(t, "manifest", "shadow", "--agent", "test-agent"); code != 0 || !strings.Contains(out, "0 calls decided") {
		t.Fatalf("shadow before any call: %d\n%s", code, out)
	}
	for i, action := range []string{"account.read", "account.export"} {
		if r := s.Do("POST", "/v1/calls", token, map[string]string{"connector": "crm", "action": action, "idempotency_key": "k" + string(rune('a'+i))}); r.Status != 201 {
			t.Fatalf("%s: %d %s", action, r.Status, r.Body)
		}
	}
	code, out, stderr := arx(t, "manifest", "shadow", "--agent", "test-agent")
	if code != 1 || !strings.Contains(out, "2 calls decided; the shadow would have decided 1 of them otherwise") ||
		!strings.Contains(out, "crm account.export: proceeded, would be refused (manifest.action_not_declared)") {
		t.Fatalf("shadow: %d\n%s%s", code, out, stderr)
	}
	code, out, _ = arx(t, "manifest", "shadow", "--agent", "test-agent", "--json")
	var rep struct {
		Differ int64 `json:"differ"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil || code != 1 || rep.Differ != 1 {
		t.Fatalf("shadow --json: %d %v\n%s", code, err, out)
	}
	if code, out, stderr := arx(t, "manifest", "promote", "--agent", "test-agent"); code != 0 || !strings.Contains(out, "is held to") {
		t.Fatalf("promote: %d\n%s%s", code, out, stderr)
	}
	if r := s.Do("POST", "/v1/calls", token, map[string]string{"connector": "crm", "action": "account.export", "idempotency_key": "kz"}); r.Status != 403 {
		t.Errorf("account.export after promote: %d %s", r.Status, r.Body)
	}
	if code, _, stderr := arx(t, "manifest", "discard", "--agent", "test-agent"); code == 0 || !strings.Contains(stderr, "agent.no_shadow") {
		t.Errorf("discard without a shadow: %d %s", code, stderr)
	}
	if code, _, stderr := arx(t, "manifest", "apply", manifestFile(t, "apiVersion: x\n"), "--agent", "test-agent"); code == 0 ||
		!strings.Contains(stderr, "arx manifest lint") {
		t.Errorf("apply of a broken file: %d %s", code, stderr)
	}
}
