package main

import (
	"fmt"
	"io"
	"math"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
)

// targetP99 is the open loop's latency goal at 1000 calls/s.
const targetP99 = 5 * time.Millisecond

// runResult is everything one run measured.
type runResult struct {
	governed closedResult
	open     openResult
	echo     closedResult
	fsync    fsyncResult

	governedCPU, openCPU, echoCPU cpuUse // during each measured window
}

func printRun(w io.Writer, r, runs int, res runResult) {
	g, o, e := res.governed, res.open, res.echo
	fmt.Fprintf(w, "run %d/%d\n", r, runs)
	fmt.Fprintf(w, "  governed, closed loop  %8s calls/s   p50 %s  p90 %s  p99 %s  max %s  (%s calls, %d failed)\n",
		fmtInt(g.perSec), fmtMs(g.lat.p50), fmtMs(g.lat.p90), fmtMs(g.lat.p99), fmtMs(g.lat.max), fmtInt(float64(g.calls)), g.failed)
	fmt.Fprintf(w, "  %24s%s\n", "", res.governedCPU)
	if b := bytesPerCall(res.governedCPU, g.calls); b >= 0 {
		fmt.Fprintf(w, "  %24sarx serve wrote %s B to storage per governed call\n", "", fmtInt(b))
	}
	fmt.Fprintf(w, "  governed, open loop    %8s/s offered, %s/s achieved   p50 %s  p90 %s  p99 %s  max %s  (%s calls, %d failed)\n",
		fmtInt(o.offered), fmtInt(o.achieved), fmtMs(o.lat.p50), fmtMs(o.lat.p90), fmtMs(o.lat.p99), fmtMs(o.lat.max), fmtInt(float64(o.calls)), o.failed)
	fmt.Fprintf(w, "  %24s%s\n", "", res.openCPU)
	fmt.Fprintf(w, "  echo, closed loop      %8s calls/s   p50 %s  p90 %s  p99 %s  max %s  (%s calls, %d failed)\n",
		fmtInt(e.perSec), fmtMs(e.lat.p50), fmtMs(e.lat.p90), fmtMs(e.lat.p99), fmtMs(e.lat.max), fmtInt(float64(e.calls)), e.failed)
	fmt.Fprintf(w, "  %24s%s\n", "", res.echoCPU)
	fmt.Fprintf(w, "  raw write+fsync        %8s appends/s (%s appends)\n", fmtInt(res.fsync.perSec), fmtInt(float64(res.fsync.appends)))
}

