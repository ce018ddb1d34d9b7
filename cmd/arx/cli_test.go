package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/arxsec/arx/internal/arxtest"
	_ "modernc.org/sqlite"
)

// arx runs the CLI as a user types it and returns its exit status and output.
func arx(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(args, strings.NewReader(""), &out, &errb)
	return code, out.String(), errb.String()
}

func manifestFile(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "job_description.yaml")
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestManifestLint(t *testing.T) {
	good := filepath.Join("..", "..", "reference-agents", "sales-research", "manifests", "job_description.yaml")
	if code, out, _ := arx(t, "manifest", "lint", good); code != 0 || !strings.Contains(out, "valid") {
		t.Fatalf("lint of the canonical example: %d %s", code, out)
	}
	bad := manifestFile(t, strings.Replace(arxtest.Manifest, "risk: low}", "risk: lowish}", 1)+"extra: 1\n")
	code, out, _ := arx(t, "manifest", "lint", bad)
	if code != 1 {
		t.Fatalf("lint of a bad manifest exited %d", code)
	}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if !strings.HasPrefix(line, bad+":") {
			t.Errorf("line %q is not FILE:LINE: message", line)
		}
	}
	if !strings.Contains(out, ":10:") || !strings.Contains(out, "extra") {
		t.Errorf("lint did not name both problems:\n%s", out)
	}
	code, out, _ = arx(t, "manifest", "lint", "--json", bad)
	var rep struct {
		Valid    bool `json:"valid"`
		Problems []struct {
			Line int `json:"line"`
		} `json:"problems"`
	}
	if code != 1 || json.Unmarshal([]byte(out), &rep) != nil || rep.Valid || len(rep.Problems) < 2 {
		t.Fatalf("lint --json: %d %s", code, out)
	}
	if code, _, stderr := arx(t, "manifest", "lint", "/does/not/exist.yaml"); code != 1 || !strings.Contains(stderr, "arx: error:") {
		t.Fatalf("missing file: %d %s", code, stderr)
	}
}

func TestHireAgentsRecord(t *testing.T) {
	s := arxtest.Start(t)
	t.Setenv("ARX_SERVER", s.URL)
	t.Setenv("ARX_ADMIN_TOKEN", s.AdminToken)
	t.Setenv("COLUMNS", "") // whole lines, whatever the shell that runs the tests says

	code, out, stderr := arx(t, "hire", manifestFile(t, arxtest.Manifest))
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(lines) != 3 || !strings.HasPrefix(lines[2], "export ARX_BASE_URL=http") || !strings.HasPrefix(lines[0], "export ARX_AGENT_ID=") || !strings.HasPrefix(lines[1], "export ARX_TOKEN=arxa_") {
		t.Fatalf("hire: %d %q %s", code, out, stderr)
	}
	agentID := strings.TrimPrefix(lines[0], "export ARX_AGENT_ID=")
	token := strings.TrimPrefix(lines[1], "export ARX_TOKEN=")

	if code, out, _ := arx(t, "agents"); code != 0 || !strings.Contains(out, agentID) || !strings.Contains(out, "test-agent") {
		t.Fatalf("agents: %d %s", code, out)
	} else {
		header(t, out, "ID", "NAME", "OWNER", "STATUS", "HIRED")
	}
	// The name is on staff: a second hire is refused, with the way out.
	if code, _, stderr := arx(t, "hire", manifestFile(t, arxtest.Manifest)); code != 1 || !strings.Contains(stderr, "agent.name_taken") || !strings.Contains(stderr, "--replace") {
		t.Fatalf("second hire of test-agent: %d %s", code, stderr)
	}
	// Two calls and a refusal, then show and verify.
	for _, conn := range []string{"crm", "crm", "hubspot"} {
		s.Do("POST", "/v1/calls", token, map[string]string{"connector": conn, "action": "account.read", "idempotency_key": conn + "-" + t.Name() + string(rune('a'+len(conn)))})
	}
	s.Do("POST", "/v1/calls", token, map[string]string{"connector": "crm", "action": "account.read", "idempotency_key": "second"})
	code, out, _ = arx(t, "record", "show", "test-agent")
	if code != 0 || !strings.Contains(out, "credential.refused") || !strings.Contains(out, "credential.issued") {
		t.Fatalf("record show: %d %s", code, out)
	}
	header(t, out, "INDEX", "TIME", "TYPE", "CONNECTOR", "ACTION", "RISK", "ACTOR", "DETAILS")
	// On a terminal of 80 columns, lines are cut to fit; --wide keeps them.
	t.Setenv("COLUMNS", "80")
	_, out, _ = arx(t, "record", "show", "test-agent")
	cut := false
	for _, l := range strings.Split(out, "\n") {
		if n := utf8.RuneCountInString(l); n > 80 {
			t.Errorf("a line of %d characters on an 80-column terminal: %q", n, l)
		}
		cut = cut || strings.HasSuffix(l, "…")
	}
	_, wideOut, _ := arx(t, "record", "show", "test-agent", "--wide")
	if !cut || !strings.Contains(wideOut, "idempotency_key=") {
		t.Errorf("record show cut nothing, or --wide cut too:\n%s\n%s", out, wideOut)
	}
	t.Setenv("COLUMNS", "")
	if err := s.Runtime.Checkpoint(t.Context()); err != nil {
		t.Fatal(err)
	}
	logKey := filepath.Join(s.DataDir, "log.pub")
	if code, out, _ := arx(t, "record", "verify", "--log-key", logKey); code != 0 || !strings.Contains(out, "OK:") {
		t.Fatalf("verify of an untouched log: %d %s", code, out)
	}
	// Without a token the verbs say what to do.
	t.Setenv("ARX_ADMIN_TOKEN", "")
	if code, _, stderr := arx(t, "agents"); code != 1 || !strings.Contains(stderr, "arx: hint:") {
		t.Fatalf("no token: %d %s", code, stderr)
	}
}

