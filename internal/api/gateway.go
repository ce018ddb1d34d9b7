package api

import (
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"bytes"
	"fmt"
	"github.com/arxsec/arx/internal/tracing"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/arxsec/arx/arxerr"
	"github.com/arxsec/arx/internal/runtime"
)

// GatewayPrefix is where the gateway listens: ANY
// /v1/gateway/{connector}/{path...}.
const GatewayPrefix = "/v1/gateway/"

const gatewayRoute = "/v1/gateway/{connector}/{path...}"

// withGateway sends gateway requests to the gateway before the mux sees
// them: the mux would answer a path with dot segments with a redirect to
// its cleaned form, and limits bodies to the API's JSON size. The gateway
// refuses such paths instead, and streams bodies up to the connector's limit.
func (s *server) withGateway(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.EscapedPath(), GatewayPrefix) {
			s.gateway(w, r)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// gateway forwards one request of an agent to an http connector's upstream,
// with the connector's real secret, once the request is recorded.
func (s *server) gateway(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	sw := &statusWriter{ResponseWriter: w}
	defer func() {
		s.duration.WithLabelValues(gatewayRoute, fmt.Sprint(sw.status)).Observe(time.Since(start).Seconds())
	}()
	rest := strings.TrimPrefix(r.URL.EscapedPath(), GatewayPrefix)
	name, rawPath, _ := strings.Cut(rest, "/")
	t := s.rt.Tracing()
	if t != nil {
		// A fixed name: the method and connector are the caller's words,
		// not yet checked (attributes, clipped, carry them).
		ctx, span := t.Start(t.Extract(r.Context(), r.Header), "arx.gateway", trace.SpanKindServer,
			attribute.String("http.request.method", r.Method), attribute.String("http.route", "/v1/gateway/{connector}/{path...}"),
			tracing.Connector.String(truncate(name, 64)))
		r = r.WithContext(ctx)
		defer endSpan(span, sw)
	}
	var readBody func(int64) ([]byte, error)
	if r.Body != nil && r.Body != http.NoBody {
		readBody = func(limit int64) ([]byte, error) {
			b, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
			if err != nil {
				return nil, fmt.Errorf("the body could not be read: %w", err)
			}
			if int64(len(b)) > limit {
				return nil, fmt.Errorf("the body exceeds the connector's limit of %d bytes", limit)
			}
			return b, nil
		}
	}
	pass, err := s.rt.GatewayBegin(r.Context(), runtime.GatewayRequest{Connector: name, Credential: bearer(r),
		Method: r.Method, RawPath: "/" + rawPath, RawQuery: r.URL.RawQuery, Header: r.Header, ContentLength: r.ContentLength,
		ReadBody: readBody})
	if err != nil {
		ae, ok := err.(*arxerr.Error)
		if !ok {
			s.log.Error("gateway", "err", err)
			ae = arxerr.New(arxerr.Internal, "internal error")
		}
		writeError(sw, ae)
		return
	}
	// The server's own deadlines fit JSON requests; a forwarded request
	// gets the connector's (which Forward applies), with a margin: at the
	// read deadline net/http cancels the request's context, which must not
	// pass for the agent hanging up.
	rc := http.NewResponseController(w)
	deadline := time.Now().Add(pass.Gateway.Timeout() + 5*time.Second)
	rc.SetReadDeadline(deadline)
	rc.SetWriteDeadline(deadline)
	fr := r.WithContext(pass.Context)
	if t != nil {
		// The upstream continues this trace (the agent's own traceparent,
		// which is its, is replaced by the gateway's).
		fr.Header = r.Header.Clone()
		t.Inject(r.Context(), fr.Header)
	}
	if pass.Body != nil { // read to check it against the declared request: forward what was checked
		fr.Body, fr.ContentLength = io.NopCloser(bytes.NewReader(pass.Body)), int64(len(pass.Body))
	}
	ex := pass.Gateway.Forward(sw, fr, pass.RawPath)
	if ae := s.rt.GatewayEnd(pass, ex); ae != nil {
		writeError(sw, ae)
		return
	}
	if ex.Wrote && ex.Err != nil {
		// Broken off mid-answer: the agent must not take what it got for
		// a whole answer, so the connection is cut.
		panic(http.ErrAbortHandler)
	}
}

func (s *server) listConnectors(w http.ResponseWriter, r *http.Request) error {
	writeJSON(w, http.StatusOK, map[string]any{"connectors": s.rt.Connectors()})
	return nil
}

// viewResult is the call of a result, with its credential (and a
// connector's DSN) when it may proceed.
func viewResult(res *runtime.CallResult, now time.Time) callView {
	v := viewCall(res.Call, res.Credential, now)
	if v.Credential != nil && res.DSN != "" {
		v.Credential.DSN = res.DSN
	}
	return v
}
