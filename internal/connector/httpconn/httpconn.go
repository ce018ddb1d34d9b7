// Package httpconn is the http connector: the gateway forwards an agent's
// request to the upstream with the connector's real secret in place of the
// agent's credential, and streams the answer back. The agent never sees the
// secret; the upstream never sees the agent's credential.
package httpconn

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/arxsec/arx/internal/connector"
)

// Connector is an http connector.
type Connector struct {
	spec      connector.Spec
	base      *url.URL
	authName  string // header that carries the secret
	authValue string // its value: the secret, never logged
	redact    *redactor
	transport http.RoundTripper
}

var _ connector.Gateway = (*Connector)(nil)

// New returns the connector for spec with its resolved secret. transport nil
// means a transport of its own with the spec's timeout.
func New(spec connector.Spec, secret string, transport http.RoundTripper) (*Connector, error) {
	if spec.Kind != connector.KindHTTP {
		return nil, fmt.Errorf("httpconn: connector %s is of kind %s", spec.Name, spec.Kind)
	}
	base, err := url.Parse(spec.Upstream)
	if err != nil || base.Host == "" || (base.Scheme != "http" && base.Scheme != "https") {
		return nil, fmt.Errorf("httpconn: connector %s: upstream is not an http(s) URL", spec.Name)
	}
	if secret == "" || strings.ContainsAny(secret, "\r\n\x00") {
		return nil, fmt.Errorf("httpconn: connector %s: the secret is empty or holds line breaks", spec.Name)
	}
	base.Path = strings.TrimSuffix(base.Path, "/")
	base.RawPath = ""
	c := &Connector{spec: spec, base: base, transport: transport}
	switch spec.Auth.Type {
	case connector.AuthBasic:
		c.authName, c.authValue = "Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(spec.Auth.Username+":"+secret))
	case connector.AuthHeader:
		c.authName, c.authValue = http.CanonicalHeaderKey(spec.Auth.Header), secret
	default:
		c.authName, c.authValue = "Authorization", "Bearer "+secret
	}
	c.redact = newRedactor(secret, c.authValue, strings.TrimPrefix(c.authValue, "Basic "))
	if c.transport == nil {
		c.transport = NewTransport(spec.Timeout)
	}
	return c, nil
}

// NewTransport is the transport a connector uses by default: connection
// reuse towards one upstream, bounded dial and header waits, no proxy from
// the environment (the upstream is named by the operator), no compression
// negotiated on the agent's behalf.
func NewTransport(timeout time.Duration) *http.Transport {
	return &http.Transport{
		DialContext:           (&net.Dialer{Timeout: min(timeout, 10*time.Second), KeepAlive: 30 * time.Second}).DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          512,
		MaxIdleConnsPerHost:   256,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   min(timeout, 10*time.Second),
		ResponseHeaderTimeout: timeout,
		ExpectContinueTimeout: time.Second,
		DisableCompression:    true,
	}
}

func (c *Connector) Name() string               { return c.spec.Name }
func (c *Connector) Kind() string               { return connector.KindHTTP }
func (c *Connector) Info() connector.Info       { return c.spec.Info() }
func (c *Connector) MaxRequestBytes() int64     { return c.spec.MaxRequestBytes }
func (c *Connector) Timeout() time.Duration     { return c.spec.Timeout }
func (c *Connector) Spec() *connector.Spec      { return &c.spec }
func (c *Connector) String() string             { return "httpconn.Connector{" + c.spec.Name + "}" }
func (c *Connector) GoString() string           { return c.String() }
func (c *Connector) Format(f fmt.State, _ rune) { fmt.Fprint(f, c.String()) }

// Allow implements connector.Gateway.
func (c *Connector) Allow(action, method, path string) error {
	a, ok := c.spec.Action(action)
	if !ok {
		return connector.Allow(nil, c.spec.Name, action, method, path)
	}
	return connector.Allow(a.Allow, c.spec.Name, action, method, path)
}

// hopHeaders are hop-by-hop (RFC 9110 §7.6.1), or ARX's and the agent's to
// keep: never forwarded in either direction.
var hopHeaders = []string{"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization",
	"Te", "Trailer", "Transfer-Encoding", "Upgrade"}

// requestDrop are request headers the agent may not pass: its credential,
// cookies (the upstream session is the connector's, not the agent's), and
// forwarding claims.
var requestDrop = []string{"Authorization", "Cookie", "Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto", "X-Real-Ip"}

func removeHop(h http.Header) {
	for _, f := range h["Connection"] {
		for _, name := range strings.Split(f, ",") {
			if name = strings.TrimSpace(name); name != "" {
				h.Del(name)
			}
		}
	}
	for _, name := range hopHeaders {
		h.Del(name)
	}
}

