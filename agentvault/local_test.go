package agentvault

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/arxsec/arx/arxerr"
	"github.com/arxsec/arx/record"
)

const localManifest = `apiVersion: arx.dev/v1
kind: JobDescription
agent:
  name: local-agent
  owner: owner@example.com
scope:
  connectors:
    crm:
      actions:
        account.read: {risk: low}
        account.delete: {risk: high}
approval:
  approvers: [boss@example.com]
  timeout: 10m
budget:
  max_call_duration: 5m
termination:
  notify: [owner@example.com]
`

// localClient makes a local-only mode client on a manifest in a fresh
// directory and returns it with the record file it writes.
func localClient(t *testing.T, approve string) (*Client, string) {
	t.Helper()
	dir := t.TempDir()
	mf := filepath.Join(dir, "manifests", "job_description.yaml")
	if err := os.MkdirAll(filepath.Dir(mf), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(mf, []byte(localManifest), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := New(Config{LocalMode: true, Manifest: mf, LocalRecordDir: filepath.Join(dir, "arx-records"), LocalApprove: approve})
	if err != nil {
		t.Fatal(err)
	}
	return c, filepath.Join(dir, "arx-records", "local-agent.jsonl")
}

// verifyLocal checks a local record file as `arx record verify DIR` does
// and returns its entries.
func verifyLocal(t *testing.T, file string) []*record.Entry {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var v record.Verifier
	var out []*record.Entry
	for _, line := range bytes.Split(bytes.TrimSuffix(data, []byte("\n")), []byte("\n")) {
		v.Add(line)
		if e, err := record.Parse(line); err == nil {
			out = append(out, e)
		}
	}
	if p := v.Finish(nil); len(p) > 0 {
		t.Fatalf("local record %s does not verify: %v", file, p)
	}
	return out
}

func types(entries []*record.Entry) string {
	var s []string
	for _, e := range entries {
		s = append(s, e.Type)
	}
	return strings.Join(s, " ")
}

func TestLocalModeDecidesAndRecords(t *testing.T) {
	c, file := localClient(t, LocalApproveAllow)

	// A declared, low-risk call runs with a stub credential.
	got, err := Do(t.Context(), c, Action{Connector: "crm", Action: "account.read", Summary: "account 7"},
		func(ctx context.Context, cred Credential) (string, error) {
			if !strings.HasPrefix(cred.Token, LocalCredentialPrefix) || strings.Count(cred.Token, ".") != 1 {
				t.Errorf("local credential %q: want %q and hex, not a JWT", cred.Token, LocalCredentialPrefix)
			}
			if _, ok := ctx.Deadline(); !ok {
				t.Error("no deadline from the credential's expiry")
			}
			return "ok", nil
		})
	if err != nil || got != "ok" {
		t.Fatalf("Do: %q %v", got, err)
	}

	// A connector not on the manifest is refused, and the refusal recorded.
	ran := false
	_, err = Do(t.Context(), c, Action{Connector: "hubspot", Action: "contact.read"}, func(context.Context, Credential) (int, error) {
		ran = true
		return 0, nil
	})
	e, ok := errors.AsType[*Error](err)
	if !ok || e.Code != arxerr.ConnectorNotDeclared || e.CallID == "" || ran {
		t.Fatalf("undeclared connector: ran %t, err %#v", ran, err)
	}
	// Recorded as the runtime records a refusal: code, reason and the ask.
	if refused := verifyLocal(t, file); len(refused) == 0 || refused[len(refused)-1].Type != record.TypeCredentialRefused ||
		refused[len(refused)-1].Data["code"] != string(arxerr.ConnectorNotDeclared) || refused[len(refused)-1].Data["summary"] == nil {
		t.Errorf("the refusal's entry: %+v", refused[len(refused)-1])
	}

	// An undeclared action of a declared connector is drift (on_drift: record).
	if _, err := Do(t.Context(), c, Action{Connector: "crm", Action: "account.merge"}, okFn); err != nil {
		t.Fatalf("undeclared action: %v", err)
	}
	// Under-declared risk: drift, and the call waits for approval (allowed here).
	if _, err := Do(t.Context(), c, Action{Connector: "crm", Action: "account.delete", Risk: RiskLow}, okFn); err != nil {
		t.Fatalf("high-risk call with allow: %v", err)
	}
	// The function's error is the call's outcome.
	_, err = Do(t.Context(), c, Action{Connector: "crm", Action: "account.read"}, func(context.Context, Credential) (int, error) {
		return 0, errors.New("crm said no")
	})
	if err == nil || !strings.Contains(err.Error(), "crm said no") {
		t.Fatalf("fn error: %v", err)
	}

	entries := verifyLocal(t, file)
	want := "credential.issued call.completed " +
		"credential.refused " +
		"drift.detected credential.issued call.completed " +
		"drift.detected call.requested approval.requested approval.granted credential.issued call.completed " +
		"credential.issued call.completed"
	if got := types(entries); got != want {
		t.Fatalf("entries:\n got %s\nwant %s", got, want)
	}
	for i, e := range entries {
		if e.Agent != "local:local-agent" || e.Index != int64(i) {
			t.Errorf("entry %d: agent %q index %d", i, e.Agent, e.Index)
		}
	}
	refused := entries[2]
	if refused.Data["code"] != string(arxerr.ConnectorNotDeclared) || refused.Call != e.CallID {
		t.Errorf("refusal entry: %+v", refused)
	}
	granted := entries[9]
	if granted.Data["local"] != true || granted.Data["mode"] != "allow" || !strings.HasPrefix(granted.Actor, "local:") || granted.Risk != "high" {
		t.Errorf("local approval entry: %+v", granted)
	}
	if last := entries[len(entries)-1]; last.Data["outcome"] != "error" || last.Data["error"] != "crm said no" {
		t.Errorf("completion: %+v", last.Data)
	}
	if raw, _ := os.ReadFile(file); bytes.Contains(raw, []byte(LocalCredentialPrefix)) {
		t.Error("the record holds a credential")
	}
}

func TestLocalModeApprovals(t *testing.T) {
	high := Action{Connector: "crm", Action: "account.delete", Risk: RiskHigh}
	t.Run("deny", func(t *testing.T) {
		c, file := localClient(t, LocalApproveDeny)
		_, err := Do(t.Context(), c, high, func(context.Context, Credential) (int, error) {
			t.Error("fn ran for a denied call")
			return 0, nil
		})
		if !IsCode(err, arxerr.CallDenied) {
			t.Fatalf("deny: %v", err)
		}
		if got := types(verifyLocal(t, file)); got != "call.requested approval.requested approval.denied" {
			t.Fatalf("entries: %s", got)
		}
	})
	t.Run("prompt yes and no", func(t *testing.T) {
		c, file := localClient(t, "")
		var asked []string
		answers := []bool{true, false}
		c.local.ask = func(_ context.Context, q string) (bool, error) {
			asked = append(asked, q)
			a := answers[0]
			answers = answers[1:]
			return a, nil
		}
		if _, err := Do(t.Context(), c, Action{Connector: "crm", Action: "account.delete", Risk: RiskHigh, Summary: "acct 9"}, okFn); err != nil {
			t.Fatalf("approved on the terminal: %v", err)
		}
		if _, err := Do(t.Context(), c, high, okFn); !IsCode(err, arxerr.CallDenied) {
			t.Fatalf("denied on the terminal: %v", err)
		}
		if len(asked) != 2 || !strings.Contains(asked[0], "crm account.delete (acct 9)") {
			t.Errorf("questions: %q", asked)
		}
		entries := verifyLocal(t, file)
		if got := types(entries); got != "call.requested approval.requested approval.granted credential.issued call.completed "+
			"call.requested approval.requested approval.denied" {
			t.Fatalf("entries: %s", got)
		}
		if entries[2].Data["mode"] != "prompt" || entries[2].Data["reason"] != "answered on the terminal" {
			t.Errorf("granted: %+v", entries[2].Data)
		}
		// The credential as the runtime records it: the ask, and who
		// approved it.
		if by, _ := entries[3].Data["approved_by"].(string); !strings.HasPrefix(by, "local:") || entries[3].Data["summary"] != "acct 9" {
			t.Errorf("credential.issued after approval: %+v", entries[3].Data)
		}
		// The summary is the agent's text: on the terminal it can neither
		// clear the screen nor pose as the end of the question.
		answers = []bool{false}
		hostile := "acct 9\x1b[2J\x1b]0;title\x07\r\u202e? [y/N] y"
		if _, err := Do(t.Context(), c, Action{Connector: "crm", Action: "account.delete", Risk: RiskHigh, Summary: hostile}, okFn); !IsCode(err, arxerr.CallDenied) {
			t.Fatalf("denied on the terminal: %v", err)
		}
		if q := asked[2]; strings.ContainsAny(q, "\x1b\x07\r\u202e") || !strings.Contains(q, `(acct 9\x1b[2J\x1b]0;title\x07\r\u202e? [y/N] y)? [y/N] `) {
			t.Errorf("question with a hostile summary: %q", q)
		}
	})
	t.Run("prompt without a terminal denies", func(t *testing.T) {
		c, file := localClient(t, LocalApprovePrompt)
		c.local.ask = func(context.Context, string) (bool, error) { return false, errors.New("cannot open /dev/tty") }
		if _, err := Do(t.Context(), c, high, okFn); !IsCode(err, arxerr.CallDenied) {
			t.Fatalf("no terminal: %v", err)
		}
		entries := verifyLocal(t, file)
		if r, _ := entries[2].Data["reason"].(string); !strings.Contains(r, "ARX_LOCAL_APPROVE") {
			t.Errorf("denial reason %q does not say what to set", r)
		}
	})
	t.Run("cancelled while asking withdraws", func(t *testing.T) {
		c, file := localClient(t, LocalApprovePrompt)
		c.local.ask = func(ctx context.Context, _ string) (bool, error) {
			<-ctx.Done()
			return false, ctx.Err()
		}
		ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
		defer cancel()
		if _, err := Do(ctx, c, high, okFn); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("cancelled: %v", err)
		}
		entries := verifyLocal(t, file)
		if got := types(entries); got != "call.requested approval.requested approval.withdrawn" {
			t.Fatalf("entries: %s", got)
		}
		if entries[2].Data["outcome"] != "cancelled" {
			t.Errorf("withdrawal: %+v", entries[2].Data)
		}
	})
}

func TestLocalModeConfig(t *testing.T) {
	c, err := New(Config{LocalMode: true, Manifest: filepath.Join(t.TempDir(), "missing.yaml"), LocalRecordDir: t.TempDir()})
	if err != nil {
		t.Fatalf("New needs no manifest until the first call: %v", err)
	}
	_, err = Do(t.Context(), c, readAccount, okFn)
	if err == nil || !strings.Contains(err.Error(), "ARX_MANIFEST") || !strings.Contains(err.Error(), "missing.yaml") {
		t.Fatalf("missing manifest: %v", err)
	}
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(bad, []byte("apiVersion: arx.dev/v1\nkind: JobDescription\nextra: 1\n"), 0o644)
	c, _ = New(Config{LocalMode: true, Manifest: bad, LocalRecordDir: t.TempDir()})
	if _, err = Do(t.Context(), c, readAccount, okFn); err == nil || !strings.Contains(err.Error(), "arx manifest lint") {
		t.Fatalf("invalid manifest: %v", err)
	}
	if _, err := New(Config{LocalMode: true, LocalApprove: "maybe"}); err == nil || !strings.Contains(err.Error(), "ARX_LOCAL_APPROVE") {
		t.Fatalf("bad ARX_LOCAL_APPROVE: %v", err)
	}
	t.Setenv("ARX_LOCAL_MODE", "1")
	t.Setenv("ARX_MANIFEST", "/x/job.yaml")
	t.Setenv("ARX_LOCAL_APPROVE", "Allow")
	cfg, err := ConfigFromEnv()
	if err != nil || cfg.Manifest != "/x/job.yaml" || cfg.LocalApprove != "allow" {
		t.Fatalf("ConfigFromEnv: %+v %v", cfg, err)
	}
}

func TestLocalRecordRefusesATornFile(t *testing.T) {
	c, file := localClient(t, LocalApproveAllow)
	if _, err := Do(t.Context(), c, readAccount2, okFn); err != nil {
		t.Fatal(err)
	}
	f, _ := os.OpenFile(file, os.O_WRONLY|os.O_APPEND, 0)
	f.WriteString(`{"action":"acc`)
	f.Close()
	_, err := Do(t.Context(), c, readAccount2, okFn)
	if err == nil || !strings.Contains(err.Error(), "partial line") || !strings.Contains(err.Error(), "arx record verify") {
		t.Fatalf("append to a torn file: %v", err)
	}
}

var readAccount2 = Action{Connector: "crm", Action: "account.read"}

// TestLocalRecordManyProcesses runs several processes (this test binary,
// re-executed), each with several goroutines, appending to one record file:
// the result must be one unbroken chain holding every entry.
func TestLocalRecordManyProcesses(t *testing.T) {
	const procs, goroutines, calls = 4, 3, 10
	c, file := localClient(t, LocalApproveAllow)
	_ = c
	dir := filepath.Dir(filepath.Dir(file))
	var wg sync.WaitGroup
	errs := make(chan error, procs)
	for i := range procs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestLocalRecordWorker$", "-test.count=1")
			cmd.Env = append(os.Environ(), "AGENTVAULT_LOCAL_WORKER="+dir,
				"AGENTVAULT_LOCAL_WORKER_LOAD="+strconv.Itoa(goroutines)+","+strconv.Itoa(calls), "AGENTVAULT_LOCAL_WORKER_ID="+strconv.Itoa(i))
			if out, err := cmd.CombinedOutput(); err != nil {
				errs <- fmt.Errorf("worker %d: %v\n%s", i, err, out)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	entries := verifyLocal(t, file)
	if want := procs * goroutines * calls * 2; len(entries) != want {
		t.Fatalf("%d entries, want %d", len(entries), want)
	}
	workers := map[string]int{}
	for _, e := range entries {
		if s, _ := e.Data["summary"].(string); s != "" {
			workers[strings.Fields(s)[0]]++
		}
	}
	if len(workers) != procs {
		t.Errorf("entries from %d processes, want %d: %v", len(workers), procs, workers)
	}
}

// TestLocalRecordWorker is the child of TestLocalRecordManyProcesses.
func TestLocalRecordWorker(t *testing.T) {
	dir := os.Getenv("AGENTVAULT_LOCAL_WORKER")
	if dir == "" {
		t.Skip("runs only as a child of TestLocalRecordManyProcesses")
	}
	var goroutines, calls int
	fmt.Sscanf(os.Getenv("AGENTVAULT_LOCAL_WORKER_LOAD"), "%d,%d", &goroutines, &calls)
	c, err := New(Config{LocalMode: true, Manifest: filepath.Join(dir, "manifests", "job_description.yaml"),
		LocalRecordDir: filepath.Join(dir, "arx-records")})
	if err != nil {
		t.Fatal(err)
	}
	id := os.Getenv("AGENTVAULT_LOCAL_WORKER_ID")
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := range calls {
				a := Action{Connector: "crm", Action: "account.read", Summary: fmt.Sprintf("p%s g%d n%d", id, g, n)}
				if _, err := Do(context.Background(), c, a, okFn); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
}

func TestUnreachableServerFailsClosedAndRecords(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there now
	dir := t.TempDir()
	c, err := New(Config{Token: testToken, BaseURL: "http://" + addr + "/v1", AgentID: "9a1d-agent", LocalRecordDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	c.retry = backoff{attempts: 2, base: time.Millisecond, max: time.Millisecond}
	ran := false
	_, err = Do(t.Context(), c, Action{Connector: "crm", Action: "account.read", Summary: "acct 1", IdempotencyKey: "k-1"},
		func(context.Context, Credential) (int, error) { ran = true; return 0, nil })
	if !errors.Is(err, ErrUnreachable) || ran {
		t.Fatalf("unreachable server: ran %t, err %v", ran, err)
	}
	file := filepath.Join(dir, "9a1d-agent.jsonl")
	if !strings.Contains(err.Error(), file) || !strings.Contains(err.Error(), "arx record import") || strings.Contains(err.Error(), testToken) {
		t.Errorf("error does not say where the attempt is, or quotes the token: %v", err)
	}
	entries := verifyLocal(t, file)
	if len(entries) != 1 || entries[0].Type != TypeCallUnreachable || entries[0].Agent != "9a1d-agent" ||
		entries[0].Data["idempotency_key"] != "k-1" || entries[0].Connector != "crm" {
		t.Fatalf("recorded attempt: %+v", entries[0])
	}
	// A cancelled call is not an unreachable server.
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := Do(ctx, c, readAccount2, okFn); errors.Is(err, ErrUnreachable) {
		t.Errorf("cancelled call reported as unreachable: %v", err)
	}
	if got := len(verifyLocal(t, file)); got != 1 {
		t.Errorf("%d entries after a cancelled call, want 1", got)
	}
}
