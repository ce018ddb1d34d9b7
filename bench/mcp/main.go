// Command mcp measures arx mcp: MCP tool calls per second and their latency
// through the gateway, against calling the same upstream MCP server directly,
// in one run, with the ratio and the latency the gateway adds.
//
// Everything runs on this machine, over loopback and pipes, as separate
// processes, as in production: the client (this program) speaks MCP over
// stdio to either the upstream itself or to `arx mcp`, which speaks MCP over
// stdio to its own copy of the upstream and HTTP to `arx serve`. Every tool
// call through the gateway is a governed call: two record entries, each
// durable before ARX answers.
//
//	go run ./bench/mcp                          # Go echo upstream, 5s per phase
//	go run ./bench/mcp -upstream everything     # @modelcontextprotocol/server-everything (node)
//
// Every phase is bounded in time and in calls.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/arxsec/arx/agentvault"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// upstreamArg starts this program as the Go echo MCP server (stdio).
const upstreamArg = "-bench-mcp-upstream"

// Bounds, whatever the flags say.
const (
	maxDuration    = 2 * time.Minute
	maxConcurrency = 256
	maxCalls       = 1_000_000
)

type config struct {
	arxPath     string
	upstream    string // go or everything
	everything  string // path of server-everything
	duration    time.Duration
	warmup      time.Duration
	concurrency int
	timeout     time.Duration
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == upstreamArg {
		os.Exit(upstreamMain())
	}
	var cfg config
	fs := flag.NewFlagSet("bench/mcp", flag.ContinueOnError)
	fs.StringVar(&cfg.arxPath, "arx", "", "arx binary (default: build ./cmd/arx into a temporary directory)")
	fs.StringVar(&cfg.upstream, "upstream", "go", "the upstream MCP server: go (an echo tool in this program) or everything (@modelcontextprotocol/server-everything, node)")
	fs.StringVar(&cfg.everything, "everything", os.Getenv("ARX_TEST_MCP_EVERYTHING"), "server-everything's executable (env ARX_TEST_MCP_EVERYTHING; source .ci/setup-node.sh)")
	fs.DurationVar(&cfg.duration, "duration", 5*time.Second, "measured time of each phase")
	fs.DurationVar(&cfg.warmup, "warmup", time.Second, "unmeasured calls before each phase")
	fs.IntVar(&cfg.concurrency, "concurrency", 16, "concurrent tool calls in the throughput phase (one MCP session)")
	fs.DurationVar(&cfg.timeout, "timeout", 30*time.Second, "timeout of one tool call")
	if err := fs.Parse(os.Args[1:]); err != nil {
		os.Exit(2)
	}
	switch {
	case cfg.duration <= 0 || cfg.duration > maxDuration:
		fail("-duration must be in (0, %s]", maxDuration)
	case cfg.warmup < 0 || cfg.warmup > maxDuration:
		fail("-warmup must be in [0, %s]", maxDuration)
	case cfg.concurrency < 1 || cfg.concurrency > maxConcurrency:
		fail("-concurrency must be in [1, %d]", maxConcurrency)
	case cfg.upstream != "go" && cfg.upstream != "everything":
		fail("-upstream is go or everything")
	case cfg.upstream == "everything" && cfg.everything == "":
		fail("-upstream everything needs -everything PATH or ARX_TEST_MCP_EVERYTHING (hint: source .ci/setup-node.sh)")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, cfg)
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench/mcp: error: %v\n", err)
		os.Exit(1)
	}
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench/mcp: error: "+format+"\nbench/mcp: hint: go run ./bench/mcp -h\n", args...)
	os.Exit(2)
}

