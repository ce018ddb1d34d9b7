package connector

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/arxsec/arx/manifest"
	"go.yaml.in/yaml/v3"
)

// The configuration file, connectors.yaml:
//
//	connectors:
//	  salesforce:
//	    kind: http
//	    upstream: https://crm.example.com/api
//	    secret: env:SALESFORCE_TOKEN      # or file:/etc/arx/salesforce.token
//	    auth: bearer                      # bearer | basic (with username) | header X-Api-Key
//	    timeout: 30s
//	    actions:
//	      account.read:
//	        allow: ["GET /accounts/*", "GET /accounts/*/opportunities"]
//	  warehouse:
//	    kind: postgres
//	    upstream: postgres://arx_admin@db.example.com:5432/warehouse?sslmode=verify-full
//	    secret: file:/etc/arx/warehouse.password
//	    actions:
//	      orders.query:
//	        grants: ["SELECT ON orders", "USAGE ON SCHEMA sales"]

// Defaults and bounds.
const (
	DefaultTimeout          = 30 * time.Second
	DefaultMaxRequestBytes  = 32 << 20
	DefaultMaxResponseBytes = 256 << 20
	DefaultMaxConnections   = 4
	MaxConfigSize           = 1 << 20
	maxTimeout              = 10 * time.Minute
)

// Config is a parsed connectors.yaml.
type Config struct {
	Connectors []Spec // sorted by name
}

// Spec configures one connector.
type Spec struct {
	Name        string
	Kind        string
	Description string
	Upstream    string // an http(s) URL, or a postgres:// URL without a password
	Secret      SecretRef
	Timeout     time.Duration
	Line        int // where the connector starts in the file

	// kind http
	Auth             Auth
	MaxRequestBytes  int64
	MaxResponseBytes int64

	// kind postgres
	MaxConnections int // CONNECTION LIMIT of each call's role

	Actions []ActionSpec // sorted by name
}

// Action returns the named action's spec.
func (s *Spec) Action(name string) (*ActionSpec, bool) {
	i := sort.Search(len(s.Actions), func(i int) bool { return s.Actions[i].Name >= name })
	if i < len(s.Actions) && s.Actions[i].Name == name {
		return &s.Actions[i], true
	}
	return nil, false
}

// Info describes the spec without the secret's value (which it never holds).
func (s *Spec) Info() Info {
	in := Info{Name: s.Name, Kind: s.Kind, Description: s.Description, Upstream: redactURL(s.Upstream),
		Secret: s.Secret.String(), Timeout: s.Timeout.String()}
	if s.Kind == KindHTTP {
		in.Auth = s.Auth.String()
		in.MaxRequestBytes, in.MaxResponseBytes = s.MaxRequestBytes, s.MaxResponseBytes
	} else {
		in.MaxConnections = s.MaxConnections
	}
	for _, a := range s.Actions {
		ai := ActionInfo{Name: a.Name}
		for _, r := range a.Allow {
			ai.Allow = append(ai.Allow, r.String())
		}
		for _, g := range a.Grants {
			ai.Grants = append(ai.Grants, g.String())
		}
		in.Actions = append(in.Actions, ai)
	}
	return in
}

func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(invalid URL)"
	}
	return u.Redacted()
}

// ActionSpec is what one action allows.
type ActionSpec struct {
	Name   string
	Allow  []Rule  // kind http
	Grants []Grant // kind postgres
}

// Auth types.
const (
	AuthBearer = "bearer"
	AuthBasic  = "basic"
	AuthHeader = "header"
)

// Auth is how the gateway authenticates to an http upstream.
type Auth struct {
	Type     string // AuthBearer, AuthBasic or AuthHeader
	Header   string // AuthHeader: the header's name
	Username string // AuthBasic: the user; the secret is the password
}

func (a Auth) String() string {
	switch a.Type {
	case AuthHeader:
		return "header " + a.Header
	case AuthBasic:
		return "basic (user " + a.Username + ")"
	}
	return a.Type
}

