package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/arxsec/arx/internal/arxtest"
)

// Timeouts of the server's life cycle.
const (
	buildTimeout = 5 * time.Minute
	startTimeout = 30 * time.Second
	// stopTimeout covers arx serve's own graceful shutdown (10s by default)
	// and its final checkpoint.
	stopTimeout = 30 * time.Second
	// maxLogLines bounds the warnings and errors kept from the server's log.
	maxLogLines = 20
)

// buildArx builds ./cmd/arx of the module the current directory is in.
func buildArx(ctx context.Context, out string) error {
	ctx, cancel := context.WithTimeout(ctx, buildTimeout)
	defer cancel()
	gomod, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(gomod))
	if mod == "" || mod == os.DevNull {
		return errors.New("not inside the arx module: run from the repository, or pass -arx PATH")
	}
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, "./cmd/arx")
	cmd.Dir = filepath.Dir(mod)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go build ./cmd/arx in %s: %w", cmd.Dir, err)
	}
	return nil
}

// arxProc is a running arx serve.
type arxProc struct {
	cmd    *exec.Cmd
	url    string
	exited chan struct{} // closed when the process has exited
	err    error         // its exit status, once exited is closed

	mu       sync.Mutex
	problems []string // WARN and ERROR lines of its log, at most maxLogLines
	nProblem int
	other    []string // lines that are not JSON (a crash, a usage error)
	// checked is closed when the store's background check of the log at
	// rest has ended ("the log checks out"), at checkedAt, after checkTook.
	checked   chan struct{}
	checkedAt time.Time
	checkTook string
}

// waitChecked waits (at most d) for the store's background check of the
// log to end, and says whether it did.
func (p *arxProc) waitChecked(ctx context.Context, d time.Duration) bool {
	select {
	case <-p.checked:
		return true
	case <-time.After(d):
	case <-ctx.Done():
	case <-p.exited:
	}
	return false
}

// startArx starts arx serve on a free loopback port (port 0: the server
// picks one and logs it, so no other process can take it in between) and
// waits until /readyz answers.
func startArx(ctx context.Context, bin, dataDir string, extra ...string) (*arxProc, error) {
	return startArxOn(ctx, -1, bin, dataDir, extra...)
}

// startArxOn is startArx held to one CPU (taskset; cpu < 0: any).
func startArxOn(ctx context.Context, cpu int, bin, dataDir string, extra ...string) (*arxProc, error) {
	args := append([]string{"serve", "--listen", "127.0.0.1:0", "--data", dataDir, "--log-format", "json"}, extra...)
	cmd := exec.Command(bin, args...)
	if cpu >= 0 {
		cmd = exec.Command("taskset", append([]string{"-c", strconv.Itoa(cpu), bin}, args...)...)
	}
	dieWithParent(cmd)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &arxProc{cmd: cmd, exited: make(chan struct{}), checked: make(chan struct{})}
	urls := make(chan string, 1)
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		p.readLog(stderr, urls)
	}()
	go func() {
		<-scanned // Wait closes the pipe: read it to the end first
		p.err = cmd.Wait()
		close(p.exited)
	}()

	fail := func(err error) (*arxProc, error) {
		p.stop()
		p.mu.Lock()
		defer p.mu.Unlock()
		if lines := slices.Concat(p.other, p.problems); len(lines) > 0 {
			err = fmt.Errorf("%w; server log:\n  %s", err, strings.Join(lines, "\n  "))
		}
		return nil, err
	}
	deadline := time.NewTimer(startTimeout)
	defer deadline.Stop()
	select {
	case p.url = <-urls:
	case <-p.exited:
		return fail(fmt.Errorf("arx serve exited at start: %v", p.err))
	case <-deadline.C:
		return fail(fmt.Errorf("arx serve did not log its address within %s", startTimeout))
	case <-ctx.Done():
		return fail(ctx.Err())
	}
	client := &http.Client{Timeout: 2 * time.Second}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		resp, err := client.Get(p.url + "/readyz")
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p, nil
			}
		}
		select {
		case <-tick.C:
		case <-p.exited:
			return fail(fmt.Errorf("arx serve exited before it was ready: %v", p.err))
		case <-deadline.C:
			return fail(fmt.Errorf("arx serve was not ready within %s (last: %v)", startTimeout, errOrStatus(err, resp)))
		case <-ctx.Done():
			return fail(ctx.Err())
		}
	}
}

func errOrStatus(err error, resp *http.Response) string {
	if err != nil {
		return err.Error()
	}
	return resp.Status
}

// readLog reads the server's JSON log: it picks the address from the
// "arx serving" line and keeps warnings, errors and lines that are not JSON.
// The first-start notice with the admin token is not kept.
func (p *arxProc) readLog(r io.Reader, urls chan<- string) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	sent := false
	for sc.Scan() {
		line := sc.Text()
		var rec struct {
			Level string        `json:"level"`
			Msg   string        `json:"msg"`
			URL   string        `json:"url"`
			Took  time.Duration `json:"took"` // slog's JSON writes a duration in nanoseconds
		}
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			line = strings.TrimSpace(line)
			if line == "" || strings.Contains(line, "ARX_ADMIN_TOKEN") || strings.HasPrefix(line, "First start:") {
				continue
			}
			p.keep(&p.other, line)
			continue
		}
		if rec.Msg == "sqlite: the log checks out" {
			p.mu.Lock()
			p.checkedAt, p.checkTook = time.Now(), rec.Took.Round(time.Millisecond).String()
			p.mu.Unlock()
			close(p.checked)
		}
		if rec.Msg == "arx serving" && !sent {
			urls <- rec.URL
			sent = true
		}
		if rec.Level == "WARN" || rec.Level == "ERROR" {
			p.mu.Lock()
			p.nProblem++
			p.mu.Unlock()
			p.keep(&p.problems, line)
		}
	}
	if err := sc.Err(); err != nil {
		p.keep(&p.other, "bench: reading the server log: "+err.Error())
	}
}

