package agentvault

import (
	"context"
	"net/http"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// Tracing: Do runs each governed call in a span of the application's
// OpenTelemetry tracer provider (otel.SetTracerProvider; without one, the
// default does nothing), named for the connector and action with the
// GenAI conventions' attributes, and every request to ARX (and through
// its gateway) carries the W3C trace context, so that the server's spans
// (arx serve --otlp-endpoint) are its children.

var traceContext propagation.TraceContext

// injectTrace puts ctx's trace context on a request, if ctx has one.
func injectTrace(ctx context.Context, h http.Header) {
	if trace.SpanContextFromContext(ctx).IsValid() {
		traceContext.Inject(ctx, propagation.HeaderCarrier(h))
	}
}

func startCallSpan(ctx context.Context, a Action) (context.Context, func(error)) {
	tr := otel.GetTracerProvider().Tracer("github.com/arxsec/arx/agentvault")
	ctx, span := tr.Start(ctx, "execute_tool "+a.Connector+"."+a.Action, trace.WithSpanKind(trace.SpanKindClient))
	if !span.IsRecording() {
		return ctx, func(error) { span.End() }
	}
	span.SetAttributes(attribute.String("gen_ai.operation.name", "execute_tool"),
		attribute.String("gen_ai.tool.name", a.Connector+"."+a.Action), attribute.String("arx.connector", a.Connector),
		attribute.String("arx.action", a.Action), attribute.String("arx.risk", string(a.Risk)))
	return ctx, func(err error) {
		if err != nil {
			span.SetStatus(codes.Error, err.Error())
		}
		span.End()
	}
}
