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

// closedPair is a closed loop of one number of callers, against arx serve
// and then against the echo server.
type closedPair struct {
	callers              int
	governed, echo       closedResult
	governedCPU, echoCPU cpuUse      // during each measured window
	store                storeCounts // the write path's counters over the governed window
	// inproc is the same calls made through the runtime in the bench's
	// process, with no HTTP, and inprocCPU the cores the process used.
	inproc    closedResult
	inprocCPU float64
}

// usPerCall is the CPU time per call, in microseconds, of cores busy
// serving perSec calls a second; -1 when either is unknown.
func usPerCall(cores, perSec float64) float64 {
	if cores < 0 || perSec <= 0 {
		return -1
	}
	return cores / perSec * 1e6
}

// runResult is everything one run measured.
type runResult struct {
	closed  []closedPair
	open    openResult
	openCPU cpuUse
	// openStore is what arx serve counted over the open loop: its own
	// latency for each round trip, without the client's and loopback's.
	openStore storeCounts
	// openEcho is the same open loop against the echo server: the latency
	// this client, loopback HTTP and this machine add with no work behind.
	openEcho openResult
	// openInproc is the same open loop in process (inProcessOpenLoop): the
	// governed call's latency without HTTP.
	openInproc openResult
	fsync      fsyncResult
}

// Targets of the write-path issue.
const (
	targetRatio    = 0.5  // governed / echo
	targetBytes    = 4096 // written per governed call
	targetPerBatch = 10   // entries per fsync at 64 callers
)

