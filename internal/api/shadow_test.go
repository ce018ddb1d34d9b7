package api_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/arxsec/arx/internal/arxtest"
	"github.com/arxsec/arx/manifest"
)

// shadowManifest is arxtest.Manifest without account.export, with a
// condition on account.read and on_drift refuse.
var shadowManifest = strings.NewReplacer(
	"        account.export: {risk: medium}\n", "",
	"        account.read: {risk: low}\n", "        account.read: {risk: low, when: 'args.id != \"0099\"'}\n",
	"termination:\n", "on_drift: refuse\ntermination:\n",
).Replace(arxtest.Manifest)

type agentJSON struct {
	ManifestHash   string `json:"manifest_hash"`
	ShadowHash     string `json:"shadow_hash"`
	Manifest       string `json:"manifest"`
	ShadowManifest string `json:"shadow_manifest"`
}

// TestShadowRollout: a job description applied in shadow is evaluated on
// every live call beside the enforced one, which alone decides; where they
// differ the record says so (shadow.differs) and the shadow report counts
// it; promoting makes it the enforced one at once (the agent's token
// unchanged), and after a restart.
func TestShadowRollout(t *testing.T) {
	dir := t.TempDir()
	s := arxtest.StartIn(t, dir)
	id, token := s.Hire(arxtest.Manifest)
	boss := personToken(t, s, "boss@example.com")
	call := func(action, key, argID string) (int, string) {
		t.Helper()
		r := s.Do("POST", "/v1/calls", token, map[string]any{"connector": "crm", "action": action, "idempotency_key": key,
			"args": map[string]string{"id": argID}})
		var c callJSON
		r.JSON(t, &c)
		return r.Status, c.Status
	}

	// Only an operator applies; the shadow must be the agent's.
	if r := s.Do("POST", "/v1/agents/"+id+"/manifest", boss, map[string]any{"manifest": shadowManifest, "shadow": true}); r.Status != http.StatusForbidden {
		t.Errorf("a manager applied a job description: %d %s", r.Status, r.Body)
	}
	other := strings.Replace(shadowManifest, "name: test-agent", "name: another-agent", 1)
	if r := s.Do("POST", "/v1/agents/"+id+"/manifest", s.AdminToken, map[string]any{"manifest": other, "shadow": true}); r.ErrorCode() != "manifest.invalid" {
		t.Errorf("another agent's job description: %d %s", r.Status, r.Body)
	}
	if r := s.Do("POST", "/v1/agents/"+id+"/manifest", s.AdminToken, map[string]any{"manifest": "scope: [", "shadow": true}); r.ErrorCode() != "manifest.invalid" {
		t.Errorf("a broken job description: %d %s", r.Status, r.Body)
	}
	if r := s.Do("POST", "/v1/agents/"+id+"/shadow/promote", s.AdminToken, nil); r.ErrorCode() != "agent.no_shadow" {
		t.Errorf("promote without a shadow: %d %s", r.Status, r.Body)
	}
	var a agentJSON
	r := s.Do("POST", "/v1/agents/"+id+"/manifest", s.AdminToken, map[string]any{"manifest": shadowManifest, "shadow": true})
	r.JSON(t, &a)
	shadowHash := manifest.Hash([]byte(shadowManifest))
	if r.Status != http.StatusOK || a.ShadowHash != shadowHash || a.ShadowManifest != shadowManifest || a.Manifest != arxtest.Manifest {
		t.Fatalf("apply in shadow: %d %s", r.Status, r.Body)
	}

	// The enforced job description decides; the shadow is compared.
	for _, c := range []struct{ action, key, arg, want string }{
		{"account.read", "k1", "0017", "approved"},
		{"account.export", "k2", "0017", "approved"}, // the shadow would refuse it
		{"account.read", "k3", "0099", "approved"},   // the shadow's condition would refuse it
	} {
		if st, status := call(c.action, c.key, c.arg); st != http.StatusCreated || status != c.want {
			t.Fatalf("%s under the enforced job description: %d %s", c.action, st, status)
		}
	}
	var rep struct {
		ManifestHash string           `json:"manifest_hash"`
		Calls        int64            `json:"calls"`
		Differ       int64            `json:"differ"`
		ByChange     map[string]int64 `json:"by_change"`
		Examples     []struct {
			Action, Enforced, Shadow string
			Changes                  []string
		} `json:"examples"`
	}
	s.Do("GET", "/v1/agents/"+id+"/shadow", boss, nil).JSON(t, &rep)
	if rep.ManifestHash != shadowHash || rep.Calls != 3 || rep.Differ != 2 || rep.ByChange["refused"] != 2 || len(rep.Examples) != 2 ||
		rep.Examples[0].Shadow != "refused (manifest.condition_not_met)" || rep.Examples[1].Action != "account.export" ||
		rep.Examples[1].Enforced != "proceeded" || rep.Examples[1].Shadow != "refused (manifest.action_not_declared)" {
		t.Fatalf("shadow report: %+v", rep)
	}
	rec := string(s.Do("GET", "/v1/agents/"+id+"/record", s.AdminToken, nil).Body)
	if strings.Count(rec, `"type":"shadow.differs"`) != 2 || !strings.Contains(rec, `"type":"manifest.shadowed"`) {
		t.Fatalf("record: %s", rec)
	}

	// Promoted: enforced at once, for the same token.
	a = agentJSON{}
	s.Do("POST", "/v1/agents/"+id+"/shadow/promote", s.AdminToken, nil).JSON(t, &a)
	if a.ManifestHash != shadowHash || a.ShadowHash != "" || a.Manifest != shadowManifest {
		t.Fatalf("after promote: %+v", a)
	}
	if st, _ := call("account.export", "k4", "0017"); st != http.StatusForbidden {
		t.Errorf("account.export after promote: %d", st)
	}
	if r := s.Do("POST", "/v1/agents/"+id+"/shadow/discard", s.AdminToken, map[string]string{"reason": "x"}); r.ErrorCode() != "agent.no_shadow" {
		t.Errorf("discard after promote: %d %s", r.Status, r.Body)
	}
	if r := s.Do("POST", "/v1/agents/"+id+"/manifest", s.AdminToken, map[string]any{"manifest": shadowManifest}); r.ErrorCode() != "request.conflict" {
		t.Errorf("applying the enforced one again: %d %s", r.Status, r.Body)
	}

	// A shadow applied and discarded changes nothing.
	s.Do("POST", "/v1/agents/"+id+"/manifest", s.AdminToken, map[string]any{"manifest": arxtest.Manifest, "shadow": true})
	a = agentJSON{}
	s.Do("POST", "/v1/agents/"+id+"/shadow/discard", s.AdminToken, map[string]string{"reason": "not now"}).JSON(t, &a)
	if a.ManifestHash != shadowHash || a.ShadowHash != "" {
		t.Fatalf("after discard: %+v", a)
	}

	// After a restart the agent is held to the promoted one.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = arxtest.StartIn(t, dir)
	if st, _ := call("account.export", "k5", "0017"); st != http.StatusForbidden {
		t.Errorf("account.export after the restart: %d", st)
	}
	if st, status := call("account.read", "k6", "0017"); st != http.StatusCreated || status != "approved" {
		t.Errorf("account.read after the restart: %d %s", st, status)
	}
	a = agentJSON{}
	s.Do("GET", "/v1/agents/"+id, s.AdminToken, nil).JSON(t, &a)
	if a.ManifestHash != shadowHash || a.Manifest != shadowManifest {
		t.Errorf("agent after the restart: %+v", a)
	}
}