// TestRecordVerifyCatchesTampering puts a server that lies between the CLI
// and the record: it edits, deletes, reorders or truncates the entries it
// hands out. verify must fail and say how.
func TestRecordVerifyCatchesTampering(t *testing.T) {
	for _, tc := range []struct {
		name, want string
		tamper     func(es []json.RawMessage) []json.RawMessage
	}{
		{"edited", "chain_broken", func(es []json.RawMessage) []json.RawMessage {
			var e map[string]any
			json.Unmarshal(es[3], &e)
			data, _ := base64.StdEncoding.DecodeString(e["data"].(string))
			e["data"] = bytes.Replace(data, []byte("account.read"), []byte("account.wipe"), 1)
			es[3], _ = json.Marshal(e)
			return es
		}},
		{"deleted", "missing", func(es []json.RawMessage) []json.RawMessage { return append(es[:4:4], es[5:]...) }},
		{"reordered", "out_of_order", func(es []json.RawMessage) []json.RawMessage {
			es[3], es[5] = es[5], es[3]
			return es
		}},
		{"truncated", "truncated", func(es []json.RawMessage) []json.RawMessage { return es[:6] }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := arxtest.Start(t)
			_, token := s.Hire(arxtest.Manifest)
			for _, k := range []string{"a", "b", "c"} {
				var c struct {
					ID string `json:"id"`
				}
				s.Do("POST", "/v1/calls", token, map[string]string{"connector": "crm", "action": "account.read", "idempotency_key": k}).JSON(t, &c)
				s.Do("POST", "/v1/calls/"+c.ID+"/complete", token, map[string]string{"outcome": "success"})
			}
			if err := s.Runtime.Checkpoint(t.Context()); err != nil {
				t.Fatal(err)
			}
			liar := lyingServer(t, s.URL, tc.tamper)
			code, out, _ := arx(t, "record", "verify", "--server", liar, "--token", s.AdminToken, "--log-key", filepath.Join(s.DataDir, "log.pub"), "--json")
			if code != 1 || !strings.Contains(out, tc.want) {
				t.Fatalf("verify after %s: exit %d, want 1 naming %s:\n%s", tc.name, code, tc.want, out)
			}
		})
	}
}