func printRun(w io.Writer, r, runs int, res runResult) {
	fmt.Fprintf(w, "run %d/%d\n", r, runs)
	for _, c := range res.closed {
		g, e := c.governed, c.echo
		fmt.Fprintf(w, "  %3d callers, governed  %8s calls/s   p50 %s  p90 %s  p99 %s  max %s  (%s calls, %d failed)\n",
			c.callers, fmtInt(g.perSec), fmtMs(g.lat.p50), fmtMs(g.lat.p90), fmtMs(g.lat.p99), fmtMs(g.lat.max), fmtInt(float64(g.calls)), g.failed)
		fmt.Fprintf(w, "  %24s%s\n", "", c.governedCPU)
		if b := bytesPerCall(c.governedCPU, g.calls); b >= 0 {
			fmt.Fprintf(w, "  %24sarx serve wrote %s B to storage per governed call", "", fmtInt(b))
			if d := devicePerCall(c.governedCPU, g.calls); d >= 0 {
				fmt.Fprintf(w, " (the disk: %s B)", fmtInt(d))
			}
			if pb := c.store.perBatch(); pb >= 0 {
				fmt.Fprintf(w, "; %.1f entries per durable write (%s writes/s, %.2f ms each); sequencer busy %.0f%% beginning batches, %.0f%% running Updates, %.0f%% committing",
					pb, fmtInt(c.store.batches/g.seconds()), c.store.commitMs(), 100*c.store.begin/g.seconds(), 100*c.store.run/g.seconds(), 100*c.store.commit/g.seconds())
			}
			fmt.Fprintln(w)
		}
		fmt.Fprintf(w, "  %3d callers, echo      %8s calls/s   p50 %s  p90 %s  p99 %s  max %s  (%s calls, %d failed)  -> governed/echo %.2f\n",
			c.callers, fmtInt(e.perSec), fmtMs(e.lat.p50), fmtMs(e.lat.p90), fmtMs(e.lat.p99), fmtMs(e.lat.max), fmtInt(float64(e.calls)), e.failed,
			ratio(g.perSec, e.perSec))
		fmt.Fprintf(w, "  %24s%s\n", "", c.echoCPU)
		p := c.inproc
		fmt.Fprintf(w, "  %3d callers, in process%8s calls/s   p50 %s  p90 %s  p99 %s  max %s  (%s calls, %d failed)  -> over HTTP / in process %.2f\n",
			c.callers, fmtInt(p.perSec), fmtMs(p.lat.p50), fmtMs(p.lat.p90), fmtMs(p.lat.p99), fmtMs(p.lat.max), fmtInt(float64(p.calls)), p.failed,
			ratio(g.perSec, p.perSec))
		if in, http := usPerCall(c.inprocCPU, p.perSec), usPerCall(c.governedCPU.arx, g.perSec); in >= 0 && http >= 0 && c.governedCPU.ok {
			fmt.Fprintf(w, "  %24sCPU per governed call: in process %.0f µs (%.2f cores), arx serve over HTTP %.0f µs\n", "", in, c.inprocCPU, http)
		}
	}
	o := res.open
	fmt.Fprintf(w, "  governed, open loop    %8s/s offered, %s/s achieved   p50 %s  p90 %s  p99 %s  max %s  (%s calls, %d failed)\n",
		fmtInt(o.offered), fmtInt(o.achieved), fmtMs(o.lat.p50), fmtMs(o.lat.p90), fmtMs(o.lat.p99), fmtMs(o.lat.max), fmtInt(float64(o.calls)), o.failed)
	fmt.Fprintf(w, "  %24s%s\n", "", res.openCPU)
	if s := res.openStore; len(s.served) > 0 {
		fmt.Fprintf(w, "  %24sarx serve's own time per round trip (histogram bucket bounds): p50 <= %s  p90 <= %s  p99 <= %s  p99.9 <= %s\n", "",
			fmtMs(s.servedQuantile(.5)), fmtMs(s.servedQuantile(.9)), fmtMs(s.servedQuantile(.99)), fmtMs(s.servedQuantile(.999)))
	}
	e := res.openEcho
	fmt.Fprintf(w, "  echo, open loop        %8s/s offered, %s/s achieved   p50 %s  p90 %s  p99 %s  max %s  (%s calls, %d failed)\n",
		fmtInt(e.offered), fmtInt(e.achieved), fmtMs(e.lat.p50), fmtMs(e.lat.p90), fmtMs(e.lat.p99), fmtMs(e.lat.max), fmtInt(float64(e.calls)), e.failed)
	i := res.openInproc
	fmt.Fprintf(w, "  in process, open loop  %8s/s offered, %s/s achieved   p50 %s  p90 %s  p99 %s  max %s  (%s calls, %d failed)\n",
		fmtInt(i.offered), fmtInt(i.achieved), fmtMs(i.lat.p50), fmtMs(i.lat.p90), fmtMs(i.lat.p99), fmtMs(i.lat.max), fmtInt(float64(i.calls)), i.failed)
	fmt.Fprintf(w, "  raw write+fsync        %8s appends/s (%s appends); at %s/s on schedule: p50 %s  p90 %s  p99 %s  max %s\n", fmtInt(res.fsync.perSec), fmtInt(float64(res.fsync.appends)),
		fmtInt(o.offered), fmtMs(res.fsync.paced.p50), fmtMs(res.fsync.paced.p90), fmtMs(res.fsync.paced.p99), fmtMs(res.fsync.paced.max))
}

