package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

const (
	// maxCallsPerWorker bounds a closed-loop worker by count as well as by
	// time (1M calls at 1 µs each would still be more than any -duration).
	maxCallsPerWorker = 10_000_000
	// failureBackoff keeps a closed-loop worker that gets errors from
	// spinning: an error answer is fast and would otherwise flood the log.
	failureBackoff = 10 * time.Millisecond
	// openLoopLead lets the open loop's workers start before the first
	// intended start time.
	openLoopLead = 20 * time.Millisecond
	// maxAnswer bounds how much of an answer is read.
	maxAnswer = 1 << 20
	// echoCallID stands in for the call id on the echo server, which makes none.
	echoCallID = "echo"
)

// target is a server the load is driven against: arx serve (governed) or
// the echo server. Both get a client built by the same function.
type target struct {
	name     string
	base     string // scheme://host:port
	client   *http.Client
	governed bool // check answers as arx answers: a call with a credential
}

// newTarget returns a target with a client tuned for many concurrent
// callers on one host: keep-alive, an idle pool larger than the number of
// callers (so no connection is closed and redialled between two calls), no
// proxy, no compression.
func newTarget(name, base string, cfg config, governed bool) *target {
	conns := 2*cfg.agents + 16
	tr := &http.Transport{
		Proxy:                 nil, // loopback: never through a proxy from the environment
		DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:          conns,
		MaxIdleConnsPerHost:   conns,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: cfg.timeout,
		DisableCompression:    true,
	}
	return &target{name: name, base: base, client: &http.Client{Transport: tr, Timeout: cfg.timeout}, governed: governed}
}

// callError is a failed request. kind says what failed without the details
// of one call, so that the report can group failures by it.
type callError struct {
	kind   string // e.g. "POST /v1/calls: HTTP 503 record.unavailable"
	detail string
}

func (e *callError) Error() string {
	if e.detail == "" {
		return e.kind
	}
	return e.kind + " (" + e.detail + ")"
}

// do sends one request and decodes the answer into out when its status is
// want; any other status is a callError carrying the API's error code.
func (t *target) do(ctx context.Context, method, path, token string, body []byte, want int, out any) error {
	route := method + " " + routeOf(path)
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, t.base+path, rd)
	if err != nil {
		return &callError{kind: route + ": bad request", detail: err.Error()}
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := t.client.Do(req)
	if err != nil {
		cause, detail := err, ""
		if ue := (*url.Error)(nil); errors.As(err, &ue) {
			cause, detail = ue.Err, ue.Op+" "+ue.URL // the kind without the URL, so that failures group
		}
		return &callError{kind: route + ": " + truncate(cause.Error(), 120), detail: detail}
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	resp.Body.Close()
	if err != nil {
		return &callError{kind: route + ": reading the answer", detail: err.Error()}
	}
	if resp.StatusCode != want {
		var e struct {
			Error struct {
				Code string `json:"code"`
			} `json:"error"`
		}
		json.Unmarshal(b, &e) // best effort: the code names the failure
		kind := fmt.Sprintf("%s: HTTP %d", route, resp.StatusCode)
		if e.Error.Code != "" {
			kind += " " + e.Error.Code
		}
		return &callError{kind: kind, detail: truncate(strings.TrimSpace(string(b)), 300)}
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return &callError{kind: route + ": answer is not the expected JSON", detail: err.Error()}
		}
	}
	return nil
}