// b64 is how an entry's bytes appear in the API's JSON (standard base64)
// when s starts at a multiple of three bytes: good enough to find a
// same-length replacement that decodes to an edited entry.
func b64(s string) string {
	return strings.TrimRight(base64.StdEncoding.EncodeToString([]byte(s)), "=")
}

// lyingServer forwards to the real server, but hands out the log's entries
// (all of them, asked for from entry 0) as tamper changes them.
func lyingServer(t *testing.T, real string, tamper func([]json.RawMessage) []json.RawMessage) string {
	t.Helper()
	ls := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		req, _ := http.NewRequestWithContext(r.Context(), r.Method, real+r.URL.RequestURI(), r.Body)
		req.Header = r.Header.Clone()
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if r.URL.Path == "/v1/log/entries" && r.URL.Query().Get("start") == "0" {
			var page struct {
				Entries []json.RawMessage `json:"entries"`
			}
			if err := json.Unmarshal(body, &page); err == nil {
				page.Entries = tamper(page.Entries)
				body, _ = json.Marshal(page)
			}
		} else if r.URL.Path == "/v1/log/entries" {
			body = []byte(`{"entries":[]}`) // no second page: the first was all of it
		}
		w.Header().Set("Content-Type", resp.Header.Get("Content-Type"))
		w.WriteHeader(resp.StatusCode)
		w.Write(body)
	}))
	t.Cleanup(ls.Close)
	return ls.URL
}

func TestRunGivesTheAgentItsOwnToken(t *testing.T) {
	s := arxtest.Start(t)
	agentID, _ := s.Hire(arxtest.Manifest)
	dir := t.TempDir()
	envFile := filepath.Join(dir, "env")
	code, _, stderr := arx(t, "run", "--server", s.URL, "--token", s.AdminToken, "test-agent", "--",
		"sh", "-c", `echo "$ARX_AGENT_ID $ARX_BASE_URL $ARX_TOKEN ${ARX_ADMIN_TOKEN:-none}" > `+envFile+`; exit 3`)
	if code != 3 {
		t.Fatalf("run: exit %d, want the child's 3: %s", code, stderr)
	}
	b, _ := os.ReadFile(envFile)
	f := strings.Fields(string(b))
	if len(f) != 4 || f[0] != agentID || f[1] != s.URL+"/v1" || !strings.HasPrefix(f[2], "arxa_") || f[3] != "none" {
		t.Fatalf("child environment: %q", b)
	}
	// The run token died with the process.
	r := s.Do("POST", "/v1/calls", f[2], map[string]string{"connector": "crm", "action": "account.read", "idempotency_key": "x"})
	if r.ErrorCode() != "auth.invalid_token" {
		t.Fatalf("run token after exit: %d %s", r.Status, r.Body)
	}
}

func TestDevOnce(t *testing.T) {
	code, out, stderr := arx(t, "dev", "--once", "--listen", "127.0.0.1:0", "--data", t.TempDir())
	if code != 0 {
		t.Fatalf("arx dev: %d\n%s\n%s", code, out, stderr)
	}
	for _, want := range []string{"Hired sales-research", "7 governed calls (1 outside the role, recorded as drift), 1 refusal recorded, 0 failures",
		"credential.refused", "drift.detected", "rule=undeclared_action", "OK: ", "arx record verify",
		// Published to the bucket directory, cosigned by the local witness,
		// and verified from the bucket as an auditor would.
		"arx audit verify --bucket file://", "witnesses   1 cosigned, 1 required: arx-dev.localhost/witness", "they hash to the published tiles and the signed root"} {
		if !strings.Contains(out, want) {
			t.Errorf("arx dev output lacks %q:\n%s", want, out)
		}
	}
	// The demo's drift is what the agent does, not the hour it runs at.
	if strings.Contains(out, "off_hours") {
		t.Errorf("arx dev shows drift by the time of day:\n%s", out)
	}
	header(t, out, "INDEX", "TIME", "TYPE", "CONNECTOR")
}

// header checks that out has a table whose header line starts with the
// given columns, separated by spaces as the tabwriter aligns them.
func header(t *testing.T, out string, cols ...string) {
	t.Helper()
	for l := range strings.Lines(out) {
		if f := strings.Fields(l); len(f) >= len(cols) && slices.Equal(f[:len(cols)], cols) {
			return
		}
	}
	t.Errorf("no table header %v in:\n%s", cols, out)
}

