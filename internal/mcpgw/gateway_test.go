package mcpgw_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/arxsec/arx/agentvault"
	"github.com/arxsec/arx/arxerr"
	"github.com/arxsec/arx/internal/arxtest"
	"github.com/arxsec/arx/internal/mcpgw"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// The upstream in these tests is the MCP project's own reference server,
// @modelcontextprotocol/server-everything from npm, run with Node.js
// (.ci/setup-node.sh installs it and exports ARX_TEST_MCP_EVERYTHING).

const pw = "correct horse battery"

// manifestFor declares connector "everything" with the given actions.
func manifestFor(onDrift, actions string) string {
	return `apiVersion: arx.dev/v1
kind: JobDescription
agent:
  name: mcp-agent
  owner: owner@example.com
scope:
  connectors:
    everything:
      actions:
` + actions + `
approval:
  approvers: [boss@example.com]
  timeout: 10m
budget:
  max_call_duration: 5m
termination:
  notify: [owner@example.com]
on_drift: ` + onDrift + "\n"
}

const defaultActions = `        echo: {risk: low}
        get-sum: {risk: high}
        get-env: {risk: low}
        trigger-long-running-operation: {risk: low}`

// everything returns the command that starts server-everything, or skips
// the test (fails it when ARX_TEST_REQUIRE_SERVERS=1).
func everything(t testing.TB) string {
	t.Helper()
	bin := os.Getenv("ARX_TEST_MCP_EVERYTHING")
	if bin == "" {
		if os.Getenv("ARX_TEST_REQUIRE_SERVERS") == "1" {
			t.Fatal("ARX_TEST_MCP_EVERYTHING is not set, and ARX_TEST_REQUIRE_SERVERS=1 requires the real MCP server (hint: source .ci/setup-node.sh)")
		}
		t.Skip("ARX_TEST_MCP_EVERYTHING is not set: skipping the tests against @modelcontextprotocol/server-everything (hint: source .ci/setup-node.sh)")
	}
	if _, err := exec.LookPath("node"); err != nil {
		t.Fatalf("ARX_TEST_MCP_EVERYTHING is set but node is not on PATH: %v", err)
	}
	return bin
}

// upstreamSecret is the upstream's own credential, given to it in its
// environment by the gateway.
const upstreamSecret = "upstream-secret-5e1f0c"

type harness struct {
	t        *testing.T
	s        *arxtest.Server
	agentID  string
	token    string
	g        *mcpgw.Gateway
	progress chan *mcp.ProgressNotificationParams
}

func newHarness(t *testing.T, manifest string) *harness {
	t.Helper()
	return newHarnessWith(t, manifest, map[string]string{"everything": ""})
}

