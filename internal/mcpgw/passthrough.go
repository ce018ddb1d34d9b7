package mcpgw

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"strings"

	"github.com/arxsec/arx/agentvault"
	"github.com/arxsec/arx/arxerr"
	"github.com/arxsec/arx/manifest"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/yosida95/uritemplate/v3"
)

// JSON-RPC error codes of the gateway's answers.
const (
	codeRefused          = -32000 // ARX refused, or an approver denied (data carries the ARX code)
	codeResourceNotFound = -32002 // as MCP servers answer an unknown resource
)

// intercept handles, before the MCP SDK does, what the gateway answers
// itself: calls of tools the agent does not see (which the SDK would reject
// without a record), and resources and prompts, which pass through from the
// upstreams whose connectors allow them.
func (g *Gateway) intercept(next mcp.MethodHandler) mcp.MethodHandler {
	return func(ctx context.Context, method string, req mcp.Request) (mcp.Result, error) {
		switch r := req.(type) {
		case *mcp.CallToolRequest:
			if r.Params != nil && g.lookup(r.Params.Name) == nil {
				return nonNil(g.undeclaredTool(ctx, r))
			}
		case *mcp.ListResourcesRequest:
			return nonNil(g.listResources(ctx))
		case *mcp.ListResourceTemplatesRequest:
			return nonNil(g.listResourceTemplates(ctx))
		case *mcp.ReadResourceRequest:
			return nonNil(g.readResource(ctx, r))
		case *mcp.ListPromptsRequest:
			return nonNil(g.listPrompts(ctx))
		case *mcp.GetPromptRequest:
			return nonNil(g.getPrompt(ctx, r))
		}
		return next(ctx, method, req)
	}
}

// nonNil keeps a typed nil result out of the mcp.Result interface.
func nonNil[R mcp.Result](res R, err error) (mcp.Result, error) {
	if err != nil {
		return nil, err
	}
	return res, nil
}

// withResources returns the upstreams whose resources pass through.
func (g *Gateway) withResources() []*upstream {
	var out []*upstream
	for _, u := range g.ups {
		if u.resources {
			out = append(out, u)
		}
	}
	return out
}

func (g *Gateway) withPrompts() []*upstream {
	var out []*upstream
	for _, u := range g.ups {
		if u.prompts {
			out = append(out, u)
		}
	}
	return out
}

// collect lists one kind of item of each of ups in turn, with list (a
// method of the upstream's session), and hands every item to add.
func collect[T, P any](ctx context.Context, ups []*upstream, list func(*mcp.ClientSession, context.Context, *P) iter.Seq2[T, error], add func(*upstream, T)) error {
	for _, u := range ups {
		cs, err := u.session(ctx)
		if err != nil {
			return unavailable(u)
		}
		items, err := listAll(list(cs, ctx, nil))
		if err != nil {
			return upstreamError(u, err)
		}
		for _, it := range items {
			add(u, it)
		}
	}
	return nil
}

func (g *Gateway) listResources(ctx context.Context) (*mcp.ListResourcesResult, error) {
	res := &mcp.ListResourcesResult{Resources: []*mcp.Resource{}}
	seen := map[string]bool{}
	if err := collect(ctx, g.withResources(), (*mcp.ClientSession).Resources, func(_ *upstream, r *mcp.Resource) {
		if !seen[r.URI] {
			seen[r.URI] = true
			res.Resources = append(res.Resources, r)
		}
	}); err != nil {
		return nil, err
	}
	return res, nil
}

func (g *Gateway) listResourceTemplates(ctx context.Context) (*mcp.ListResourceTemplatesResult, error) {
	res := &mcp.ListResourceTemplatesResult{ResourceTemplates: []*mcp.ResourceTemplate{}}
	if err := collect(ctx, g.withResources(), (*mcp.ClientSession).ResourceTemplates, func(_ *upstream, t *mcp.ResourceTemplate) {
		res.ResourceTemplates = append(res.ResourceTemplates, t)
	}); err != nil {
		return nil, err
	}
	return res, nil
}

