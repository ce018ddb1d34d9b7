// Package tracing exports a span for every stage of a governed call over
// OTLP (arx serve --otlp-endpoint): the agent's request and its decision,
// the wait for an approver, the credential, each gateway request (whose
// upstream gets the trace context), the completion. Spans continue the
// trace the agent's SDK sends (W3C traceparent) and carry the OpenTelemetry
// GenAI conventions where they fit (gen_ai.agent.id, gen_ai.agent.name,
// gen_ai.operation.name, gen_ai.tool.name). Off by default: a nil
// *Tracing starts nothing and costs a nil check.
package tracing

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// Config says where spans go.
type Config struct {
	// Endpoint is the OTLP/HTTP base URL ("http://collector:4318"); spans
	// are posted to its /v1/traces.
	Endpoint string
	// Service names this deployment (service.name is "arx"; this is
	// service.instance.id, the log's origin).
	Instance string
	Version  string
}

// Tracing starts spans and exports them.
type Tracing struct {
	tp     *sdktrace.TracerProvider
	tracer trace.Tracer
	prop   propagation.TraceContext
}

// New starts the exporter; nil, nil when cfg has no endpoint.
func New(cfg Config) (*Tracing, error) {
	if cfg.Endpoint == "" {
		return nil, nil
	}
	u, err := url.Parse(cfg.Endpoint)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("the OTLP endpoint %q is not an http(s) URL (http://collector:4318)", cfg.Endpoint)
	}
	exp, err := otlptracehttp.New(context.Background(), otlptracehttp.WithEndpointURL(u.JoinPath("v1", "traces").String()),
		otlptracehttp.WithTimeout(10*time.Second))
	if err != nil {
		return nil, fmt.Errorf("OTLP exporter: %w", err)
	}
	res := resource.NewSchemaless(attribute.String("service.name", "arx"), attribute.String("service.version", cfg.Version),
		attribute.String("service.instance.id", cfg.Instance))
	// Every call is sampled, whatever the agent's traceparent says: an
	// agent cannot turn ARX's spans of its calls off.
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp, sdktrace.WithBatchTimeout(time.Second)), sdktrace.WithResource(res),
		sdktrace.WithSampler(sdktrace.AlwaysSample()))
	return &Tracing{tp: tp, tracer: tp.Tracer("github.com/arxsec/arx")}, nil
}

// Shutdown exports what is left.
func (t *Tracing) Shutdown(ctx context.Context) error {
	if t == nil {
		return nil
	}
	return t.tp.Shutdown(ctx)
}

// Start starts a span under ctx's; with t nil, ctx and a span that records
// nothing.
func (t *Tracing) Start(ctx context.Context, name string, kind trace.SpanKind, attrs ...attribute.KeyValue) (context.Context, trace.Span) {
	if t == nil {
		return ctx, trace.SpanFromContext(ctx)
	}
	return t.tracer.Start(ctx, name, trace.WithSpanKind(kind), trace.WithAttributes(attrs...))
}

// Extract continues the trace a request carries (traceparent).
func (t *Tracing) Extract(ctx context.Context, h http.Header) context.Context {
	if t == nil {
		return ctx
	}
	return t.prop.Extract(ctx, propagation.HeaderCarrier(h))
}

// Inject puts ctx's trace context on an outgoing request (an upstream of
// the gateway).
func (t *Tracing) Inject(ctx context.Context, h http.Header) {
	if t == nil {
		return
	}
	t.prop.Inject(ctx, propagation.HeaderCarrier(h))
}

// Attribute keys: the GenAI conventions where they fit, arx.* for the rest.
const (
	AgentID       = attribute.Key("gen_ai.agent.id")
	AgentName     = attribute.Key("gen_ai.agent.name")
	OperationName = attribute.Key("gen_ai.operation.name") // "execute_tool"
	ToolName      = attribute.Key("gen_ai.tool.name")      // connector.action
	CallID        = attribute.Key("arx.call.id")
	Connector     = attribute.Key("arx.connector")
	Action        = attribute.Key("arx.action")
	Risk          = attribute.Key("arx.risk")
	Status        = attribute.Key("arx.call.status")
	Refusal       = attribute.Key("arx.refusal.code")
	Outcome       = attribute.Key("arx.call.outcome")
)
