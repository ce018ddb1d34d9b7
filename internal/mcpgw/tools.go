package mcpgw

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/arxsec/arx/agentvault"
	"github.com/arxsec/arx/arxerr"
	"github.com/arxsec/arx/manifest"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// route is where one tool name the agent may use goes.
type route struct {
	up     *upstream
	tool   *mcp.Tool     // the upstream's description; nil for a name no upstream offers
	name   string        // as the agent sees it: the upstream's prefix and the tool's name
	action string        // on the manifest
	risk   manifest.Risk // declared by the gateway: the config's or the manifest's, whichever is higher
}

// actionFor is the manifest action of the upstream's tool: the configured
// one, else the name itself when it is a valid action name, else the name
// lowercased with the characters an action cannot hold replaced by _.
func (u *upstream) actionFor(tool string) string {
	if t, ok := u.cfg.Tools[tool]; ok && t.Action != "" {
		return t.Action
	}
	if manifest.ValidName(tool, manifest.MaxActionName) {
		return tool
	}
	var b strings.Builder
	for _, r := range strings.ToLower(tool) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '_', r == '.', r == '-':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	a := b.String()
	if a == "" || !(a[0] >= 'a' && a[0] <= 'z' || a[0] >= '0' && a[0] <= '9') {
		a = "x" + a
	}
	if len(a) > 128 {
		a = a[:128]
	}
	return a
}

// newRoute describes the upstream's tool (tool may be nil: a name it does
// not offer).
func (u *upstream) newRoute(name string, tool *mcp.Tool) *route {
	r := &route{up: u, tool: tool, name: u.cfg.Prefix + name, action: u.actionFor(name), risk: manifest.RiskLow}
	if t, ok := u.cfg.Tools[name]; ok && t.Risk != 0 {
		r.risk = t.Risk
	}
	if a, ok := u.g.manifest.Action(u.cfg.Name, r.action); ok {
		r.risk = max(r.risk, a.Risk)
	}
	return r
}

// hiddenBecause says why the agent may not see the route's tool, "" when
// it may.
func (g *Gateway) hiddenBecause(r *route, sameAction int) string {
	switch {
	case !r.up.declared:
		return "connector " + r.up.cfg.Name + " is not on the manifest"
	case r.action == ActionReadResource || r.action == ActionGetPrompt:
		return "action " + r.action + " names resources or prompts, not a tool"
	case sameAction > 1:
		return fmt.Sprintf("%d tools of the upstream map to action %s (hint: set tools.NAME.action in mcp.yaml)", sameAction, r.action)
	}
	if _, ok := g.manifest.Action(r.up.cfg.Name, r.action); !ok {
		return "action " + r.action + " is not declared for connector " + r.up.cfg.Name
	}
	if s, ok := r.tool.InputSchema.(map[string]any); !ok || s["type"] != "object" {
		return "its input schema is not an object schema"
	}
	return ""
}

// applyTools works out which tools the agent sees from the upstreams'
// current lists and the manifest, and updates the MCP server's tools (which
// tells connected agents when their list changes).
func (g *Gateway) applyTools() {
	g.applying.Lock() // one at a time, so that an older list never wins
	defer g.applying.Unlock()
	byName := map[string][]*route{}
	sameAction := map[*upstream]map[string]int{}
	for _, u := range g.ups {
		tools := u.snapshot()
		counts := map[string]int{}
		for _, t := range tools {
			counts[u.actionFor(t.Name)]++
		}
		sameAction[u] = counts
		for _, t := range tools {
			r := u.newRoute(t.Name, t)
			byName[r.name] = append(byName[r.name], r)
		}
	}
	exposed, hidden, why := map[string]*route{}, map[string]*route{}, map[string]string{}
	for name, rs := range byName {
		r := rs[0]
		var reason string
		if len(rs) > 1 {
			reason = fmt.Sprintf("%d upstreams offer a tool of this name (hint: give them a prefix in mcp.yaml)", len(rs))
		} else {
			reason = g.hiddenBecause(r, sameAction[r.up][r.action])
		}
		if reason != "" {
			hidden[name], why[name] = r, reason
			continue
		}
		exposed[name] = r
	}

	g.mu.Lock()
	defer g.mu.Unlock()
	var removed []string
	for name := range g.exposed {
		if _, ok := exposed[name]; !ok {
			removed = append(removed, name)
			delete(g.defs, name)
		}
	}
	if len(removed) > 0 {
		g.srv.RemoveTools(removed...)
	}
	for _, name := range slices.Sorted(maps.Keys(exposed)) {
		r := exposed[name]
		def := *r.tool
		def.Name = name
		def.Meta = maps.Clone(def.Meta)
		if def.Meta == nil {
			def.Meta = mcp.Meta{}
		}
		def.Meta[metaRisk] = r.risk.String()
		b, _ := json.Marshal(&def)
		if g.defs[name] == string(b) {
			continue
		}
		g.defs[name] = string(b)
		g.srv.AddTool(&def, g.toolHandler(name))
	}
	for name, reason := range why {
		if g.why[name] != reason {
			g.log.Info("tool hidden from the agent", "tool", name, "reason", reason)
		}
	}
	g.exposed, g.hidden, g.why = exposed, hidden, why
}

