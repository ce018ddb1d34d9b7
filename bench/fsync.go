package main

import (
	"context"
	"fmt"
	"os"
	"time"
)

// maxAppends bounds the raw fsync loop by count as well as by time.
const maxAppends = 10_000_000

// fsyncResult is the naive limit of a durable log on this filesystem.
type fsyncResult struct {
	appends int
	perSec  float64 // write+fsync of one entry each, per second
	// paced is one write+fsync per entry at the open loop's rate, each
	// timed from when it was due: the latency a log that makes every
	// entry durable cannot beat on this device at that rate.
	paced latency
}

// rawFsync appends the given record entries, cycling through them, to a
// new file in dir (the server's data directory, so the same filesystem and
// device) with one write and one fsync per entry, for d. That is the rate
// a log that makes each entry durable on its own could reach at best; the
// file is removed afterwards.
func rawFsync(ctx context.Context, dir string, entries [][]byte, d time.Duration) (fsyncResult, error) {
	f, err := os.CreateTemp(dir, "bench-fsync-*.tmp")
	if err != nil {
		return fsyncResult{}, err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	start := time.Now()
	end := start.Add(d)
	n := 0
	for ; n < maxAppends && ctx.Err() == nil; n++ {
		if !time.Now().Before(end) {
			break
		}
		if _, err := f.Write(entries[n%len(entries)]); err != nil {
			return fsyncResult{}, fmt.Errorf("write %s: %w", f.Name(), err)
		}
		if err := f.Sync(); err != nil {
			return fsyncResult{}, fmt.Errorf("fsync %s: %w", f.Name(), err)
		}
	}
	el := time.Since(start)
	if err := f.Close(); err != nil {
		return fsyncResult{}, err
	}
	return fsyncResult{appends: n, perSec: float64(n) / el.Seconds()}, nil
}

// rawFsyncPaced appends one entry and fsyncs it every 1/rate seconds for d,
// on schedule as the open loop offers calls, and returns each append's
// latency from when it was due (so a slow fsync delays the next ones, as
// it would delay calls).
func rawFsyncPaced(ctx context.Context, dir string, entries [][]byte, rate float64, d time.Duration) (latency, error) {
	f, err := os.CreateTemp(dir, "bench-fsync-paced-*.tmp")
	if err != nil {
		return latency{}, err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	interval := time.Duration(float64(time.Second) / rate)
	n := int(d / interval)
	lat := make([]time.Duration, 0, n)
	start := time.Now()
	for i := 0; i < n && i < maxAppends && ctx.Err() == nil; i++ {
		due := start.Add(time.Duration(i) * interval)
		if w := time.Until(due); w > 0 {
			time.Sleep(w)
		}
		if _, err := f.Write(entries[i%len(entries)]); err != nil {
			return latency{}, fmt.Errorf("write %s: %w", f.Name(), err)
		}
		if err := f.Sync(); err != nil {
			return latency{}, fmt.Errorf("fsync %s: %w", f.Name(), err)
		}
		lat = append(lat, time.Since(due))
	}
	if err := f.Close(); err != nil {
		return latency{}, err
	}
	return summarize(lat), nil
}
