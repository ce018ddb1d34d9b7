package connector

import (
	"errors"
	"net/http"
	"strings"
	"testing"
)

const valid = `connectors:
  salesforce:
    kind: http
    description: Sales CRM
    upstream: https://crm.example.com/api/v2
    secret: env:SALESFORCE_TOKEN
    auth: header X-Api-Key
    timeout: 5s
    max_request_bytes: 1000
    actions:
      account.read:
        allow: ["GET /accounts/*", "GET,HEAD /accounts/*/notes/**"]
      account.update:
        allow: ["PATCH /accounts/*"]
  legacy:
    kind: http
    upstream: http://10.0.0.1:8080
    secret: file:/etc/arx/legacy.pw
    auth: basic
    username: svc-arx
    actions:
      report.read: {allow: ["GET /reports"]}
  warehouse:
    kind: postgres
    upstream: postgres://arx_admin@db.example.com:5432/warehouse?sslmode=verify-full
    secret: file:/etc/arx/warehouse.password
    max_connections: 2
    actions:
      orders.query:
        grants: ["SELECT ON orders", "select, insert on table Sales.Customers", "USAGE ON SCHEMA sales", "SELECT ON ALL TABLES IN SCHEMA sales"]
`

func TestParseValid(t *testing.T) {
	cfg, err := Parse([]byte(valid))
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Connectors) != 3 || cfg.Connectors[0].Name != "legacy" || cfg.Connectors[2].Name != "warehouse" {
		t.Fatalf("connectors: %+v", cfg.Connectors)
	}
	sf := cfg.Connectors[1]
	if sf.Auth != (Auth{Type: AuthHeader, Header: "X-Api-Key"}) || sf.Secret.String() != "env:SALESFORCE_TOKEN" || sf.Timeout.String() != "5s" ||
		sf.MaxRequestBytes != 1000 || sf.MaxResponseBytes != DefaultMaxResponseBytes || sf.Line != 2 {
		t.Fatalf("salesforce: %+v", sf)
	}
	if cfg.Connectors[0].Auth != (Auth{Type: AuthBasic, Username: "svc-arx"}) {
		t.Fatalf("legacy auth: %+v", cfg.Connectors[0].Auth)
	}
	a, ok := cfg.Connectors[2].Action("orders.query")
	if !ok || len(a.Grants) != 4 {
		t.Fatalf("grants: %+v", a)
	}
	if g := a.Grants[1]; g.String() != "SELECT, INSERT ON TABLE sales.customers" {
		t.Fatalf("grant normal form: %s", g)
	}
	if g := a.Grants[3]; g.Object != ObjectAllTables || g.Schema != "sales" {
		t.Fatalf("grant: %+v", g)
	}
	info := cfg.Connectors[2].Info()
	if info.Upstream != "postgres://arx_admin@db.example.com:5432/warehouse?sslmode=verify-full" || info.MaxConnections != 2 {
		t.Fatalf("info: %+v", info)
	}
}

