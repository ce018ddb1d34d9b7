package runtime

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/arxsec/arx/internal/store"
	"github.com/arxsec/arx/internal/tracing"
)

// annotateCall names the call on the request's span (the API's, when
// tracing is on): the GenAI conventions' agent and tool, and ARX's call.
// Nothing is built when the span does not record.
func annotateCall(ctx context.Context, agentName string, c *store.Call) {
	span := trace.SpanFromContext(ctx)
	if !span.IsRecording() || c == nil {
		return
	}
	attrs := []attribute.KeyValue{
		tracing.AgentID.String(c.AgentID), tracing.OperationName.String("execute_tool"),
		tracing.ToolName.String(c.Connector + "." + c.Action), tracing.CallID.String(c.ID),
		tracing.Connector.String(c.Connector), tracing.Action.String(c.Action), tracing.Status.String(c.Status),
	}
	if agentName != "" {
		attrs = append(attrs, tracing.AgentName.String(agentName))
	}
	if c.Risk != "" {
		attrs = append(attrs, tracing.Risk.String(c.Risk))
	}
	if c.Refusal != "" {
		attrs = append(attrs, tracing.Refusal.String(c.Refusal))
	}
	if c.Outcome != "" {
		attrs = append(attrs, tracing.Outcome.String(c.Outcome))
	}
	span.SetAttributes(attrs...)
}

// stage starts a span for one stage of a call under the request's (when
// tracing is on); end it with the returned func.
func (r *Runtime) stage(ctx context.Context, name string, attrs ...attribute.KeyValue) (context.Context, func()) {
	if r.tracing == nil {
		return ctx, func() {}
	}
	ctx, span := r.tracing.Start(ctx, name, trace.SpanKindInternal, attrs...)
	return ctx, func() { span.End() }
}
