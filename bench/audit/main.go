// Command audit measures `arx audit verify` and publishing, and prints
// figures for a note:
//
//   - verify on a log of -entries entries (default 1,000,000) in a file://
//     bucket, each run: the auditor in this process, reading the bucket as
//     the CLI does, and again from memory (the verifier without the file
//     system), in entries per CPU second; raw SHA-256 over the same entry
//     bytes, one Sum256 an entry (the hashing no verifier can skip), in
//     entries per CPU second, and the ratios; and the real CLI, arx audit
//     verify, timed by its user and system CPU time. Medians at the end.
//
//   - publish lag under load: from an entry's commit to its entry bundle
//     being visible in the bucket, p50 and p99, with arx serve's default
//     intervals (a checkpoint a second, an upload round every two).
//
// Run it from the repository root (it builds ./cmd/arx unless -arx names a
// binary):
//
//	go run ./bench/audit
//	go run ./bench/audit -entries 2000000 -runs 5 -load 20s
package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/arxsec/arx/audit"
	"github.com/arxsec/arx/internal/arxtest"
	"github.com/arxsec/arx/internal/publish"
	"github.com/arxsec/arx/internal/publish/file"
	"github.com/arxsec/arx/internal/server"
	"github.com/arxsec/arx/record"
	"github.com/google/uuid"
)

func main() {
	entries := flag.Int("entries", 1_000_000, "entries in the log the verifier reads (at most 20,000,000)")
	agents := flag.Int("agents", 1000, "agents the entries are spread over")
	runs := flag.Int("runs", 3, "verify runs; the median is reported")
	load := flag.Duration("load", 10*time.Second, "time of the publish-lag load (0 skips it; at most 5m)")
	workers := flag.Int("workers", 8, "concurrent callers in the publish-lag load (at most 256)")
	arx := flag.String("arx", "", "the arx binary to time (default: go build ./cmd/arx, from the repository root)")
	flag.Parse()
	if *entries < 1 || *entries > 20_000_000 || *agents < 1 || *runs < 1 || *runs > 20 || *load < 0 || *load > 5*time.Minute || *workers < 1 || *workers > 256 {
		fmt.Fprintln(os.Stderr, "bench/audit: error: a flag is out of range; see -h")
		os.Exit(2)
	}
	work, err := os.MkdirTemp("", "arx-bench-audit-")
	if err != nil {
		fail(err)
	}
	defer os.RemoveAll(work)
	fmt.Printf("machine: %d CPUs, GOMAXPROCS %d, %s/%s, %s\n\n", runtime.NumCPU(), runtime.GOMAXPROCS(0), runtime.GOOS, runtime.GOARCH, runtime.Version())
	if err := verifyBench(work, *entries, *agents, *runs, *arx); err != nil {
		fail(err)
	}
	if *load > 0 {
		if err := lagBench(work, *load, *workers); err != nil {
			fail(err)
		}
	}
}

func fail(err error) {
	fmt.Fprintf(os.Stderr, "bench/audit: error: %v\n", err)
	os.Exit(1)
}

// dirBucket is a bucket in a directory without fsync: building the
// benchmark's log should not take longer than verifying it.
type dirBucket struct{ dir string }

func (b dirBucket) Get(_ context.Context, p string) ([]byte, error) {
	return os.ReadFile(filepath.Join(b.dir, p))
}

func (b dirBucket) Put(_ context.Context, p string, data []byte, _ publish.PutOptions) error {
	fp := filepath.Join(b.dir, p)
	if err := os.MkdirAll(filepath.Dir(fp), 0o755); err != nil {
		return err
	}
	return os.WriteFile(fp, data, 0o644)
}

func (b dirBucket) Delete(_ context.Context, p string) error {
	err := os.Remove(filepath.Join(b.dir, p))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}

func (b dirBucket) String() string { return "file://" + b.dir }

// entryBytes keeps the entries in one pointer-free block, so the garbage
// collector has nothing to scan while verify runs beside them.
type entryBytes struct {
	blob []byte
	ends []int
}