func run(ctx context.Context, cfg config) error {
	tmp, err := os.MkdirTemp("", "arx-bench-mcp-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	bin := cfg.arxPath
	if bin == "" {
		bin = filepath.Join(tmp, "arx")
		fmt.Fprintln(os.Stderr, "bench/mcp: building ./cmd/arx")
		build := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/arx")
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			return fmt.Errorf("go build ./cmd/arx (run from the repository, or pass -arx): %w", err)
		}
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	upCmd, tool, args := []string{self, upstreamArg}, "echo", map[string]any{"message": "bench"}
	if cfg.upstream == "everything" {
		upCmd = []string{cfg.everything, "stdio"}
	}

	srv, err := startServe(ctx, bin, filepath.Join(tmp, "data"))
	if err != nil {
		return err
	}
	defer srv.stop()
	token, err := srv.hire(ctx, tool)
	if err != nil {
		return err
	}

	direct, err := connect(ctx, exec.Command(upCmd[0], upCmd[1:]...))
	if err != nil {
		return fmt.Errorf("the upstream: %w", err)
	}
	defer direct.Close()
	gw := exec.Command(bin, append([]string{"mcp", "--connector", "bench", "--log-level", "warn", "--"}, upCmd...)...)
	gw.Env = append(os.Environ(), "ARX_TOKEN="+token, "ARX_BASE_URL="+srv.url+"/v1")
	gw.Stderr = os.Stderr
	through, err := connect(ctx, gw)
	if err != nil {
		return fmt.Errorf("arx mcp: %w", err)
	}
	defer through.Close()

	call := func(cs *mcp.ClientSession) func(context.Context) error {
		return func(ctx context.Context) error {
			ctx, cancel := context.WithTimeout(ctx, cfg.timeout)
			defer cancel()
			res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: tool, Arguments: args})
			if err == nil && res.IsError {
				err = errors.New("the tool answered with isError")
			}
			return err
		}
	}
	// The governed call alone, as an SDK agent makes it (request, then
	// complete), for the share of the added latency that is ARX's.
	arx, err := agentvault.New(agentvault.Config{Token: token, BaseURL: srv.url + "/v1"})
	if err != nil {
		return err
	}
	governed := func(ctx context.Context) error {
		_, err := agentvault.Do(ctx, arx, agentvault.Action{Connector: "bench", Action: tool, Summary: "bench"},
			func(context.Context, agentvault.Credential) (struct{}, error) { return struct{}{}, nil })
		return err
	}

	fmt.Printf("arx mcp benchmark: upstream %s, tool %q, %s per phase after %s warm-up, loopback\n\n", cfg.upstream, tool, cfg.duration, cfg.warmup)
	if _, err := load(ctx, governed, 1, cfg.warmup); err != nil {
		return fmt.Errorf("governed calls, warm-up: %w", err)
	}
	alone, err := load(ctx, governed, 1, cfg.duration)
	if err != nil {
		return fmt.Errorf("governed calls: %w", err)
	}
	fmt.Printf("  %-26s %8.0f calls/s   p50 %7s   p99 %7s   (%d calls)\n", "SDK governed call alone", alone.perSec, ms(alone.p50), ms(alone.p99), alone.calls)
	var results [4]phase
	for i, p := range []struct {
		name string
		cs   *mcp.ClientSession
		conc int
	}{
		{"direct, 1 at a time", direct, 1},
		{"arx mcp, 1 at a time", through, 1},
		{fmt.Sprintf("direct, %d concurrent", cfg.concurrency), direct, cfg.concurrency},
		{fmt.Sprintf("arx mcp, %d concurrent", cfg.concurrency), through, cfg.concurrency},
	} {
		if _, err := load(ctx, call(p.cs), p.conc, cfg.warmup); err != nil {
			return fmt.Errorf("%s, warm-up: %w", p.name, err)
		}
		r, err := load(ctx, call(p.cs), p.conc, cfg.duration)
		if err != nil {
			return fmt.Errorf("%s: %w", p.name, err)
		}
		results[i] = r
		fmt.Printf("  %-26s %8.0f calls/s   p50 %7s   p99 %7s   (%d calls)\n", p.name, r.perSec, ms(r.p50), ms(r.p99), r.calls)
	}
	seqD, seqG, conD, conG := results[0], results[1], results[2], results[3]
	fmt.Printf("\nadded by arx mcp (governed call: request + complete, each durable in the record)\n")
	fmt.Printf("  latency, 1 at a time        p50 +%s   p99 +%s   (of which the governed call alone: p50 %s)\n",
		ms(seqG.p50-seqD.p50), ms(seqG.p99-seqD.p99), ms(alone.p50))
	fmt.Printf("  latency, %d concurrent      p50 +%s   p99 +%s\n", cfg.concurrency, ms(conG.p50-conD.p50), ms(conG.p99-conD.p99))
	fmt.Printf("  calls/s through / direct    %.3f (1 at a time)   %.3f (%d concurrent)\n",
		seqG.perSec/seqD.perSec, conG.perSec/conD.perSec, cfg.concurrency)
	return nil
}

// connect starts an MCP server command and initializes a session with it.
func connect(ctx context.Context, cmd *exec.Cmd) (*mcp.ClientSession, error) {
	dieWithParent(cmd)
	c := mcp.NewClient(&mcp.Implementation{Name: "bench-mcp", Version: "1"}, nil)
	cctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	return c.Connect(cctx, &mcp.CommandTransport{Command: cmd, TerminateDuration: 5 * time.Second}, nil)
}

// phase is what one load phase measured.
type phase struct {
	calls    int
	perSec   float64
	p50, p99 time.Duration
}

