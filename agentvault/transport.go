package agentvault

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/arxsec/arx/arxerr"
)

// maxBody bounds every answer the SDK reads.
const maxBody = 1 << 20

// redacted replaces secrets wherever the SDK prints something.
const redacted = "REDACTED"

const userAgent = "agentvault-go/1"

// backoff is a capped exponential backoff with jitter.
type backoff struct {
	attempts  int           // total tries; 0 means no bound
	base, max time.Duration // first and largest delay
}

// delay returns the pause after the n-th failed try (n from 1): a random
// value in [d/2, d] where d doubles from base up to max.
func (b backoff) delay(n int) time.Duration {
	d := b.base
	for i := 1; i < n && d < b.max; i++ {
		d *= 2
	}
	d = min(d, b.max)
	if d <= 1 {
		return d
	}
	return d/2 + rand.N(d/2+1)
}

// sleep waits for d or until ctx is done.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// answer is an HTTP answer whose body has been read.
type answer struct {
	status int
	header http.Header
	body   []byte
}

// transient reports whether a retry of the same request may fare better.
func (a *answer) transient() bool {
	return a.status >= 500 || a.status == http.StatusTooManyRequests
}

// retryAfter is the server's Retry-After in seconds, if it sent one.
func (a *answer) retryAfter() time.Duration {
	s, err := strconv.Atoi(strings.TrimSpace(a.header.Get("Retry-After")))
	if err != nil || s < 0 {
		return 0
	}
	return time.Duration(s) * time.Second
}

// exchange sends one request and reads its answer within timeout. Errors
// name the method and path, never the headers.
func (c *Client) exchange(ctx context.Context, method, path string, in any, timeout time.Duration) (*answer, error) {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return nil, fmt.Errorf("agentvault: %s %s: encoding request: %w", method, path, err)
		}
		body = bytes.NewReader(b)
	}
	actx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(actx, method, c.baseURL+path, body)
	if err != nil {
		return nil, fmt.Errorf("agentvault: %s %s: %w", method, path, err)
	}
	req.Header.Set("Authorization", "Bearer "+*c.token)
	injectTrace(ctx, req.Header)
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", userAgent)
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, c.transportError(ctx, actx, method, path, timeout, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxBody+1))
	if err != nil {
		return nil, c.transportError(ctx, actx, method, path, timeout, err)
	}
	if len(b) > maxBody {
		drain(resp.Body)
		return nil, &Error{Code: arxerr.Internal, Status: resp.StatusCode,
			Message: fmt.Sprintf("%s %s: answer (HTTP %d) is larger than %d bytes", method, path, resp.StatusCode, maxBody),
			Hint:    "check that " + envBaseURL + " points at an ARX server"}
	}
	return &answer{status: resp.StatusCode, header: resp.Header, body: b}, nil
}

// transportError describes a failed exchange: the caller's context ending,
// the attempt's own deadline, or a network error.
func (c *Client) transportError(ctx, actx context.Context, method, path string, timeout time.Duration, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("agentvault: %s %s: %w", method, path, ctx.Err())
	}
	if actx.Err() != nil {
		return fmt.Errorf("agentvault: %s %s: no answer within %s", method, path, timeout)
	}
	if ue, ok := errors.AsType[*url.Error](err); ok {
		err = ue.Err // url.Error repeats the method and URL
	}
	return fmt.Errorf("agentvault: %s %s: %w", method, path, err)
}

// send makes the request, retrying network errors, 5xx and 429 answers as b
// allows. It returns the last answer (which may be a 5xx) or the last error.
// Only idempotent requests go through send: POST /calls carries its
// idempotency key, and completing twice with the same outcome is harmless.
func (c *Client) send(ctx context.Context, b backoff, method, path string, in any, timeout time.Duration) (*answer, error) {
	for n := 1; ; n++ {
		ans, err := c.exchange(ctx, method, path, in, timeout)
		if ctx.Err() != nil {
			return nil, fmt.Errorf("agentvault: %s %s: %w", method, path, ctx.Err())
		}
		if _, isAPI := errors.AsType[*Error](err); isAPI || (err == nil && !ans.transient()) {
			return ans, err
		}
		if b.attempts > 0 && n >= b.attempts {
			return ans, err
		}
		d := b.delay(n)
		if ans != nil {
			d = max(d, min(ans.retryAfter(), b.max))
		}
		c.log.LogAttrs(ctx, slog.LevelWarn, "arx: retrying", slog.String("request", method+" "+path),
			slog.Int("attempt", n), slog.Duration("delay", d), slog.String("reason", c.reason(ans, err)))
		if err := sleep(ctx, d); err != nil {
			return nil, fmt.Errorf("agentvault: %s %s: %w", method, path, err)
		}
	}
}

// reason is a short, secret-free description of why a try failed.
func (c *Client) reason(ans *answer, err error) string {
	if err != nil {
		return c.scrub(err.Error())
	}
	return c.apiError(ans, "").Error()
}

// apiError turns a non-2xx answer into an *Error. An ARX error body gives its
// code; anything else (a proxy's HTML page, garbage, nothing) becomes
// arxerr.Internal with the HTTP status in the message. The body itself is
// never quoted: some proxies echo request headers.
func (c *Client) apiError(ans *answer, callID string) *Error {
	var env struct {
		Error *struct {
			Code    arxerr.Code `json:"code"`
			Message string      `json:"message"`
			Hint    string      `json:"hint"`
			CallID  string      `json:"call_id"`
		} `json:"error"`
	}
	if json.Unmarshal(ans.body, &env) == nil && env.Error != nil && env.Error.Code != "" {
		e := &Error{
			Code:    arxerr.Code(c.scrub(string(env.Error.Code))),
			Message: c.scrub(env.Error.Message),
			Hint:    c.scrub(env.Error.Hint),
			CallID:  c.scrub(env.Error.CallID),
			Status:  ans.status,
		}
		if e.CallID == "" {
			e.CallID = callID
		}
		return e
	}
	what := "an empty body"
	if len(ans.body) > 0 {
		what = "a body that is not an ARX error"
		if mt, _, err := mime.ParseMediaType(ans.header.Get("Content-Type")); err == nil {
			what += " (" + mt + ")"
		}
	}
	msg := fmt.Sprintf("server answered HTTP %d %s with %s", ans.status, http.StatusText(ans.status), what)
	hint := "a proxy or load balancer in front of ARX may have answered; check " + envBaseURL
	if loc := ans.header.Get("Location"); ans.status >= 300 && ans.status < 400 && loc != "" {
		if u, err := url.Parse(loc); err == nil {
			loc = u.Redacted()
		}
		msg += ": a redirect to " + c.scrub(trunc(loc, 200))
		hint = "set " + envBaseURL + " to the address the server redirects to"
	}
	return &Error{Code: arxerr.Internal, Message: msg, Hint: hint, CallID: callID, Status: ans.status}
}

// scrub removes the bearer token from s, should a server or a library ever
// echo it.
func (c *Client) scrub(s string) string {
	if t := *c.token; t != "" {
		s = strings.ReplaceAll(s, t, redacted)
	}
	return s
}

// trunc cuts s to at most n bytes on a UTF-8 boundary, marking the cut.
func trunc(s string, n int) string {
	if len(s) <= n {
		return s
	}
	const mark = "…"
	i := n - len(mark)
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return s[:i] + mark
}