func TestParseProblems(t *testing.T) {
	for _, tc := range []struct {
		name, yaml, want string
	}{
		{"empty", ``, "the file is empty"},
		{"syntax", "connectors:\n  a: [\n", "not valid YAML"},
		{"unknown field", "connectors:\n  a:\n    kind: http\n    upstream: http://x\n    secret: env:A\n    colour: red\n    actions: {r: {allow: [\"GET /\"]}}\n", "6: connectors.a.colour: unknown field"},
		{"duplicate", "connectors:\n  a:\n    kind: http\n    kind: http\n", "4: connectors.a.kind: appears twice"},
		{"bad kind", "connectors:\n  a:\n    kind: ftp\n", "3: connectors.a.kind: \"ftp\" is not a connector kind"},
		{"missing", "connectors:\n  a:\n    kind: http\n", "connectors.a.upstream: missing"},
		{"secret inline", "connectors:\n  a:\n    kind: http\n    upstream: http://x\n    secret: hunter2-the-real-secret\n    actions: {r: {allow: [\"GET /\"]}}\n", "5: connectors.a.secret: must be a reference"},
		{"relative file", "connectors:\n  a:\n    kind: http\n    upstream: http://x\n    secret: file:pw\n    actions: {r: {allow: [\"GET /\"]}}\n", "must be a reference"},
		{"password in URL", "connectors:\n  a:\n    kind: postgres\n    upstream: postgres://u:hunter2@h/db\n    secret: env:A\n    actions: {r: {grants: [\"SELECT ON t\"]}}\n", "carries a password"},
		{"no database", "connectors:\n  a:\n    kind: postgres\n    upstream: postgres://u@h\n    secret: env:A\n    actions: {r: {grants: [\"SELECT ON t\"]}}\n", "names no database"},
		{"http field on postgres", "connectors:\n  a:\n    kind: postgres\n    upstream: postgres://u@h/db\n    secret: env:A\n    auth: bearer\n    actions: {r: {grants: [\"SELECT ON t\"]}}\n", "connectors.a.auth: unknown field"},
		{"bad rule", "connectors:\n  a:\n    kind: http\n    upstream: http://x\n    secret: env:A\n    actions: {r: {allow: [\"FETCH /\"]}}\n", "method \"FETCH\""},
		{"traversal rule", "connectors:\n  a:\n    kind: http\n    upstream: http://x\n    secret: env:A\n    actions: {r: {allow: [\"GET /a/../b\"]}}\n", "dot segment"},
		{"double star inside", "connectors:\n  a:\n    kind: http\n    upstream: http://x\n    secret: env:A\n    actions: {r: {allow: [\"GET /**/b\"]}}\n", "may only end"},
		{"basic without user", "connectors:\n  a:\n    kind: http\n    upstream: http://x\n    secret: env:A\n    auth: basic\n    actions: {r: {allow: [\"GET /\"]}}\n", "needs a username"},
		{"bad header", "connectors:\n  a:\n    kind: http\n    upstream: http://x\n    secret: env:A\n    auth: header Host\n    actions: {r: {allow: [\"GET /\"]}}\n", "cannot carry the secret"},
		{"timeout", "connectors:\n  a:\n    kind: http\n    upstream: http://x\n    secret: env:A\n    timeout: forever\n    actions: {r: {allow: [\"GET /\"]}}\n", "6: connectors.a.timeout"},
		{"alias", "x: &a 1\nconnectors:\n  a: *a\n", "anchors and aliases"},
		{"bad name", "connectors:\n  Bad Name:\n    kind: http\n", "connector name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.yaml))
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("want *Error, got %v", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("problems:\n%v\nwant %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Fatal("the error echoes a secret")
			}
		})
	}
}

func TestGrantsAreNotSQL(t *testing.T) {
	for _, g := range []string{
		`SELECT ON orders; DROP TABLE orders`,
		`SELECT ON "orders"`,
		`SELECT ON orders TO public`,
		`SELECT ON orders, payroll`,
		`DROP ON orders`,
		`CREATE ON orders`,
		`SELECT ON SCHEMA sales`,
		`SELECT ON a.b.c`,
		`SELECT ON orders--`,
		`SELECT ON FUNCTION f`,
		`ON orders`,
		`SELECT orders`,
	} {
		if parsed, err := ParseGrant(g); err == nil {
			t.Errorf("%q accepted as %s", g, parsed)
		}
	}
}

func TestRules(t *testing.T) {
	rules := []Rule{}
	for _, s := range []string{"GET /accounts/*", "GET,HEAD /accounts/*/notes/**", "POST /exports", "GET /"} {
		r, err := ParseRule(s)
		if err != nil {
			t.Fatal(err)
		}
		rules = append(rules, r)
	}
	for _, tc := range []struct {
		method, path string
		want         string // "" allowed, else the refusal reason
	}{
		{"GET", "/accounts/0017", ""},
		{"GET", "/accounts/0017/", RefusedPath},
		{"GET", "/accounts", RefusedPath},
		{"GET", "/accounts/0017/notes", ""},
		{"HEAD", "/accounts/0017/notes/a/b/c", ""},
		{"GET", "/accounts/0017/other", RefusedPath},
		{"POST", "/exports", ""},
		{"POST", "/exports/1", RefusedPath},
		{"DELETE", "/accounts/0017", RefusedMethod},
		{"GET", "/", ""},
	} {
		err := Allow(rules, "crm", "read", tc.method, tc.path)
		var rf *Refusal
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s %s refused: %v", tc.method, tc.path, err)
		case tc.want != "" && (!errors.As(err, &rf) || rf.Reason != tc.want):
			t.Errorf("%s %s: %v, want refusal %s", tc.method, tc.path, err, tc.want)
		}
	}
	if err := Allow(nil, "crm", "read", "GET", "/"); err == nil {
		t.Error("an action without rules allows requests")
	}
}