func printSummary(w io.Writer, cfg config, agents int, entries [][]byte, rs []runResult) {
	col := func(f func(runResult) float64) []float64 {
		out := make([]float64, len(rs))
		for i, r := range rs {
			out[i] = f(r)
		}
		return out
	}
	ns := func(d time.Duration) float64 { return float64(d) }
	gov := col(func(r runResult) float64 { return r.governed.perSec })
	echo := col(func(r runResult) float64 { return r.echo.perSec })
	fsync := col(func(r runResult) float64 { return r.fsync.perSec })
	achieved := col(func(r runResult) float64 { return r.open.achieved })
	med := func(f func(runResult) float64) time.Duration { return time.Duration(median(col(f))) }
	gp50 := med(func(r runResult) float64 { return ns(r.governed.lat.p50) })
	gp90 := med(func(r runResult) float64 { return ns(r.governed.lat.p90) })
	gp99 := med(func(r runResult) float64 { return ns(r.governed.lat.p99) })
	op50 := med(func(r runResult) float64 { return ns(r.open.lat.p50) })
	op99 := med(func(r runResult) float64 { return ns(r.open.lat.p99) })
	ep50 := med(func(r runResult) float64 { return ns(r.echo.lat.p50) })
	ep99 := med(func(r runResult) float64 { return ns(r.echo.lat.p99) })
	openP99s := col(func(r runResult) float64 { return float64(r.open.lat.p99) / float64(time.Millisecond) })
	perRunRatio := col(func(r runResult) float64 { return ratio(r.governed.perSec, r.echo.perSec) })
	appends := 2 * median(gov)
	mean := 0
	for _, e := range entries {
		mean += len(e)
	}
	mean /= max(1, len(entries))

	row := func(label, format string, args ...any) {
		fmt.Fprintf(w, "%-46s %s\n", label, fmt.Sprintf(format, args...))
	}
	fmt.Fprintf(w, "summary: medians of %d runs of %s (after %s warm-up); %d CPUs shared by the client and both servers\n",
		len(rs), cfg.duration, cfg.warmup, runtime.NumCPU())
	row(fmt.Sprintf("governed calls/s (closed loop, %d agents)", agents), "median %s   runs: %s", fmtInt(median(gov)), fmtInts(gov))
	row("call latency p50 / p90 / p99", "%s / %s / %s", fmtMs(gp50), fmtMs(gp90), fmtMs(gp99))
	met := "met"
	if op99 >= targetP99 {
		met = "NOT met"
	}
	row(fmt.Sprintf("open loop %s/s: p50 / p99", fmtInt(cfg.rate)), "%s / %s  (achieved %s/s)   runs p99: %s ms",
		fmtMs(op50), fmtMs(op99), fmtInt(median(achieved)), fmtFloats(openP99s, 2))
	if cfg.rate == 1000 {
		row("", "target p99 < %s at 1000/s: %s", fmtMs(targetP99), met)
	}
	row("echo limit (2 round trips), same client", "median %s calls/s  -> governed/echo = %.2f   runs: %s",
		fmtInt(median(echo)), ratio(median(gov), median(echo)), fmtInts(echo))
	row("echo latency p50 / p99", "%s / %s   governed/echo per run: %s", fmtMs(ep50), fmtMs(ep99), fmtFloats(perRunRatio, 2))
	gc := "(group commit)"
	if appends <= median(fsync) {
		gc = "(group commit not ahead)"
	}
	row("record appends/s (server) vs raw fsync/s", "%s vs %s  -> %.1fx %s   raw runs: %s",
		fmtInt(appends), fmtInt(median(fsync)), ratio(appends, median(fsync)), gc, fmtInts(fsync))
	if rs[0].governedCPU.ok {
		row("CPU in the closed loop (cores)", "arx serve %.2f, client %.2f, other processes %.2f (of %d)",
			median(col(func(r runResult) float64 { return r.governedCPU.arx })),
			median(col(func(r runResult) float64 { return r.governedCPU.client })),
			median(col(func(r runResult) float64 { return r.governedCPU.other })), runtime.NumCPU())
	}
	if written := col(func(r runResult) float64 { return bytesPerCall(r.governedCPU, r.governed.calls) }); slices.Min(written) >= 0 {
		row("storage writes per governed call", "%s B by arx serve (WAL and pages) for 2 entries of %d B   runs: %s",
			fmtInt(median(written)), mean, fmtInts(written))
	}
	row("record entry size", "mean %d B (%d credential.issued / call.completed entries)", mean, len(entries))
	fmt.Fprintln(w)
	fmt.Fprintf(w, "governed call = POST /v1/calls (201, credential) + POST /v1/calls/{id}/complete (200): two round trips,\n")
	fmt.Fprintf(w, "  two record entries (credential.issued, call.completed), each durable (SQLite WAL, synchronous=FULL)\n")
	fmt.Fprintf(w, "  before its answer. Latency is of the pair; open-loop latency counts from each call's due time.\n")
	fmt.Fprintf(w, "echo = a bare net/http server in a second process answering both round trips with the request body:\n")
	fmt.Fprintf(w, "  the ceiling of this client, loopback HTTP and this machine, with no work behind it.\n")
	fmt.Fprintf(w, "record appends/s (server) = 2 x governed calls/s. raw fsync/s = one write+fsync per entry of the same\n")
	fmt.Fprintf(w, "  bytes, in the server's data directory: the limit of a log that makes each entry durable on its own.\n")
	if appends > median(fsync) {
		fmt.Fprintf(w, "  The server is above that limit because it group-commits: the record entries of concurrent calls\n")
		fmt.Fprintf(w, "  share one SQLite transaction and one fsync, and no call is answered before that fsync returns.\n")
	} else {
		fmt.Fprintf(w, "  The server is NOT above that limit in this run: group commit (concurrent calls sharing one\n")
		fmt.Fprintf(w, "  transaction and one fsync) did not pay off here; see the per-run figures.\n")
	}
	fmt.Fprintln(w)
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

func ratio(a, b float64) float64 {
	if b == 0 {
		return math.NaN()
	}
	return a / b
}

// fmtInt rounds f and groups its digits by thousands: 14800 -> "14,800".
func fmtInt(f float64) string {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return "-"
	}
	s := strconv.FormatInt(int64(math.Round(f)), 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

func fmtInts(v []float64) string {
	out := make([]string, len(v))
	for i, f := range v {
		out[i] = fmtInt(f)
	}
	return strings.Join(out, " ")
}

func fmtFloats(v []float64, prec int) string {
	out := make([]string, len(v))
	for i, f := range v {
		out[i] = strconv.FormatFloat(f, 'f', prec, 64)
	}
	return strings.Join(out, " ")
}

// fmtMs prints a duration in milliseconds, with two decimals below 10 ms.
func fmtMs(d time.Duration) string {
	m := float64(d) / float64(time.Millisecond)
	if m < 10 {
		return fmt.Sprintf("%.2f ms", m)
	}
	return fmt.Sprintf("%.1f ms", m)
}

// bytesPerCall is what arx serve wrote to storage per call in a closed
// loop's window; -1 when unknown.
func bytesPerCall(u cpuUse, calls int) float64 {
	if u.arxWritten < 0 || calls == 0 {
		return -1
	}
	return float64(u.arxWritten) / float64(calls)
}
