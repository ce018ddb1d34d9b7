package runtime

import (
	"context"
	"encoding/json"
	"errors"
	"strings"

	"github.com/arxsec/arx/arxerr"
	"github.com/arxsec/arx/internal/store"
)

// Approvals bound to the request: a call may declare, in its arguments,
// the one request it will send through the gateway
// (args.request: {method, path, query, body}). Every gateway request of
// such a call must be exactly that one; and a call an approver approved
// must have declared it, so that the approval covers what is sent, not
// "any request of this action" for the credential's lifetime.

// requestArgs is the request a gateway request is, as args.request writes
// it: the method, the cleaned path after the connector's name, the raw
// query ("" absent), the JSON body (absent when empty).
func requestArgs(method, path, rawQuery string, body []byte) (string, error) {
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
	a, err := parseArgs(append(append([]byte(`{"request":`), req...), '}'))
	if err != nil {
		return "", false, err
	}
	return a.text, false, nil
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
	approved := false
	if ap, err := r.store.Approval(ctx, c.ID); err == nil && ap.Status == store.ApprovalGranted {
		approved = true
	}
	switch {
	case want == "" && !approved:
		return nil, nil // not bound
	case want == "" && hashedOnly:
		return nil, arxerr.New(arxerr.GatewayNotApproved, "call %s was approved with arguments kept as a hash only, so its requests cannot be checked against them", c.ID)
	case want == "":
		e := arxerr.New(arxerr.GatewayNotApproved, "call %s was approved without declaring its request (args.request), so the approval covers no request", c.ID)
		return nil, e
	}
	var body []byte
	if req.ReadBody != nil {
		if body, err = req.ReadBody(limit); err != nil {
			return nil, arxerr.New(arxerr.BodyTooLarge, "%v", err)
		}
	}
	got, err := requestArgs(req.Method, path, req.RawQuery, body)
	if err != nil {
		return nil, arxerr.New(arxerr.GatewayNotApproved, "%v", err)
	}
	if got != want {
		what := "call"
		if approved {
			what = "approved call"
		}
		// Which parts differ, never their values: the refusal is recorded,
		// and queries and bodies are not.
		return nil, arxerr.New(arxerr.GatewayNotApproved, "this request is not the one the %s %s declared: its %s differ", what, c.ID,
			strings.Join(differingParts(got, want), ", "))
	}
	if body == nil {
		body = []byte{}
	}
	return body, nil
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
