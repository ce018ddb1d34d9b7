// Package api serves ARX's HTTP API (docs/api.md): the agent side (calls and
// their credentials), the operator side (agents, tokens, the record), the
// JWKS document, health and metrics. Handlers return errors; what a client
// sees is an arxerr.Error with a stable code, and any other cause is logged
// and answered as "internal error", never echoed.
package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"regexp"
	"strings"
	"time"

	"github.com/arxsec/arx/arxerr"
	"github.com/arxsec/arx/internal/runtime"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Limits.
const (
	MaxBodyBytes     = 64 << 10  // every JSON body
	MaxManifestBytes = 256 << 10 // a hire request carries a manifest
)

// Config configures the API.
type Config struct {
	Runtime  *runtime.Runtime
	LogKey   string // the log's public note verifier key
	Logger   *slog.Logger
	Registry *prometheus.Registry // for /metrics; nil: none
	// Extra mounts more handlers (the console) on the same mux.
	Extra func(mux *http.ServeMux)
	// PublicURL is where people reach this deployment (setup links).
	PublicURL string
	// Slack takes Slack's interactions (nil: POST /v1/slack/interactions
	// answers chat.not_configured); ChatSecret signs the generic chat
	// webhook (empty: not configured).
	Slack      *SlackConfig
	ChatSecret []byte
}

type server struct {
	rt         *runtime.Runtime
	publicURL  string
	logKey     string
	log        *slog.Logger
	duration   *prometheus.HistogramVec
	slack      *SlackConfig
	chatSecret []byte
}

// New returns the API handler.
func New(cfg Config) http.Handler {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s := &server{rt: cfg.Runtime, logKey: cfg.LogKey, log: cfg.Logger, publicURL: cfg.PublicURL, slack: cfg.Slack, chatSecret: cfg.ChatSecret}
	s.duration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "arx_http_request_seconds", Help: "HTTP requests by route and status.",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .5, 1, 5, 30},
	}, []string{"route", "code"})
	mux := http.NewServeMux()
	if cfg.Registry != nil {
		cfg.Registry.MustRegister(s.duration)
	}
	s.routes(cfg.Registry, mux.Handle)
	// SCIM 2.0 for the identity provider (scim.go): its own protocol
	// (RFC 7644), described there rather than in docs/openapi.yaml.
	mux.Handle("/scim/v2/", s.scimHandler())
	if cfg.Extra != nil {
		cfg.Extra(mux)
	}
	return s.withGateway(mux) // gateway.go: ANY /v1/gateway/{connector}/{path...}
}

// Routes returns the pattern of every route New registers, as
// http.ServeMux patterns ("POST /v1/calls"; one without a method is served
// for every method), GET /metrics and the gateway included, but not the
// routes of Config.Extra. A ServeMux cannot list its patterns, and
// docs/openapi.yaml is checked against this list.
func Routes() []string {
	var out []string
	s := &server{}
	s.routes(prometheus.NewRegistry(), func(pattern string, _ http.Handler) { out = append(out, pattern) })
	return append(out, gatewayRoute)
}

