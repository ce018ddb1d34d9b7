package main

import (
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/arxsec/arx/internal/arxtest"
	"github.com/arxsec/arx/internal/logbuf"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// The MCP server behind arx mcp in these tests is the MCP project's
// reference server from npm (.ci/setup-node.sh installs it).
func everythingServer(t *testing.T) string {
	t.Helper()
	bin := os.Getenv("ARX_TEST_MCP_EVERYTHING")
	if bin == "" {
		if os.Getenv("ARX_TEST_REQUIRE_SERVERS") == "1" {
			t.Fatal("ARX_TEST_MCP_EVERYTHING is not set, and ARX_TEST_REQUIRE_SERVERS=1 requires the real MCP server (hint: source .ci/setup-node.sh)")
		}
		t.Skip("ARX_TEST_MCP_EVERYTHING is not set: skipping arx mcp against @modelcontextprotocol/server-everything (hint: source .ci/setup-node.sh)")
	}
	if _, err := exec.LookPath("node"); err != nil {
		t.Fatalf("ARX_TEST_MCP_EVERYTHING is set but node is not on PATH: %v", err)
	}
	return bin
}

const mcpManifest = `apiVersion: arx.dev/v1
kind: JobDescription
agent:
  name: mcp-cli-agent
  owner: owner@example.com
scope:
  connectors:
    everything:
      actions:
        echo: {risk: low}
        get-sum: {risk: low}
approval:
  approvers: [boss@example.com]
budget:
  max_call_duration: 5m
termination:
  notify: [owner@example.com]
`

// startMCP runs arx mcp as a user types it, in the background.
func startMCP(t *testing.T, stdin io.Reader, stdout io.Writer, args ...string) (code chan int, stderr *logbuf.Buffer) {
	t.Helper()
	stderr = &logbuf.Buffer{}
	code = make(chan int, 1)
	go func() { code <- run(append([]string{"mcp"}, args...), stdin, stdout, stderr) }()
	return code, stderr
}

func terminate(t *testing.T, s *arxtest.Server, id string) {
	t.Helper()
	if r := s.Do("POST", "/v1/agents/"+id+"/terminate", s.AdminToken, map[string]string{"reason": "test"}); r.Status != http.StatusOK {
		t.Fatalf("terminate: %d %s", r.Status, r.Body)
	}
}

func exitsWith(t *testing.T, code chan int, stderr *logbuf.Buffer, want int, says string) {
	t.Helper()
	select {
	case c := <-code:
		if c != want || !strings.Contains(stderr.String(), says) {
			t.Fatalf("arx mcp exited %d (want %d), stderr:\n%s\nwant it to say %q", c, want, stderr, says)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("arx mcp did not exit; stderr:\n%s", stderr)
	}
}

func TestMCPStdioFromFlags(t *testing.T) {
	bin := everythingServer(t)
	s := arxtest.Start(t)
	id, token := s.Hire(mcpManifest)
	t.Setenv("ARX_TOKEN", token)
	t.Setenv("ARX_BASE_URL", s.BaseURL())
	t.Setenv("ARX_AGENT_ID", id)
	t.Setenv("TEST_UPSTREAM_KEY", "k-0123456789")

	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	code, stderr := startMCP(t, inR, outW,
		"--connector", "everything", "--risk", "get-sum=high", "--env", "API_KEY=${TEST_UPSTREAM_KEY}", "--progress-interval", "100ms",
		"--", bin, "stdio")
	client := mcp.NewClient(&mcp.Implementation{Name: "cli-test", Version: "1"}, nil)
	cs, err := client.Connect(t.Context(), &mcp.IOTransport{Reader: outR, Writer: inW}, nil)
	if err != nil {
		t.Fatalf("connect: %v\nstderr:\n%s", err, stderr)
	}
	defer cs.Close()
	var names []string
	for tool, err := range cs.Tools(t.Context(), nil) {
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, tool.Name+"/"+tool.Meta["arx.dev/risk"].(string))
	}
	if strings.Join(names, ",") != "echo/low,get-sum/high" {
		t.Errorf("tools: %v", names)
	}
	res, err := cs.CallTool(t.Context(), &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"message": "from the CLI"}})
	if err != nil || res.IsError {
		t.Fatalf("echo: %v %+v", err, res)
	}

	// The config's risk is higher than the manifest's: the call waits.
	ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
	_, err = cs.CallTool(ctx, &mcp.CallToolParams{Name: "get-sum", Arguments: map[string]any{"a": 1, "b": 2}})
	cancel()
	if err == nil {
		t.Error("get-sum, declared high risk by --risk, ran without approval")
	}

	terminate(t, s, id)
	exitsWith(t, code, stderr, 1, "agent.terminated")
	if strings.Contains(stderr.String(), token) || strings.Contains(stderr.String(), "k-0123456789") {
		t.Error("arx mcp logged a secret")
	}
}