// newHarnessWith starts a gateway in front of one server-everything per
// entry of prefixes (connector name -> prefix), in name order.
func newHarnessWith(t *testing.T, manifest string, prefixes map[string]string) *harness {
	t.Helper()
	bin := everything(t)
	s := arxtest.Start(t)
	id, token := s.Hire(manifest)
	var logger *slog.Logger
	if os.Getenv("ARX_TEST_LOG") != "" {
		logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	var ups []mcpgw.Upstream
	for _, name := range slices.Sorted(maps.Keys(prefixes)) {
		up, err := mcpgw.UpstreamConfig{Name: name, Command: bin, Args: []string{"stdio"}, Prefix: prefixes[name],
			Env: map[string]string{"UPSTREAM_API_KEY": "${TEST_UPSTREAM_KEY}"}}.Resolve(func(k string) (string, bool) {
			if k == "TEST_UPSTREAM_KEY" {
				return upstreamSecret, true
			}
			return os.LookupEnv(k)
		})
		if err != nil {
			t.Fatal(err)
		}
		ups = append(ups, up)
	}
	g, err := mcpgw.New(t.Context(), mcpgw.Config{
		Agent:            agentvault.Config{Token: token, BaseURL: s.BaseURL()},
		Upstreams:        ups,
		ProgressInterval: 100 * time.Millisecond,
		Logger:           logger,
	})
	if err != nil {
		t.Fatalf("start the gateway: %v", err)
	}
	t.Cleanup(func() { g.Close() })
	return &harness{t: t, s: s, agentID: id, token: token, g: g, progress: make(chan *mcp.ProgressNotificationParams, 100)}
}

// connect opens an MCP session to the gateway over an in-process pipe, as
// a local agent would over stdio. served receives Serve's result.
func (h *harness) connect() (cs *mcp.ClientSession, served chan error) {
	h.t.Helper()
	st, ct := mcp.NewInMemoryTransports()
	served = make(chan error, 1)
	go func() { served <- h.g.Serve(context.Background(), st) }()
	cs, err := h.client().Connect(h.t.Context(), ct, nil)
	if err != nil {
		h.t.Fatalf("connect to the gateway: %v", err)
	}
	h.t.Cleanup(func() { cs.Close() })
	return cs, served
}

func (h *harness) client() *mcp.Client {
	return mcp.NewClient(&mcp.Implementation{Name: "test-agent", Version: "1"}, &mcp.ClientOptions{
		ProgressNotificationHandler: func(_ context.Context, r *mcp.ProgressNotificationClientRequest) {
			select {
			case h.progress <- r.Params:
			default:
			}
		},
	})
}

type entry struct {
	Type      string         `json:"type"`
	Call      string         `json:"call"`
	Connector string         `json:"connector"`
	Action    string         `json:"action"`
	Risk      string         `json:"risk"`
	Data      map[string]any `json:"data"`
}

// record returns the agent's record, and its raw text.
func (h *harness) record() ([]entry, string) {
	h.t.Helper()
	r := h.s.Do("GET", "/v1/agents/"+h.agentID+"/record?limit=1000", h.s.AdminToken, nil)
	if r.Status != http.StatusOK {
		h.t.Fatalf("record: %d %s", r.Status, r.Body)
	}
	var out struct {
		Entries []struct {
			Entry entry `json:"entry"`
		} `json:"entries"`
	}
	r.JSON(h.t, &out)
	es := make([]entry, len(out.Entries))
	for i, e := range out.Entries {
		es[i] = e.Entry
	}
	return es, string(r.Body)
}

// callEntries returns the types of the record entries of one call.
func callEntries(es []entry, call string) []string {
	var out []string
	for _, e := range es {
		if e.Call == call {
			out = append(out, e.Type)
		}
	}
	return out
}

func digest(canonical string) string {
	sum := sha256.Sum256([]byte(canonical))
	return "sha256:" + hex.EncodeToString(sum[:])
}

func text(res *mcp.CallToolResult) string {
	var b strings.Builder
	for _, c := range res.Content {
		if tc, ok := c.(*mcp.TextContent); ok {
			b.WriteString(tc.Text)
		}
	}
	return b.String()
}

func toolNames(t *testing.T, cs *mcp.ClientSession) []string {
	t.Helper()
	var names []string
	for tool, err := range cs.Tools(t.Context(), nil) {
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, tool.Name)
	}
	return names
}

func TestDeclaredToolIsGovernedAndRecorded(t *testing.T) {
	h := newHarness(t, manifestFor("record", defaultActions))
	cs, _ := h.connect()

	names := toolNames(t, cs)
	want := map[string]bool{"echo": true, "get-sum": true, "get-env": true, "trigger-long-running-operation": true}
	if len(names) != len(want) {
		t.Errorf("tools/list: %v, want exactly the declared %v", names, want)
	}
	for _, n := range names {
		if !want[n] {
			t.Errorf("tools/list shows undeclared tool %q", n)
		}
	}

	const secretArg = "arg-secret-77aa"
	res, err := cs.CallTool(t.Context(), &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"message": "hello " + secretArg}})
	if err != nil || res.IsError {
		t.Fatalf("echo: %v %+v", err, res)
	}
	if got := text(res); got != "Echo: hello "+secretArg {
		t.Errorf("echo answered %q", got)
	}
	callID, _ := res.Meta["arx.dev/call_id"].(string)
	if callID == "" {
		t.Fatalf("the result does not name its governed call: %+v", res.Meta)
	}

	es, raw := h.record()
	if got := strings.Join(callEntries(es, callID), ","); got != "credential.issued,call.completed" {
		t.Errorf("record of the call: %s", got)
	}
	for _, e := range es {
		if e.Call != callID {
			continue
		}
		if e.Connector != "everything" || e.Action != "echo" || e.Risk != "low" {
			t.Errorf("entry %s: connector %s action %s risk %s", e.Type, e.Connector, e.Action, e.Risk)
		}
		switch e.Type {
		case "credential.issued":
			if want := "tool echo args " + digest(`{"message":"hello `+secretArg+`"}`); e.Data["summary"] != want {
				t.Errorf("summary %q, want %q", e.Data["summary"], want)
			}
		case "call.completed":
			if e.Data["outcome"] != "success" {
				t.Errorf("outcome %v", e.Data["outcome"])
			}
		}
	}
	if strings.Contains(raw, secretArg) {
		t.Error("the record holds the call's arguments")
	}

	// The upstream has its own credential, and never the agent's.
	res, err = cs.CallTool(t.Context(), &mcp.CallToolParams{Name: "get-env"})
	if err != nil || res.IsError {
		t.Fatalf("get-env: %v %+v", err, res)
	}
	env := text(res)
	if !strings.Contains(env, upstreamSecret) {
		t.Error("the upstream did not get its credential from the gateway")
	}
	if strings.Contains(env, h.token) || strings.Contains(env, "ARX_") {
		t.Error("the upstream's environment holds the agent's ARX token or ARX_ variables")
	}
}

