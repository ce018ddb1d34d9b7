package api_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pb33f/go-yaml"
	"github.com/pb33f/libopenapi"
	validator "github.com/pb33f/libopenapi-validator"
	"github.com/pb33f/libopenapi-validator/config"
	liberrors "github.com/pb33f/libopenapi-validator/errors"
	"github.com/pb33f/libopenapi-validator/schema_validation"
	"github.com/pb33f/libopenapi/datamodel/high/base"
	v3 "github.com/pb33f/libopenapi/datamodel/high/v3"
	"github.com/pb33f/libopenapi/orderedmap"

	"github.com/arxsec/arx/arxerr"
	"github.com/arxsec/arx/internal/api"
	"github.com/arxsec/arx/internal/arxtest"
	"github.com/arxsec/arx/record"
)

// openAPIFile describes the API for machines; docs/api.md is its prose.
const openAPIFile = "../../docs/openapi.yaml"

// gatewayMethods are the methods an http connector's rules may allow
// (internal/connector): the gateway's one pattern serves them all, and the
// document describes each.
var gatewayMethods = []string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}

// undescribed are the patterns the API registers that are no operation.
var undescribed = map[string]string{
	"/v1/": "the fallback: request.not_found for any other path under /v1",
}

// validation asserts formats (date-time, date) and content encodings
// (base64), which JSON Schema leaves as annotations by default.
var validation = []config.Option{config.WithFormatAssertions(), config.WithContentAssertions()}

func openAPI(t *testing.T) (libopenapi.Document, *v3.Document) {
	t.Helper()
	spec, err := os.ReadFile(openAPIFile)
	if err != nil {
		t.Fatal(err)
	}
	doc, err := libopenapi.NewDocument(spec)
	if err != nil {
		t.Fatalf("%s: %v", openAPIFile, err)
	}
	m, err := doc.BuildV3Model()
	if err != nil {
		t.Fatalf("%s: %v", openAPIFile, err)
	}
	return doc, &m.Model
}

// operations calls fn for each operation, as "METHOD /path".
func operations(m *v3.Document, fn func(route string, item *v3.PathItem, op *v3.Operation)) {
	for path, item := range m.Paths.PathItems.FromOldest() {
		for method, op := range item.GetOperations().FromOldest() {
			fn(strings.ToUpper(method)+" "+path, item, op)
		}
	}
}