func TestMCPHTTPFromConfig(t *testing.T) {
	bin := everythingServer(t)
	s := arxtest.Start(t)
	id, token := s.Hire(mcpManifest)
	t.Setenv("ARX_TOKEN", token)
	t.Setenv("ARX_BASE_URL", s.BaseURL())
	const mcpToken = "client-token-0123456789abcdef"
	t.Setenv("ARX_MCP_TOKEN", mcpToken)
	cfg := filepath.Join(t.TempDir(), "mcp.yaml")
	if err := os.WriteFile(cfg, []byte("upstreams:\n  everything:\n    command: "+bin+"\n    args: [stdio]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, stderr := startMCP(t, strings.NewReader(""), io.Discard, "--config", cfg, "--listen", "127.0.0.1:0")
	var endpoint string
	re := regexp.MustCompile(`at (http://\S+/mcp)`)
	for deadline := time.Now().Add(10 * time.Second); endpoint == "" && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if m := re.FindStringSubmatch(stderr.String()); m != nil {
			endpoint = m[1]
		}
	}
	if endpoint == "" {
		t.Fatalf("arx mcp did not say where it serves; stderr:\n%s", stderr)
	}
	hc := &http.Client{Transport: roundTripper(func(r *http.Request) (*http.Response, error) {
		r = r.Clone(r.Context())
		r.Header.Set("Authorization", "Bearer "+mcpToken)
		return http.DefaultTransport.RoundTrip(r)
	})}
	client := mcp.NewClient(&mcp.Implementation{Name: "cli-test", Version: "1"}, nil)
	cs, err := client.Connect(t.Context(), &mcp.StreamableClientTransport{Endpoint: endpoint, HTTPClient: hc}, nil)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer cs.Close()
	res, err := cs.CallTool(t.Context(), &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"message": "over HTTP"}})
	if err != nil || res.IsError {
		t.Fatalf("echo: %v %+v", err, res)
	}
	terminate(t, s, id)
	exitsWith(t, code, stderr, 1, "agent.terminated")
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func TestMCPUsageErrors(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "mcp.yaml")
	if err := os.WriteFile(bad, []byte("upstreams:\n  crm:\n    url: ftp://x\n    extra: 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("ARX_MCP_TOKEN", "short")
	for _, tc := range []struct {
		name string
		args []string
		says string
	}{
		{"no upstream", nil, "no upstream MCP server"},
		{"bad config", []string{"--config", bad}, bad + ":4: field extra not found"},
		{"config and flags", []string{"--config", bad, "--connector", "x", "--", "true"}, "exclude each other"},
		{"no connector", []string{"--", "true"}, "needs --connector"},
		{"header on a command", []string{"--connector", "x", "--header", "A=b", "--", "true"}, "--header is for an HTTP upstream"},
		{"bad risk", []string{"--connector", "x", "--risk", "t=huge", "--", "true"}, `"huge" is not low, medium or high`},
		{"unset variable", []string{"--connector", "x", "--env", "K=${MCP_TEST_UNSET_VAR}", "--", "true"}, "${MCP_TEST_UNSET_VAR} is not set"},
		{"short token", []string{"--connector", "x", "--listen", "127.0.0.1:0", "--", "true"}, "needs ARX_MCP_TOKEN"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, _, stderr := arx(t, append([]string{"mcp"}, tc.args...)...)
			if c == 0 || !strings.Contains(stderr, tc.says) {
				t.Fatalf("exit %d, stderr:\n%s\nwant it to say %q", c, stderr, tc.says)
			}
		})
	}
}