func TestUndeclaredToolIsHiddenRefusedAndRecorded(t *testing.T) {
	for _, tc := range []struct {
		onDrift string
		want    []string // the record of the attempt
		code    string
	}{
		{"record", []string{"drift.detected", "credential.issued", "call.completed"}, string(arxerr.ActionNotDeclared)},
		{"refuse", []string{"credential.refused"}, string(arxerr.ActionNotDeclared)},
		{"require_approval", []string{"drift.detected", "call.requested", "approval.requested", "approval.withdrawn"}, string(arxerr.ActionNotDeclared)},
	} {
		t.Run("on_drift "+tc.onDrift, func(t *testing.T) {
			h := newHarness(t, manifestFor(tc.onDrift, `        echo: {risk: low}`))
			cs, _ := h.connect()
			if names := toolNames(t, cs); len(names) != 1 || names[0] != "echo" {
				t.Fatalf("tools/list: %v, want only echo", names)
			}
			for _, name := range []string{"get-env", "no-such-tool"} {
				res, err := cs.CallTool(t.Context(), &mcp.CallToolParams{Name: name, Arguments: map[string]any{"x": 1}})
				var je *jsonrpc.Error
				if !errors.As(err, &je) || je.Code != jsonrpc.CodeInvalidParams {
					t.Fatalf("%s: %v %+v, want an invalid-params error", name, err, res)
				}
				var data map[string]string
				if err := json.Unmarshal(je.Data, &data); err != nil || data["arx.dev/code"] != tc.code || data["arx.dev/call_id"] == "" {
					t.Fatalf("%s: error data %s, want code %s and a call id", name, je.Data, tc.code)
				}
				if strings.Contains(je.Message, upstreamSecret) {
					t.Fatal("the undeclared tool ran")
				}
				es, _ := h.record()
				got := callEntries(es, data["arx.dev/call_id"])
				if strings.Join(got, ",") != strings.Join(tc.want, ",") {
					t.Errorf("%s: record %v, want %v", name, got, tc.want)
				}
				for _, e := range es {
					if e.Call == data["arx.dev/call_id"] && (e.Connector != "everything" || e.Action != name) {
						t.Errorf("%s: recorded as %s/%s", name, e.Connector, e.Action)
					}
					if e.Call == data["arx.dev/call_id"] && e.Type == "call.completed" && e.Data["outcome"] != "error" {
						t.Errorf("%s: completed as %v", name, e.Data["outcome"])
					}
				}
			}
		})
	}
}