// lookup returns the route of a tool the agent sees, or nil.
func (g *Gateway) lookup(name string) *route {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.exposed[name]
}

// attribute finds the connector and action under which a call of a tool
// the agent does not see is recorded: the upstream that offers it, else
// the upstream with the longest prefix the name starts with (config order
// breaks ties). nil when no upstream fits.
func (g *Gateway) attribute(name string) (*route, string) {
	g.mu.Lock()
	r, why := g.hidden[name], g.why[name]
	g.mu.Unlock()
	if r != nil {
		return r, why
	}
	var best *upstream
	for _, u := range g.ups {
		if strings.HasPrefix(name, u.cfg.Prefix) && (best == nil || len(u.cfg.Prefix) > len(best.cfg.Prefix)) {
			best = u
		}
	}
	if best == nil {
		return nil, ""
	}
	return best.newRoute(strings.TrimPrefix(name, best.cfg.Prefix), nil), "no upstream offers it"
}

// toolHandler serves tools/call of one exposed tool.
func (g *Gateway) toolHandler(name string) mcp.ToolHandler {
	return func(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		r := g.lookup(name)
		if r == nil { // hidden since it was listed
			return g.undeclaredTool(ctx, req)
		}
		return g.callTool(ctx, req, r)
	}
}

// callTool makes one governed call of a declared tool.
func (g *Gateway) callTool(ctx context.Context, req *mcp.CallToolRequest, r *route) (*mcp.CallToolResult, error) {
	ctx, cancel := g.bind(ctx)
	defer cancel()
	digest, err := ArgumentsDigest(req.Params.Arguments)
	if err != nil {
		return nil, &jsonrpc.Error{Code: jsonrpc.CodeInvalidParams, Message: "arx mcp: tool " + r.name + ": " + err.Error()}
	}
	a := agentvault.Action{Connector: r.up.cfg.Name, Action: r.action, Risk: agentvault.Risk(r.risk.String()),
		Summary: "tool " + r.tool.Name + " args " + digest}
	if act, ok := g.manifest.Action(r.up.cfg.Name, r.action); ok && (act.When != nil || act.RecordArgs != "") {
		// The job description decides on the arguments (when:) or says
		// how the record keeps them (record_args): ARX gets them, and
		// this gateway forwards exactly what it decided on.
		if err := json.Unmarshal(req.Params.Arguments, &a.Args); err != nil && len(req.Params.Arguments) > 0 {
			return nil, &jsonrpc.Error{Code: jsonrpc.CodeInvalidParams, Message: "arx mcp: tool " + r.name + ": arguments are not a JSON object"}
		}
	}
	sink := newProgressSink(ctx, req.Session, req.Params.GetProgressToken())
	var (
		res    *mcp.CallToolResult
		upErr  error
		called bool
	)
	callID, err := g.governed(ctx, sink, a, func(ctx context.Context, _ agentvault.Credential) outcome {
		called = true
		token := g.progress.add(sink)
		defer g.progress.remove(token)
		res, upErr = r.up.callTool(ctx, r.tool.Name, req.Params.Arguments, token)
		return upstreamOutcome(ctx, res, upErr)
	})
	if !called {
		return refusalResult(err, callID), nil
	}
	if upErr != nil {
		var je *jsonrpc.Error
		switch {
		case errors.As(upErr, &je):
			return nil, je // the upstream's own answer, as it gave it
		case ctx.Err() != nil:
			return nil, context.Cause(ctx)
		}
		return nil, &jsonrpc.Error{Code: jsonrpc.CodeInternalError, Message: fmt.Sprintf("arx mcp: upstream %s is unavailable", r.up.cfg.Name)}
	}
	if err != nil {
		g.log.Warn("completing the call failed; the record may lack its completion", "call", callID, "err", err.Error())
	}
	res.Meta = maps.Clone(res.Meta)
	if res.Meta == nil {
		res.Meta = mcp.Meta{}
	}
	res.Meta[metaCallID] = callID
	if res.Content == nil {
		res.Content = []mcp.Content{}
	}
	return res, nil
}