func TestCleanPath(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"/", "/"},
		{"", "/"},
		{"/accounts/0017", "/accounts/0017"},
		{"/a%20b/c/", "/a b/c/"},
		{"/%41", "/A"},
		{"/caf%C3%A9", "/café"},
	} {
		got, err := CleanPath(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("CleanPath(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{"/a/../b", "/..", "/a/./b", "/a/%2e%2E/b", "/a/%2E", "/a%2fb", "/a%2Fb", "/a%5cb", `/a\b`, "//a", "/a//b",
		"/a%00b", "/a%0ab", "/a%zz", "a/b", "/" + strings.Repeat("a", MaxPathBytes),
		"/a/..;/b", "/a/..;x=1/b", "/a;jsessionid=1", "/a/%252e%252e/b", "/a/%25", "/a/%ff", "/a/%c3", "/a/\xff"} {
		if got, err := CleanPath(bad); err == nil {
			t.Errorf("CleanPath(%q) = %q, want refusal", bad, got)
		}
	}
}

func TestCheckOverrides(t *testing.T) {
	for _, tc := range []struct {
		name  string
		hdr   http.Header
		query string
		ok    bool
	}{
		{"plain", http.Header{"Accept": {"*/*"}}, "a=1&b=2", true},
		{"a parameter named method is the API's own", nil, "method=card", true},
		{"X-HTTP-Method-Override", http.Header{"X-Http-Method-Override": {"DELETE"}}, "", false},
		{"X-HTTP-Method", http.Header{"X-Http-Method": {"DELETE"}}, "", false},
		{"X-Method-Override", http.Header{"X-Method-Override": {"DELETE"}}, "", false},
		{"X-Original-URL", http.Header{"X-Original-Url": {"/admin"}}, "", false},
		{"X-Rewrite-URL", http.Header{"X-Rewrite-Url": {"/admin"}}, "", false},
		{"an empty override header", http.Header{"X-Http-Method-Override": {""}}, "", false},
		{"_method", nil, "_method=DELETE", false},
		{"_METHOD", nil, "a=1&_METHOD=DELETE", false},
		{"a query that does not parse", nil, "a=%zz", false},
		{"semicolons", nil, "a=1;_method=DELETE", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckOverrides(tc.hdr, tc.query)
			if (err == nil) != tc.ok {
				t.Errorf("CheckOverrides = %v, want ok %v", err, tc.ok)
			}
			if err != nil && !errors.Is(err, ErrAmbiguous) {
				t.Errorf("%v is not ErrAmbiguous", err)
			}
		})
	}
}

func TestEscapePath(t *testing.T) {
	for in, want := range map[string]string{"/a b/c": "/a%20b/c", "/café": "/caf%C3%A9", "/A": "/A", "/": "/"} {
		if got := EscapePath(in); got != want {
			t.Errorf("EscapePath(%q) = %q, want %q", in, got, want)
		}
		if back, err := CleanPath(EscapePath(in)); err != nil || back != in {
			t.Errorf("CleanPath(EscapePath(%q)) = %q, %v", in, back, err)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(valid))
	f.Add([]byte("connectors:\n  a: {kind: http}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse(data)
		if err == nil && cfg == nil {
			t.Fatal("nil config without error")
		}
	})
}

func FuzzCleanPath(f *testing.F) {
	for _, s := range []string{"/a/b", "/a/../b", "/a%2fb", "/%2e%2e"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := CleanPath(s)
		if err != nil {
			return
		}
		for _, seg := range strings.Split(p, "/") {
			if seg == "." || seg == ".." {
				t.Fatalf("CleanPath(%q) = %q keeps a dot segment", s, p)
			}
		}
		if strings.Contains(p, "//") {
			t.Fatalf("CleanPath(%q) = %q has an empty segment", s, p)
		}
	})
}