// TestDevRemovesItsDirectory: without --data, arx dev works in a throwaway
// directory (keys, admin token) and removes it when it ends.
func TestDevRemovesItsDirectory(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	code, out, stderr := arx(t, "dev", "--once", "--listen", "127.0.0.1:0")
	if code != 0 || !strings.Contains(stderr, "arx dev: removed "+tmp) {
		t.Fatalf("arx dev: %d\n%s\n%s", code, out, stderr)
	}
	if left, _ := filepath.Glob(filepath.Join(tmp, "arx-dev-*")); len(left) != 0 {
		t.Fatalf("arx dev left %v", left)
	}
}

// TestServeRefusesBadSettings: arx serve refuses settings it cannot run
// with before it opens anything, and does not echo a webhook's URL (its
// credential).
func TestServeRefusesBadSettings(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--db-busy-timeout", "0s"}, "--db-busy-timeout must be positive"},
		{[]string{"--db-read-timeout", "-1s"}, "--db-read-timeout must be positive"},
		{[]string{"--db-write-timeout", "0"}, "--db-write-timeout must be positive"},
		{[]string{"--slack-webhook", "hooks.slack.example/T000/B000/s3cr3tpart"}, "is not an http(s) URL"},
	} {
		dir := t.TempDir()
		code, _, errOut := arx(t, append([]string{"serve", "--data", dir, "--listen", "127.0.0.1:0"}, c.args...)...)
		if code == 0 || !strings.Contains(errOut, c.want) {
			t.Errorf("arx serve %v: exit %d, %q; want %q", c.args, code, errOut, c.want)
		}
		if strings.Contains(errOut, "s3cr3tpart") {
			t.Errorf("arx serve %v echoed the webhook URL: %q", c.args, errOut)
		}
		if entries, _ := os.ReadDir(dir); len(entries) != 0 {
			t.Errorf("arx serve %v wrote to the data directory before refusing", c.args)
		}
	}
}