// upstreamOutcome is how a call to an upstream ended, for the record: never
// the upstream's words, which may quote the arguments.
func upstreamOutcome(ctx context.Context, res *mcp.CallToolResult, err error) outcome {
	var je *jsonrpc.Error
	switch {
	case err == nil && res.IsError:
		return outcome{outcomeError, "the tool answered with isError"}
	case err == nil:
		return outcome{outcomeSuccess, ""}
	case errors.As(err, &je):
		return outcome{outcomeError, fmt.Sprintf("the upstream answered JSON-RPC error %d", je.Code)}
	case errors.Is(context.Cause(ctx), context.DeadlineExceeded):
		return outcome{outcomeError, "the call outlived its credential"}
	case ctx.Err() != nil:
		return outcome{outcomeCancelled, "cancelled: " + context.Cause(ctx).Error()}
	}
	return outcome{outcomeError, "the upstream is unavailable"}
}

// refusalResult tells the agent why ARX did not let a declared tool run, as
// a tool error it can read (and a model can act on).
func refusalResult(err error, callID string) *mcp.CallToolResult {
	code := arxerr.Internal
	var ae *agentvault.Error
	if errors.As(err, &ae) {
		code = ae.Code
		if ae.CallID != "" {
			callID = ae.CallID
		}
	}
	meta := mcp.Meta{metaCode: string(code)}
	if callID != "" {
		meta[metaCallID] = callID
	}
	return &mcp.CallToolResult{IsError: true, Meta: meta, Content: []mcp.Content{&mcp.TextContent{Text: err.Error()}}}
}

// undeclaredTool answers a call of a tool the agent does not see. It is
// never forwarded; ARX records the attempt (as drift, or as a refusal when
// on_drift is refuse or the connector is not on the manifest), and a call
// ARX would have let through is closed at once as refused by the gateway.
func (g *Gateway) undeclaredTool(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
	ctx, cancel := g.bind(ctx)
	defer cancel()
	name := req.Params.Name
	r, why := g.attribute(name)
	if r == nil {
		g.log.Info("call of an unknown tool refused; no upstream to record it under", "tool", truncateName(name))
		return nil, &jsonrpc.Error{Code: jsonrpc.CodeInvalidParams, Message: fmt.Sprintf("unknown tool %q", truncateName(name))}
	}
	digest, err := ArgumentsDigest(req.Params.Arguments)
	if err != nil {
		digest = "invalid"
	}
	tool := strings.TrimPrefix(name, r.up.cfg.Prefix)
	a := agentvault.Action{Connector: r.up.cfg.Name, Action: r.action, Risk: agentvault.Risk(r.risk.String()),
		Summary: "tool " + truncateName(tool) + " args " + digest + " (not declared: not forwarded)"}
	code, callID := g.refuse(ctx, a, "tool hidden from the agent: "+why)
	data, _ := json.Marshal(map[string]string{metaCode: string(code), metaCallID: callID})
	recorded := "the attempt is recorded"
	if callID == "" {
		recorded = "ARX could not record the attempt"
	}
	return nil, &jsonrpc.Error{Code: jsonrpc.CodeInvalidParams, Data: data,
		Message: fmt.Sprintf("unknown tool %q: it is not in this agent's job description; %s (%s)", truncateName(name), recorded, code)}
}

// refuse asks ARX for a call the gateway will not make, so that the record
// has it, and closes it at once, saying why, if ARX let it through. It
// returns the code the agent is told and the call's id.
func (g *Gateway) refuse(ctx context.Context, a agentvault.Action, why string) (arxerr.Code, string) {
	call, err := g.arx.Request(ctx, a)
	if err != nil {
		var ae *agentvault.Error
		if errors.As(err, &ae) {
			if ends(err) {
				go g.end(err)
			}
			return ae.Code, ae.CallID
		}
		g.log.Warn("ARX could not record a refused call", "connector", a.Connector, "action", a.Action, "err", err.Error())
		return arxerr.Internal, ""
	}
	o := outcome{outcomeError, "refused by arx mcp, not forwarded: " + why}
	if call.Status == statusPending {
		o = outcome{outcomeCancelled, "withdrawn by arx mcp, not forwarded: " + why}
	}
	g.complete(ctx, call.ID, o, 0)
	return arxerr.ActionNotDeclared, call.ID
}
