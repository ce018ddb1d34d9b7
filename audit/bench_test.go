package audit

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/arxsec/arx/internal/publish"
	"github.com/arxsec/arx/record"
)

// dirSource reads a directory without the file backend's checks.
type dirSource string

func (d dirSource) Get(_ context.Context, p string) ([]byte, error) {
	return os.ReadFile(filepath.Join(string(d), p))
}

type dirBucket struct{ dirSource }

func (b dirBucket) Put(_ context.Context, p string, data []byte, _ publish.PutOptions) error {
	fp := filepath.Join(string(b.dirSource), p)
	os.MkdirAll(filepath.Dir(fp), 0o755)
	return os.WriteFile(fp, data, 0o644)
}
func (b dirBucket) Delete(context.Context, string) error { return nil }
func (b dirBucket) String() string                       { return string(b.dirSource) }

// buildLog writes n chained entries of 100 agents and a signed checkpoint:
// governed calls, each its call.requested, credential.issued and
// call.completed in a row, as a busy log holds them; ids are UUIDs, as ARX
// writes them.
func buildLog(tb testing.TB, dir string, n int) (logKey string, bytes int64) {
	tb.Helper()
	skey, vkey, _ := record.GenerateKey("bench.arx.test/log")
	signer, _ := record.NewSigner(skey)
	w := publish.NewLogWriter(context.Background(), dirBucket{dirSource(dir)})
	heads := make([]string, 100)
	t0 := time.Date(2026, 11, 26, 7, 0, 0, 0, time.UTC)
	for i := 0; i < n; i++ {
		a := (i / 3) % len(heads)
		e := &record.Entry{Index: int64(i), Time: t0.Add(time.Duration(i) * time.Millisecond), Agent: fmt.Sprintf("%08x-0000-4000-8000-000000000000", a),
			Prev: heads[a], Type: []string{record.TypeCallRequested, record.TypeCredentialIssued, record.TypeCallCompleted}[i%3], Call: fmt.Sprintf("00000000-0000-7000-8000-%012x", i/3), Connector: "salesforce",
			Action: "account.read", Risk: "low", Actor: "agent:x", Data: map[string]any{"summary": "account 0017 (read)", "expires_at": t0.Format(record.TimeFormat)}}
		b, err := e.Marshal()
		if err != nil {
			tb.Fatal(err)
		}
		heads[a] = record.HashString(record.LeafHash(b))
		w.Add(b)
		bytes += int64(len(b))
	}
	size, root, err := w.Finish()
	if err != nil {
		tb.Fatal(err)
	}
	cp, _ := record.SignCheckpoint(signer, size, root)
	os.WriteFile(filepath.Join(dir, "checkpoint"), cp, 0o644)
	return vkey, bytes
}

// BenchmarkVerify measures Verify on a log of 200,000 entries in a
// directory, read as arx audit verify reads a file:// bucket (go run
// ./bench/audit prints the figures of a million).
func BenchmarkVerify(b *testing.B) {
	dir := b.TempDir()
	const n = 200_000
	key, size := buildLog(b, dir, n)
	if os.Getenv("ARX_BENCH_WAIT") != "" {
		time.Sleep(5 * time.Second) // let the page cache settle before profiling
	}
	b.SetBytes(size) // the entries verified in one op
	b.ResetTimer()
	for b.Loop() {
		rep, err := Verify(context.Background(), Dir(dir), Options{LogKey: key})
		if err != nil || !rep.OK {
			b.Fatal(err, rep.Problems)
		}
	}
	b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "entries/s")
}

// BenchmarkVerifyMemory is BenchmarkVerify from memory: no file reads.
func BenchmarkVerifyMemory(b *testing.B) {
	dir := b.TempDir()
	const n = 200_000
	key, _ := buildLog(b, dir, n)
	m := memBucket{}
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			rel, _ := filepath.Rel(dir, p)
			m[filepath.ToSlash(rel)], _ = os.ReadFile(p)
		}
		return nil
	})
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		rep, err := Verify(context.Background(), m, Options{LogKey: key})
		if err != nil || !rep.OK {
			b.Fatal(err, rep.Problems)
		}
	}
	b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "entries/s")
}