// Forward implements connector.Gateway.
func (c *Connector) Forward(w http.ResponseWriter, r *http.Request, rawPath string) connector.Exchange {
	var ex connector.Exchange
	ctx, cancel := context.WithTimeout(r.Context(), c.spec.Timeout)
	defer cancel()

	target := *c.base
	target.RawPath = c.base.EscapedPath() + rawPath
	if p, err := url.PathUnescape(target.RawPath); err == nil {
		target.Path = p
	} else {
		ex.Err = fmt.Errorf("%w: invalid path", connector.ErrUnreachable)
		return ex
	}
	target.RawQuery = r.URL.RawQuery

	var body io.ReadCloser
	cr := &countingReader{}
	if r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0 {
		cr.r = http.MaxBytesReader(nil, r.Body, c.spec.MaxRequestBytes)
		body = cr
	}
	out, err := http.NewRequestWithContext(ctx, r.Method, target.String(), body)
	if err != nil {
		ex.Err = fmt.Errorf("%w: %v", connector.ErrUnreachable, err)
		return ex
	}
	out.ContentLength = r.ContentLength
	if body == nil {
		out.ContentLength = 0
	}
	out.Header = r.Header.Clone()
	removeHop(out.Header)
	for _, h := range requestDrop {
		out.Header.Del(h)
	}
	for _, h := range connector.OverrideHeaders { // refused before; never forwarded either way
		out.Header.Del(h)
	}
	out.Header.Del(c.authName)
	out.Header.Set(c.authName, c.authValue)
	// The answer is scanned for the secret (redact.go): it must come
	// uncompressed.
	out.Header.Del("Accept-Encoding")
	if out.Header.Get("User-Agent") == "" {
		out.Header.Set("User-Agent", "arx-gateway/1")
	}
	out.Host = c.base.Host

	resp, err := c.transport.RoundTrip(out)
	ex.RequestBytes = cr.n.Load()
	if err != nil {
		ex.Err = c.classify(ctx, r, cr, err)
		if cause := context.Cause(r.Context()); errors.Is(cause, connector.ErrCut) {
			ex.Err = cause
		}
		return ex
	}
	defer resp.Body.Close()
	if resp.ContentLength > c.spec.MaxResponseBytes {
		ex.Status = resp.StatusCode
		ex.Err = fmt.Errorf("%w: %d bytes", connector.ErrResponseTooLarge, resp.ContentLength)
		return ex
	}
	ex.Status = resp.StatusCode
	removeHop(resp.Header)
	resp.Header.Del("Set-Cookie")
	ex.Redacted = c.redact.headers(resp.Header)
	h := w.Header()
	for k, vs := range resp.Header {
		h[k] = vs
	}
	w.WriteHeader(resp.StatusCode)
	ex.Wrote = true
	answer := c.redact.reader(resp.Body)
	n, err := copyBody(w, answer, resp.ContentLength < 0, c.spec.MaxResponseBytes)
	ex.Redacted = ex.Redacted || answer.Found
	ex.ResponseBytes = n
	ex.RequestBytes = cr.n.Load()
	if err != nil {
		ex.Err = err
		if ctx.Err() != nil && r.Context().Err() == nil {
			ex.Err = fmt.Errorf("%w: answer not complete within %s", connector.ErrTimeout, c.spec.Timeout)
		}
		if cause := context.Cause(r.Context()); errors.Is(cause, connector.ErrCut) {
			ex.Err = cause
		}
		return ex
	}
	for k, vs := range resp.Trailer {
		h[http.TrailerPrefix+k] = vs
	}
	return ex
}

// classify maps a failed round trip to one of connector's failures, without
// the URL (the error of a transport can repeat it).
func (c *Connector) classify(ctx context.Context, in *http.Request, cr *countingReader, err error) error {
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe) || cr.tooLong.Load():
		return fmt.Errorf("%w: over %d bytes", connector.ErrRequestTooLarge, c.spec.MaxRequestBytes)
	case in.Context().Err() != nil:
		return connector.ErrClientGone
	case ctx.Err() != nil:
		return fmt.Errorf("%w: no answer within %s", connector.ErrTimeout, c.spec.Timeout)
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return fmt.Errorf("%w: no answer within %s", connector.ErrTimeout, c.spec.Timeout)
	}
	var oe *net.OpError
	if errors.As(err, &oe) {
		return fmt.Errorf("%w: %s: %v", connector.ErrUnreachable, oe.Op, oe.Err)
	}
	return connector.ErrUnreachable
}

// countingReader counts the body bytes sent upstream. The transport may
// still read it after RoundTrip returns, hence the atomics.
type countingReader struct {
	r       io.ReadCloser
	n       atomic.Int64
	tooLong atomic.Bool
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	var mbe *http.MaxBytesError
	if err != nil && errors.As(err, &mbe) {
		c.tooLong.Store(true)
	}
	return n, err
}

func (c *countingReader) Close() error { return c.r.Close() }

// copyBody streams the upstream's answer to the agent, flushing at once when
// the answer has no declared length (server-sent events, chunked streams).
func copyBody(w http.ResponseWriter, r io.Reader, flush bool, limit int64) (int64, error) {
	buf := make([]byte, 32<<10)
	rc := http.NewResponseController(w)
	var total int64
	for {
		n, rerr := r.Read(buf)
		if n > 0 {
			if total+int64(n) > limit {
				return total, fmt.Errorf("%w: over %d bytes", connector.ErrResponseTooLarge, limit)
			}
			wn, werr := w.Write(buf[:n])
			total += int64(wn)
			if werr != nil {
				return total, connector.ErrClientGone
			}
			if flush {
				if err := rc.Flush(); err != nil && !errors.Is(err, http.ErrNotSupported) {
					return total, connector.ErrClientGone
				}
			}
		}
		if rerr == io.EOF {
			return total, nil
		}
		if rerr != nil {
			return total, fmt.Errorf("%w: %v", connector.ErrUpstreamBroken, rerr)
		}
	}
}