func (p *arxProc) keep(lines *[]string, line string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(*lines) < maxLogLines {
		*lines = append(*lines, line)
	}
}

// stop shuts the server down gracefully with SIGTERM and reports how it
// exited; it kills it only when it does not exit in time.
func (p *arxProc) stop() error {
	select {
	case <-p.exited:
		if p.err != nil {
			return fmt.Errorf("arx serve had already exited: %v", p.err)
		}
		return errors.New("arx serve had already exited")
	default:
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return fmt.Errorf("SIGTERM: %w", err)
	}
	t := time.NewTimer(stopTimeout)
	defer t.Stop()
	select {
	case <-p.exited:
		if p.err != nil {
			return fmt.Errorf("arx serve exited after SIGTERM with %v", p.err)
		}
		return nil
	case <-t.C:
		p.cmd.Process.Kill()
		<-p.exited
		return fmt.Errorf("arx serve did not exit within %s of SIGTERM: killed", stopTimeout)
	}
}

// reportLog prints what the server logged at WARN or above, and any line
// that was not JSON. It reports whether there was anything at all.
func (p *arxProc) reportLog(w io.Writer) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.nProblem == 0 && len(p.other) == 0 {
		fmt.Fprintf(w, "server log: no warnings or errors\n")
		return false
	}
	fmt.Fprintf(w, "server log: %d warnings or errors", p.nProblem)
	if len(p.problems) < p.nProblem {
		fmt.Fprintf(w, " (first %d shown)", len(p.problems))
	}
	fmt.Fprintf(w, ":\n")
	for _, l := range p.problems {
		fmt.Fprintf(w, "  %s\n", l)
	}
	for _, l := range p.other {
		fmt.Fprintf(w, "  %s\n", l)
	}
	return true
}

// agent is one hired agent.
type agent struct {
	name, id, token string
}

// hireAgents hires n agents with names unique to this bench process, so a
// kept data directory (-data) can be benchmarked again.
func hireAgents(ctx context.Context, t *target, adminToken string, n int) ([]agent, error) {
	var b [3]byte
	rand.Read(b[:])
	prefix := "bench-" + hex.EncodeToString(b[:])
	agents := make([]agent, 0, n)
	for i := range n {
		name := fmt.Sprintf("%s-%03d", prefix, i+1)
		body, err := json.Marshal(map[string]string{"manifest": fmt.Sprintf(arxtest.BenchManifest, name)})
		if err != nil {
			return nil, err
		}
		var out struct {
			Agent struct {
				ID string `json:"id"`
			} `json:"agent"`
			Token string `json:"token"`
		}
		if err := t.do(ctx, http.MethodPost, "/v1/agents", adminToken, body, http.StatusCreated, &out); err != nil {
			return nil, fmt.Errorf("agent %s: %w", name, err)
		}
		if out.Agent.ID == "" || !strings.HasPrefix(out.Token, "arxa_") {
			return nil, fmt.Errorf("agent %s: the answer has no agent id or no arxa_ token", name)
		}
		agents = append(agents, agent{name: name, id: out.Agent.ID, token: out.Token})
	}
	return agents, nil
}

// Record entry types a governed call appends.
const (
	typeCredentialIssued = "credential.issued"
	typeCallCompleted    = "call.completed"
)

// callEntries reads record entries from the log (GET /v1/log/entries) and
// returns the canonical bytes of those a governed call appends, up to 1000.
func callEntries(ctx context.Context, t *target, adminToken string) ([][]byte, error) {
	const page, maxPages, want = 1000, 10, 1000
	var out [][]byte
	start := 0
	for range maxPages {
		var resp struct {
			Entries []struct {
				Index int    `json:"index"`
				Data  string `json:"data"`
			} `json:"entries"`
		}
		path := fmt.Sprintf("/v1/log/entries?start=%d&limit=%d", start, page)
		if err := t.do(ctx, http.MethodGet, path, adminToken, nil, http.StatusOK, &resp); err != nil {
			return nil, err
		}
		for _, e := range resp.Entries {
			b, err := base64.StdEncoding.DecodeString(e.Data)
			if err != nil {
				return nil, fmt.Errorf("entry %d: data is not base64: %v", e.Index, err)
			}
			var head struct {
				Type string `json:"type"`
			}
			if err := json.Unmarshal(b, &head); err != nil {
				return nil, fmt.Errorf("entry %d: not JSON: %v", e.Index, err)
			}
			if head.Type == typeCredentialIssued || head.Type == typeCallCompleted {
				out = append(out, b)
			}
		}
		if len(out) >= want || len(resp.Entries) < page {
			break
		}
		start += len(resp.Entries)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no %s or %s entries in the log", typeCredentialIssued, typeCallCompleted)
	}
	return out, nil
}
