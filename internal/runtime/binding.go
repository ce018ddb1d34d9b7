package runtime

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"

	"github.com/arxsec/arx/arxerr"
	"github.com/arxsec/arx/internal/store"
)

// Approvals bound to the request: a call may declare, in its arguments,
// the one request it will send through the gateway
// (args.request: {method, path, query, body}). Every gateway request of
// such a call must be exactly that one, so an approver who approves it
// approves that request, not "any request of this action" for the
// credential's lifetime. (A call that declares none is not bound, as
// before arguments existed.)

// requestArgsParsed is the request a gateway request is, as args.request
// writes it, in the form parseArgs gives call arguments (whose hash a
// call keeps): the method, the cleaned path after the connector's name,
// the raw query ("" absent), the JSON body (absent when empty).
func requestArgsParsed(method, path, rawQuery string, body []byte) (string, error) {
	m := map[string]any{"method": method, "path": path}
	if rawQuery != "" {
		m["query"] = rawQuery
	}
	if len(body) > 0 {
		var v any
		if err := json.Unmarshal(body, &v); err != nil {
			return "", errors.New("the body is not JSON, so it cannot be matched with a declared request")
		}
		m["body"] = v
	}
	raw, err := json.Marshal(map[string]any{"request": m})
	if err != nil {
		return "", err
	}
	a, err := parseArgs(raw)
	if err != nil {
		return "", err
	}
	return a.text, nil
}

// declaredRequest is the request a call's arguments declare, in the same
// form ("" when they declare none).
func declaredRequest(c *store.Call) (string, bool, error) {
	if c.Args == "" {
		return "", c.ArgsHash != "", nil // hashed only: cannot be read
	}
	var args map[string]json.RawMessage
	if err := json.Unmarshal([]byte(c.Args), &args); err != nil {
		return "", false, err
	}
	req, ok := args["request"]
	if !ok {
		return "", false, nil
	}
	var r struct {
		Method string          `json:"method"`
		Path   string          `json:"path"`
		Query  string          `json:"query"`
		Body   json.RawMessage `json:"body"`
	}
	if err := json.Unmarshal(req, &r); err != nil {
		return "", false, fmt.Errorf("args.request is not {method, path, query, body}: %w", err)
	}
	text, _, err := requestArgs(r.Method, r.Path, r.Query, r.Body)
	return text, false, err
}

// checkBinding reads the call of a gateway request and, when the call is
// bound to one request, reads the body and checks the request is that
// one. It returns the body it read (nil when it read none), or a refusal.
func (r *Runtime) checkBinding(ctx context.Context, callID string, req GatewayRequest, path string, limit int64) ([]byte, error) {
	c, err := r.store.Call(ctx, callID)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil // the transaction answers
	}
	if err != nil {
		return nil, r.ReadFailed("call", err)
	}
	want, hashedOnly, err := declaredRequest(c)
	if err != nil {
		return nil, arxerr.New(arxerr.GatewayNotApproved, "the call's declared request does not read: %v", err)
	}
	if want == "" && !hashedOnly {
		return nil, nil // not bound to a request
	}
	var body []byte
	if req.ReadBody != nil {
		if body, err = req.ReadBody(limit); err != nil {
			return nil, arxerr.New(arxerr.BodyTooLarge, "%v", err)
		}
	}
	if hashedOnly {
		// Kept as a hash only: the arguments must be exactly the request.
		got, err := requestArgsParsed(req.Method, path, req.RawQuery, body)
		if err != nil {
			return nil, arxerr.New(arxerr.GatewayNotApproved, "%v", err)
		}
		if err := noDuplicateKeys(body); len(body) > 0 && err != nil {
			return nil, arxerr.New(arxerr.GatewayNotApproved, "%v", err)
		}
		sum := sha256.Sum256([]byte(got))
		if hex.EncodeToString(sum[:]) != c.ArgsHash {
			return nil, arxerr.New(arxerr.GatewayNotApproved, "call %s keeps its arguments as a hash only, and this request does not hash to them (with record_args: hash, a call through the gateway declares only its request)", c.ID)
		}
		return nonNilBody(body), nil
	}
	got, canonical, err := requestArgs(req.Method, path, req.RawQuery, body)
	if err != nil {
		return nil, arxerr.New(arxerr.GatewayNotApproved, "%v", err)
	}
	if got != want {
		// Which parts differ, never their values: the refusal is recorded,
		// and queries and bodies are not.
		return nil, arxerr.New(arxerr.GatewayNotApproved, "this request is not the one call %s declared (and an approver approved, if one did): its %s differ", c.ID,
			strings.Join(differingParts(got, want), ", "))
	}
	// Forward what was checked: the canonical body, not bytes another
	// parser might read otherwise.
	return nonNilBody(canonical), nil
}