func (e *entryBytes) add(b []byte) {
	e.blob = append(e.blob, b...)
	e.ends = append(e.ends, len(e.blob))
}

func (e *entryBytes) each(f func([]byte)) {
	start := 0
	for _, end := range e.ends {
		f(e.blob[start:end])
		start = end
	}
}

// buildLog writes n entries shaped like a governed call's (requested,
// issued, completed), chained per agent, with a checkpoint cosigned by two
// witnesses. It returns the entries and the keys an auditor holds.
func buildLog(dir string, n, agents int) (entries *entryBytes, opts audit.Options, err error) {
	entries = &entryBytes{}
	skey, vkey, err := record.GenerateKey("bench.arx.test/log")
	if err != nil {
		return nil, opts, err
	}
	signer, _ := record.NewSigner(skey)
	ctx := context.Background()
	w := publish.NewLogWriter(ctx, dirBucket{dir})
	ids := make([]string, agents)
	heads := make([]string, agents)
	for i := range ids {
		ids[i] = uuid.NewString()
	}
	types := []string{record.TypeCallRequested, record.TypeCredentialIssued, record.TypeCallCompleted}
	t0 := time.Date(2026, 11, 26, 7, 0, 0, 0, time.UTC)
	call := ""
	for i := 0; i < n; i++ {
		a := (i / 3) % agents
		if i%3 == 0 {
			call = uuid.NewString()
		}
		e := &record.Entry{Index: int64(i), Time: t0.Add(time.Duration(i) * time.Millisecond), Agent: ids[a], Prev: heads[a],
			Type: types[i%3], Call: call, Connector: "salesforce", Action: "account.read", Risk: "low", Actor: "agent:" + ids[a],
			Data: map[string]any{"summary": "account 0017 (read)", "expires_at": t0.Add(time.Minute).Format(record.TimeFormat), "token_id": "t-" + ids[a][:8]}}
		b, err := e.Marshal()
		if err != nil {
			return nil, opts, err
		}
		heads[a] = record.HashString(record.LeafHash(b))
		if err := w.Add(b); err != nil {
			return nil, opts, err
		}
		entries.add(b)
	}
	size, root, err := w.Finish()
	if err != nil {
		return nil, opts, err
	}
	cp, err := record.SignCheckpoint(signer, size, root)
	if err != nil {
		return nil, opts, err
	}
	body := string(cp[:indexBlank(cp)+1])
	opts = audit.Options{LogKey: vkey, Quorum: 2}
	for _, name := range []string{"w1.bench.test", "w2.bench.test"} {
		wskey, wvkey, err := record.GenerateWitnessKey(name)
		if err != nil {
			return nil, opts, err
		}
		cs, _ := record.NewCosigner(wskey)
		line, err := record.Cosign(cs, body)
		if err != nil {
			return nil, opts, err
		}
		cp = record.AppendSignatures(cp, line)
		opts.WitnessKeys = append(opts.WitnessKeys, wvkey)
	}
	return entries, opts, dirBucket{dir}.Put(ctx, record.CheckpointPath, cp, publish.PutOptions{})
}

// indexBlank finds the blank line that ends a note's text.
func indexBlank(note []byte) int {
	for i := 0; i+1 < len(note); i++ {
		if note[i] == '\n' && note[i+1] == '\n' {
			return i
		}
	}
	return len(note) - 1
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

// memBucket is the bucket loaded into memory, read as audit.Dir reads a
// directory (copied into the verifier's buffers) but without the system
// calls: the verifier's own cost.
type memBucket map[string][]byte

func (m memBucket) Get(ctx context.Context, p string) ([]byte, error) {
	return m.GetAppend(ctx, p, nil)
}

func (m memBucket) GetAppend(_ context.Context, p string, dst []byte) ([]byte, error) {
	if b, ok := m[p]; ok {
		return append(dst, b...), nil
	}
	return dst, fmt.Errorf("%s: %w", p, fs.ErrNotExist)
}

func loadBucket(dir string) (memBucket, error) {
	m := memBucket{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err == nil {
			m[filepath.ToSlash(rel)], err = os.ReadFile(p)
		}
		return err
	})
	return m, err
}

