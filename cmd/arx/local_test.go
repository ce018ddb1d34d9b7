package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/arxsec/arx/agentvault"
	"github.com/arxsec/arx/internal/arxtest"
	"github.com/arxsec/arx/record"
)

// localWorkload runs governed calls in local-only mode on the manifest text
// and returns the manifest's path and the record directory.
func localWorkload(t *testing.T, manifestText string, work func(c *agentvault.Client)) (mf, dir string) {
	t.Helper()
	root := t.TempDir()
	mf = filepath.Join(root, "job_description.yaml")
	if err := os.WriteFile(mf, []byte(manifestText), 0o644); err != nil {
		t.Fatal(err)
	}
	dir = filepath.Join(root, "arx-records")
	c, err := agentvault.New(agentvault.Config{LocalMode: true, Manifest: mf, LocalRecordDir: dir, LocalApprove: agentvault.LocalApproveAllow})
	if err != nil {
		t.Fatal(err)
	}
	work(c)
	return mf, dir
}

func call(t *testing.T, c *agentvault.Client, conn, act string, risk agentvault.Risk, d time.Duration) error {
	t.Helper()
	_, err := agentvault.Do(context.Background(), c, agentvault.Action{Connector: conn, Action: act, Risk: risk},
		func(context.Context, agentvault.Credential) (int, error) {
			time.Sleep(d)
			return 0, nil
		})
	return err
}