// routeOf names a path for grouping: no query, no call id.
func routeOf(path string) string {
	path, _, _ = strings.Cut(path, "?")
	if strings.HasPrefix(path, "/v1/calls/") && strings.HasSuffix(path, "/complete") {
		return "/v1/calls/{id}/complete"
	}
	return path
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

type callRequest struct {
	Connector      string `json:"connector"`
	Action         string `json:"action"`
	Risk           string `json:"risk"`
	IdempotencyKey string `json:"idempotency_key"`
}

type callAnswer struct {
	ID         string `json:"id"`
	Status     string `json:"status"`
	Credential *struct {
		Token string `json:"token"`
	} `json:"credential"`
}

var completeBody = []byte(`{"outcome":"success","duration_ms":0}`)

// caller makes governed calls: over HTTP (target) or in process.
type caller interface {
	label() string
	call(ctx context.Context, token, key string) error
}

func (t *target) label() string { return t.name }

// call makes one governed call: request it (201 with a credential), then
// complete it (200, completed). Two round trips, as an agent makes them.
func (t *target) call(ctx context.Context, token, key string) error {
	body, err := json.Marshal(callRequest{Connector: "salesforce", Action: "account.read", Risk: "low", IdempotencyKey: key})
	if err != nil {
		return err
	}
	var c callAnswer
	if err := t.do(ctx, http.MethodPost, "/v1/calls", token, body, http.StatusCreated, &c); err != nil {
		return err
	}
	id := echoCallID
	if t.governed {
		if c.ID == "" || c.Status != "approved" || c.Credential == nil || c.Credential.Token == "" {
			return &callError{kind: "POST /v1/calls: 201 without an approved call and its credential",
				detail: fmt.Sprintf("id %q, status %q, credential present: %t", c.ID, c.Status, c.Credential != nil)}
		}
		id = c.ID
	}
	var done callAnswer
	if err := t.do(ctx, http.MethodPost, "/v1/calls/"+id+"/complete", token, completeBody, http.StatusOK, &done); err != nil {
		return err
	}
	if t.governed && done.Status != "completed" {
		return &callError{kind: "POST /v1/calls/{id}/complete: 200 but the call is not completed",
			detail: fmt.Sprintf("call %s, status %q", id, done.Status)}
	}
	return nil
}

// latency summarises the latencies of one phase.
type latency struct {
	p50, p90, p99, max time.Duration
}

func summarize(d []time.Duration) latency {
	if len(d) == 0 {
		return latency{}
	}
	slices.Sort(d)
	return latency{p50: percentile(d, 0.50), p90: percentile(d, 0.90), p99: percentile(d, 0.99), max: d[len(d)-1]}
}

// percentile is the nearest-rank percentile of sorted d.
func percentile(d []time.Duration, q float64) time.Duration {
	i := int(math.Ceil(q*float64(len(d)))) - 1
	return d[max(0, min(i, len(d)-1))]
}

// closedResult is what one closed-loop phase measured.
type closedResult struct {
	calls  int     // successful calls that ended in the measured window
	perSec float64 // calls / the window
	lat    latency // of those calls, request + complete
	failed int     // failed calls, warm-up included
	window time.Duration
}

// seconds is the measured window's length, to turn a count over it
// into a rate.
func (r closedResult) seconds() float64 { return r.window.Seconds() }

// closedLoop runs one worker per agent, each making calls back to back for
// warmup+dur. A call counts when it ends within the measured window (after
// the warm-up); throughput is those calls over the window's length.
func closedLoop(ctx context.Context, t caller, agents []agent, warmup, dur time.Duration, tag string, fails *failureLog) closedResult {
	phase := t.label() + " closed loop"
	start := time.Now()
	from, end := start.Add(warmup), start.Add(warmup+dur)
	lats := make([][]time.Duration, len(agents))
	var failed atomic.Int64
	var wg sync.WaitGroup
	for i, a := range agents {
		wg.Go(func() {
			for n := range maxCallsPerWorker {
				s := time.Now()
				if !s.Before(end) || ctx.Err() != nil {
					return
				}
				err := t.call(ctx, a.token, fmt.Sprintf("%s-c-%d", tag, n))
				e := time.Now()
				if err != nil {
					if ctx.Err() != nil {
						return // interrupted: not the server's failure
					}
					failed.Add(1)
					fails.add(phase, err)
					sleepCtx(ctx, failureBackoff)
					continue
				}
				if !e.Before(from) && !e.After(end) {
					lats[i] = append(lats[i], e.Sub(s))
				}
			}
		})
	}
	wg.Wait()
	all := slices.Concat(lats...)
	return closedResult{calls: len(all), perSec: float64(len(all)) / dur.Seconds(), lat: summarize(all), failed: int(failed.Load()), window: dur}
}

// openResult is what one open-loop phase measured.
type openResult struct {
	offered  float64 // calls/s asked for
	achieved float64 // successful measured calls / (last one's end - first intended start)
	calls    int
	lat      latency // from each call's intended start to its end
	failed   int     // failed calls, warm-up included
}

// openLoop offers rate calls per second on a fixed schedule: call i is due
// at start + i/rate whatever happened to the calls before it. Workers (one
// per agent) take the next due call; a worker that finds it already late
// starts at once. Latency is measured from the due time, not from when a
// worker got to it, so time a call spent waiting behind a slow one is
// counted (no coordinated omission, as in wrk2).
func openLoop(ctx context.Context, t caller, agents []agent, rate float64, warmup, dur time.Duration, tag string, fails *failureLog) openResult {
	phase := t.label() + " open loop"
	total := int64(math.Round((warmup + dur).Seconds() * rate))
	first := int64(math.Round(warmup.Seconds() * rate)) // the first measured call
	start := time.Now().Add(openLoopLead)
	due := func(i int64) time.Time {
		return start.Add(time.Duration(float64(i) * float64(time.Second) / rate))
	}
	type acc struct {
		lat  []time.Duration
		last time.Time
	}
	accs := make([]acc, len(agents))
	var next, failed atomic.Int64
	var wg sync.WaitGroup
	for w, a := range agents {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= total || !sleepUntil(ctx, due(i)) {
					return
				}
				err := t.call(ctx, a.token, fmt.Sprintf("%s-o-%d", tag, i))
				e := time.Now()
				if err != nil {
					if ctx.Err() != nil {
						return
					}
					failed.Add(1)
					fails.add(phase, err)
					continue
				}
				if i >= first {
					accs[w].lat = append(accs[w].lat, e.Sub(due(i)))
					if e.After(accs[w].last) {
						accs[w].last = e
					}
				}
			}
		})
	}
	wg.Wait()
	res := openResult{offered: rate, failed: int(failed.Load())}
	var all []time.Duration
	var last time.Time
	for _, a := range accs {
		all = append(all, a.lat...)
		if a.last.After(last) {
			last = a.last
		}
	}
	res.calls = len(all)
	res.lat = summarize(all)
	if span := last.Sub(due(first)); len(all) > 0 && span > 0 {
		res.achieved = float64(len(all)) / span.Seconds()
	}
	return res
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	return sleepUntil(ctx, time.Now().Add(d))
}

