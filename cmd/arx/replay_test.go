package main

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/arxsec/arx/internal/arxtest"
)

// TestManifestReplay replays job descriptions against a real agent's
// record: the same one changes nothing (exit 0); one that drops an action
// and requires approval for drift says which calls would be held (exit 1),
// in text and JSON.
func TestManifestReplay(t *testing.T) {
	s := arxtest.Start(t)
	t.Setenv("ARX_SERVER", s.URL)
	t.Setenv("ARX_ADMIN_TOKEN", s.AdminToken)
	_, token := s.Hire(arxtest.Manifest)
	for i, call := range []struct{ conn, action string }{
		{"crm", "account.read"}, {"crm", "account.read"}, {"db", "query"}, {"hubspot", "contact.export"},
	} {
		r := s.Do("POST", "/v1/calls", token, map[string]string{"connector": call.conn, "action": call.action,
			"idempotency_key": "k" + string(rune('a'+i))})
		var out struct {
			Call struct {
				ID string `json:"id"`
			} `json:"call"`
		}
		r.JSON(t, &out)
		if out.Call.ID != "" {
			s.Do("POST", "/v1/calls/"+out.Call.ID+"/complete", token, map[string]any{"outcome": "success"})
		}
	}

	same := manifestFile(t, arxtest.Manifest)
	if code, out, stderr := arx(t, "manifest", "replay", same, "--agent", "test-agent"); code != 0 || !strings.Contains(out, "Nothing would change") ||
		!strings.Contains(out, "4 calls decided again") {
		t.Fatalf("replay of the same job description: %d\n%s%s", code, out, stderr)
	}

	changed := strings.Replace(arxtest.Manifest, "        account.read: {risk: low}\n", "", 1) +
		"on_drift: require_approval\n"
	changed = strings.Replace(changed, "    db:\n", "    hubspot:\n      actions:\n        contact.export: {risk: low}\n    db:\n", 1)
	file := manifestFile(t, changed)
	code, out, stderr := arx(t, "manifest", "replay", file, "--agent", "test-agent", "--since", "1h")
	if code != 1 || !strings.Contains(out, "3 of them would have gone otherwise") ||
		!strings.Contains(out, "2 calls would wait for an approver (crm account.read: 2)") ||
		!strings.Contains(out, "1 call would no longer be refused (hubspot contact.export: 1)") ||
		!strings.Contains(out, "proceeded -> held for approval; drift: undeclared_action") {
		t.Fatalf("replay of a changed job description: %d\n%s%s", code, out, stderr)
	}
	code, out, _ = arx(t, "manifest", "replay", file, "--agent", "test-agent", "--json")
	var rep struct {
		Agent    string           `json:"agent"`
		Calls    int64            `json:"calls_replayed"`
		Changed  int64            `json:"calls_changed"`
		ByChange map[string]int64 `json:"by_change"`
		Examples []struct {
			Call  string    `json:"call"`
			Time  time.Time `json:"time"`
			Would string    `json:"would"`
		} `json:"examples"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil || code != 1 {
		t.Fatalf("--json: %d %v\n%s", code, err, out)
	}
	if rep.Agent != "test-agent" || rep.Calls != 4 || rep.Changed != 3 || rep.ByChange["held"] != 2 || rep.ByChange["new_drift"] != 2 ||
		len(rep.Examples) != 3 || rep.Examples[0].Call == "" {
		t.Errorf("--json: %+v", rep)
	}
	// Bad input says what is wrong.
	if code, _, stderr := arx(t, "manifest", "replay", file, "--agent", "test-agent", "--since", "soon"); code != 2 || !strings.Contains(stderr, "--since") {
		t.Errorf("--since soon: %d %s", code, stderr)
	}
	if code, _, stderr := arx(t, "manifest", "replay", file, "--agent", "nobody"); code != 2 || !strings.Contains(stderr, `no agent "nobody"`) {
		t.Errorf("unknown agent: %d %s", code, stderr)
	}
}