func TestManifestExport(t *testing.T) {
	good := filepath.Join("..", "..", "reference-agents", "sales-research", "manifests", "job_description.yaml")
	code, out, stderr := arx(t, "manifest", "export", good)
	var ex struct {
		Format       string `json:"format"`
		ManifestHash string `json:"manifest_hash"`
		Manifest     struct {
			Agent struct {
				Name string `json:"name"`
			} `json:"agent"`
			OnDrift string `json:"on_drift"`
		} `json:"manifest"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &ex) != nil || ex.Format != "arx.dev/v1/manifest-export" ||
		!strings.HasPrefix(ex.ManifestHash, "sha256:") || ex.Manifest.Agent.Name != "sales-research" || ex.Manifest.OnDrift != "record" {
		t.Fatalf("export: %d %s %s", code, out, stderr)
	}
	dst := filepath.Join(t.TempDir(), "job_description.json")
	if code, _, _ := arx(t, "manifest", "export", good, "-o", dst); code != 0 {
		t.Fatal("export -o failed")
	}
	if b, _ := os.ReadFile(dst); string(b) != out {
		t.Error("export -o wrote something else than standard output")
	}
	bad := manifestFile(t, arxtest.Manifest+"extra: 1\n")
	if code, out, stderr := arx(t, "manifest", "export", bad); code != 1 || out != "" || !strings.Contains(stderr, "extra") {
		t.Fatalf("export of an invalid manifest: %d %q %s", code, out, stderr)
	}
}

func TestRecordVerifyLocal(t *testing.T) {
	_, dir := localWorkload(t, arxtest.Manifest, func(c *agentvault.Client) {
		for range 3 {
			if err := call(t, c, "crm", "account.read", "", 0); err != nil {
				t.Fatal(err)
			}
		}
		call(t, c, "hubspot", "contact.read", "", 0)
	})
	code, out, _ := arx(t, "record", "verify", dir)
	if code != 0 || !strings.Contains(out, "OK: 7 entries in 1 file(s)") {
		t.Fatalf("verify of untouched local records: %d\n%s", code, out)
	}
	file := filepath.Join(dir, "test-agent.jsonl")
	if code, out, _ := arx(t, "record", "verify", file, "--json"); code != 0 || !strings.Contains(out, `"ok": true`) {
		t.Fatalf("verify of one file: %d\n%s", code, out)
	}
	data, _ := os.ReadFile(file)
	lines := strings.SplitAfter(string(data), "\n")
	for _, tc := range []struct {
		name, text, want string
	}{
		{"edited", strings.Join(lines[:2], "") + strings.Replace(lines[2], "account.read", "account.wipe", 1) + strings.Join(lines[3:], ""), "chain_broken"},
		{"deleted", strings.Join(lines[:2], "") + strings.Join(lines[3:], ""), "missing"},
		{"reordered", lines[0] + lines[2] + lines[1] + strings.Join(lines[3:], ""), "out_of_order"},
		{"cut short", string(data[:len(data)-20]), "partial_line"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := t.TempDir()
			os.WriteFile(filepath.Join(d, "test-agent.jsonl"), []byte(tc.text), 0o644)
			code, out, _ := arx(t, "record", "verify", d)
			if code != 1 || !strings.Contains(out, tc.want) || !strings.Contains(out, "FAILED") {
				t.Fatalf("verify after %s: %d, want 1 naming %s\n%s", tc.name, code, tc.want, out)
			}
		})
	}
	if code, _, stderr := arx(t, "record", "verify", t.TempDir()); code != 2 || !strings.Contains(stderr, "no .jsonl") {
		t.Fatalf("verify of an empty directory: %d %s", code, stderr)
	}
}

// checkManifest declares crm (account.read, account.update high, 1s) and
// an unused db; at most 3 calls a day and 1 at a time, active in a window
// that excludes now.
func checkManifest(now time.Time) string {
	start := now.UTC().Add(2 * time.Hour)
	end := start.Add(time.Hour)
	return fmt.Sprintf(`apiVersion: arx.dev/v1
kind: JobDescription
agent: {name: checked, owner: owner@example.com}
scope:
  connectors:
    crm:
      actions:
        account.read: {risk: low, max_duration: 1s}
        account.update: {risk: high}
        account.export: {risk: low}
    db:
      actions:
        query: {risk: low}
approval:
  approvers: [boss@example.com]
budget:
  calls_per_day: 3
  max_concurrent: 1
  max_call_duration: 5m
  active_hours: {timezone: UTC, start: "%s", end: "%s"}
termination:
  notify: [owner@example.com]
`, start.Format("15:04"), end.Format("15:04"))
}

func TestManifestCheck(t *testing.T) {
	mf, dir := localWorkload(t, checkManifest(time.Now()), func(c *agentvault.Client) {
		var wg sync.WaitGroup
		for range 2 { // two at once: over max_concurrent
			wg.Go(func() { call(t, c, "crm", "account.read", "", 300*time.Millisecond) })
		}
		wg.Wait()
		call(t, c, "crm", "account.read", "", 1100*time.Millisecond) // over max_duration
		call(t, c, "crm", "account.update", agentvault.RiskLow, 0)   // under-declared, approved locally
		call(t, c, "crm", "account.merge", "", 0)                    // undeclared action: drift
		call(t, c, "hubspot", "contact.read", "", 0)                 // refused
		call(t, c, "hubspot", "contact.read", "", 0)
		call(t, c, "crm", "account.read", agentvault.RiskHigh, 0) // over-declared
	})
	code, out, stderr := arx(t, "manifest", "check", mf, "--records", dir, "--json")
	if code != 1 {
		t.Fatalf("check: exit %d, want 1\n%s%s", code, out, stderr)
	}
	var rep checkReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatal(err)
	}
	got := map[string]checkFinding{}
	for _, f := range rep.Findings {
		got[f.Kind+" "+f.Connector+" "+f.Action] = f
	}
	for key, want := range map[string]struct {
		severity string
		count    int
	}{
		"connector_not_declared hubspot ":         {"error", 2},
		"action_not_declared crm account.merge":   {"error", 1},
		"risk_underdeclared crm account.update":   {"error", 1},
		"call_duration_exceeded crm account.read": {"error", 1},
		"calls_per_day_exceeded  ":                {"error", 1},
		"max_concurrent_exceeded  ":               {"error", 1},
		"outside_active_hours  ":                  {"error", 6},
		"risk_overdeclared crm account.read":      {"note", 1},
		"action_unused crm account.export":        {"note", 0},
		"connector_unused db ":                    {"note", 0},
	} {
		f, ok := got[key]
		if !ok {
			t.Errorf("no finding %q in\n%s", key, out)
			continue
		}
		if f.Severity != want.severity || f.Count != want.count {
			t.Errorf("%s: %s x%d, want %s x%d (%s)", key, f.Severity, f.Count, want.severity, want.count, f.Message)
		}
		if want.count > 0 && (f.First == nil || f.First.Line < 1 || !strings.HasSuffix(f.First.File, "checked.jsonl")) {
			t.Errorf("%s: first occurrence %+v", key, f.First)
		}
	}
	if rep.Calls != 8 || rep.Agent != "checked" || rep.OK {
		t.Errorf("report: %d calls, agent %q, ok %t", rep.Calls, rep.Agent, rep.OK)
	}
	code, text, _ := arx(t, "manifest", "check", mf, "--records", dir)
	if code != 1 || !strings.Contains(text, "error  connector_not_declared  hubspot: 2 call(s)") || !strings.Contains(text, "first at ") ||
		!strings.Contains(text, "FINDINGS: 7 error(s), 3 note(s)") {
		t.Errorf("text report:\n%s", text)
	}

	// A clean workload passes; its unused actions are notes, which fail
	// only with --strict.
	mf, dir = localWorkload(t, arxtest.Manifest, func(c *agentvault.Client) {
		call(t, c, "crm", "account.read", "", 0)
	})
	if code, out, _ := arx(t, "manifest", "check", mf, "--records", dir); code != 0 || !strings.Contains(out, "OK: no errors") {
		t.Errorf("clean check: %d\n%s", code, out)
	}
	if code, _, _ := arx(t, "manifest", "check", mf, "--records", dir, "--strict"); code != 1 {
		t.Errorf("--strict with unused actions: exit %d, want 1", code)
	}
	t.Setenv("ARX_LOCAL_RECORD_DIR", dir)
	if code, _, _ := arx(t, "manifest", "check", mf); code != 0 {
		t.Errorf("check with ARX_LOCAL_RECORD_DIR: exit %d", code)
	}
	// Cannot run: exit 2.
	if code, _, stderr := arx(t, "manifest", "check", mf, "--records", filepath.Join(dir, "nope")); code != 2 || !strings.Contains(stderr, "arx: error:") {
		t.Errorf("missing records: %d %s", code, stderr)
	}
	if code, _, _ := arx(t, "manifest", "check", manifestFile(t, "kind: x\n"), "--records", dir); code != 2 {
		t.Errorf("invalid manifest: exit %d, want 2", code)
	}
}

func TestRecordImport(t *testing.T) {
	s := arxtest.Start(t)
	t.Setenv("ARX_SERVER", s.URL)
	t.Setenv("ARX_ADMIN_TOKEN", s.AdminToken)
	agentID, _ := s.Hire(arxtest.Manifest)

	_, dir := localWorkload(t, arxtest.Manifest, func(c *agentvault.Client) {
		call(t, c, "crm", "account.read", "", 0)
		call(t, c, "hubspot", "contact.read", "", 0)
	})
	file := filepath.Join(dir, "test-agent.jsonl")
	// Many more entries, so that the import takes several requests.
	var bulk []*record.Entry
	for i := range 1500 {
		bulk = append(bulk, &record.Entry{Agent: "local:test-agent", Type: "call.completed", Call: fmt.Sprintf("c%d", i), Connector: "crm",
			Action: "account.read", Risk: "low", Actor: "agent:local:test-agent", Time: time.Now(),
			Data: map[string]any{"outcome": "success", "error": "", "duration_ms": 1, "pad": strings.Repeat("x", 100)}})
	}
	if err := agentvault.AppendLocalRecord(file, bulk...); err != nil {
		t.Fatal(err)
	}
	code, out, stderr := arx(t, "record", "import", file, "--agent", "test-agent")
	if code != 0 || !strings.Contains(out, "1503 entries imported into the record of test-agent") {
		t.Fatalf("import: %d %s %s", code, out, stderr)
	}
	// Again: nothing new.
	code, out, _ = arx(t, "record", "import", dir, "--agent", agentID)
	if code != 0 || !strings.Contains(out, ": 0 entries imported") || !strings.Contains(out, "1503 imported before") {
		t.Fatalf("second import: %d %s", code, out)
	}
	// Appended to since: only the new entries.
	if err := agentvault.AppendLocalRecord(file, &record.Entry{Agent: "local:test-agent", Type: "call.requested", Time: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if code, out, _ = arx(t, "record", "import", file, "--agent", agentID); code != 0 || !strings.Contains(out, ": 1 entries imported") {
		t.Fatalf("import of a grown file: %d %s", code, out)
	}

	// The imported entries are the server's entries about the import; the
	// local entry is inside their data.
	var page struct {
		Entries []struct {
			Entry struct {
				Type  string `json:"type"`
				Actor string `json:"actor"`
				Agent string `json:"agent"`
				Data  struct {
					Source string `json:"source"`
					Leaf   string `json:"local_leaf_hash"`
					Entry  struct {
						Index int64  `json:"index"`
						Type  string `json:"type"`
						Agent string `json:"agent"`
					} `json:"entry"`
				} `json:"data"`
			} `json:"entry"`
		} `json:"entries"`
	}
	r := s.Do("GET", "/v1/agents/"+agentID+"/record?limit=10", s.AdminToken, nil)
	r.JSON(t, &page)
	first := page.Entries[1].Entry // after agent.hired
	lines, _ := os.ReadFile(file)
	line0 := strings.SplitN(string(lines), "\n", 2)[0]
	if first.Type != "record.imported" || first.Agent != agentID || !strings.HasPrefix(first.Actor, "admin:") ||
		first.Data.Source != "test-agent.jsonl" || first.Data.Entry.Index != 0 || first.Data.Entry.Type != "credential.issued" ||
		first.Data.Entry.Agent != "local:test-agent" || first.Data.Leaf != record.HashString(record.LeafHash([]byte(line0))) {
		t.Fatalf("first imported entry: %+v", first)
	}
	if err := s.Runtime.Checkpoint(t.Context()); err != nil {
		t.Fatal(err)
	}
	if code, out, _ := arx(t, "record", "verify", "--log-key", filepath.Join(s.DataDir, "log.pub")); code != 0 {
		t.Fatalf("log after imports does not verify: %s", out)
	}

	// A local record changed after its import is refused.
	changed := filepath.Join(t.TempDir(), "test-agent.jsonl")
	os.WriteFile(changed, lines, 0o644)
	edited := strings.Replace(string(lines), `"pad":"x`, `"pad":"y`, 1)
	os.WriteFile(changed, []byte(edited), 0o644)
	if code, _, stderr := arx(t, "record", "import", changed, "--agent", agentID); code != 1 || !strings.Contains(stderr, "does not verify") {
		t.Fatalf("import of a broken file: %d %s", code, stderr)
	}
	// A fork: the same chain, but another entry after the first three.
	fork := filepath.Join(t.TempDir(), "test-agent.jsonl")
	os.WriteFile(fork, []byte(strings.Join(strings.SplitAfter(string(lines), "\n")[:3], "")), 0o644)
	if err := agentvault.AppendLocalRecord(fork, &record.Entry{Agent: "local:test-agent", Type: "call.requested", Call: "other", Time: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if code, _, stderr := arx(t, "record", "import", fork, "--agent", agentID); code != 1 || !strings.Contains(stderr, "request.conflict") ||
		!strings.Contains(stderr, "local entry 3") {
		t.Fatalf("import of a fork: %d %s", code, stderr)
	}
	// The API refuses agents, gaps and a chain that does not match entry 0.
	ls := strings.Split(strings.TrimSpace(string(lines)), "\n")
	chain := record.HashString(record.LeafHash([]byte(ls[0])))
	_, agentToken := s.Hire(strings.Replace(arxtest.Manifest, "name: test-agent", "name: other-agent", 1))
	for _, tc := range []struct {
		token, chain string
		entries      []string
		want         string
	}{
		{agentToken, chain, ls[:1], "auth.forbidden"},
		{s.AdminToken, strings.Repeat("0", 64), ls[:1], "request.invalid"},
		{s.AdminToken, "short", ls[:1], "request.invalid"},
		{s.AdminToken, chain, []string{`{"not":"an entry"}`}, "request.invalid"},
	} {
		r := s.Do("POST", "/v1/agents/"+agentID+"/record/import", tc.token, map[string]any{"source": "x.jsonl", "chain": tc.chain, "entries": tc.entries})
		if r.ErrorCode() != tc.want {
			t.Errorf("import %s: %d %s, want %s", tc.entries[0][:20], r.Status, r.Body, tc.want)
		}
	}
	// A new chain must start at its first entry.
	newFile := filepath.Join(t.TempDir(), "test-agent.jsonl")
	for range 3 {
		agentvault.AppendLocalRecord(newFile, &record.Entry{Agent: "local:test-agent", Type: "call.requested", Time: time.Now()})
	}
	nl := strings.Split(strings.TrimSpace(string(must(os.ReadFile(newFile)))), "\n")
	r = s.Do("POST", "/v1/agents/"+agentID+"/record/import", s.AdminToken, map[string]any{"source": "test-agent.jsonl",
		"chain": record.HashString(record.LeafHash([]byte(nl[0]))), "entries": nl[1:]})
	if r.ErrorCode() != "request.invalid" || !strings.Contains(string(r.Body), "not imported yet") {
		t.Errorf("import from the middle of a new chain: %d %s", r.Status, r.Body)
	}

	// Records of another agent are refused.
	_, other := localWorkload(t, strings.Replace(arxtest.Manifest, "name: test-agent", "name: someone-else", 1), func(c *agentvault.Client) {
		call(t, c, "crm", "account.read", "", 0)
	})
	if code, _, stderr := arx(t, "record", "import", other, "--agent", agentID); code != 1 || !strings.Contains(stderr, "belongs to agent") {
		t.Fatalf("import of another agent's record: %d %s", code, stderr)
	}
	// A call made while ARX was unreachable, recorded under the agent's id.
	offline := filepath.Join(t.TempDir(), "offline")
	c, err := agentvault.New(agentvault.Config{Token: "arxa_x", BaseURL: "http://127.0.0.1:1/v1", AgentID: agentID, LocalRecordDir: offline})
	if err != nil {
		t.Fatal(err)
	}
	if err := call(t, c, "crm", "account.read", "", 0); !errors.Is(err, agentvault.ErrUnreachable) {
		t.Fatalf("unreachable: %v", err)
	}
	if code, out, stderr := arx(t, "record", "import", offline, "--agent", agentID); code != 0 || !strings.Contains(out, "1 entries imported") {
		t.Fatalf("import of an unreachable attempt: %d %s %s", code, out, stderr)
	}
	if code, _, stderr := arx(t, "record", "import", offline); code != 1 || !strings.Contains(stderr, "--agent") {
		t.Fatalf("import without --agent: %d %s", code, stderr)
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