// sleepUntil waits until t; false when ctx ended first.
func sleepUntil(ctx context.Context, t time.Time) bool {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err() == nil
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// failureLog counts failed calls by phase and kind, keeping the first
// instance of each kind. Nothing is dropped from the count.
type failureLog struct {
	mu    sync.Mutex
	total int
	kinds map[string]*failureKind
	order []string
}

type failureKind struct {
	n     int
	first string
	at    time.Time
}

func newFailureLog() *failureLog { return &failureLog{kinds: map[string]*failureKind{}} }

func (f *failureLog) add(phase string, err error) {
	kind, detail := truncate(err.Error(), 120), err.Error()
	if ce := (*callError)(nil); errors.As(err, &ce) {
		kind, detail = ce.kind, ce.detail
	}
	key := phase + ": " + kind
	f.mu.Lock()
	defer f.mu.Unlock()
	f.total++
	k, ok := f.kinds[key]
	if !ok {
		k = &failureKind{first: detail, at: time.Now()}
		f.kinds[key] = k
		f.order = append(f.order, key)
	}
	k.n++
}

// report prints the failures; it reports whether there were any.
func (f *failureLog) report(w io.Writer) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.total == 0 {
		fmt.Fprintf(w, "failed calls: 0\n")
		return false
	}
	fmt.Fprintf(w, "FAILED CALLS: %d\n", f.total)
	for _, key := range f.order {
		k := f.kinds[key]
		fmt.Fprintf(w, "  %6d  %s\n          first at %s: %s\n", k.n, key, k.at.Format("15:04:05.000"), k.first)
	}
	return true
}