// TestAgentTextIsInert: an agent writes a summary and arguments built to
// rewrite the approver's terminal (clear the line, pose as another action
// and risk, reverse text, hide text, set the window title). arx approvals
// and arx record show print them escaped and visible; their JSON keeps them
// exact.
func TestAgentTextIsInert(t *testing.T) {
	s := arxtest.Start(t)
	_, token := s.Hire(arxtest.Manifest)
	boss := s.AddPerson("boss@example.com", "manager", "correct horse battery")
	t.Setenv("ARX_SERVER", s.URL)

	hostile := "wipe every account\r\x1b[2K\x1b[1A\nrisk       low\x1b]0;title\x07 \u202egnp.exe\u200b\u009b2J\b\x7f\u2028end"
	// Its arguments hold it too: JSON leaves DEL, C1 controls and
	// bidirectional overrides as they are.
	r := s.Do("POST", "/v1/calls", token, map[string]any{"connector": "crm", "action": "account.delete",
		"idempotency_key": "hostile-1", "summary": hostile, "args": map[string]string{"note": hostile}})
	if r.Status != http.StatusAccepted {
		t.Fatalf("the hostile call: %d %s", r.Status, r.Body)
	}
	var call struct {
		ID string `json:"id"`
	}
	r.JSON(t, &call)

	active := func(out string) string {
		for _, r := range out {
			switch {
			case r == '\n': // the CLI's own lines
			case r < 0x20, r == 0x7f, r >= 0x80 && r <= 0x9f, r == 0x202e, r == 0x200b, r == 0x2028:
				return fmt.Sprintf("%U", r)
			}
		}
		return ""
	}
	t.Setenv("ARX_ADMIN_TOKEN", boss)
	for _, args := range [][]string{
		{"approvals", "list"},
		{"approvals", "show", call.ID},
		{"record", "show", "test-agent"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			if args[0] == "record" {
				t.Setenv("ARX_ADMIN_TOKEN", s.AdminToken)
			}
			code, out, stderr := arx(t, args...)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, stderr)
			}
			if r := active(out); r != "" {
				t.Errorf("the output holds %s, raw:\n%q", r, out)
			}
			if args[0] != "record" && !strings.Contains(out, `wipe every account\r\x1b[2K\x1b[1A\nrisk       low\x1b]0;title\x07 \u202egnp.exe\u200b\u009b2J\x08\x7f\u2028end`) {
				t.Errorf("the summary is not shown escaped:\n%s", out)
			}
			for _, line := range strings.Split(out, "\n") {
				if strings.HasPrefix(strings.TrimSpace(line), "risk       low") {
					t.Errorf("the summary posed as a line of its own: %q", line)
				}
			}
		})
	}
	// JSON output stays exact.
	code, out, _ := arx(t, "approvals", "show", "--json", call.ID)
	var a struct {
		Call struct {
			Summary string `json:"summary"`
		} `json:"call"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &a) != nil || a.Call.Summary != hostile {
		t.Errorf("approvals show --json: %d, summary %q", code, a.Call.Summary)
	}
}

// TestRunGivesLittleAndStopsOnTermination: arx run hands the agent only the
// environment it needs (not the operator's token or a connector's secret
// from the shell), and stops its whole process group, one that ignores
// SIGTERM included, when the agent is terminated; the record says so.
func TestRunGivesLittleAndStopsOnTermination(t *testing.T) {
	s := arxtest.Start(t)
	id, _ := s.Hire(arxtest.Manifest)
	t.Setenv("ARX_SERVER", s.URL)
	t.Setenv("ARX_ADMIN_TOKEN", s.AdminToken)
	t.Setenv("CRM_KEY", "crm-secret-from-the-operators-shell")
	t.Setenv("HTTPS_PROXY", "http://proxy.example:3128")
	t.Chdir(t.TempDir())
	envFile := filepath.Join(t.TempDir(), "env")
	type result struct {
		code           int
		stdout, stderr string
	}
	done := make(chan result, 1)
	go func() {
		code, out, errs := arx(t, "run", "--grace", "300ms", "--env", "HTTPS_PROXY", "test-agent", "--",
			"/bin/sh", "-c", "env > "+envFile+"; trap '' TERM; sleep 60 & wait; wait")
		done <- result{code, out, errs}
	}()
	var env string
	for deadline := time.Now().Add(10 * time.Second); env == "" && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		b, _ := os.ReadFile(envFile)
		if bytes.HasSuffix(b, []byte("\n")) {
			env = string(b)
		}
	}
	for _, want := range []string{"ARX_TOKEN=arxa_", "ARX_AGENT_ID=" + id, "ARX_BASE_URL=" + s.URL + "/v1", "PATH=", "HTTPS_PROXY=http://proxy.example:3128"} {
		if !strings.Contains(env, want) {
			t.Errorf("the agent's environment lacks %q:\n%s", want, env)
		}
	}
	for _, never := range []string{"ARX_ADMIN_TOKEN", s.AdminToken, "CRM_KEY", "crm-secret"} {
		if strings.Contains(env, never) {
			t.Errorf("the agent's environment holds %q", never)
		}
	}
	start := time.Now()
	if r := s.Do("POST", "/v1/agents/"+id+"/terminate", s.AdminToken, map[string]string{"reason": "stop it"}); r.Status != http.StatusOK {
		t.Fatalf("terminate: %d %s", r.Status, r.Body)
	}
	var res result
	select {
	case res = <-done:
	case <-time.After(15 * time.Second):
		t.Fatal("arx run went on after the termination")
	}
	t.Logf("processes gone %v after the termination", time.Since(start).Round(time.Millisecond))
	if res.code != 1 || !strings.Contains(res.stderr, "its processes were stopped (SIGKILL") {
		t.Errorf("arx run: exit %d, stderr %s", res.code, res.stderr)
	}
	code, out, _ := arx(t, "record", "show", "--json", "test-agent")
	if code != 0 || !strings.Contains(out, `"type":"agent.process_stopped"`) || !strings.Contains(out, `"signal":"SIGKILL"`) {
		t.Errorf("the record does not say the processes were stopped:\n%s", out)
	}
}

// TestManagerFromTheCLI: a manager logged in with a personal token lists the
// agents they are responsible for (and only those), reviews one and
// terminates it by name, as the console lets them.
func TestManagerFromTheCLI(t *testing.T) {
	s := arxtest.Start(t)
	id, token := s.Hire(arxtest.Manifest) // approvers: [boss@example.com]
	// A call, and one outside the role (drift), for the review's tables.
	s.Do("POST", "/v1/calls", token, map[string]string{"connector": "crm", "action": "account.read", "idempotency_key": "a"})
	s.Do("POST", "/v1/calls", token, map[string]string{"connector": "crm", "action": "account.merge", "idempotency_key": "b"})
	otherID, _ := s.Hire(strings.NewReplacer("name: test-agent", "name: not-bosss", "boss@example.com", "other@example.com").Replace(arxtest.Manifest))
	boss := s.AddPerson("boss@example.com", "manager", "correct horse battery staple")
	t.Setenv("ARX_SERVER", s.URL)
	t.Setenv("ARX_ADMIN_TOKEN", boss)

	code, out, stderr := arx(t, "agents")
	if code != 0 || !strings.Contains(out, id) || strings.Contains(out, otherID) {
		t.Fatalf("agents as the manager: %d\n%s%s", code, out, stderr)
	}
	code, out, stderr = arx(t, "agents", "review", "test-agent")
	if code != 0 || !strings.Contains(out, "test-agent") {
		t.Fatalf("review as the manager: %d\n%s%s", code, out, stderr)
	}
	header(t, out, "CONNECTOR", "ACTION", "CALLS", "FAILED", "REFUSED")
	header(t, out, "INDEX", "TIME", "RULE", "CALL", "FACTS", "ACKNOWLEDGED")
	if code, _, stderr := arx(t, "agents", "review", otherID); code == 0 || !strings.Contains(stderr, "no agent") {
		t.Fatalf("review of an agent the manager is not responsible for: %d %s", code, stderr)
	}
	if code, out, stderr := arx(t, "agents", "ack", "test-agent", "--all", "--note", "seen"); code != 0 || !strings.Contains(out, "acknowledged 1 drift event of test-agent") {
		t.Fatalf("ack --all as the manager: %d\n%s%s", code, out, stderr)
	}
	if code, _, stderr := arx(t, "agents", "ack", "test-agent", "--note", "seen"); code == 0 || !strings.Contains(stderr, "--all") {
		t.Fatalf("ack without an index or --all: %d %s", code, stderr)
	}
	// The test server has no webhook: the CLI says the owner is not told.
	if code, out, stderr := arx(t, "terminate", "test-agent", "--reason", "done"); code != 0 ||
		!strings.Contains(out, "not told: owner@example.com (this server has no webhook") {
		t.Fatalf("terminate as the manager: %d\n%s%s", code, out, stderr)
	}
	if r := s.Do("GET", "/v1/agents/"+id, s.AdminToken, nil); !strings.Contains(string(r.Body), `"terminated"`) {
		t.Fatalf("after the manager's termination: %s", r.Body)
	}
}

// TestHelpShowsNoSecret: settings that carry credentials are read from the
// environment when the command runs, never as flag defaults, which --help
// prints.
func TestHelpShowsNoSecret(t *testing.T) {
	t.Setenv("ARX_DATABASE", "postgres://arx:S3CRET-DB@db/arx")
	t.Setenv("ARX_DEV_POSTGRES", "postgres://arx:S3CRET-DEV@db/arx")
	t.Setenv("ARX_WEBHOOKS", "https://hooks.example.com/S3CRET-HOOK")
	t.Setenv("ARX_SLACK_WEBHOOKS", "https://hooks.slack.com/services/S3CRET-SLACK")
	for _, verb := range []string{"serve", "dev"} {
		var out, errb bytes.Buffer
		if code := run([]string{verb, "--help"}, nil, &out, &errb); code != 0 {
			t.Fatalf("%s --help: exit %d: %s", verb, code, errb.String())
		}
		if strings.Contains(out.String()+errb.String(), "S3CRET") {
			t.Errorf("arx %s --help shows a secret from the environment:\n%s", verb, out.String())
		}
	}
}