// TestGrantAfterTightening: a call held before its agent's job description
// was tightened is not granted when the new one refuses it; it can still
// be denied.
func TestGrantAfterTightening(t *testing.T) {
	s := arxtest.Start(t)
	id, token := s.Hire(arxtest.Manifest)
	boss := personToken(t, s, "boss@example.com")
	var c callJSON
	request(s, token, "crm", "account.delete", "high", "d1").JSON(t, &c)
	if c.Status != "pending_approval" {
		t.Fatalf("call: %+v", c)
	}
	tight := strings.Replace(arxtest.Manifest, "        account.delete: {risk: high}\n", "", 1) + "on_drift: refuse\n"
	if r := s.Do("POST", "/v1/agents/"+id+"/manifest", s.AdminToken, map[string]any{"manifest": tight}); r.Status != http.StatusOK {
		t.Fatalf("apply: %d %s", r.Status, r.Body)
	}
	if r := s.Do("POST", "/v1/approvals/"+c.ID+"/approve", boss, map[string]string{"reason": "ok"}); r.ErrorCode() != "manifest.action_not_declared" {
		t.Fatalf("grant after tightening: %d %s", r.Status, r.Body)
	}
	if r := s.Do("POST", "/v1/approvals/"+c.ID+"/deny", boss, map[string]string{"reason": "no longer in its job"}); r.Status != http.StatusOK {
		t.Fatalf("deny: %d %s", r.Status, r.Body)
	}
}

// TestPromoteWhatWasReviewed: promoting names the shadow reviewed; one
// applied meanwhile is not enforced in its place.
func TestPromoteWhatWasReviewed(t *testing.T) {
	s := arxtest.Start(t)
	id, _ := s.Hire(arxtest.Manifest)
	reviewed := manifest.Hash([]byte(shadowManifest))
	s.Do("POST", "/v1/agents/"+id+"/manifest", s.AdminToken, map[string]any{"manifest": shadowManifest, "shadow": true})
	other := strings.Replace(shadowManifest, "timeout: 10m", "timeout: 5m", 1)
	s.Do("POST", "/v1/agents/"+id+"/manifest", s.AdminToken, map[string]any{"manifest": other, "shadow": true})
	if r := s.Do("POST", "/v1/agents/"+id+"/shadow/promote", s.AdminToken, map[string]string{"manifest_hash": reviewed}); r.ErrorCode() != "request.conflict" {
		t.Fatalf("promote of a replaced shadow: %d %s", r.Status, r.Body)
	}
	var a agentJSON
	s.Do("POST", "/v1/agents/"+id+"/shadow/promote", s.AdminToken, map[string]string{"manifest_hash": manifest.Hash([]byte(other))}).JSON(t, &a)
	if a.ManifestHash != manifest.Hash([]byte(other)) {
		t.Fatalf("promote of the reviewed shadow: %+v", a)
	}
}