// TestOpenAPIRoutes: every route the server registers is described, and
// every described route is served.
func TestOpenAPIRoutes(t *testing.T) {
	_, m := openAPI(t)
	described := map[string]bool{}
	operations(m, func(route string, _ *v3.PathItem, _ *v3.Operation) { described[route] = true })

	registered := map[string]bool{}
	for _, pattern := range api.Routes() {
		if _, ok := undescribed[pattern]; ok {
			registered[pattern] = true
			continue
		}
		methods := gatewayMethods // a pattern without a method serves any
		method, path, ok := strings.Cut(pattern, " ")
		if ok {
			methods = []string{method}
		} else {
			path = pattern
		}
		// A ServeMux wildcard that takes the rest of the path, {path...},
		// is an ordinary path parameter in OpenAPI.
		path = strings.ReplaceAll(path, "...}", "}")
		for _, m := range methods {
			registered[m+" "+path] = true
		}
	}
	for pattern, why := range undescribed {
		if !registered[pattern] {
			t.Errorf("%q is no longer registered (%s): drop it from undescribed", pattern, why)
		}
	}
	for _, r := range sortedKeys(registered) {
		if _, ok := undescribed[r]; !ok && !described[r] {
			t.Errorf("%s is served but not described in %s", r, openAPIFile)
		}
	}
	for _, r := range sortedKeys(described) {
		if !registered[r] {
			t.Errorf("%s is described in %s but not served", r, openAPIFile)
		}
	}
	if len(described) < 40 {
		t.Errorf("only %d operations described", len(described))
	}
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// TestOpenAPIDocument: the document is valid OpenAPI 3.1, each operation
// says what it is and who may call it, and the error codes are arxerr's.
func TestOpenAPIDocument(t *testing.T) {
	doc, m := openAPI(t)
	if v := doc.GetVersion(); !strings.HasPrefix(v, "3.1.") {
		t.Errorf("openapi %s, want 3.1.x", v)
	}
	v, errs := validator.NewValidator(doc, validation...)
	if len(errs) > 0 {
		t.Fatalf("validator: %v", errs)
	}
	if ok, verrs := v.ValidateDocument(); !ok {
		t.Errorf("%s is not valid OpenAPI 3.1:\n%s", openAPIFile, describe(verrs))
	}

	ids := map[string]string{}
	operations(m, func(route string, _ *v3.PathItem, op *v3.Operation) {
		if op.Summary == "" {
			t.Errorf("%s: no summary", route)
		}
		// Who may call: every operation declares its security, if only
		// "security: []" (no token), rather than inheriting a default.
		if op.GoLow().Security.IsEmpty() {
			t.Errorf("%s: no security requirement (use security: [] for none)", route)
		}
		if prev, dup := ids[op.OperationId]; dup || op.OperationId == "" {
			t.Errorf("%s: operationId %q is empty or also %s's", route, op.OperationId, prev)
		}
		ids[op.OperationId] = route
	})

	errSchema, ok := m.Components.Schemas.Get("ErrorCode")
	if !ok {
		t.Fatal("no ErrorCode schema")
	}
	var described []string
	for _, n := range errSchema.Schema().Enum {
		described = append(described, n.Value)
	}
	var codes []string
	for _, i := range arxerr.All() {
		codes = append(codes, string(i.Code))
	}
	slices.Sort(described)
	if !slices.Equal(described, codes) {
		t.Errorf("ErrorCode's enum is not arxerr's codes:\n described %v\n arxerr    %v", described, codes)
	}
}

// TestOpenAPIExamples: every example, and every default, validates against
// its schema; each operation shows at least one example of its request
// body and of a successful answer.
func TestOpenAPIExamples(t *testing.T) {
	_, m := openAPI(t)
	sv := schema_validation.NewSchemaValidator(validation...)
	checked := 0
	check := func(where string, proxy *base.SchemaProxy, example *yaml.Node) {
		t.Helper()
		if proxy == nil {
			t.Errorf("%s: an example without a schema", where)
			return
		}
		var v any
		if err := example.Decode(&v); err != nil {
			t.Errorf("%s: %v", where, err)
			return
		}
		b, err := json.Marshal(v)
		if err != nil {
			t.Errorf("%s: %v", where, err)
			return
		}
		checked++
		if ok, errs := sv.ValidateSchemaBytes(proxy.Schema(), b); !ok {
			t.Errorf("%s: the example does not match its schema:\n%s", where, describe(errs))
		}
	}
	// examples returns how many examples a media type or parameter shows.
	examples := func(where string, proxy *base.SchemaProxy, one *yaml.Node, named *orderedmap.Map[string, *base.Example]) int {
		n := 0
		if one != nil {
			check(where+" example", proxy, one)
			n++
		}
		for name, ex := range named.FromOldest() {
			if ex.Value == nil {
				t.Errorf("%s examples.%s: no value", where, name)
				continue
			}
			check(where+" examples."+name, proxy, ex.Value)
			n++
		}
		return n
	}
	content := func(where string, c *orderedmap.Map[string, *v3.MediaType]) int {
		n := 0
		for mt, media := range c.FromOldest() {
			n += examples(where+" "+mt, media.Schema, media.Example, media.Examples)
		}
		return n
	}
	params := func(where string, ps []*v3.Parameter) {
		for _, p := range ps {
			examples(where+" parameter "+p.Name, p.Schema, p.Example, p.Examples)
		}
	}

	operations(m, func(route string, item *v3.PathItem, op *v3.Operation) {
		params(route, item.Parameters)
		params(route, op.Parameters)
		if rb := op.RequestBody; rb != nil {
			n := content(route+" request", rb.Content)
			if _, isJSON := rb.Content.Get("application/json"); isJSON && n == 0 {
				t.Errorf("%s: no example of the request body", route)
			}
		}
		shown := 0
		for code, resp := range op.Responses.Codes.FromOldest() {
			n := content(route+" "+code, resp.Content)
			for name, h := range resp.Headers.FromOldest() {
				examples(route+" "+code+" header "+name, h.Schema, h.Example, h.Examples)
			}
			if strings.HasPrefix(code, "2") {
				shown += n
			}
		}
		if op.Responses.Default != nil {
			content(route+" default", op.Responses.Default.Content)
		}
		// The gateway answers what the upstream answers, and Slack's
		// interactions get Slack's empty 200: no example.
		if shown == 0 && !strings.Contains(route, "/v1/gateway/") && route != "POST /v1/slack/interactions" {
			t.Errorf("%s: no example of a successful answer", route)
		}
	})
	for name, resp := range m.Components.Responses.FromOldest() {
		content("components.responses."+name, resp.Content)
	}
	for name, p := range m.Components.Parameters.FromOldest() {
		params("components.parameters."+name, []*v3.Parameter{p})
	}

	// Examples and defaults inside schemas.
	seen := map[*base.Schema]bool{}
	var walk func(where string, proxy *base.SchemaProxy)
	walk = func(where string, proxy *base.SchemaProxy) {
		if proxy == nil {
			return
		}
		s := proxy.Schema()
		if s == nil || seen[s] {
			return
		}
		seen[s] = true
		if s.Example != nil {
			check(where+" example", proxy, s.Example)
		}
		for i, ex := range s.Examples {
			check(fmt.Sprintf("%s examples[%d]", where, i), proxy, ex)
		}
		if s.Default != nil {
			check(where+" default", proxy, s.Default)
		}
		if s.Properties != nil {
			for name, p := range s.Properties.FromOldest() {
				walk(where+"."+name, p)
			}
		}
		for i, sub := range slices.Concat(s.AllOf, s.OneOf, s.AnyOf) {
			walk(fmt.Sprintf("%s/%d", where, i), sub)
		}
		if s.Items != nil && s.Items.IsA() {
			walk(where+"[]", s.Items.A)
		}
		if s.AdditionalProperties != nil && s.AdditionalProperties.IsA() {
			walk(where+"{}", s.AdditionalProperties.A)
		}
	}
	for name, s := range m.Components.Schemas.FromOldest() {
		walk("components.schemas."+name, s)
	}
	operations(m, func(route string, item *v3.PathItem, op *v3.Operation) {
		for _, p := range slices.Concat(item.Parameters, op.Parameters) {
			walk(route+" parameter "+p.Name, p.Schema)
		}
		if op.RequestBody != nil {
			for mt, media := range op.RequestBody.Content.FromOldest() {
				walk(route+" request "+mt, media.Schema)
			}
		}
		for code, resp := range op.Responses.Codes.FromOldest() {
			for mt, media := range resp.Content.FromOldest() {
				walk(route+" "+code+" "+mt, media.Schema)
			}
		}
	})
	if checked < 50 {
		t.Errorf("only %d examples and defaults checked", checked)
	}
}

// describe lists validation errors with their reasons.
func describe(errs []*liberrors.ValidationError) string {
	var b strings.Builder
	for _, e := range errs {
		fmt.Fprintf(&b, "  %s: %s (line %d)\n", e.Message, e.Reason, e.SpecLine)
		for _, f := range e.SchemaValidationErrors {
			fmt.Fprintf(&b, "    %s: %s\n", f.FieldPath, f.Reason)
		}
	}
	return b.String()
}

// TestOpenAPIAnswers: the requests a real server accepts validate against
// docs/openapi.yaml, and so do its answers, refusals included.
func TestOpenAPIAnswers(t *testing.T) {
	doc, _ := openAPI(t)
	v, errs := validator.NewValidator(doc, validation...)
	if len(errs) > 0 {
		t.Fatalf("validator: %v", errs)
	}
	s, _ := gatewayServer(t, newUpstream(t), "5s")
	do := func(method, path, token string, body any, want int) []byte {
		t.Helper()
		req, resp, data := exchange(t, s, method, path, token, body)
		if resp.StatusCode != want {
			t.Fatalf("%s %s: %d %s, want %d", method, path, resp.StatusCode, data, want)
		}
		if ok, errs := v.ValidateHttpResponse(req, resp); !ok {
			t.Errorf("%s %s → %d: the answer is not as described:\n%s  answer: %s", method, path, want, describe(errs), data)
		}
		if want < 300 {
			req.Body, _ = req.GetBody()
			if ok, errs := v.ValidateHttpRequest(req); !ok {
				t.Errorf("%s %s: the server accepted a request the description refuses:\n%s", method, path, describe(errs))
			}
		}
		return data
	}
	var (
		admin = s.AdminToken
		hired struct {
			Agent struct{ ID string }
			Token string
		}
		call struct {
			ID         string
			Credential struct{ Token string }
		}
		person struct {
			SetupToken string `json:"setup_token"`
		}
		login  struct{ Token string }
		review struct {
			Review struct{ Drift []struct{ Index int64 } }
		}
		issued struct {
			TokenID string `json:"token_id"`
		}
		own struct{ Tokens []struct{ ID string } }
	)
	decode := func(b []byte, v any) {
		t.Helper()
		if err := json.Unmarshal(b, v); err != nil {
			t.Fatalf("%s: %v", b, err)
		}
	}

	do("GET", "/healthz", "", nil, 200)
	do("GET", "/readyz", "", nil, 200)
	do("GET", "/metrics", "", nil, 200)
	do("GET", "/.well-known/jwks.json", "", nil, 200)

	decode(do("POST", "/v1/agents", admin, map[string]any{"manifest": arxtest.Manifest}, 201), &hired)
	agent, id := hired.Token, hired.Agent.ID
	decode(do("POST", "/v1/users", admin, map[string]any{"email": "boss@example.com", "role": "manager", "show_link": true}, 201), &person)
	do("POST", "/v1/auth/setup", "", map[string]any{"token": person.SetupToken, "password": "correct horse battery"}, 200)
	decode(do("POST", "/v1/auth/tokens", "", map[string]any{"email": "boss@example.com", "password": "correct horse battery", "label": "laptop"}, 201), &login)
	boss := login.Token

	do("GET", "/v1/agent", agent, nil, 200)
	do("GET", "/v1/agent/status", agent, nil, 200)

	// A call that may proceed, its retry, its credential, its end.
	read := map[string]any{"connector": "crm", "action": "account.read", "risk": "low", "idempotency_key": "k1", "summary": "account 0017"}
	decode(do("POST", "/v1/calls", agent, read, 201), &call)
	do("POST", "/v1/calls", agent, read, 200)
	do("POST", "/v1/credentials/introspect", "", map[string]any{"credential": call.Credential.Token}, 200)
	do("GET", "/v1/calls/"+call.ID, agent, nil, 200)
	do("POST", "/v1/calls/"+call.ID+"/complete", agent, map[string]any{"outcome": "success", "duration_ms": 12}, 200)
	do("POST", "/v1/credentials/introspect", "", map[string]any{"credential": call.Credential.Token}, 200)
	do("GET", "/v1/calls/"+call.ID+"?wait=1s", admin, nil, 200)

	// Calls that wait for an approver (and drift: their risk is declared
	// lower than the manifest's), granted and denied.
	decode(do("POST", "/v1/calls", agent, map[string]any{"connector": "crm", "action": "account.delete", "idempotency_key": "k2"}, 202), &call)
	do("GET", "/v1/approvals", boss, nil, 200)
	do("GET", "/v1/approvals?status=pending&limit=10", admin, nil, 200)
	do("GET", "/v1/approvals/"+call.ID, boss, nil, 200)
	do("POST", "/v1/approvals/"+call.ID+"/approve", admin, map[string]any{"reason": "ok"}, 403)
	do("POST", "/v1/approvals/"+call.ID+"/approve", boss, map[string]any{"reason": "checked"}, 200)
	do("GET", "/v1/calls/"+call.ID, agent, nil, 200)
	decode(do("POST", "/v1/calls", agent, map[string]any{"connector": "crm", "action": "account.delete", "idempotency_key": "k3"}, 202), &call)
	do("POST", "/v1/approvals/"+call.ID+"/deny", boss, map[string]any{"reason": "not this one"}, 200)

	// Refusals.
	do("POST", "/v1/calls", agent, map[string]any{"connector": "hubspot", "action": "contact.read", "idempotency_key": "k4"}, 403)
	do("POST", "/v1/calls", admin, read, 403)
	do("POST", "/v1/calls", agent, map[string]any{"connector": "crm", "action": "account.read", "idempotency_key": "k5", "risk": "lowish"}, 400)
	do("POST", "/v1/calls", agent, map[string]any{"connecter": "crm"}, 400)
	do("GET", "/v1/agents", "", nil, 401)
	do("GET", "/v1/agents/no-such-agent", admin, nil, 404)
	do("GET", "/v1/gateway/crm/accounts", "", nil, 401)

	// The operator's and managers' views of the agent.
	do("GET", "/v1/agents", admin, nil, 200)
	do("GET", "/v1/agents", boss, nil, 200)
	do("GET", "/v1/agents/"+id, admin, nil, 200)
	do("GET", "/v1/agents/"+id+"/calls?limit=10", admin, nil, 200)
	do("GET", "/v1/agents/"+id+"/record?limit=3", admin, nil, 200)
	decode(do("GET", "/v1/agents/"+id+"/review?days=7", boss, nil, 200), &review)
	if len(review.Review.Drift) == 0 {
		t.Fatal("no drift in the review")
	}
	do("POST", fmt.Sprintf("/v1/agents/%s/drift/%d/ack", id, review.Review.Drift[0].Index), boss, map[string]any{"note": "fixed"}, 200)
	do("POST", "/v1/agents/"+id+"/drift/ack", boss, map[string]any{"note": "all seen", "days": 7}, 200)
	do("GET", "/v1/agents/"+id+"/review", admin, nil, 200)
	decode(do("POST", "/v1/agents/"+id+"/tokens", admin, map[string]any{"label": "run"}, 201), &issued)
	do("DELETE", "/v1/agents/"+id+"/tokens/"+issued.TokenID, admin, nil, 200)
	local := &record.Entry{Index: 0, Time: time.Now().UTC(), Agent: "local:test-agent", Type: "call.requested",
		Connector: "crm", Action: "account.read", Risk: "low", Actor: "agent:local:test-agent", Data: map[string]any{}}
	b, err := local.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	do("POST", "/v1/agents/"+id+"/record/import", admin, map[string]any{"source": "test-agent.jsonl",
		"chain": record.HashString(record.LeafHash(b)), "entries": []string{string(b)}}, 200)

	do("GET", "/v1/log/checkpoint", "", nil, 200)
	do("GET", "/v1/log/key", "", nil, 200)
	do("GET", "/v1/log/entries?start=0&limit=5", admin, nil, 200)
	do("GET", "/v1/connectors", admin, nil, 200)

	do("GET", "/v1/users", admin, nil, 200)
	do("POST", "/v1/users", admin, map[string]any{"email": "temp@example.com", "role": "manager", "show_link": true}, 201)
	do("POST", "/v1/users/temp@example.com/reset", admin, map[string]any{"show_link": true}, 200)
	do("POST", "/v1/users/temp@example.com/role", admin, map[string]any{"role": "admin"}, 200)
	do("POST", "/v1/users/temp@example.com/disable", admin, nil, 200)
	do("POST", "/v1/users/temp@example.com/enable", admin, nil, 200)
	do("POST", "/v1/users", boss, map[string]any{"email": "x@example.com", "role": "manager"}, 403)

	do("POST", "/v1/agents/"+id+"/terminate", boss, map[string]any{"reason": "the test is over"}, 200)
	do("POST", "/v1/agents/"+id+"/process-stopped", admin, map[string]any{"pid": 4242, "signal": "SIGTERM", "took_ms": 12, "token_id": ""}, 201)
	do("GET", "/v1/agent/status", agent, nil, 401)

	decode(do("GET", "/v1/auth/tokens", boss, nil, 200), &own)
	do("DELETE", "/v1/auth/tokens/"+own.Tokens[0].ID, boss, nil, 200)
	do("GET", "/v1/auth/tokens", boss, nil, 401)
}

// exchange sends one request and returns it and its answer, their bodies
// readable again for the validator.
func exchange(t *testing.T, s *arxtest.Server, method, path, token string, body any) (*http.Request, *http.Response, []byte) {
	t.Helper()
	var b []byte
	if body != nil {
		var err error
		if b, err = json.Marshal(body); err != nil {
			t.Fatal(err)
		}
	}
	req, err := http.NewRequest(method, s.URL+path, bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	data, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	resp.Body = io.NopCloser(bytes.NewReader(data))
	req.Body, _ = req.GetBody()
	return req, resp, data
}