func TestHighRiskToolWaitsForApproval(t *testing.T) {
	h := newHarness(t, manifestFor("record", defaultActions))
	boss := h.s.AddPerson("boss@example.com", "manager", pw)
	cs, _ := h.connect()

	type answer struct {
		res *mcp.CallToolResult
		err error
	}
	done := make(chan answer, 1)
	go func() {
		p := &mcp.CallToolParams{Name: "get-sum", Arguments: map[string]any{"a": 2, "b": 3}}
		p.SetProgressToken("sum-1")
		res, err := cs.CallTool(context.Background(), p)
		done <- answer{res, err}
	}()

	// The agent hears that it waits, and for whom, while it waits.
	var first *mcp.ProgressNotificationParams
	seen := 0
	deadline := time.After(10 * time.Second)
	for seen < 3 {
		select {
		case p := <-h.progress:
			if p.ProgressToken != "sum-1" || !strings.Contains(p.Message, "boss@example.com") {
				t.Fatalf("progress %+v", p)
			}
			if first == nil {
				first = p
			}
			seen++
		case a := <-done:
			t.Fatalf("the high-risk call ended before approval: %v %+v", a.err, a.res)
		case <-deadline:
			t.Fatalf("%d progress notifications while waiting for approval", seen)
		}
	}
	callID := first.Message[strings.LastIndex(first.Message, " ")+1:]
	if r := h.s.Do("POST", "/v1/approvals/"+callID+"/approve", boss, map[string]string{"reason": "fine"}); r.Status != http.StatusOK {
		t.Fatalf("approve %s: %d %s", callID, r.Status, r.Body)
	}
	var a answer
	select {
	case a = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the call did not complete after approval")
	}
	if a.err != nil || a.res.IsError || text(a.res) != "The sum of 2 and 3 is 5." {
		t.Fatalf("get-sum: %v %+v", a.err, a.res)
	}
	es, _ := h.record()
	want := "call.requested,approval.requested,approval.granted,credential.issued,call.completed"
	if got := strings.Join(callEntries(es, callID), ","); got != want {
		t.Errorf("record: %s, want %s", got, want)
	}
	for _, e := range es {
		if e.Call == callID && e.Type == "call.requested" && e.Data["summary"] != "tool get-sum args "+digest(`{"a":2,"b":3}`) {
			t.Errorf("summary %v", e.Data["summary"])
		}
	}
}

func TestDeniedToolDoesNotRun(t *testing.T) {
	h := newHarness(t, manifestFor("record", defaultActions))
	boss := h.s.AddPerson("boss@example.com", "manager", pw)
	cs, _ := h.connect()
	done := make(chan *mcp.CallToolResult, 1)
	go func() {
		res, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "get-sum", Arguments: map[string]any{"a": 1, "b": 1}})
		if err != nil {
			t.Error(err)
		}
		done <- res
	}()
	var callID string
	for callID == "" {
		var list struct {
			Approvals []struct {
				CallID string `json:"call_id"`
			} `json:"approvals"`
		}
		h.s.Do("GET", "/v1/approvals?status=pending", boss, nil).JSON(t, &list)
		if len(list.Approvals) > 0 {
			callID = list.Approvals[0].CallID
		}
		time.Sleep(20 * time.Millisecond)
	}
	if r := h.s.Do("POST", "/v1/approvals/"+callID+"/deny", boss, map[string]string{"reason": "no"}); r.Status != http.StatusOK {
		t.Fatalf("deny: %d %s", r.Status, r.Body)
	}
	res := <-done
	if res == nil || !res.IsError || res.Meta["arx.dev/code"] != string(arxerr.CallDenied) || strings.Contains(text(res), "sum of") {
		t.Fatalf("a denied call answered %+v", res)
	}
}

func TestUpstreamProgressIsRelayed(t *testing.T) {
	h := newHarness(t, manifestFor("record", defaultActions))
	cs, _ := h.connect()
	p := &mcp.CallToolParams{Name: "trigger-long-running-operation", Arguments: map[string]any{"duration": 0.3, "steps": 3}}
	p.SetProgressToken(42)
	res, err := cs.CallTool(t.Context(), p)
	if err != nil || res.IsError {
		t.Fatalf("long-running operation: %v %+v", err, res)
	}
	// The upstream's last notification races its result, and a client may
	// drop progress for a request that has completed; the ones relayed
	// must be in order, and at least the first two must arrive.
	var got []float64
	timeout := time.After(5 * time.Second)
collect:
	for len(got) < 3 {
		select {
		case n := <-h.progress:
			if fmt.Sprint(n.ProgressToken) != "42" {
				t.Fatalf("progress token %v", n.ProgressToken)
			}
			got = append(got, n.Progress)
		case <-timeout:
			break collect
		}
	}
	if len(got) < 2 {
		t.Fatalf("relayed progress: %v", got)
	}
	for i, p := range got {
		if p != float64(i+1) {
			t.Errorf("relayed progress %v, want 1 2 3 in order", got)
		}
	}
}