// routes registers the API's routes through handle: New's mux, or the list
// of Routes. GET /metrics is served when there is a registry.
func (s *server) routes(reg *prometheus.Registry, handle func(pattern string, h http.Handler)) {
	if reg != nil {
		handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	}
	h := func(pattern string, fn handlerFunc) { handle(pattern, s.wrap(pattern, fn)) }

	h("GET /healthz", s.healthz)
	h("GET /readyz", s.readyz)
	h("GET /.well-known/jwks.json", s.jwks)

	h("POST /v1/calls", s.agentCall(s.createCall))
	h("GET /v1/calls/{id}", s.authed(s.getCall))
	h("POST /v1/calls/{id}/complete", s.agentCall(s.completeCall))
	h("POST /v1/credentials/introspect", s.introspect)
	h("POST /v1/slack/interactions", s.slackInteractions) // chat.go: signed by Slack
	h("POST /v1/chat/interactions", s.chatInteractions)   // signed with the chat secret
	s.agentRoutes(h)                                      // GET /v1/agent, GET /v1/agent/status (agent.go)

	h("POST /v1/agents", s.adminOnly(s.hire))
	h("GET /v1/agents", s.authed(s.listAgents))
	h("GET /v1/agents/{id}", s.authed(s.getAgent))
	h("GET /v1/agents/{id}/calls", s.adminOnly(s.agentCalls))
	h("GET /v1/agents/{id}/record", s.adminOnly(s.agentRecord))
	h("POST /v1/agents/{id}/record/import", s.adminOnly(s.importRecord))
	h("POST /v1/agents/{id}/terminate", s.authed(s.terminate))
	h("POST /v1/agents/{id}/manifest", s.adminOnly(s.applyManifest))
	h("GET /v1/agents/{id}/shadow", s.authed(s.shadowReport))
	h("POST /v1/agents/{id}/shadow/promote", s.adminOnly(s.promoteShadow))
	h("POST /v1/agents/{id}/shadow/discard", s.adminOnly(s.discardShadow))
	h("GET /v1/agents/{id}/review", s.authed(s.review))
	h("POST /v1/agents/{id}/drift/{index}/ack", s.authed(s.ackDrift))
	h("POST /v1/agents/{id}/drift/ack", s.authed(s.ackAllDrift))
	h("POST /v1/agents/{id}/tokens", s.adminOnly(s.issueToken))
	h("POST /v1/agents/{id}/process-stopped", s.adminOnly(s.processStopped))
	h("DELETE /v1/agents/{id}/tokens/{token}", s.adminOnly(s.revokeToken))

	h("GET /v1/approvals", s.authed(s.listApprovals))
	h("GET /v1/approvals/{id}", s.authed(s.getApproval))
	h("POST /v1/approvals/{id}/approve", s.authed(s.decide(true)))
	h("POST /v1/approvals/{id}/deny", s.authed(s.decide(false)))
	h("POST /v1/approvals/{id}/challenge", s.authed(s.decisionChallenge))
	h("GET /v1/events", s.authed(s.eventStream))

	h("POST /v1/users", s.adminOnly(s.addUser))
	h("GET /v1/users", s.adminOnly(s.listUsers))
	h("POST /v1/users/{email}/reset", s.adminOnly(s.resetUser))
	h("POST /v1/users/{email}/disable", s.adminOnly(s.disableUser))
	h("POST /v1/users/{email}/enable", s.adminOnly(s.enableUser))
	h("POST /v1/users/{email}/role", s.adminOnly(s.setRole))
	h("GET /v1/auth/tokens", s.authed(s.ownTokens))
	h("DELETE /v1/auth/tokens/{id}", s.authed(s.revokeOwnToken))
	h("POST /v1/auth/setup", s.setupPassword)
	h("POST /v1/auth/tokens", s.loginToken)
	h("GET /v1/auth/sso", s.ssoInfo)
	h("POST /v1/auth/sso/tokens", s.ssoToken)

	h("GET /v1/log/checkpoint", s.checkpoint)
	h("GET /v1/log/key", s.key)
	h("GET /v1/connectors", s.adminOnly(s.listConnectors))
	h("GET /v1/log/entries", s.adminOnly(s.logEntries))

	h("/v1/", func(w http.ResponseWriter, r *http.Request) error {
		return arxerr.New(arxerr.NotFound, "no route %s %s", r.Method, truncate(r.URL.Path, 128))
	})
}

type handlerFunc func(w http.ResponseWriter, r *http.Request) error

// wrap turns a handler's error into the API's error body, recovers panics,
// and measures.
// tracedRoutes are the stages of a governed call, each a span when
// tracing is on (the gateway's is in gateway.go).
var tracedRoutes = map[string]bool{"POST /v1/calls": true, "GET /v1/calls/{id}": true, "POST /v1/calls/{id}/complete": true}

func (s *server) wrap(route string, fn handlerFunc) http.Handler {
	traced := tracedRoutes[route]
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		if t := s.rt.Tracing(); traced && t != nil {
			ctx, span := t.Start(t.Extract(r.Context(), r.Header), route, trace.SpanKindServer,
				attribute.String("http.request.method", r.Method), attribute.String("http.route", strings.TrimPrefix(route, r.Method+" ")))
			r = r.WithContext(ctx)
			defer endSpan(span, sw)
		}
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				s.log.Error("handler panic", "route", route, "panic", fmt.Sprint(v))
				if sw.status == 0 {
					writeError(sw, arxerr.New(arxerr.Internal, "internal error"))
				}
			}
			s.duration.WithLabelValues(route, fmt.Sprint(sw.status)).Observe(time.Since(start).Seconds())
		}()
		r.Body = http.MaxBytesReader(sw, r.Body, MaxManifestBytes)
		if err := fn(sw, r); err != nil {
			var ae *arxerr.Error
			if !errors.As(err, &ae) {
				if errors.Is(err, context.Canceled) {
					return // the client went away
				}
				s.log.Error("request failed", "route", route, "err", err)
				ae = arxerr.New(arxerr.Internal, "internal error")
			}
			if sw.status == 0 {
				writeError(sw, ae)
			}
		}
	})
}

