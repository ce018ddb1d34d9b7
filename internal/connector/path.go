package connector

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"unicode/utf8"
)

// MaxPathBytes bounds the path of a gateway request.
const MaxPathBytes = 2048

// ErrBadPath is a path the gateway refuses to forward.
var ErrBadPath = errors.New("path refused")

// CleanPath checks the escaped path of a gateway request (what follows
// /v1/gateway/{connector}, starting with "/") and returns it decoded. It
// refuses what could make the upstream see another path than the one the
// rules checked: "." and ".." segments (also percent-encoded), encoded
// slashes and backslashes, empty segments, control characters, invalid
// escapes, path parameters (";": "..;" is ".." to some servers), a "%"
// left after decoding (a double encoding: "%252e" decodes to "%2e", which
// an upstream may decode again), and bytes that are not UTF-8. A trailing
// slash is kept. The gateway forwards the decoded path escaped anew, so
// the upstream gets exactly the path the rules matched.
func CleanPath(escaped string) (string, error) {
	if escaped == "" {
		escaped = "/"
	}
	if escaped[0] != '/' {
		return "", fmt.Errorf("%w: it does not start with /", ErrBadPath)
	}
	if len(escaped) > MaxPathBytes {
		return "", fmt.Errorf("%w: longer than %d bytes", ErrBadPath, MaxPathBytes)
	}
	if escaped == "/" {
		return "/", nil
	}
	segs := strings.Split(escaped[1:], "/")
	var b strings.Builder
	for i, s := range segs {
		if s == "" {
			if i == len(segs)-1 {
				b.WriteByte('/')
				continue
			}
			return "", fmt.Errorf("%w: empty segment (//)", ErrBadPath)
		}
		ls := strings.ToLower(s)
		if strings.Contains(ls, "%2f") || strings.Contains(ls, "%5c") || strings.Contains(s, `\`) {
			return "", fmt.Errorf("%w: encoded slash or backslash", ErrBadPath)
		}
		d, err := url.PathUnescape(s)
		if err != nil {
			return "", fmt.Errorf("%w: invalid escape", ErrBadPath)
		}
		if d == "." || d == ".." {
			return "", fmt.Errorf("%w: dot segment", ErrBadPath)
		}
		if strings.Contains(d, ";") {
			return "", fmt.Errorf("%w: path parameter (;)", ErrBadPath)
		}
		if strings.Contains(d, "%") {
			return "", fmt.Errorf("%w: %% after decoding (double encoding)", ErrBadPath)
		}
		if !utf8.ValidString(d) {
			return "", fmt.Errorf("%w: not UTF-8", ErrBadPath)
		}
		for _, r := range d {
			if r < 0x20 || r == 0x7f {
				return "", fmt.Errorf("%w: control character", ErrBadPath)
			}
		}
		b.WriteByte('/')
		b.WriteString(d)
	}
	return b.String(), nil
}

// EscapePath is a path from CleanPath escaped for the upstream.
func EscapePath(path string) string { return (&url.URL{Path: path}).EscapedPath() }

// OverrideHeaders are request headers that ask a server, or a proxy in
// front of it, to act on another method or URL than the request line's.
// The gateway refuses a request that carries one, and never forwards them.
var OverrideHeaders = []string{"X-Http-Method-Override", "X-Http-Method", "X-Method-Override", "X-Original-Method",
	"X-Original-Url", "X-Rewrite-Url", "X-Override-Url", "X-Forwarded-Method", "X-Forwarded-Uri", "X-Forwarded-Path",
	"X-Forwarded-Prefix", "X-Envoy-Original-Path"}

// overrideParams are query parameters that frameworks read as the method.
var overrideParams = map[string]bool{"_method": true, "x-http-method-override": true, "x-http-method": true,
	"x-method-override": true, "_httpmethod": true}

// ErrAmbiguous is a gateway request that names another method or URL than
// its request line, or whose query cannot be read one way only.
var ErrAmbiguous = errors.New("request refused")

// CheckOverrides refuses a request that could make the upstream act on
// another method or URL than the one the rules checked: a method-override
// or URL-rewrite header, a method parameter in the query, or a query that
// does not parse (servers would each read it their way).
func CheckOverrides(h http.Header, rawQuery string) error {
	for _, name := range OverrideHeaders {
		if _, ok := h[name]; ok {
			return fmt.Errorf("%w: header %s would override the method or the URL", ErrAmbiguous, name)
		}
	}
	if rawQuery == "" {
		return nil
	}
	q, err := url.ParseQuery(rawQuery)
	if err != nil {
		return fmt.Errorf("%w: the query does not parse (use & between parameters, escape %%)", ErrAmbiguous)
	}
	for k := range q {
		if overrideParams[strings.ToLower(k)] {
			return fmt.Errorf("%w: query parameter %q would override the method", ErrAmbiguous, k)
		}
	}
	return nil
}

// Rule allows some methods on paths matching a pattern: "GET /accounts/*".
// In a pattern, "*" matches one segment and a final "**" any number of
// segments (none included); other segments match themselves exactly.
type Rule struct {
	Methods []string
	Pattern string
	segs    []string
}

var httpMethods = map[string]bool{"GET": true, "HEAD": true, "POST": true, "PUT": true, "PATCH": true, "DELETE": true, "OPTIONS": true}

// ParseRule parses "METHOD[,METHOD...] /pattern".
func ParseRule(s string) (Rule, error) {
	ms, pat, ok := strings.Cut(strings.TrimSpace(s), " ")
	pat = strings.TrimSpace(pat)
	if !ok || ms == "" || pat == "" {
		return Rule{}, errors.New(`want "METHOD /path/pattern", such as "GET /accounts/*"`)
	}
	var r Rule
	for _, m := range strings.Split(ms, ",") {
		m = strings.TrimSpace(m)
		if !httpMethods[m] {
			return Rule{}, fmt.Errorf("method %q is not one of GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS", m)
		}
		r.Methods = append(r.Methods, m)
	}
	if pat[0] != '/' {
		return Rule{}, fmt.Errorf("path pattern %q does not start with /", pat)
	}
	if len(pat) > MaxPathBytes {
		return Rule{}, fmt.Errorf("path pattern is longer than %d bytes", MaxPathBytes)
	}
	r.Pattern = pat
	if pat != "/" {
		r.segs = strings.Split(pat[1:], "/")
	}
	for i, seg := range r.segs {
		switch {
		case seg == "**":
			if i != len(r.segs)-1 {
				return Rule{}, errors.New(`"**" may only end a pattern`)
			}
		case seg == "*":
		case strings.Contains(seg, "*"):
			return Rule{}, fmt.Errorf("segment %q: * stands for a whole segment", seg)
		case seg == "" && i != len(r.segs)-1:
			return Rule{}, errors.New("empty segment (//) in pattern")
		case seg == "." || seg == "..":
			return Rule{}, errors.New("dot segment in pattern")
		case strings.ContainsAny(seg, "%?#\\ \t"):
			return Rule{}, fmt.Errorf("segment %q: write it decoded, without %%, ?, #, \\ or spaces", seg)
		}
	}
	return r, nil
}

// String renders the rule as it is written.
func (r Rule) String() string { return strings.Join(r.Methods, ",") + " " + r.Pattern }

// AllowsMethod says whether the rule names method.
func (r Rule) AllowsMethod(method string) bool {
	for _, m := range r.Methods {
		if m == method {
			return true
		}
	}
	return false
}

// Match says whether the decoded path (from CleanPath) matches the pattern.
func (r Rule) Match(path string) bool {
	if path == "/" || path == "" {
		return len(r.segs) == 0 || len(r.segs) == 1 && r.segs[0] == "**"
	}
	p := strings.Split(path[1:], "/")
	for i, seg := range r.segs {
		if seg == "**" {
			return true
		}
		if i >= len(p) {
			return false
		}
		switch {
		case seg == "*":
			if p[i] == "" {
				return false
			}
		case seg != p[i]:
			return false
		}
	}
	return len(p) == len(r.segs)
}

// Allow checks method and path against an action's rules.
func Allow(rules []Rule, connector, action, method, path string) error {
	if len(rules) == 0 {
		return &Refusal{Reason: RefusedMethod, Message: fmt.Sprintf("connector %s has no gateway rules for action %s", connector, action)}
	}
	methodOK := false
	for _, r := range rules {
		if r.AllowsMethod(method) {
			methodOK = true
			if r.Match(path) {
				return nil
			}
		}
	}
	if !methodOK {
		return &Refusal{Reason: RefusedMethod, Message: fmt.Sprintf("action %s of connector %s does not allow %s", action, connector, method)}
	}
	return &Refusal{Reason: RefusedPath, Message: fmt.Sprintf("action %s of connector %s does not allow %s on this path", action, connector, method)}
}
