package agentvault

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
)

// HTTPClient returns an *http.Client bound to one call: every request it
// sends goes to the ARX gateway of the call's connector
// ({base}/gateway/{connector}/{path}) with the call's credential, and ARX
// forwards it to the system of record with the connector's real secret,
// which the agent never holds. Only the path and query of a request's URL
// are used, so the agent can write
//
//	hc := arx.HTTPClient(cred)
//	resp, err := hc.Get("/accounts/0017")
//
// Requests fail at the gateway once the call is completed or expires, and
// ARX refuses methods and paths the call's action does not allow
// (gateway.method_not_allowed, gateway.path_not_allowed). Redirects are not
// followed. The client uses the transport of the Client's HTTPClient.
func (c *Client) HTTPClient(cred Credential) *http.Client {
	next := http.DefaultTransport
	if c != nil && c.hc != nil && c.hc.Transport != nil {
		next = c.hc.Transport
	}
	return &http.Client{
		Transport: &GatewayTransport{Client: c, Credential: cred, Next: next},
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

// GatewayURL is the gateway address of path (with its query, if any) for
// the credential's connector.
func (c *Client) GatewayURL(cred Credential, path string) (string, error) {
	if c == nil {
		return "", errNoClient
	}
	if c.localMode {
		return "", errors.New("agentvault: the gateway needs an ARX server; local-only mode has none (hint: unset ARX_LOCAL_MODE)")
	}
	if cred.Connector == "" {
		return "", ErrNotInCall
	}
	p, q, _ := strings.Cut(path, "?")
	if !strings.HasPrefix(p, "/") {
		p = "/" + p
	}
	u := c.baseURL + "/gateway/" + url.PathEscape(cred.Connector) + p
	if q != "" {
		u += "?" + q
	}
	return u, nil
}

// GatewayTransport sends every request to the ARX gateway of Credential's
// connector with Credential as bearer, keeping the request's path and query.
// HTTPClient makes one; use it directly to put it under another client.
type GatewayTransport struct {
	Client     *Client
	Credential Credential
	Next       http.RoundTripper // nil: http.DefaultTransport
}

// RoundTrip implements http.RoundTripper.
func (t *GatewayTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	fail := func(err error) (*http.Response, error) {
		if req.Body != nil {
			req.Body.Close() // a RoundTripper closes the body, also on error
		}
		return nil, err
	}
	p := req.URL.EscapedPath()
	if req.URL.RawQuery != "" {
		p += "?" + req.URL.RawQuery
	}
	target, err := t.Client.GatewayURL(t.Credential, p)
	if err != nil {
		return fail(err)
	}
	u, err := url.Parse(target)
	if err != nil {
		return fail(err)
	}
	out := req.Clone(req.Context()) // shares the body, which the next transport closes
	out.URL, out.Host = u, ""
	out.Header.Set("Authorization", "Bearer "+t.Credential.Token)
	injectTrace(req.Context(), out.Header)
	if out.Header.Get("User-Agent") == "" {
		out.Header.Set("User-Agent", userAgent)
	}
	next := t.Next
	if next == nil {
		next = http.DefaultTransport
	}
	return next.RoundTrip(out)
}

// dsnPassword finds the password of a postgres URL.
var dsnPassword = regexp.MustCompile(`(postgres(?:ql)?://[^:/@\s]*:)[^@\s]+@`)

// scrubDSN removes passwords of postgres URLs (a call's DSN) from s.
func scrubDSN(s string) string {
	return dsnPassword.ReplaceAllString(s, "${1}"+redacted+"@")
}

// RequestArgs declares one gateway request as a call's arguments:
// {"request": {"method", "path", "query", "body"}} (query and body only
// when present; the body must be JSON). Put it in Action.Args: the gateway
// then lets exactly that request through under the call's credential, and
// an approver who approves the call approves that request, not any other
// the action would allow. RequestArgs reads the
// body and puts it back, so req can be sent afterwards.
func RequestArgs(req *http.Request) (map[string]any, error) {
	m := map[string]any{"method": req.Method, "path": req.URL.Path}
	if m["path"] == "" {
		m["path"] = "/"
	}
	if req.URL.RawQuery != "" {
		m["query"] = req.URL.RawQuery
	}
	if req.Body != nil && req.Body != http.NoBody {
		b, err := io.ReadAll(req.Body)
		req.Body.Close()
		if err != nil {
			return nil, err
		}
		req.Body = io.NopCloser(bytes.NewReader(b))
		req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
		if len(b) > 0 {
			d := json.NewDecoder(bytes.NewReader(b))
			d.UseNumber() // numbers as written, never rounded
			var v any
			if err := d.Decode(&v); err != nil || d.More() {
				return nil, errors.New("agentvault: a declared request's body must be JSON")
			}
			m["body"] = v
		}
	}
	return map[string]any{"request": m}, nil
}
