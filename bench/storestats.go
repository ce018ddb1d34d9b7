package main

import (
	"bufio"
	"context"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// storeCounts are the write path's counters arx serve exports on /metrics:
// batches committed (one durable write each) and entries committed.
type storeCounts struct {
	batches, entries float64
	run, commit      float64 // seconds the sequencer ran Updates, made batches durable
	ok               bool
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
	var c storeCounts
	found := 0
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		name, v, ok := strings.Cut(sc.Text(), " ")
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
		done <- storeCounts{batches: b.batches - a.batches, entries: b.entries - a.entries, run: b.run - a.run,
			commit: b.commit - a.commit, ok: a.ok && b.ok}
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