func TestTerminationEndsTheSession(t *testing.T) {
	h := newHarness(t, manifestFor("record", defaultActions))
	cs, served := h.connect()
	if _, err := cs.CallTool(t.Context(), &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"message": "x"}}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // idle, with the status long poll open
	start := time.Now()
	r := h.s.Do("POST", "/v1/agents/"+h.agentID+"/terminate", h.s.AdminToken, map[string]string{"reason": "test"})
	if r.Status != http.StatusOK {
		t.Fatalf("terminate: %d %s", r.Status, r.Body)
	}
	// The receipt says the gateway watching the agent was told.
	var res struct {
		Receipt struct {
			Confirmed []struct {
				What  string `json:"what"`
				Count int    `json:"count"`
			} `json:"confirmed"`
		} `json:"receipt"`
	}
	r.JSON(t, &res)
	told := -1
	for _, it := range res.Receipt.Confirmed {
		if it.What == "status_watchers_told" {
			told = it.Count
		}
	}
	if told != 1 {
		t.Errorf("receipt: status_watchers_told %d, want 1 (the gateway's long poll): %s", told, r.Body)
	}
	ended := make(chan error, 1)
	go func() { ended <- cs.Wait() }()
	select {
	case <-ended:
	case <-time.After(3 * time.Second):
		t.Fatal("the agent's MCP session outlived its termination")
	}
	if d := time.Since(start); d > 1500*time.Millisecond {
		t.Errorf("the session ended %s after the termination", d)
	}
	if err := <-served; !agentvault.IsCode(err, arxerr.AgentTerminated) {
		t.Errorf("Serve returned %v, want the termination", err)
	}
	if _, err := cs.CallTool(t.Context(), &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"message": "x"}}); err == nil {
		t.Error("a call after termination went through")
	}
}

