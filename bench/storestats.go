package main

import (
	"bufio"
	"context"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// storeCounts are the write path's counters arx serve exports on /metrics:
// batches committed (one durable write each) and entries committed.
type storeCounts struct {
	batches, entries float64
	// seconds the sequencer spent beginning batches (PostgreSQL: the log
	// lock), running Updates and making batches durable
	begin, run, commit float64
	// served counts the governed routes' answers (POST /v1/calls and
	// POST /v1/calls/{id}/complete) by latency bucket: upper bound in
	// seconds → cumulative count, as arx_http_request_seconds exports it.
	served map[float64]float64
	ok     bool
}

// governedRoutes are the routes of a governed call.
var governedRoutes = []string{`route="POST /v1/calls"`, `route="POST /v1/calls/{id}/complete"`}

// servedQuantile estimates quantile q of the server-side latency from the
// bucket counts: the upper bound of the bucket it falls in (0 without data).
func (c storeCounts) servedQuantile(q float64) time.Duration {
	bounds := make([]float64, 0, len(c.served))
	for le := range c.served {
		bounds = append(bounds, le)
	}
	slices.Sort(bounds)
	if len(bounds) == 0 {
		return 0
	}
	total := c.served[bounds[len(bounds)-1]]
	if total <= 0 {
		return 0
	}
	for _, le := range bounds {
		if c.served[le] >= q*total {
			if math.IsInf(le, 1) {
				return time.Duration(math.MaxInt64)
			}
			return time.Duration(le * float64(time.Second))
		}
	}
	return 0
}

// scrapeStore reads the counters from url's /metrics.
func scrapeStore(ctx context.Context, url string) storeCounts {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url+"/metrics", nil)
	if err != nil {
		return storeCounts{}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return storeCounts{}
	}
	defer resp.Body.Close()
	c := storeCounts{served: map[float64]float64{}}
	found := 0
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "arx_http_request_seconds_bucket{") {
			for _, route := range governedRoutes {
				if !strings.Contains(line, route) {
					continue
				}
				i := strings.Index(line, `le="`)
				j := strings.LastIndex(line, `"} `)
				if i < 0 || j < i {
					break
				}
				le, err1 := strconv.ParseFloat(line[i+4:j], 64)
				n, err2 := strconv.ParseFloat(line[j+3:], 64)
				if err1 == nil && err2 == nil {
					c.served[le] += n
				}
			}
			continue
		}
		name, v, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err != nil {
			continue
		}
		switch name {
		case "arx_store_batches_total":
			c.batches = f
			found++
		case "arx_store_entries_total":
			c.entries = f
			found++
		case "arx_store_run_seconds_total":
			c.run = f
		case "arx_store_commit_seconds_total":
			c.commit = f
		case "arx_store_begin_seconds_total":
			c.begin = f
		}
	}
	c.ok = found == 2
	return c
}

// measureStore scrapes after warmup and again after dur, alongside a load
// phase of the same timing; wait returns the difference.
func measureStore(ctx context.Context, url string, warmup, dur time.Duration) (wait func() storeCounts) {
	done := make(chan storeCounts, 1)
	go func() {
		if !sleepCtx(ctx, warmup) {
			done <- storeCounts{}
			return
		}
		a := scrapeStore(ctx, url)
		if !sleepCtx(ctx, dur) {
			done <- storeCounts{}
			return
		}
		b := scrapeStore(ctx, url)
		served := map[float64]float64{}
		for le, n := range b.served {
			served[le] = n - a.served[le]
		}
		done <- storeCounts{batches: b.batches - a.batches, entries: b.entries - a.entries, run: b.run - a.run,
			commit: b.commit - a.commit, begin: b.begin - a.begin, served: served, ok: a.ok && b.ok}
	}()
	return func() storeCounts { return <-done }
}

// perBatch is entries per durable write; -1 when unknown.
func (c storeCounts) perBatch() float64 {
	if !c.ok || c.batches <= 0 {
		return -1
	}
	return c.entries / c.batches
}

// commitMs is the mean time the sequencer took to make a batch durable
// (the backend's Commit: the frame's write and fdatasync), in
// milliseconds; -1 when unknown.
func (c storeCounts) commitMs() float64 {
	if !c.ok || c.batches <= 0 {
		return -1
	}
	return 1000 * c.commit / c.batches
}