// endSpan ends a request's span with its status.
func endSpan(span trace.Span, sw *statusWriter) {
	span.SetAttributes(attribute.Int("http.response.status_code", sw.status))
	if sw.status >= 500 {
		span.SetStatus(codes.Error, http.StatusText(sw.status))
	}
	span.End()
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func writeError(w http.ResponseWriter, e *arxerr.Error) {
	if m := RedactTokens(e.Message); m != e.Message {
		c := *e
		c.Message = m
		e = &c
	}
	status := e.Status
	if status == 0 {
		status = arxerr.Lookup(e.Code).Status
	}
	if status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="arx"`)
	}
	writeJSON(w, status, arxerr.Body{Error: e})
}

// WriteJSON answers v as JSON with status, as every API route does (the
// console's JSON steps too).
func WriteJSON(w http.ResponseWriter, status int, v any) { writeJSON(w, status, v) }

// WriteError answers an error as every API route does: its code, message
// (tokens redacted) and hint, with its status.
func WriteError(w http.ResponseWriter, e *arxerr.Error) { writeError(w, e) }

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
}

// tokenShapes are ARX's tokens (agents', operators', people's, session
// cookies, setup links) and compact JWS credentials.
var tokenShapes = regexp.MustCompile(`arx[akucs]_[A-Za-z0-9_-]{8,}|eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*`)

// RedactTokens hides anything shaped like an ARX token or credential in an
// error message that repeats the request (a path, an id): a token pasted
// into a URL by mistake must not come back in an error that clients log.
func RedactTokens(msg string) string {
	if !strings.Contains(msg, "arx") && !strings.Contains(msg, "eyJ") {
		return msg
	}
	return tokenShapes.ReplaceAllString(msg, "[redacted]")
}

// decode reads a JSON body strictly: the right media type, at most limit
// bytes, no unknown fields, one value.
func decode(r *http.Request, limit int64, v any) error {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || mt != "application/json" {
			return arxerr.New(arxerr.UnsupportedMedia, "content type %q is not application/json", truncate(ct, 64))
		}
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return arxerr.New(arxerr.BodyTooLarge, "body exceeds %d bytes", limit)
		}
		return arxerr.New(arxerr.BadRequest, "could not read the body")
	}
	if int64(len(body)) > limit {
		return arxerr.New(arxerr.BodyTooLarge, "body exceeds %d bytes", limit)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return arxerr.New(arxerr.BadRequest, "malformed JSON body: %s", jsonProblem(err))
	}
	if dec.More() {
		return arxerr.New(arxerr.BadRequest, "malformed JSON body: more than one value")
	}
	return nil
}

// jsonProblem describes a decoding error without echoing input at length.
func jsonProblem(err error) string {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return fmt.Sprintf("syntax error at byte %d", se.Offset)
	case errors.As(err, &te):
		return fmt.Sprintf("field %q must be %s", te.Field, te.Type)
	case errors.Is(err, io.EOF):
		return "empty body"
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return truncate(strings.TrimPrefix(err.Error(), "json: "), 80)
	default:
		return "invalid JSON"
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

func (s *server) healthz(w http.ResponseWriter, r *http.Request) error {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	return nil
}

func (s *server) readyz(w http.ResponseWriter, r *http.Request) error {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if err := s.rt.Ready(ctx); err != nil {
		status := "database unavailable"
		if errors.Is(err, runtime.ErrNotReady) {
			status = "record unavailable: writes fail"
		}
		s.log.Warn("not ready", "err", err)
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": status})
		return nil
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
	return nil
}

func (s *server) jwks(w http.ResponseWriter, r *http.Request) error {
	w.Header().Set("Cache-Control", "max-age=300")
	w.Header().Set("Content-Type", "application/jwk-set+json")
	return json.NewEncoder(w).Encode(s.rt.KeySet())
}