// resourceUpstream finds the upstream that serves uri among those whose
// resources pass through: the one that lists it, else one with a matching
// template, else the only one.
func (g *Gateway) resourceUpstream(ctx context.Context, uri string) *upstream {
	ups := g.withResources()
	if len(ups) == 1 {
		return ups[0]
	}
	for _, u := range ups {
		cs, err := u.session(ctx)
		if err != nil {
			continue
		}
		if rs, err := listAll(cs.Resources(ctx, nil)); err == nil {
			for _, r := range rs {
				if r.URI == uri {
					return u
				}
			}
		}
		if ts, err := listAll(cs.ResourceTemplates(ctx, nil)); err == nil {
			for _, t := range ts {
				if tpl, err := uritemplate.New(t.URITemplate); err == nil && tpl.Match(uri) != nil {
					return u
				}
			}
		}
	}
	return nil
}

// readResource makes a resources/read a governed call (action
// resources.read). The record gets the SHA-256 of the URI, not the URI.
func (g *Gateway) readResource(ctx context.Context, req *mcp.ReadResourceRequest) (*mcp.ReadResourceResult, error) {
	ctx, cancel := g.bind(ctx)
	defer cancel()
	uri := req.Params.URI
	u := g.resourceUpstream(ctx, uri)
	if u == nil {
		return nil, &jsonrpc.Error{Code: codeResourceNotFound, Message: "resource not found"}
	}
	sum := sha256.Sum256([]byte(uri))
	a := agentvault.Action{Connector: u.cfg.Name, Action: ActionReadResource, Risk: g.riskOf(u, ActionReadResource),
		Summary: "resource uri sha256:" + hex.EncodeToString(sum[:])}
	var (
		res   *mcp.ReadResourceResult
		upErr error
	)
	callID, err := g.governed(ctx, newProgressSink(ctx, req.Session, req.Params.GetProgressToken()), a,
		func(ctx context.Context, _ agentvault.Credential) outcome {
			cs, err := u.session(ctx)
			if err != nil {
				upErr = err
				return outcome{outcomeError, "the upstream is unavailable"}
			}
			res, upErr = cs.ReadResource(ctx, &mcp.ReadResourceParams{URI: uri})
			return passOutcome(ctx, upErr)
		})
	return finishPass(res, callID, err, upErr, u)
}

// listPrompts names each prompt with its upstream's prefix, as tools are.
func (g *Gateway) listPrompts(ctx context.Context) (*mcp.ListPromptsResult, error) {
	res := &mcp.ListPromptsResult{Prompts: []*mcp.Prompt{}}
	seen := map[string]bool{}
	if err := collect(ctx, g.withPrompts(), (*mcp.ClientSession).Prompts, func(u *upstream, p *mcp.Prompt) {
		q := *p
		q.Name = u.cfg.Prefix + p.Name
		if !seen[q.Name] {
			seen[q.Name] = true
			res.Prompts = append(res.Prompts, &q)
		}
	}); err != nil {
		return nil, err
	}
	return res, nil
}