// buildCLI builds arx into dir, unless path names one already built.
func buildCLI(dir, path string) (string, error) {
	if path != "" {
		return path, nil
	}
	path = filepath.Join(dir, "arx")
	cmd := exec.Command("go", "build", "-o", path, "./cmd/arx")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("building arx (run the benchmark from the repository root, or pass -arx): %w", err)
	}
	return path, nil
}

// runCLI runs arx audit verify on the bucket and returns the child's user
// and system CPU time and its wall time.
func runCLI(arx, dir string, opts audit.Options) (user, sys, wall time.Duration, err error) {
	args := []string{"audit", "verify", "--bucket", "file://" + dir, "--log-key", opts.LogKey}
	for _, k := range opts.WitnessKeys {
		args = append(args, "--witness-key", k)
	}
	cmd := exec.Command(arx, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	t0 := time.Now()
	err = cmd.Run()
	wall = time.Since(t0)
	if err != nil {
		return 0, 0, 0, fmt.Errorf("arx audit verify: %w\n%s", err, out.Bytes())
	}
	if !bytes.Contains(out.Bytes(), []byte("\nOK: ")) {
		return 0, 0, 0, fmt.Errorf("arx audit verify did not say OK:\n%s", out.Bytes())
	}
	return cmd.ProcessState.UserTime(), cmd.ProcessState.SystemTime(), wall, nil
}

// rawSHA256 hashes every entry once, as a verifier must at the least, and
// returns the CPU time it took.
func rawSHA256(entries *entryBytes) time.Duration {
	runtime.GC()
	var sink byte
	c0 := cpuTime()
	entries.each(func(e []byte) {
		h := sha256.Sum256(e)
		sink ^= h[0]
	})
	cpu := cpuTime() - c0
	if sink == 1 {
		runtime.KeepAlive(sink)
	}
	return cpu
}

// verifyRun runs the auditor once and returns its wall and CPU time.
func verifyRun(src audit.Source, opts audit.Options, n int) (wall, cpu time.Duration, err error) {
	bars := 0
	opts.Progress = func(done, total int64) { bars++ } // as the CLI's bar is called
	runtime.GC()
	c0, t0 := cpuTime(), time.Now()
	rep, err := audit.Verify(context.Background(), src, opts)
	wall, cpu = time.Since(t0), cpuTime()-c0
	if err != nil {
		return 0, 0, err
	}
	if !rep.OK || rep.Entries != int64(n) || bars == 0 {
		return 0, 0, fmt.Errorf("verify of the benchmark log failed: %d entries, %d progress calls, %v", rep.Entries, bars, rep.Problems)
	}
	return wall, cpu, nil
}

func verifyBench(work string, n, agents, runs int, arx string) error {
	dir := filepath.Join(work, "bucket")
	fmt.Printf("building a log of %d entries (%d agents) in file://%s ...\n", n, agents, dir)
	start := time.Now()
	entries, opts, err := buildLog(dir, n, agents)
	if err != nil {
		return err
	}
	total := int64(len(entries.blob))
	fmt.Printf("built in %.1fs: %.1f MB of entries, %d bytes an entry on average\n", time.Since(start).Seconds(), float64(total)/1e6, total/int64(n))
	if arx, err = buildCLI(work, arx); err != nil {
		return err
	}
	mem, err := loadBucket(dir)
	if err != nil {
		return err
	}
	fmt.Printf("CLI: %s\n\n", arx)
	var dirRate, dirWall, memRate, shaRate, dirRatio, memRatio, cliRate, cliWall, cliSys []float64
	rate := func(d time.Duration) float64 { return float64(n) / d.Seconds() }
	for r := 1; r <= runs; r++ {
		// The auditor as the CLI runs it, in this process: the file://
		// bucket read through audit.Dir.
		wall, cpu, err := verifyRun(audit.Dir(dir), opts, n)
		if err != nil {
			return err
		}
		// The same from memory: the verifier alone.
		_, mcpu, err := verifyRun(mem, opts, n)
		if err != nil {
			return err
		}
		sh := rawSHA256(entries)
		user, sys, cw, err := runCLI(arx, dir, opts)
		if err != nil {
			return err
		}
		dirRate, dirWall, memRate, shaRate = append(dirRate, rate(cpu)), append(dirWall, rate(wall)), append(memRate, rate(mcpu)), append(shaRate, rate(sh))
		dirRatio, memRatio = append(dirRatio, sh.Seconds()/cpu.Seconds()), append(memRatio, sh.Seconds()/mcpu.Seconds())
		cliRate, cliWall, cliSys = append(cliRate, rate(user+sys)), append(cliWall, rate(cw)), append(cliSys, sys.Seconds()/(user+sys).Seconds())
		fmt.Printf("run %d: verify %.2fs CPU (%.2fs wall): %.0f entries per CPU second; from memory %.2fs CPU: %.0f\n",
			r, cpu.Seconds(), wall.Seconds(), rate(cpu), mcpu.Seconds(), rate(mcpu))
		fmt.Printf("       raw SHA-256 %.2fs CPU: %.0f entries per CPU second (%.0f MB/s); verify / raw SHA-256 %.2f, from memory %.2f\n",
			sh.Seconds(), rate(sh), float64(total)/sh.Seconds()/1e6, dirRatio[r-1], memRatio[r-1])
		fmt.Printf("       arx audit verify %.2fs CPU (user %.2f + sys %.2f), %.2fs wall: %.0f entries per CPU second\n",
			(user + sys).Seconds(), user.Seconds(), sys.Seconds(), cw.Seconds(), rate(user+sys))
	}
	fmt.Printf("\nmedians of %d runs, %d entries:\n", runs, n)
	fmt.Printf("  verify, file:// bucket:     %9.0f entries per CPU second (%.0f entries/s wall)\n", median(dirRate), median(dirWall))
	fmt.Printf("  verify, from memory:        %9.0f entries per CPU second\n", median(memRate))
	fmt.Printf("  raw SHA-256, same bytes:    %9.0f entries per CPU second\n", median(shaRate))
	fmt.Printf("  verify / raw SHA-256:       %9.2f (from memory %.2f; target at least 0.5)\n", median(dirRatio), median(memRatio))
	fmt.Printf("  arx audit verify (CLI):     %9.0f entries per CPU second, user+sys of the child (%.0f entries/s wall, sys %.0f%% of CPU; target 1,000,000)\n\n",
		median(cliRate), median(cliWall), 100*median(cliSys))
	return nil
}

// lagBench runs governed calls against a server publishing to a file://
// bucket with the default intervals, and measures when each entry becomes
// visible in the bucket against when it was committed.
func lagBench(work string, d time.Duration, workers int) error {
	data := filepath.Join(work, "data")
	bdir := filepath.Join(work, "lag-bucket")
	b, err := file.New(bdir)
	if err != nil {
		return err
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	srv, err := server.Open(context.Background(), server.Config{DataDir: data, Listen: "127.0.0.1:0", Logger: logger, Publish: &publish.Config{Bucket: b}})
	if err != nil {
		return err
	}
	srv.Start()
	defer srv.Close()
	token, err := hire(srv.URL, srv.AdminToken)
	if err != nil {
		return err
	}
	fmt.Printf("publish lag: %d callers for %s against arx serve publishing to file://%s (checkpoint every 1s, upload round every %s)\n",
		workers, d, bdir, publish.DefaultPublishInterval)

	// Commit times: when the store's size first covered each index.
	var mu sync.Mutex
	committed := map[int64]time.Time{}
	visible := map[int64]time.Time{}
	var commitSize, visSize int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		ctx := context.Background()
		for {
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
			now := time.Now()
			if n, err := srv.Runtime.Store().TreeSize(ctx); err == nil {
				mu.Lock()
				for ; commitSize < n; commitSize++ {
					committed[commitSize] = now
				}
				mu.Unlock()
			}
			v := visibleSize(bdir, visSize)
			mu.Lock()
			for ; visSize < v; visSize++ {
				visible[visSize] = now
			}
			mu.Unlock()
		}
	}()
	var calls, failures, seq atomic.Int64
	deadline := time.Now().Add(d)
	var lw sync.WaitGroup
	for i := 0; i < workers; i++ {
		lw.Add(1)
		go func() {
			defer lw.Done()
			for time.Now().Before(deadline) {
				if err := governedCall(srv.URL, token, fmt.Sprintf("k%d", seq.Add(1))); err != nil {
					fmt.Fprintf(os.Stderr, "bench/audit: call: %v\n", err)
					failures.Add(1)
					return
				}
				calls.Add(1)
			}
		}()
	}
	lw.Wait()
	// Let the last entries reach the bucket.
	final, _ := srv.Runtime.Store().TreeSize(context.Background())
	for wait := time.Now().Add(15 * time.Second); time.Now().Before(wait); time.Sleep(10 * time.Millisecond) {
		mu.Lock()
		v := visSize
		mu.Unlock()
		if v >= final {
			break
		}
	}
	close(stop)
	wg.Wait()
	if failures.Load() > 0 {
		return fmt.Errorf("%d callers failed", failures.Load())
	}
	var lags []float64
	for i, ct := range committed {
		if vt, ok := visible[i]; ok {
			lags = append(lags, vt.Sub(ct).Seconds())
		}
	}
	if len(lags) == 0 {
		return errors.New("no entry became visible in the bucket")
	}
	slices.Sort(lags)
	pct := func(p float64) float64 { return lags[min(len(lags)-1, int(p*float64(len(lags))))] }
	fmt.Printf("%d calls (%.0f/s), %d entries committed, %d visible in the bucket\n", calls.Load(), float64(calls.Load())/d.Seconds(), len(committed), len(lags))
	fmt.Printf("publish lag, commit to visible: p50 %.0f ms, p99 %.0f ms, max %.0f ms\n", pct(0.50)*1000, pct(0.99)*1000, lags[len(lags)-1]*1000)
	return nil
}

var client = &http.Client{Timeout: 10 * time.Second}

func post(url, token string, body any, out any) error {
	b, _ := json.Marshal(body)
	req, err := http.NewRequest("POST", url, bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		return fmt.Errorf("%s: %d %s", url, resp.StatusCode, data)
	}
	if out != nil {
		return json.Unmarshal(data, out)
	}
	return nil
}

func hire(base, admin string) (string, error) {
	var out struct {
		Token string `json:"token"`
	}
	err := post(base+"/v1/agents", admin, map[string]string{"manifest": arxtest.Manifest}, &out)
	return out.Token, err
}

// governedCall requests a call and completes it: two entries.
func governedCall(base, token, key string) error {
	var c struct {
		ID string `json:"id"`
	}
	if err := post(base+"/v1/calls", token, map[string]string{"connector": "crm", "action": "account.read", "idempotency_key": key}, &c); err != nil {
		return err
	}
	return post(base+"/v1/calls/"+c.ID+"/complete", token, map[string]string{"outcome": "success"}, nil)
}

// visibleSize is how many entries the bucket's entry bundles hold, from
// the last known size on: full bundles, then the widest partial one.
func visibleSize(dir string, from int64) int64 {
	n := from / record.TileWidth
	for {
		if _, err := os.Stat(filepath.Join(dir, record.BundlePath(n, record.TileWidth))); err != nil {
			break
		}
		n++
	}
	best := n * record.TileWidth
	for w := record.TileWidth - 1; w >= 1; w-- {
		if _, err := os.Stat(filepath.Join(dir, record.BundlePath(n, w))); err == nil {
			best += int64(w)
			break
		}
	}
	return max(best, from)
}