func nonNilBody(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

// differingParts names the parts (method, path, query, body) in which two
// declared requests differ.
func differingParts(a, b string) []string {
	var x, y struct {
		Request map[string]json.RawMessage `json:"request"`
	}
	json.Unmarshal([]byte(a), &x)
	json.Unmarshal([]byte(b), &y)
	var out []string
	for _, k := range []string{"method", "path", "query", "body"} {
		if string(x.Request[k]) != string(y.Request[k]) {
			out = append(out, k)
		}
	}
	if len(out) == 0 {
		out = append(out, "arguments")
	}
	return out
}

// canonicalJSON is a JSON value re-encoded for comparison: object keys
// sorted, numbers exactly as written (never rounded through float64), and
// refused when it is not valid UTF-8 or an object names a key twice (two
// parsers could read it two ways).
func canonicalJSON(raw []byte) ([]byte, error) {
	if !utf8.Valid(raw) {
		return nil, errors.New("the body is not valid UTF-8")
	}
	if err := noDuplicateKeys(raw); err != nil {
		return nil, err
	}
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil || d.More() {
		return nil, errors.New("the body is not JSON, so it cannot be matched with a declared request")
	}
	return json.Marshal(v)
}

// noDuplicateKeys refuses a JSON text with an object that names a key
// twice.
func noDuplicateKeys(raw []byte) error {
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	type frame struct {
		keys   map[string]bool
		object bool
		key    bool // the next string token is a key
	}
	var stack []*frame
	for {
		tok, err := d.Token()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return errors.New("the body is not JSON, so it cannot be matched with a declared request")
		}
		var top *frame
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		switch t := tok.(type) {
		case json.Delim:
			switch t {
			case '{':
				if top != nil && top.object {
					top.key = true
				}
				stack = append(stack, &frame{keys: map[string]bool{}, object: true, key: true})
			case '[':
				if top != nil && top.object {
					top.key = true
				}
				stack = append(stack, &frame{})
			default:
				stack = stack[:len(stack)-1]
			}
		default:
			if top != nil && top.object {
				if top.key {
					k, _ := t.(string)
					if top.keys[k] {
						return fmt.Errorf("the body names the key %q twice", truncate(k, 32))
					}
					top.keys[k] = true
					top.key = false
				} else {
					top.key = true
				}
			}
		}
	}
}

// requestArgs is requestArgsParsed with the body as canonicalJSON keeps
// it: what a declared request is compared with. It returns the canonical
// body too (nil when none): what is forwarded.
func requestArgs(method, path, rawQuery string, body []byte) (string, []byte, error) {
	m := map[string]any{"method": method, "path": path}
	if rawQuery != "" {
		m["query"] = rawQuery
	}
	var cb []byte
	if len(body) > 0 {
		var err error
		if cb, err = canonicalJSON(body); err != nil {
			return "", nil, err
		}
		m["body"] = json.RawMessage(cb)
	}
	raw, err := json.Marshal(map[string]any{"request": m})
	if err != nil {
		return "", nil, err
	}
	return string(raw), cb, nil
}
