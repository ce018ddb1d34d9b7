package runtime

import (
	"go.opentelemetry.io/otel/trace"

	"context"
	"errors"
	"github.com/arxsec/arx/internal/tracing"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/arxsec/arx/arxerr"
	"github.com/arxsec/arx/credential"
	"github.com/arxsec/arx/internal/connector"
	"github.com/arxsec/arx/internal/store"
	"github.com/arxsec/arx/record"
)

// GatewayRequest is one request an agent sends through the gateway
// (ANY /v1/gateway/{connector}/{path...}).
type GatewayRequest struct {
	Connector     string
	Credential    string // the call's credential (bearer)
	Method        string
	RawPath       string // escaped, as received after the connector's name, starting with /
	RawQuery      string
	Header        http.Header // checked for method overrides and URL rewrites, never recorded
	ContentLength int64       // -1 when unknown
	// ReadBody reads the request's body, at most limit bytes (more is an
	// error): for a call bound to one request (args.request), whose body
	// must be the one declared. Nil: the request has none.
	ReadBody func(limit int64) ([]byte, error)
}

// GatewayPass lets one request through: its gateway.request entry has
// committed. Forward it with Gateway, then call GatewayEnd.
type GatewayPass struct {
	Gateway connector.Gateway
	RawPath string // the checked path, escaped anew: what the upstream gets
	// Context is the request's, and ends, with a cause wrapping
	// connector.ErrCut, when the call may no longer be forwarded
	// (gateway_cut.go): forward with it.
	Context context.Context
	cancel  context.CancelCauseFunc
	call    *store.Call
	index   int64 // of the gateway.request entry
	start   time.Time
	method  string
	// Body is the request's body when the gateway read it to check it
	// against the call's declared request: forward these bytes. Nil: the
	// body was not read (stream it).
	Body []byte
}

// GatewayBegin decides a gateway request. Everything that makes a
// credential live is read from the database in the transaction that records
// the request: the call still approved and unexpired, its agent active. The
// gateway.request entry (method, path, declared size; never bodies, query
// strings or headers) commits before GatewayBegin returns a pass, so nothing
// is forwarded that the record does not show (fail closed). A request the
// call's action does not allow is refused, and the refusal is recorded.
func (r *Runtime) GatewayBegin(ctx context.Context, req GatewayRequest) (*GatewayPass, error) {
	now := r.now()
	gw, ok := r.conn.gateways[req.Connector]
	if !ok {
		e := arxerr.New(arxerr.ConnectorNotFound, "no http connector %q is configured on this server", truncate(req.Connector, 64))
		return nil, e
	}
	if req.Credential == "" {
		e := arxerr.New(arxerr.Unauthenticated, "missing call credential")
		e.Hint = "send the call's credential: Authorization: Bearer <credential> (the SDK's HTTPClient does)"
		return nil, e
	}
	cl, err := r.conn.verified.verify(r.keys, req.Credential, now)
	switch {
	case errors.Is(err, credential.ErrExpired):
		return nil, arxerr.New(arxerr.CredentialExpired, "the credential has expired")
	case err != nil:
		return nil, arxerr.New(arxerr.CredentialInvalid, "the credential is not valid")
	}
	if span := trace.SpanFromContext(ctx); span.IsRecording() {
		span.SetAttributes(tracing.AgentID.String(cl.AgentID), tracing.CallID.String(cl.CallID), tracing.OperationName.String("execute_tool"),
			tracing.ToolName.String(cl.Connector+"."+cl.Action), tracing.Action.String(cl.Action), tracing.Risk.String(cl.Risk))
	}
	if cl.Connector != req.Connector {
		return nil, arxerr.New(arxerr.CredentialMismatch, "the credential is for connector %s, not %s", cl.Connector, req.Connector)
	}
	if req.ContentLength > gw.MaxRequestBytes() {
		return nil, arxerr.New(arxerr.BodyTooLarge, "body of %d bytes exceeds the connector's limit of %d", req.ContentLength, gw.MaxRequestBytes())
	}
	var refusal *arxerr.Error
	path, perr := connector.CleanPath(req.RawPath)
	if perr != nil {
		refusal = arxerr.New(arxerr.GatewayPathInvalid, "%v", perr)
	} else if err := connector.CheckOverrides(req.Header, req.RawQuery); err != nil {
		refusal = arxerr.New(arxerr.GatewayAmbiguous, "%v", err)
	} else if err := gw.Allow(cl.Action, req.Method, path); err != nil {
		var rf *connector.Refusal
		code := arxerr.GatewayPath
		if errors.As(err, &rf) && rf.Reason == connector.RefusedMethod {
			code = arxerr.GatewayMethod
		}
		refusal = arxerr.New(code, "%s", err.Error())
	}
	pass := &GatewayPass{Gateway: gw, RawPath: connector.EscapePath(path), start: now, method: req.Method}
	if refusal == nil {
		// A call bound to one request (approved, or declaring it) is
		// checked here, before the serial step: its arguments never change.
		body, err := r.checkBinding(ctx, cl.CallID, req, path, gw.MaxRequestBytes())
		var ae *arxerr.Error
		switch {
		case errors.As(err, &ae):
			refusal = ae
		case err != nil:
			return nil, err
		}
		pass.Body = body
	}
	err = r.store.Update(ctx, func(tx store.Tx) error {
		c, err := tx.Call(cl.CallID)
		if errors.Is(err, store.ErrNotFound) {
			return arxerr.New(arxerr.CredentialInvalid, "the credential is not valid")
		}
		if err != nil {
			return err
		}
		if c.AgentID != cl.AgentID || c.Connector != cl.Connector || c.Action != cl.Action {
			return arxerr.New(arxerr.CredentialMismatch, "the credential does not match its call")
		}
		// The agent first: termination also revokes its calls, and the
		// agent's state is the better answer.
		a, err := tx.Agent(c.AgentID)
		if err != nil {
			return err
		}
		if err := agentUsable(a); err != nil {
			return err
		}
		switch EffectiveStatus(c, now) {
		case store.CallApproved:
		case store.CallExpired:
			return arxerr.New(arxerr.CredentialExpired, "call %s has expired", c.ID)
		default:
			return arxerr.New(arxerr.CredentialClosed, "call %s is %s", c.ID, c.Status)
		}
		e := &record.Entry{Agent: c.AgentID, Call: c.ID, Connector: c.Connector, Action: c.Action, Risk: c.Risk,
			Actor: "agent:" + c.AgentID, Time: now, Type: TypeGatewayRequest,
			Data: map[string]any{"method": req.Method, "path": path, "query": req.RawQuery != "", "request_bytes": req.ContentLength}}
		if refusal != nil {
			e.Type = TypeGatewayRefused
			e.Data = map[string]any{"method": req.Method, "code": string(refusal.Code), "reason": refusal.Message}
			if perr == nil {
				e.Data["path"] = path
			}
		}
		if err := tx.Append(e); err != nil {
			return err
		}
		pass.call, pass.index = c, e.Index
		return nil
	})
	if err != nil {
		return nil, r.writeFailed("gateway request", err)
	}
	if refusal != nil {
		refusal.CallID = cl.CallID
		return nil, refusal
	}
	// A call closed between the transaction above and this is cut by the
	// next check of the requests in flight, within CutInterval.
	pass.Context, pass.cancel = context.WithCancelCause(ctx)
	r.track(pass)
	return pass, nil
}