// load makes calls back to back from conc workers for d (and at most
// maxCalls), and fails on the first failed call.
func load(ctx context.Context, call func(context.Context) error, conc int, d time.Duration) (phase, error) {
	if d == 0 {
		return phase{}, nil
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var n atomic.Int64
	lats := make([][]time.Duration, conc)
	start := time.Now()
	deadline := start.Add(d)
	var wg sync.WaitGroup
	for w := range conc {
		wg.Go(func() {
			for time.Now().Before(deadline) && ctx.Err() == nil && n.Add(1) <= maxCalls {
				t := time.Now()
				if err := call(ctx); err != nil {
					cancel(err)
					return
				}
				lats[w] = append(lats[w], time.Since(t))
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	if err := context.Cause(ctx); err != nil {
		return phase{}, err
	}
	all := slices.Concat(lats...)
	slices.Sort(all)
	if len(all) == 0 {
		return phase{}, errors.New("no call completed")
	}
	pct := func(q float64) time.Duration { return all[min(len(all)-1, int(q*float64(len(all))))] }
	return phase{calls: len(all), perSec: float64(len(all)) / elapsed.Seconds(), p50: pct(0.50), p99: pct(0.99)}, nil
}

func ms(d time.Duration) string {
	return fmt.Sprintf("%.3fms", float64(d)/float64(time.Millisecond))
}

// serve is a running arx serve.
type serve struct {
	cmd    *exec.Cmd
	url    string
	data   string
	exited chan struct{}
}

// startServe starts arx serve on a free loopback port and waits until it is
// ready.
func startServe(ctx context.Context, bin, data string) (*serve, error) {
	cmd := exec.Command(bin, "serve", "--listen", "127.0.0.1:0", "--data", data, "--log-format", "json")
	dieWithParent(cmd)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	s := &serve{cmd: cmd, data: data, exited: make(chan struct{})}
	urls := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			var rec struct {
				Level string `json:"level"`
				Msg   string `json:"msg"`
				URL   string `json:"url"`
			}
			switch err := json.Unmarshal(sc.Bytes(), &rec); {
			case err == nil && rec.Msg == "arx serving":
				select {
				case urls <- rec.URL:
				default:
				}
			case err == nil && (rec.Level == "WARN" || rec.Level == "ERROR"):
				fmt.Fprintln(os.Stderr, "arx serve:", sc.Text())
			case err != nil:
				// Not JSON: a crash, or the first start's notice (which holds
				// the admin token: not printed).
				if line := strings.TrimSpace(sc.Text()); line != "" && !strings.Contains(line, "ARX_ADMIN_TOKEN") && !strings.HasPrefix(line, "First start") {
					fmt.Fprintln(os.Stderr, "arx serve:", line)
				}
			}
		}
		cmd.Wait()
		close(s.exited)
	}()
	select {
	case s.url = <-urls:
	case <-s.exited:
		return nil, errors.New("arx serve exited at start")
	case <-time.After(30 * time.Second):
		s.stop()
		return nil, errors.New("arx serve did not start within 30s")
	case <-ctx.Done():
		s.stop()
		return nil, ctx.Err()
	}
	return s, s.ready(ctx)
}

func (s *serve) ready(ctx context.Context) error {
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); {
		if resp, err := http.Get(s.url + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return errors.New("arx serve was not ready within 30s")
}

// hire hires the benchmark's agent: one connector, bench, whose one action
// is the tool, low risk, no budget that a run could reach.
func (s *serve) hire(ctx context.Context, tool string) (string, error) {
	admin, err := os.ReadFile(filepath.Join(s.data, "admin.token"))
	if err != nil {
		return "", err
	}
	manifest := `apiVersion: arx.dev/v1
kind: JobDescription
agent:
  name: bench-mcp
  owner: bench@example.com
scope:
  connectors:
    bench:
      actions:
        ` + tool + `: {risk: low}
approval:
  approvers: [boss@example.com]
budget:
  max_call_duration: 5m
termination:
  notify: [bench@example.com]
`
	body, _ := json.Marshal(map[string]string{"manifest": manifest})
	req, _ := http.NewRequestWithContext(ctx, "POST", s.url+"/v1/agents", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(admin)))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var out struct {
		Token string `json:"token"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&out); err != nil || resp.StatusCode != http.StatusCreated {
		return "", fmt.Errorf("hire: HTTP %d %v", resp.StatusCode, err)
	}
	return out.Token, nil
}

func (s *serve) stop() {
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(30 * time.Second):
		s.cmd.Process.Kill()
		<-s.exited
	}
}

// upstreamMain is the Go echo MCP server: one tool, echo, that answers its
// message at once, so that the figures are the transports' and the
// gateway's, not a tool's.
func upstreamMain() int {
	s := mcp.NewServer(&mcp.Implementation{Name: "bench-echo", Version: "1"}, nil)
	type in struct {
		Message string `json:"message"`
	}
	mcp.AddTool(s, &mcp.Tool{Name: "echo", Description: "Echoes the message"},
		func(_ context.Context, _ *mcp.CallToolRequest, a in) (*mcp.CallToolResult, any, error) {
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "Echo: " + a.Message}}}, nil, nil
		})
	if err := s.Run(context.Background(), &mcp.StdioTransport{}); err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, mcp.ErrConnectionClosed) {
		fmt.Fprintln(os.Stderr, "bench echo upstream:", err)
		return 1
	}
	return 0
}