// SecretRef names where a connector's secret is: an environment variable
// or a file. The reference is configuration; the value is never kept in it.
type SecretRef struct {
	Source string // "env" or "file"
	Name   string // the variable or the path
}

func (r SecretRef) String() string { return r.Source + ":" + r.Name }

// Resolver reads a secret from where its reference says (in cmd/arx: the
// environment or a file).
type Resolver func(SecretRef) (string, error)

// Problem is one thing wrong with a connectors file.
type Problem struct {
	Line    int    `json:"line"`
	Field   string `json:"field,omitempty"`
	Message string `json:"message"`
	Hint    string `json:"hint,omitempty"`
}

func (p Problem) String() string {
	var b strings.Builder
	if p.Line > 0 {
		b.WriteString(strconv.Itoa(p.Line) + ": ")
	}
	if p.Field != "" {
		b.WriteString(p.Field + ": ")
	}
	b.WriteString(p.Message)
	if p.Hint != "" {
		b.WriteString(" (hint: " + p.Hint + ")")
	}
	return b.String()
}

// Error lists every problem of an invalid connectors file, by line.
type Error struct {
	File     string    `json:"file,omitempty"`
	Problems []Problem `json:"problems"`
}

func (e *Error) Error() string {
	name := e.File
	if name == "" {
		name = "connectors"
	}
	var lines []string
	for _, p := range e.Problems {
		sep := ":"
		if p.Line == 0 {
			sep = ": "
		}
		lines = append(lines, name+sep+p.String())
	}
	if len(lines) == 0 {
		return name + ": invalid connectors file"
	}
	return strings.Join(lines, "\n")
}