// GatewayEnd records how a forwarded request ended, in a gateway.response
// entry (status, sizes, duration; never bodies), and returns the error to
// answer with when nothing was written to the agent. The entry is written
// after the answer, batched with others: the promise that nothing is
// forwarded unrecorded rests on gateway.request; this entry completes it.
func (r *Runtime) GatewayEnd(p *GatewayPass, ex connector.Exchange) *arxerr.Error {
	r.untrack(p)
	var ae *arxerr.Error
	data := map[string]any{"request": p.index, "status": ex.Status, "request_bytes": ex.RequestBytes,
		"response_bytes": ex.ResponseBytes, "duration_ms": r.now().Sub(p.start).Milliseconds()}
	if ex.Redacted {
		data["secret_redacted"] = true
	}
	if ex.Err != nil {
		code := arxerr.UpstreamUnreachable
		switch {
		case errors.Is(ex.Err, connector.ErrTimeout):
			code = arxerr.UpstreamTimeout
		case errors.Is(ex.Err, connector.ErrRequestTooLarge):
			code = arxerr.BodyTooLarge
		case errors.Is(ex.Err, connector.ErrResponseTooLarge):
			code = arxerr.UpstreamTooLarge
		case errors.Is(ex.Err, connector.ErrClientGone):
			code = "client_gone"
		case errors.Is(ex.Err, connector.ErrUpstreamBroken):
			code = "upstream_broken"
		case errors.Is(ex.Err, connector.ErrCut):
			code = arxerr.GatewayCut
			_, why, _ := strings.Cut(ex.Err.Error(), ": ")
			data["cut"] = why
		}
		data["error"] = string(code)
		if !ex.Wrote && code != "client_gone" {
			ae = arxerr.New(code, "%s: %v", p.Gateway.Name(), ex.Err)
			data["status"] = ae.Status
		}
	}
	c := p.call
	e := &record.Entry{Agent: c.AgentID, Call: c.ID, Connector: c.Connector, Action: c.Action, Risk: c.Risk,
		Actor: "agent:" + c.AgentID, Time: r.now(), Type: TypeGatewayResponse, Data: data}
	select {
	case r.conn.responses <- e:
	default:
		t := time.NewTimer(5 * time.Second)
		select {
		case r.conn.responses <- e:
		case <-t.C:
			r.metrics.recordFailures.Inc()
			r.log.Error("gateway: response entry dropped: queue full", "call", c.ID, "request", p.index)
		}
		t.Stop()
	}
	return ae
}

// verifiedCache remembers credentials whose signature checked out, so that
// the many requests of one call verify it once. The time window is checked
// on every use; everything else that makes a credential live is read from
// the database on every request.
type verifiedCache struct {
	mu sync.Mutex
	m  map[string]verified
}

type verified struct{ claims *credential.Claims }

const verifiedCacheSize = 8192

func (v *verifiedCache) verify(ks *credential.KeySet, token string, now time.Time) (*credential.Claims, error) {
	v.mu.Lock()
	hit, ok := v.m[token]
	v.mu.Unlock()
	if ok {
		cl := hit.claims
		if !now.Before(cl.Expiry) {
			return cl, credential.ErrExpired
		}
		if now.Before(cl.IssuedAt.Add(-5 * time.Second)) {
			return cl, credential.ErrExpired
		}
		return cl, nil
	}
	cl, err := ks.Verify(token, now)
	if err != nil {
		return cl, err
	}
	v.mu.Lock()
	if len(v.m) >= verifiedCacheSize {
		for k, e := range v.m { // drop the expired, or everything
			if !now.Before(e.claims.Expiry) {
				delete(v.m, k)
			}
		}
		if len(v.m) >= verifiedCacheSize {
			clear(v.m)
		}
	}
	v.m[token] = verified{claims: cl}
	v.mu.Unlock()
	return cl, nil
}
