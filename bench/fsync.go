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

// meanMs is the mean time of one bare write+fsync in the closed loop, in
// milliseconds; 0 when none was made.
func (r fsyncResult) meanMs() float64 {
	if r.perSec <= 0 {
		return 0
	}
	return 1000 / r.perSec
}

// rawFsync appends the given record entries, cycling through them, to a
// new file in dir (the server's data directory, so the same filesystem and
// device) with one write and one fsync per entry, back to back for d. That
// is the rate a log that makes each entry durable on its own could reach
// at best; the file is removed afterwards.
func rawFsync(ctx context.Context, dir string, entries [][]byte, d time.Duration) (fsyncResult, error) {
	n, el, _, err := rawAppends(ctx, dir, entries, d, 0)
	if err != nil {
		return fsyncResult{}, err
	}
	return fsyncResult{appends: n, perSec: float64(n) / el.Seconds()}, nil
}

// rawFsyncPaced appends one entry and fsyncs it every 1/rate seconds for d,
// on schedule as the open loop offers calls, and returns each append's
// latency from when it was due (so a slow fsync delays the next ones, as
// it would delay calls).
func rawFsyncPaced(ctx context.Context, dir string, entries [][]byte, rate float64, d time.Duration) (latency, error) {
	_, _, lat, err := rawAppends(ctx, dir, entries, d, time.Duration(float64(time.Second)/rate))
	if err != nil {
		return latency{}, err
	}
	return summarize(lat), nil
}

// rawAppends writes and fsyncs one entry at a time to a new file in dir
// for d: back to back (interval 0), or each due interval after the one
// before. It returns how many, in how long, and each one's latency from
// when it was due.
func rawAppends(ctx context.Context, dir string, entries [][]byte, d, interval time.Duration) (int, time.Duration, []time.Duration, error) {
	f, err := os.CreateTemp(dir, "bench-fsync-*.tmp")
	if err != nil {
		return 0, 0, nil, err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	start := time.Now()
	end := start.Add(d)
	var lat []time.Duration
	n := 0
	for ; n < maxAppends && ctx.Err() == nil; n++ {
		due := time.Now()
		if interval > 0 {
			due = start.Add(time.Duration(n) * interval)
			if !sleepUntil(ctx, due) {
				break
			}
		}
		if !due.Before(end) {
			break
		}
		if _, err := f.Write(entries[n%len(entries)]); err != nil {
			return 0, 0, nil, fmt.Errorf("write %s: %w", f.Name(), err)
		}
		if err := f.Sync(); err != nil {
			return 0, 0, nil, fmt.Errorf("fsync %s: %w", f.Name(), err)
		}
		lat = append(lat, time.Since(due))
	}
	el := time.Since(start)
	if err := f.Close(); err != nil {
		return 0, 0, nil, err
	}
	return n, el, lat, nil
}