func printSummary(w io.Writer, cfg config, entries [][]byte, rs []runResult) {
	col := func(f func(runResult) float64) []float64 {
		out := make([]float64, len(rs))
		for i, r := range rs {
			out[i] = f(r)
		}
		return out
	}
	ns := func(d time.Duration) float64 { return float64(d) }
	med := func(f func(runResult) float64) time.Duration { return time.Duration(median(col(f))) }
	mean := 0
	for _, e := range entries {
		mean += len(e)
	}
	mean /= max(1, len(entries))
	row := func(label, format string, args ...any) {
		fmt.Fprintf(w, "%-46s %s\n", label, fmt.Sprintf(format, args...))
	}
	verdict := func(ok bool) string {
		if ok {
			return "met"
		}
		return "NOT met"
	}
	fmt.Fprintf(w, "summary: medians of %d runs of %s (after %s warm-up); %d CPUs shared by the client and both servers\n",
		len(rs), cfg.duration, cfg.warmup, runtime.NumCPU())
	for i, n := range cfg.callers {
		c := func(r runResult) closedPair { return r.closed[i] }
		gov := col(func(r runResult) float64 { return c(r).governed.perSec })
		echo := col(func(r runResult) float64 { return c(r).echo.perSec })
		ratios := col(func(r runResult) float64 { return ratio(c(r).governed.perSec, c(r).echo.perSec) })
		row(fmt.Sprintf("%d callers: governed calls/s (closed loop)", n), "median %s   runs: %s", fmtInt(median(gov)), fmtInts(gov))
		row("  latency p50 / p90 / p99", "%s / %s / %s",
			fmtMs(med(func(r runResult) float64 { return ns(c(r).governed.lat.p50) })),
			fmtMs(med(func(r runResult) float64 { return ns(c(r).governed.lat.p90) })),
			fmtMs(med(func(r runResult) float64 { return ns(c(r).governed.lat.p99) })))
		row("  echo limit (2 round trips), same client", "median %s calls/s   runs: %s", fmtInt(median(echo)), fmtInts(echo))
		row("  governed / echo", "%.2f (per run: %s)   target >= %.1f: %s", median(ratios), fmtFloats(ratios, 2), targetRatio,
			verdict(median(ratios) >= targetRatio))
		if written := col(func(r runResult) float64 { return bytesPerCall(c(r).governedCPU, c(r).governed.calls) }); slices.Min(written) >= 0 {
			row("  storage writes per governed call", "%s B (2 entries of %d B)   runs: %s   target <= %d B: %s",
				fmtInt(median(written)), mean, fmtInts(written), targetBytes, verdict(median(written) <= targetBytes))
		}
		if dev := col(func(r runResult) float64 { return devicePerCall(c(r).governedCPU, c(r).governed.calls) }); slices.Min(dev) >= 0 {
			row("  the disk wrote per governed call", "%s B   runs: %s   (whole device: journal, metadata and other processes included)",
				fmtInt(median(dev)), fmtInts(dev))
		}
		if pb := col(func(r runResult) float64 { return c(r).store.perBatch() }); slices.Min(pb) >= 0 {
			line := fmt.Sprintf("%.1f   runs: %s", median(pb), fmtFloats(pb, 1))
			if n >= 64 {
				line += fmt.Sprintf("   target >= %d at 64 callers: %s", targetPerBatch, verdict(median(pb) >= targetPerBatch))
			}
			row("  entries per durable write (fsync)", "%s", line)
		}
		if ms := col(func(r runResult) float64 { return c(r).store.commitMs() }); slices.Min(ms) >= 0 {
			raw := col(func(r runResult) float64 { return r.fsync.meanMs() })
			line := fmt.Sprintf("%.2f ms   runs: %s", median(ms), fmtFloats(ms, 2))
			if slices.Min(raw) > 0 {
				line += fmt.Sprintf("   -> %.1fx a bare write+fsync's %.2f ms (runs %s)", median(ms)/median(raw), median(raw), fmtFloats(raw, 2))
			}
			row("  time to make a batch durable (commit)", "%s", line)
		}
		inproc := col(func(r runResult) float64 { return c(r).inproc.perSec })
		shares := col(func(r runResult) float64 { return ratio(c(r).governed.perSec, c(r).inproc.perSec) })
		row("  in process, no HTTP (same runtime and disk)", "median %s calls/s   runs: %s   -> over HTTP is %.2f of it (per run: %s)",
			fmtInt(median(inproc)), fmtInts(inproc), median(shares), fmtFloats(shares, 2))
		inUs := col(func(r runResult) float64 { return usPerCall(c(r).inprocCPU, c(r).inproc.perSec) })
		httpUs := col(func(r runResult) float64 { return usPerCall(c(r).governedCPU.arx, c(r).governed.perSec) })
		if slices.Min(inUs) >= 0 && slices.Min(httpUs) >= 0 && rs[0].closed[i].governedCPU.ok {
			row("  CPU per governed call", "in process %.0f µs, arx serve over HTTP %.0f µs   runs: %s / %s",
				median(inUs), median(httpUs), fmtInts(inUs), fmtInts(httpUs))
		}
		if rs[0].closed[i].governedCPU.ok {
			row("  CPU (cores)", "arx serve %.2f, client %.2f, other processes %.2f (of %d)",
				median(col(func(r runResult) float64 { return c(r).governedCPU.arx })),
				median(col(func(r runResult) float64 { return c(r).governedCPU.client })),
				median(col(func(r runResult) float64 { return c(r).governedCPU.other })), runtime.NumCPU())
		}
	}
	achieved := col(func(r runResult) float64 { return r.open.achieved })
	op50 := med(func(r runResult) float64 { return ns(r.open.lat.p50) })
	op99 := med(func(r runResult) float64 { return ns(r.open.lat.p99) })
	openP99s := col(func(r runResult) float64 { return float64(r.open.lat.p99) / float64(time.Millisecond) })
	row(fmt.Sprintf("open loop %s/s: p50 / p99", fmtInt(cfg.rate)), "%s / %s  (achieved %s/s)   runs p99: %s ms",
		fmtMs(op50), fmtMs(op99), fmtInt(median(achieved)), fmtFloats(openP99s, 2))
	if cfg.rate == 1000 {
		row("", "target p99 < %s at 1000/s: %s", fmtMs(targetP99), verdict(op99 < targetP99))
	}
	ep50 := med(func(r runResult) float64 { return ns(r.openEcho.lat.p50) })
	ep99 := med(func(r runResult) float64 { return ns(r.openEcho.lat.p99) })
	echoP99s := col(func(r runResult) float64 { return float64(r.openEcho.lat.p99) / float64(time.Millisecond) })
	row(fmt.Sprintf("  echo, same open loop %s/s: p50 / p99", fmtInt(cfg.rate)), "%s / %s   runs p99: %s ms   -> governed p99 is %.1fx echo's",
		fmtMs(ep50), fmtMs(ep99), fmtFloats(echoP99s, 2), ratio(float64(op99), float64(ep99)))
	ip50 := med(func(r runResult) float64 { return ns(r.openInproc.lat.p50) })
	ip99 := med(func(r runResult) float64 { return ns(r.openInproc.lat.p99) })
	inprocP99s := col(func(r runResult) float64 { return float64(r.openInproc.lat.p99) / float64(time.Millisecond) })
	row(fmt.Sprintf("  in process, same open loop %s/s: p50 / p99", fmtInt(cfg.rate)), "%s / %s   runs p99: %s ms   -> governed p99 over HTTP is %.1fx in process",
		fmtMs(ip50), fmtMs(ip99), fmtFloats(inprocP99s, 2), ratio(float64(op99), float64(ip99)))
	fp50 := med(func(r runResult) float64 { return ns(r.fsync.paced.p50) })
	fp99 := med(func(r runResult) float64 { return ns(r.fsync.paced.p99) })
	fsyncP99s := col(func(r runResult) float64 { return float64(r.fsync.paced.p99) / float64(time.Millisecond) })
	row(fmt.Sprintf("  raw write+fsync, one per entry at %s/s: p50 / p99", fmtInt(cfg.rate)), "%s / %s   runs p99: %s ms   -> governed p99 is %.1fx a bare fsync's",
		fmtMs(fp50), fmtMs(fp99), fmtFloats(fsyncP99s, 2), ratio(float64(op99), float64(fp99)))
	fsync := col(func(r runResult) float64 { return r.fsync.perSec })
	last := len(cfg.callers) - 1
	appends := 2 * median(col(func(r runResult) float64 { return r.closed[last].governed.perSec }))
	row(fmt.Sprintf("record appends/s at %d callers vs raw fsync/s", cfg.callers[last]), "%s vs %s  -> %.1fx   raw runs: %s",
		fmtInt(appends), fmtInt(median(fsync)), ratio(appends, median(fsync)), fmtInts(fsync))
	row("record entry size", "mean %d B (%d credential.issued / call.completed entries)", mean, len(entries))
	fmt.Fprintln(w)
	fmt.Fprintf(w, "governed call = POST /v1/calls (201, credential) + POST /v1/calls/{id}/complete (200): two round trips,\n")
	fmt.Fprintf(w, "  two record entries (credential.issued, call.completed), each durable (one frame, one fdatasync of\n")
	fmt.Fprintf(w, "  the log per batch of concurrent calls) before its answer. Latency is of the pair; open-loop latency\n")
	fmt.Fprintf(w, "  counts from each call's due time.\n")
	fmt.Fprintf(w, "in process = the same calls through ARX's runtime in the bench's own process, no HTTP: each round trip\n")
	fmt.Fprintf(w, "  authenticates, decides and appends durably (same store and fdatasync, a fresh data directory beside\n")
	fmt.Fprintf(w, "  arx serve's), the request signs the credential; no background work, and the load generator's CPU is\n")
	fmt.Fprintf(w, "  counted in. What arx serve does beyond it per call is mostly HTTP, JSON and their scheduling. Its open\n")
	fmt.Fprintf(w, "  loop offers the same rate with as many agents; its latency counts from each call's due time, so the load\n")
	fmt.Fprintf(w, "  generator's own late starts are in it, as they are over HTTP.\n")
	fmt.Fprintf(w, "echo = a bare net/http server in a second process answering both round trips with the request body:\n")
	fmt.Fprintf(w, "  the ceiling of this client, loopback HTTP and this machine, with no work behind it.\n")
	fmt.Fprintf(w, "storage writes = write_bytes of arx serve (/proc/PID/io): the log, the state tables and their WAL, and the\n")
	fmt.Fprintf(w, "  zeros the log writes ahead of its end (so that each fdatasync flushes data only); a frame counts its\n")
	fmt.Fprintf(w, "  blocks when written directly (O_DIRECT), and each whole page it touches when written through the\n")
	fmt.Fprintf(w, "  page cache. The disk = sectors written by the data directory's device\n")
	fmt.Fprintf(w, "  (/sys/dev/block/M:N/stat) in the same window.\n")
	fmt.Fprintf(w, "entries per durable write = arx_store_entries_total / arx_store_batches_total over the window.\n")
	fmt.Fprintf(w, "time to make a batch durable = arx_store_commit_seconds_total / arx_store_batches_total: the frame's\n")
	fmt.Fprintf(w, "  write and fdatasync under load, against one bare write+fsync of an entry in the raw loop below, on a\n")
	fmt.Fprintf(w, "  machine then idle. A governed call waits for two commits.\n")
	fmt.Fprintf(w, "raw fsync/s = one write+fsync per entry of the same bytes, in the server's data directory.\n")
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

// devicePerCall is what the data directory's disk wrote per call in a
// closed loop's window; -1 when unknown.
func devicePerCall(u cpuUse, calls int) float64 {
	if u.devWritten < 0 || calls == 0 {
		return -1
	}
	return float64(u.devWritten) / float64(calls)
}

// bytesPerCall is what arx serve wrote to storage per call in a closed
// loop's window; -1 when unknown.
func bytesPerCall(u cpuUse, calls int) float64 {
	if u.arxWritten < 0 || calls == 0 {
		return -1
	}
	return float64(u.arxWritten) / float64(calls)
}