// getPrompt makes a prompts/get a governed call (action prompts.get). The
// record gets the prompt's name and the digest of its arguments.
func (g *Gateway) getPrompt(ctx context.Context, req *mcp.GetPromptRequest) (*mcp.GetPromptResult, error) {
	ctx, cancel := g.bind(ctx)
	defer cancel()
	var u *upstream
	for _, c := range g.withPrompts() {
		if strings.HasPrefix(req.Params.Name, c.cfg.Prefix) && (u == nil || len(c.cfg.Prefix) > len(u.cfg.Prefix)) {
			u = c
		}
	}
	if u == nil {
		return nil, &jsonrpc.Error{Code: jsonrpc.CodeInvalidParams, Message: fmt.Sprintf("unknown prompt %q", truncateName(req.Params.Name))}
	}
	name := strings.TrimPrefix(req.Params.Name, u.cfg.Prefix)
	args, _ := json.Marshal(req.Params.Arguments)
	digest, err := ArgumentsDigest(args)
	if err != nil {
		return nil, &jsonrpc.Error{Code: jsonrpc.CodeInvalidParams, Message: "arx mcp: prompt arguments: " + err.Error()}
	}
	a := agentvault.Action{Connector: u.cfg.Name, Action: ActionGetPrompt, Risk: g.riskOf(u, ActionGetPrompt),
		Summary: "prompt " + truncateName(name) + " args " + digest}
	var (
		res   *mcp.GetPromptResult
		upErr error
	)
	callID, err := g.governed(ctx, newProgressSink(ctx, req.Session, req.Params.GetProgressToken()), a,
		func(ctx context.Context, _ agentvault.Credential) outcome {
			cs, err := u.session(ctx)
			if err != nil {
				upErr = err
				return outcome{outcomeError, "the upstream is unavailable"}
			}
			res, upErr = cs.GetPrompt(ctx, &mcp.GetPromptParams{Name: name, Arguments: req.Params.Arguments})
			return passOutcome(ctx, upErr)
		})
	return finishPass(res, callID, err, upErr, u)
}

// riskOf is the manifest's risk for an action of the upstream's connector.
func (g *Gateway) riskOf(u *upstream, action string) agentvault.Risk {
	if a, ok := g.manifest.Action(u.cfg.Name, action); ok {
		return agentvault.Risk(a.Risk.String())
	}
	return agentvault.Risk(manifest.RiskLow.String())
}

func passOutcome(ctx context.Context, err error) outcome {
	var je *jsonrpc.Error
	switch {
	case err == nil:
		return outcome{outcomeSuccess, ""}
	case errors.As(err, &je):
		return outcome{outcomeError, fmt.Sprintf("the upstream answered JSON-RPC error %d", je.Code)}
	case ctx.Err() != nil:
		return outcome{outcomeCancelled, "cancelled: " + context.Cause(ctx).Error()}
	}
	return outcome{outcomeError, "the upstream is unavailable"}
}

// finishPass turns a passed-through request's ends into the agent's
// answer: the upstream's result, its own JSON-RPC error, or ARX's refusal.
func finishPass[R mcp.Result](res R, callID string, err, upErr error, u *upstream) (R, error) {
	var zero R
	if upErr != nil {
		var je *jsonrpc.Error
		if errors.As(upErr, &je) {
			return zero, je
		}
		return zero, unavailable(u)
	}
	if any(res) == nil || isNilResult(res) {
		return zero, refusalError(err, callID)
	}
	return res, nil
}

func isNilResult(r mcp.Result) bool {
	switch v := r.(type) {
	case *mcp.ReadResourceResult:
		return v == nil
	case *mcp.GetPromptResult:
		return v == nil
	}
	return false
}

// refusalError tells the agent why ARX did not let a request through.
func refusalError(err error, callID string) error {
	if err == nil {
		err = errors.New("arx: the request was not governed")
	}
	code := arxerr.Internal
	var ae *agentvault.Error
	if errors.As(err, &ae) {
		code = ae.Code
		if ae.CallID != "" {
			callID = ae.CallID
		}
	}
	data, _ := json.Marshal(map[string]string{metaCode: string(code), metaCallID: callID})
	return &jsonrpc.Error{Code: codeRefused, Message: err.Error(), Data: data}
}

func unavailable(u *upstream) error {
	return &jsonrpc.Error{Code: jsonrpc.CodeInternalError, Message: fmt.Sprintf("arx mcp: upstream %s is unavailable", u.cfg.Name)}
}

func upstreamError(u *upstream, err error) error {
	var je *jsonrpc.Error
	if errors.As(err, &je) {
		return je
	}
	return unavailable(u)
}