var (
	envRE     = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,127}$`)
	headerRE  = regexp.MustCompile("^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}$")
	yamlErrRE = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)
)

// Parse parses and validates a connectors file. An invalid file gives an
// *Error listing every problem with its line.
func Parse(data []byte) (*Config, error) {
	p := &cparser{}
	cfg := p.parse(data)
	if len(p.problems) > 0 {
		sort.SliceStable(p.problems, func(i, j int) bool { return p.problems[i].Line < p.problems[j].Line })
		return nil, &Error{Problems: p.problems}
	}
	return cfg, nil
}

type cparser struct{ problems []Problem }

func (p *cparser) report(n *yaml.Node, field, msg, hint string) {
	pr := Problem{Field: field, Message: msg, Hint: hint}
	if n != nil {
		pr.Line = n.Line
	}
	if len(p.problems) < 100 {
		p.problems = append(p.problems, pr)
	}
}

func (p *cparser) parse(data []byte) *Config {
	if len(data) > MaxConfigSize {
		p.report(nil, "", fmt.Sprintf("file larger than %d bytes", MaxConfigSize), "")
		return nil
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := decodeSafely(dec, &doc); err != nil {
		if errors.Is(err, io.EOF) {
			p.report(nil, "", "the file is empty", "start with a connectors: mapping (see README, Connectors)")
			return nil
		}
		line := 0
		msg := err.Error()
		if m := yamlErrRE.FindStringSubmatch(msg); m != nil {
			line, _ = strconv.Atoi(m[1])
			msg = m[2]
		}
		p.problems = append(p.problems, Problem{Line: line, Message: "not valid YAML: " + strings.TrimPrefix(msg, "yaml: ")})
		return nil
	}
	var extra yaml.Node
	if err := decodeSafely(dec, &extra); err == nil {
		p.report(&extra, "", "more than one YAML document", "remove the --- separator and what follows it")
	}
	if len(doc.Content) == 0 {
		p.report(nil, "", "the file is empty", "start with a connectors: mapping (see README, Connectors)")
		return nil
	}
	if hasAlias(&doc) {
		p.report(&doc, "", "anchors and aliases are not allowed", "write each value out")
		return nil
	}
	root := doc.Content[0]
	fields := p.mapping(root, "", []string{"connectors"}, []string{"connectors"})
	cfg := &Config{}
	conns, ok := fields["connectors"]
	if !ok {
		return cfg
	}
	if conns.Kind != yaml.MappingNode {
		p.report(conns, "connectors", "must be a mapping of connector names", "")
		return cfg
	}
	for i := 0; i+1 < len(conns.Content); i += 2 {
		k, v := conns.Content[i], conns.Content[i+1]
		field := "connectors." + k.Value
		if !manifest.ValidName(k.Value, manifest.MaxConnectorName) {
			p.report(k, field, "connector name must be lower case letters, digits, '.', '_' or '-' (at most 63)", "use the name the agents' manifests use")
			continue
		}
		if s := p.spec(k.Value, v, field); s != nil {
			s.Line = k.Line
			cfg.Connectors = append(cfg.Connectors, *s)
		}
	}
	sort.Slice(cfg.Connectors, func(i, j int) bool { return cfg.Connectors[i].Name < cfg.Connectors[j].Name })
	return cfg
}

func decodeSafely(dec *yaml.Decoder, n *yaml.Node) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("yaml: %v", r)
		}
	}()
	return dec.Decode(n)
}

func hasAlias(n *yaml.Node) bool {
	if n.Kind == yaml.AliasNode || n.Anchor != "" {
		return true
	}
	for _, c := range n.Content {
		if hasAlias(c) {
			return true
		}
	}
	return false
}

// mapping checks a mapping node's keys (known, required, no duplicates) and
// returns its values by key.
func (p *cparser) mapping(n *yaml.Node, field string, known, required []string) map[string]*yaml.Node {
	out := map[string]*yaml.Node{}
	if n.Kind != yaml.MappingNode {
		p.report(n, field, "must be a mapping", "")
		return out
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		f := join(field, k.Value)
		if _, dup := out[k.Value]; dup {
			p.report(k, f, "appears twice", "keep one")
			continue
		}
		found := false
		for _, kn := range known {
			if kn == k.Value {
				found = true
			}
		}
		if !found {
			p.report(k, f, "unknown field", "known fields here: "+strings.Join(known, ", "))
			continue
		}
		out[k.Value] = v
	}
	for _, r := range required {
		if _, ok := out[r]; !ok {
			p.report(n, join(field, r), "missing", "")
		}
	}
	return out
}

func join(a, b string) string {
	if a == "" {
		return b
	}
	return a + "." + b
}

func (p *cparser) str(n *yaml.Node, field string) (string, bool) {
	if n.Kind != yaml.ScalarNode || n.Tag == "!!null" {
		p.report(n, field, "must be a string", "")
		return "", false
	}
	return n.Value, true
}

func (p *cparser) strList(n *yaml.Node, field string) []*yaml.Node {
	if n.Kind != yaml.SequenceNode {
		p.report(n, field, "must be a list of strings", "")
		return nil
	}
	var out []*yaml.Node
	for _, c := range n.Content {
		if c.Kind != yaml.ScalarNode {
			p.report(c, field, "must be a list of strings", "")
			continue
		}
		out = append(out, c)
	}
	return out
}

func (p *cparser) spec(name string, n *yaml.Node, field string) *Spec {
	common := []string{"kind", "description", "upstream", "secret", "timeout", "actions"}
	kindNode := (*yaml.Node)(nil)
	if n.Kind == yaml.MappingNode {
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == "kind" {
				kindNode = n.Content[i+1]
			}
		}
	}
	kind := ""
	if kindNode != nil {
		kind = kindNode.Value
	}
	known := common
	switch kind {
	case KindHTTP:
		known = append(known, "auth", "username", "max_request_bytes", "max_response_bytes")
	case KindPostgres:
		known = append(known, "max_connections")
	}
	f := p.mapping(n, field, known, []string{"kind", "upstream", "secret", "actions"})
	if kindNode == nil {
		return nil
	}
	if kind != KindHTTP && kind != KindPostgres {
		p.report(kindNode, field+".kind", fmt.Sprintf("%q is not a connector kind", kind), "use http or postgres")
		return nil
	}
	s := &Spec{Name: name, Kind: kind, Timeout: DefaultTimeout, MaxRequestBytes: DefaultMaxRequestBytes,
		MaxResponseBytes: DefaultMaxResponseBytes, MaxConnections: DefaultMaxConnections}
	if v, ok := f["description"]; ok {
		s.Description, _ = p.str(v, field+".description")
	}
	if v, ok := f["upstream"]; ok {
		if u, ok := p.str(v, field+".upstream"); ok {
			s.Upstream = u
			p.upstream(v, field+".upstream", kind, u)
		}
	}
	if v, ok := f["secret"]; ok {
		if ref, ok := p.str(v, field+".secret"); ok {
			src, nm, _ := strings.Cut(ref, ":")
			switch {
			case src == "env" && envRE.MatchString(nm), src == "file" && strings.HasPrefix(nm, "/") && len(nm) < 4096:
				s.Secret = SecretRef{Source: src, Name: nm}
			default:
				// Never echo the value: it may be the secret itself.
				p.report(v, field+".secret", "must be a reference, env:NAME or file:/ABSOLUTE/PATH",
					"keep the secret out of this file: export it (env:NAME) or put it in a file readable by arx (file:PATH)")
			}
		}
	}
	if v, ok := f["timeout"]; ok {
		if t, ok := p.str(v, field+".timeout"); ok {
			d, err := time.ParseDuration(t)
			if err != nil || d <= 0 || d > maxTimeout {
				p.report(v, field+".timeout", fmt.Sprintf("%q is not a duration from 1ms to %s", t, maxTimeout), "write it like 30s or 2m")
			} else {
				s.Timeout = d
			}
		}
	}
	intField := func(key string, min, max int64, dst *int64) {
		v, ok := f[key]
		if !ok {
			return
		}
		n, err := strconv.ParseInt(v.Value, 10, 64)
		if v.Kind != yaml.ScalarNode || err != nil || n < min || n > max {
			p.report(v, field+"."+key, fmt.Sprintf("must be an integer from %d to %d", min, max), "")
			return
		}
		*dst = n
	}
	intField("max_request_bytes", 0, 1<<40, &s.MaxRequestBytes)
	intField("max_response_bytes", 0, 1<<40, &s.MaxResponseBytes)
	var mc int64 = DefaultMaxConnections
	intField("max_connections", 1, 1000, &mc)
	s.MaxConnections = int(mc)
	if kind == KindHTTP {
		p.auth(f, field, s)
	}
	if v, ok := f["actions"]; ok {
		p.actions(v, field+".actions", s)
	}
	return s
}

func (p *cparser) upstream(n *yaml.Node, field, kind, raw string) {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		p.report(n, field, "is not an absolute URL", "")
		return
	}
	if _, hasPass := u.User.Password(); hasPass {
		p.report(n, field, "carries a password", "remove it from the URL and give it with secret: env:NAME or file:PATH")
		return
	}
	switch kind {
	case KindHTTP:
		if u.Scheme != "http" && u.Scheme != "https" {
			p.report(n, field, "must be an http or https URL", "")
		}
		if u.RawQuery != "" || u.Fragment != "" || u.User != nil {
			p.report(n, field, "must not have a query, fragment or user", "")
		}
	case KindPostgres:
		if u.Scheme != "postgres" && u.Scheme != "postgresql" {
			p.report(n, field, "must be a postgres:// URL", "postgres://USER@HOST:5432/DATABASE?sslmode=verify-full")
		}
		if u.User == nil || u.User.Username() == "" {
			p.report(n, field, "names no user", "name the role ARX administers with: postgres://arx_admin@HOST/DB")
		}
		if strings.Trim(u.Path, "/") == "" {
			p.report(n, field, "names no database", "postgres://USER@HOST/DATABASE")
		}
		for k := range u.Query() {
			if k == "password" || k == "user" || k == "passfile" {
				p.report(n, field, "sets "+k+" in the query", "give the password with secret: and the user in the URL")
			}
		}
	}
}

func (p *cparser) auth(f map[string]*yaml.Node, field string, s *Spec) {
	v, ok := f["auth"]
	if !ok {
		s.Auth = Auth{Type: AuthBearer}
		return
	}
	a, ok := p.str(v, field+".auth")
	if !ok {
		return
	}
	typ, rest, _ := strings.Cut(strings.TrimSpace(a), " ")
	switch typ {
	case AuthBearer:
		s.Auth = Auth{Type: AuthBearer}
	case AuthBasic:
		s.Auth = Auth{Type: AuthBasic}
		u, ok := f["username"]
		if !ok {
			p.report(v, field+".username", "missing: basic auth needs a username (the secret is the password)", "")
			return
		}
		s.Auth.Username, _ = p.str(u, field+".username")
		if strings.ContainsAny(s.Auth.Username, ":\r\n") || s.Auth.Username == "" {
			p.report(u, field+".username", "must be non-empty, without ':' or line breaks", "")
		}
	case AuthHeader:
		h := strings.TrimSpace(rest)
		if !headerRE.MatchString(h) {
			p.report(v, field+".auth", "header auth names the header: auth: header X-Api-Key", "")
			return
		}
		switch strings.ToLower(h) {
		case "host", "content-length", "transfer-encoding", "connection", "te", "upgrade", "cookie":
			p.report(v, field+".auth", fmt.Sprintf("header %s cannot carry the secret", h), "")
			return
		}
		s.Auth = Auth{Type: AuthHeader, Header: h}
	default:
		p.report(v, field+".auth", fmt.Sprintf("%q is not bearer, basic or header NAME", a), "")
		return
	}
	if _, ok := f["username"]; ok && s.Auth.Type != AuthBasic {
		p.report(f["username"], field+".username", "only basic auth takes a username", "")
	}
}

func (p *cparser) actions(n *yaml.Node, field string, s *Spec) {
	if n.Kind != yaml.MappingNode || len(n.Content) == 0 {
		p.report(n, field, "must be a mapping of action names", "")
		return
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		af := field + "." + k.Value
		if !manifest.ValidName(k.Value, manifest.MaxActionName) {
			p.report(k, af, "action name must be lower case letters, digits, '.', '_' or '-'", "use the action names of the agents' manifests")
			continue
		}
		if seen[k.Value] {
			p.report(k, af, "appears twice", "keep one")
			continue
		}
		seen[k.Value] = true
		a := ActionSpec{Name: k.Value}
		if s.Kind == KindHTTP {
			fs := p.mapping(v, af, []string{"allow"}, []string{"allow"})
			if al, ok := fs["allow"]; ok {
				for _, rn := range p.strList(al, af+".allow") {
					r, err := ParseRule(rn.Value)
					if err != nil {
						p.report(rn, af+".allow", err.Error(), "")
						continue
					}
					a.Allow = append(a.Allow, r)
				}
			}
		} else {
			fs := p.mapping(v, af, []string{"grants"}, []string{"grants"})
			if gl, ok := fs["grants"]; ok {
				for _, gn := range p.strList(gl, af+".grants") {
					g, err := ParseGrant(gn.Value)
					if err != nil {
						p.report(gn, af+".grants", err.Error(), "")
						continue
					}
					a.Grants = append(a.Grants, g)
				}
			}
		}
		s.Actions = append(s.Actions, a)
	}
	sort.Slice(s.Actions, func(i, j int) bool { return s.Actions[i].Name < s.Actions[j].Name })
}