func TestStreamableHTTP(t *testing.T) {
	h := newHarness(t, manifestFor("record", defaultActions))
	const token = "mcp-client-token-0123456789"
	srv := httptest.NewServer(h.g.HTTPHandler(token))
	t.Cleanup(srv.Close)

	if resp, err := http.Post(srv.URL, "application/json", strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"ping"}`)); err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("without the token: %v %v", err, resp)
	}

	hc := &http.Client{Transport: bearer{token}}
	cs, err := h.client().Connect(t.Context(), &mcp.StreamableClientTransport{Endpoint: srv.URL, HTTPClient: hc}, nil)
	if err != nil {
		t.Fatalf("connect over streamable HTTP: %v", err)
	}
	defer cs.Close()
	if names := toolNames(t, cs); len(names) != 4 {
		t.Errorf("tools/list over HTTP: %v", names)
	}
	res, err := cs.CallTool(t.Context(), &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"message": "over http"}})
	if err != nil || text(res) != "Echo: over http" {
		t.Fatalf("echo over HTTP: %v %+v", err, res)
	}
	if _, err := cs.CallTool(t.Context(), &mcp.CallToolParams{Name: "get-tiny-image"}); err == nil {
		t.Error("an undeclared tool ran over HTTP")
	}

	// A termination ends the HTTP sessions too.
	if r := h.s.Do("POST", "/v1/agents/"+h.agentID+"/terminate", h.s.AdminToken, map[string]string{"reason": "test"}); r.Status != http.StatusOK {
		t.Fatalf("terminate: %d %s", r.Status, r.Body)
	}
	select {
	case <-h.g.Done():
	case <-time.After(3 * time.Second):
		t.Fatal("the gateway did not end with the termination")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if _, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"message": "x"}}); err == nil {
		t.Error("a call over HTTP after termination went through")
	}
}

type bearer struct{ token string }

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return http.DefaultTransport.RoundTrip(r)
}

func TestResourcesPassOnlyWhenDeclared(t *testing.T) {
	for _, declared := range []bool{false, true} {
		t.Run(fmt.Sprint("declared=", declared), func(t *testing.T) {
			actions := `        echo: {risk: low}`
			if declared {
				actions += "\n        resources.read: {risk: low}\n        prompts.get: {risk: low}"
			}
			h := newHarness(t, manifestFor("record", actions))
			cs, _ := h.connect()
			caps := cs.InitializeResult().Capabilities
			if (caps.Resources != nil) != declared {
				t.Fatalf("resources capability %+v with resources.read declared=%v", caps.Resources, declared)
			}
			if (caps.Prompts != nil) != declared {
				t.Errorf("prompts capability %+v with prompts.get declared=%v", caps.Prompts, declared)
			}
			if !declared {
				if _, err := cs.GetPrompt(t.Context(), &mcp.GetPromptParams{Name: "simple-prompt"}); err == nil {
					t.Error("a prompt was got without prompts.get on the manifest")
				}
				if _, err := cs.ReadResource(t.Context(), &mcp.ReadResourceParams{URI: "demo://resource/static/document/architecture.md"}); err == nil {
					t.Error("a resource was read without resources.read on the manifest")
				}
				return
			}
			var uri string
			for r, err := range cs.Resources(t.Context(), nil) {
				if err != nil {
					t.Fatal(err)
				}
				if uri == "" {
					uri = r.URI
				}
			}
			if uri == "" {
				t.Fatal("no resources listed")
			}
			res, err := cs.ReadResource(t.Context(), &mcp.ReadResourceParams{URI: uri})
			if err != nil || len(res.Contents) == 0 {
				t.Fatalf("read %s: %v", uri, err)
			}
			es, raw := h.record()
			found := false
			for _, e := range es {
				if e.Type == "credential.issued" && e.Action == "resources.read" && e.Data["summary"] == "resource uri "+digest(uri) {
					found = true
				}
			}
			if !found || strings.Contains(raw, uri) {
				t.Errorf("the read is not recorded by its digest alone: %s", raw)
			}
			pr, err := cs.GetPrompt(t.Context(), &mcp.GetPromptParams{Name: "args-prompt", Arguments: map[string]string{"city": "Lisbon"}})
			if err != nil || len(pr.Messages) == 0 {
				t.Fatalf("prompts/get: %v", err)
			}
			es, raw = h.record()
			found = false
			for _, e := range es {
				if e.Type == "credential.issued" && e.Action == "prompts.get" && e.Data["summary"] == "prompt args-prompt args "+digest(`{"city":"Lisbon"}`) {
					found = true
				}
			}
			if !found || strings.Contains(raw, "Lisbon") {
				t.Errorf("the prompt is not recorded by name and digest alone: %s", raw)
			}
		})
	}
}

func TestConcurrentCalls(t *testing.T) {
	h := newHarness(t, manifestFor("record", defaultActions))
	cs, _ := h.connect()
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for i := range 20 {
		wg.Go(func() {
			res, err := cs.CallTool(t.Context(), &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"message": fmt.Sprint(i)}})
			if err == nil && text(res) != fmt.Sprintf("Echo: %d", i) {
				err = fmt.Errorf("call %d answered %q", i, text(res))
			}
			if err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	es, _ := h.record()
	n := 0
	for _, e := range es {
		if e.Type == "call.completed" && e.Data["outcome"] == "success" {
			n++
		}
	}
	if n != 20 {
		t.Errorf("%d successful calls recorded, want 20", n)
	}
}

func TestSeveralUpstreams(t *testing.T) {
	// Three copies of server-everything: "everything" and "second" declared,
	// "stranger" not on the manifest; "clash" offers the same names as
	// "everything", without a prefix.
	m := `apiVersion: arx.dev/v1
kind: JobDescription
agent:
  name: mcp-agent
  owner: owner@example.com
scope:
  connectors:
    clash:
      actions:
        get-sum: {risk: low}
    everything:
      actions:
        echo: {risk: low}
        get-sum: {risk: low}
    second:
      actions:
        echo: {risk: low}
approval:
  approvers: [boss@example.com]
budget:
  max_call_duration: 5m
termination:
  notify: [owner@example.com]
`
	h := newHarnessWith(t, m, map[string]string{"clash": "", "everything": "", "second": "two.", "stranger": "x."})
	cs, _ := h.connect()
	names := toolNames(t, cs)
	slices.Sort(names)
	if strings.Join(names, ",") != "two.echo" {
		t.Fatalf("tools/list: %v, want two.echo alone: clash and everything offer the same names", names)
	}
	res, err := cs.CallTool(t.Context(), &mcp.CallToolParams{Name: "two.echo", Arguments: map[string]any{"message": "2"}})
	if err != nil || text(res) != "Echo: 2" {
		t.Fatalf("two.echo: %v %+v", err, res)
	}
	es, _ := h.record()
	id := res.Meta["arx.dev/call_id"].(string)
	for _, e := range es {
		if e.Call == id && (e.Connector != "second" || e.Action != "echo") {
			t.Errorf("two.echo recorded as %s/%s", e.Connector, e.Action)
		}
	}
	for _, tc := range []struct{ tool, code, connector string }{
		{"get-sum", string(arxerr.ActionNotDeclared), "clash"}, // offered twice: hidden, attributed to the first
		{"echo", string(arxerr.ActionNotDeclared), "clash"},
		{"x.echo", string(arxerr.ConnectorNotDeclared), "stranger"},         // a connector not on the manifest
		{"two.get-sum", string(arxerr.ActionNotDeclared), "second"},         // not declared for that connector
		{"x.no-such-tool", string(arxerr.ConnectorNotDeclared), "stranger"}, // offered by nobody: the prefix decides
	} {
		_, err := cs.CallTool(t.Context(), &mcp.CallToolParams{Name: tc.tool, Arguments: map[string]any{"a": 1, "b": 2}})
		var je *jsonrpc.Error
		var data map[string]string
		if !errors.As(err, &je) || json.Unmarshal(je.Data, &data) != nil || data["arx.dev/code"] != tc.code {
			t.Errorf("%s: %v, want code %s", tc.tool, err, tc.code)
			continue
		}
		es, _ := h.record()
		for _, e := range es {
			if e.Call == data["arx.dev/call_id"] && e.Connector != tc.connector {
				t.Errorf("%s: recorded under connector %s, want %s", tc.tool, e.Connector, tc.connector)
			}
		}
	}
}

func TestTerminationEndsAWaitingCall(t *testing.T) {
	h := newHarness(t, manifestFor("record", defaultActions))
	cs, served := h.connect()
	done := make(chan error, 1)
	go func() {
		p := &mcp.CallToolParams{Name: "get-sum", Arguments: map[string]any{"a": 1, "b": 1}}
		p.SetProgressToken("t")
		res, err := cs.CallTool(context.Background(), p)
		if err == nil && !res.IsError {
			err = errors.New("the high-risk call ran")
		}
		done <- err
	}()
	select {
	case <-h.progress: // it waits for an approver
	case <-time.After(10 * time.Second):
		t.Fatal("no progress notification")
	}
	start := time.Now()
	if r := h.s.Do("POST", "/v1/agents/"+h.agentID+"/terminate", h.s.AdminToken, map[string]string{"reason": "test"}); r.Status != http.StatusOK {
		t.Fatalf("terminate: %d %s", r.Status, r.Body)
	}
	select {
	case err := <-done:
		if err != nil && strings.Contains(err.Error(), "ran") {
			t.Fatal(err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("the waiting call outlived the termination")
	}
	if err := <-served; !agentvault.IsCode(err, arxerr.AgentTerminated) {
		t.Errorf("Serve returned %v", err)
	}
	if d := time.Since(start); d > 1500*time.Millisecond {
		t.Errorf("the session ended %s after the termination", d)
	}
	es, _ := h.record()
	cancelled := false
	for _, e := range es {
		if e.Type == "approval.cancelled" && e.Action == "get-sum" {
			cancelled = true
		}
	}
	if !cancelled {
		t.Error("the record does not show the approval cancelled by the termination")
	}
}

// TestHostileToolName: a tool name with a NUL, controls and a bidi override
// is refused, and the attempt is recorded with the name shown escaped.
func TestHostileToolName(t *testing.T) {
	h := newHarness(t, manifestFor("refuse", `        echo: {risk: low}`))
	cs, _ := h.connect()
	name := "get\x00env\x1b[2J\u202e"
	_, err := cs.CallTool(t.Context(), &mcp.CallToolParams{Name: name, Arguments: map[string]any{"x": 1}})
	var je *jsonrpc.Error
	if !errors.As(err, &je) || je.Code != jsonrpc.CodeInvalidParams {
		t.Fatalf("%v, want an invalid-params error", err)
	}
	var data map[string]string
	if err := json.Unmarshal(je.Data, &data); err != nil || data["arx.dev/call_id"] == "" {
		t.Fatalf("error data %s (%s): the attempt was not recorded", je.Data, je.Message)
	}
	if strings.ContainsAny(je.Message, "\x00\x1b\u202e") {
		t.Errorf("the error quotes the name raw: %q", je.Message)
	}
	es, _ := h.record()
	var found bool
	for _, e := range es {
		if e.Call != data["arx.dev/call_id"] {
			continue
		}
		found = true
		sum, _ := e.Data["summary"].(string)
		if e.Type != "credential.refused" || !strings.Contains(sum, `get\x00env\x1b[2J\u202e`) {
			t.Errorf("recorded as %s with summary %q", e.Type, sum)
		}
	}
	if !found {
		t.Error("no entry of the attempt")
	}
}

// TestTerminationCutsARunningTool: a tool call already running upstream
// when the agent is terminated is cancelled within a second (the upstream
// is told, the agent gets an error, not a result), and the record closes
// the call with what happened.
func TestTerminationCutsARunningTool(t *testing.T) {
	h := newHarness(t, manifestFor("record", defaultActions))
	cs, served := h.connect()
	done := make(chan error, 1)
	go func() {
		p := &mcp.CallToolParams{Name: "trigger-long-running-operation", Arguments: map[string]any{"duration": 60, "steps": 60}}
		p.SetProgressToken("long")
		res, err := cs.CallTool(context.Background(), p)
		if err == nil && !res.IsError {
			err = errors.New("the tool ran to its end after the termination")
		}
		done <- err
	}()
	select {
	case <-h.progress: // the upstream is working
	case <-time.After(10 * time.Second):
		t.Fatal("no progress from the running tool")
	}
	start := time.Now()
	if r := h.s.Do("POST", "/v1/agents/"+h.agentID+"/terminate", h.s.AdminToken, map[string]string{"reason": "test"}); r.Status != http.StatusOK {
		t.Fatalf("terminate: %d %s", r.Status, r.Body)
	}
	select {
	case err := <-done:
		if err != nil && strings.Contains(err.Error(), "ran to its end") {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the running tool call outlived the termination")
	}
	if d := time.Since(start); d > 1500*time.Millisecond {
		t.Errorf("the running tool call ended %s after the termination", d)
	}
	if err := <-served; !agentvault.IsCode(err, arxerr.AgentTerminated) {
		t.Errorf("Serve returned %v", err)
	}
	// The record: the call's credential was issued, and the termination
	// revoked it while the call was open, naming the call.
	es, raw := h.record()
	var call string
	for _, e := range es {
		if e.Type == "credential.issued" && e.Action == "trigger-long-running-operation" {
			call = e.Call
		}
	}
	if call == "" {
		t.Fatalf("no credential issued for the tool in the record: %s", raw)
	}
	revoked := false
	for _, e := range es {
		if e.Type == "credential.revoked" && e.Data["reason"] == "agent terminated" && strings.Contains(fmt.Sprint(e.Data["calls"]), call) {
			revoked = true
		}
	}
	if !revoked {
		t.Errorf("the record does not show the running call's credential revoked by the termination: %s", raw)
	}
}

// TestToolConditionOnArguments: a tool whose action has a condition on its
// arguments gets them checked by ARX: a call that breaks it is refused and
// never reaches the upstream; the record keeps their hash only, as the
// action's record_args says.
func TestToolConditionOnArguments(t *testing.T) {
	h := newHarness(t, manifestFor("record", `        echo: {risk: low, when: 'args.message.startsWith("ok ")', record_args: hash}
        get-env: {risk: low}`))
	cs, _ := h.connect()
	const secretArg = "arg-secret-91cc"
	res, err := cs.CallTool(t.Context(), &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"message": "ok " + secretArg}})
	if err != nil || res.IsError || text(res) != "Echo: ok "+secretArg {
		t.Fatalf("echo meeting the condition: %v %+v", err, res)
	}
	res, err = cs.CallTool(t.Context(), &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"message": "rm -rf " + secretArg}})
	if err != nil || !res.IsError || !strings.Contains(text(res), "manifest.condition_not_met") || strings.Contains(text(res), "Echo:") {
		t.Fatalf("echo breaking the condition: %v %+v", err, res)
	}
	es, raw := h.record()
	var hashed, refused int
	for _, e := range es {
		if e.Action != "echo" {
			continue
		}
		if e.Data["args_hash"] != nil {
			hashed++
		}
		if e.Type == "credential.refused" && e.Data["code"] == "manifest.condition_not_met" {
			refused++
		}
	}
	if hashed != 2 || refused != 1 {
		t.Errorf("record: %d entries with the arguments' hash, %d refusals", hashed, refused)
	}
	if strings.Contains(raw, secretArg) {
		t.Error("the record holds the call's arguments")
	}
}
