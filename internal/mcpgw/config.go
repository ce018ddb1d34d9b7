package mcpgw

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/arxsec/arx/manifest"
	"go.yaml.in/yaml/v3"
)

// The upstreams file (mcp.yaml): one entry per MCP server, named by the
// connector that declares its tools on the agent's manifest. Parsing is
// strict: unknown fields, duplicate keys and bad values are errors with
// their line.
//
//	upstreams:
//	  everything:                    # the connector on the manifest
//	    command: node                # a subprocess, spoken to over stdio
//	    args: [/opt/mcp/index.js, stdio]
//	    env:                         # its credentials stay with arx mcp
//	      API_KEY: ${EVERYTHING_KEY}
//	    tools:
//	      get-sum: {risk: high}
//	  crm:
//	    url: https://crm.example.com/mcp   # streamable HTTP
//	    headers:
//	      Authorization: Bearer ${CRM_TOKEN}
//	    prefix: crm_

// MaxConfigSize bounds the upstreams file.
const MaxConfigSize = 1 << 20

// DefaultInheritEnv names the variables a subprocess upstream gets from
// arx mcp's environment without asking: enough to find programs and run.
var DefaultInheritEnv = []string{"PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR"}

var (
	prefixRE  = regexp.MustCompile(`^[A-Za-z0-9_.-]{0,32}$`)
	envNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	headerRE  = regexp.MustCompile("^[!#$%&'*+.^_`|~0-9A-Za-z-]+$") // RFC 9110 token
)

// UpstreamConfig is one upstream as the file (or arx mcp's flags) describe
// it, before ${VAR} references are resolved.
type UpstreamConfig struct {
	// Name is the upstream's connector on the manifest.
	Name string `yaml:"-"`
	// Command, Args, Env, InheritEnv and Dir start a subprocess that speaks
	// MCP over stdio. Env values may use ${VAR} (and $$ for a dollar sign);
	// InheritEnv names more variables to pass through from arx mcp's
	// environment, besides DefaultInheritEnv.
	Command    string            `yaml:"command"`
	Args       []string          `yaml:"args"`
	Env        map[string]string `yaml:"env"`
	InheritEnv []string          `yaml:"inherit_env"`
	Dir        string            `yaml:"dir"`
	// URL and Headers reach an MCP server over streamable HTTP. Header
	// values may use ${VAR}.
	URL     string            `yaml:"url"`
	Headers map[string]string `yaml:"headers"`
	// Prefix is put before the names of the upstream's tools and prompts
	// as the agent sees them, to tell apart upstreams that use the same
	// names. The manifest names the tools without it.
	Prefix string `yaml:"prefix"`
	// Tools adjusts single tools, by their name on the upstream.
	Tools map[string]ToolConfig `yaml:"tools"`

	line int // in the file, for messages
}

// ToolConfig adjusts one tool.
type ToolConfig struct {
	// Action is the tool's action on the manifest. Default: the tool's name,
	// lowercased, with characters an action name cannot hold replaced by _.
	Action string `yaml:"action"`
	// Risk is the risk the gateway declares for the tool: low, medium or
	// high. The manifest's risk applies when it is higher.
	Risk string `yaml:"risk"`
}

// Upstream is an upstream ready to connect: references resolved, values
// checked.
type Upstream struct {
	Name    string // connector
	Command string
	Args    []string
	Env     []string // the subprocess's whole environment, KEY=VALUE
	Dir     string
	URL     string
	Header  http.Header
	Prefix  string
	Tools   map[string]Tool // by the tool's name on the upstream
}

// Tool is what the gateway knows of one tool besides the upstream's
// description.
type Tool struct {
	Action string        // "" for the default
	Risk   manifest.Risk // 0 for the default (low)
}

// ConfigError lists what is wrong with an upstreams file, each problem as
// "LINE: FIELD: message".
type ConfigError struct {
	Problems []string
}

func (e *ConfigError) Error() string {
	return strings.Join(e.Problems, "\n")
}

// ParseConfig reads an upstreams file strictly and returns its upstreams
// in file order, unresolved (see UpstreamConfig.Resolve).
func ParseConfig(data []byte) ([]UpstreamConfig, error) {
	if len(data) > MaxConfigSize {
		return nil, &ConfigError{[]string{fmt.Sprintf("1: the file is larger than %d bytes", MaxConfigSize)}}
	}
	var doc struct {
		Upstreams map[string]UpstreamConfig `yaml:"upstreams"`
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&doc); err != nil {
		return nil, &ConfigError{yamlProblems(err)}
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		return nil, &ConfigError{[]string{fmt.Sprintf("%d: the file holds more than one YAML document", extra.Line)}}
	}
	// The order and lines of the upstreams come from the node tree.
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, &ConfigError{yamlProblems(err)}
	}
	var ups []UpstreamConfig
	if len(root.Content) == 1 {
		for i := 0; i+1 < len(root.Content[0].Content); i += 2 {
			if k, v := root.Content[0].Content[i], root.Content[0].Content[i+1]; k.Value == "upstreams" && v.Kind == yaml.MappingNode {
				for j := 0; j+1 < len(v.Content); j += 2 {
					name := v.Content[j].Value
					u := doc.Upstreams[name]
					u.Name, u.line = name, v.Content[j].Line
					ups = append(ups, u)
				}
			}
		}
	}
	if len(ups) == 0 {
		return nil, &ConfigError{[]string{"1: upstreams: no upstream MCP server (hint: add one under upstreams:, named by its connector on the manifest)"}}
	}
	var problems []string
	for _, u := range ups {
		for _, p := range u.check() {
			problems = append(problems, fmt.Sprintf("%d: upstreams.%s%s", u.line, u.Name, p))
		}
	}
	if problems != nil {
		return nil, &ConfigError{problems}
	}
	return ups, nil
}

// yamlProblems turns the YAML library's errors into "LINE: message" lines.
func yamlProblems(err error) []string {
	var te *yaml.TypeError
	if errors.As(err, &te) {
		out := make([]string, len(te.Errors))
		for i, e := range te.Errors {
			out[i] = cleanYAML(e)
		}
		return out
	}
	return []string{cleanYAML(err.Error())}
}

var yamlLineRE = regexp.MustCompile(`^(?:yaml: )?line (\d+): (.*)$`)
var yamlTypeRE = regexp.MustCompile(` in type (?:map\[string\])?mcpgw\.\w+`)

func cleanYAML(s string) string {
	s = yamlTypeRE.ReplaceAllString(s, "")
	if m := yamlLineRE.FindStringSubmatch(s); m != nil {
		return m[1] + ": " + m[2]
	}
	return "1: " + strings.TrimPrefix(s, "yaml: ")
}

// check returns the upstream's problems, each starting with the field
// (".url: ...") or ": " for the upstream as a whole.
func (u *UpstreamConfig) check() []string {
	var ps []string
	add := func(field, format string, args ...any) {
		ps = append(ps, field+": "+fmt.Sprintf(format, args...))
	}
	if !manifest.ValidName(u.Name, manifest.MaxConnectorName) {
		add("", "%q is not a connector name (hint: lowercase letters, digits and - _ . as on the manifest)", u.Name)
	}
	switch {
	case u.Command == "" && u.URL == "":
		add("", "needs a command (a subprocess) or a url (streamable HTTP)")
	case u.Command != "" && u.URL != "":
		add("", "has both a command and a url (hint: one upstream is one MCP server; declare two)")
	case u.Command != "":
		if u.Headers != nil {
			add(".headers", "only an HTTP upstream (url) sends headers (hint: give a subprocess its secrets in env)")
		}
	case u.URL != "":
		if p, err := url.Parse(u.URL); err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" {
			add(".url", "%q is not an absolute http or https URL", u.URL)
		} else if p.User != nil {
			add(".url", "carries credentials (hint: send them in headers, with ${VAR})")
		}
		if u.Args != nil || u.Env != nil || u.InheritEnv != nil || u.Dir != "" {
			add("", "args, env, inherit_env and dir are for a subprocess (command), not for a url")
		}
	}
	for _, k := range sortedKeys(u.Env) {
		switch {
		case !envNameRE.MatchString(k):
			add(".env", "%q is not a variable name", k)
		case isARXVariable(k):
			add(".env."+k, "an upstream never gets ARX_* variables (hint: the agent's ARX token stays with arx mcp)")
		}
	}
	for _, k := range u.InheritEnv {
		switch {
		case !envNameRE.MatchString(k):
			add(".inherit_env", "%q is not a variable name", k)
		case isARXVariable(k):
			add(".inherit_env", "an upstream never gets ARX_* variables (hint: the agent's ARX token stays with arx mcp)")
		}
	}
	for _, k := range sortedKeys(u.Headers) {
		if !headerRE.MatchString(k) {
			add(".headers", "%q is not a header name", k)
		}
	}
	if !prefixRE.MatchString(u.Prefix) {
		add(".prefix", "%q may hold at most 32 letters, digits and - _ .", u.Prefix)
	}
	for _, name := range sortedKeys(u.Tools) {
		t := u.Tools[name]
		if t.Action != "" && !manifest.ValidName(t.Action, manifest.MaxActionName) {
			add(".tools."+name+".action", "%q is not an action name (hint: lowercase letters, digits and - _ . as on the manifest)", t.Action)
		}
		if t.Risk != "" {
			if _, err := manifest.ParseRisk(t.Risk); err != nil {
				add(".tools."+name+".risk", "%q is not low, medium or high", t.Risk)
			}
		}
	}
	return ps
}

func isARXVariable(name string) bool {
	return strings.HasPrefix(strings.ToUpper(name), "ARX_")
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// Resolve checks u and resolves its ${VAR} references and inherited
// variables with getenv (os.LookupEnv in arx mcp). A reference to an unset
// variable is an error that names the variable, never a value.
func (u UpstreamConfig) Resolve(getenv func(string) (string, bool)) (Upstream, error) {
	if ps := u.check(); ps != nil {
		for i := range ps {
			ps[i] = "upstream " + u.Name + ps[i]
		}
		return Upstream{}, errors.New(strings.Join(ps, "; "))
	}
	r := Upstream{Name: u.Name, Command: u.Command, Args: slices.Clone(u.Args), Dir: u.Dir, URL: u.URL, Prefix: u.Prefix,
		Tools: map[string]Tool{}}
	for name, t := range u.Tools {
		var risk manifest.Risk
		if t.Risk != "" {
			risk, _ = manifest.ParseRisk(t.Risk)
		}
		r.Tools[name] = Tool{Action: t.Action, Risk: risk}
	}
	if u.Command != "" {
		env := map[string]string{}
		for _, k := range append(slices.Clone(DefaultInheritEnv), u.InheritEnv...) {
			if v, ok := getenv(k); ok {
				env[k] = v
			}
		}
		for k, v := range u.Env {
			x, err := expand(v, getenv)
			if err != nil {
				return Upstream{}, fmt.Errorf("upstream %s: env.%s: %w", u.Name, k, err)
			}
			env[k] = x
		}
		for _, k := range sortedKeys(env) {
			r.Env = append(r.Env, k+"="+env[k])
		}
	}
	if u.URL != "" {
		r.Header = http.Header{}
		for k, v := range u.Headers {
			x, err := expand(v, getenv)
			if err != nil {
				return Upstream{}, fmt.Errorf("upstream %s: headers.%s: %w", u.Name, k, err)
			}
			if strings.ContainsAny(x, "\r\n\x00") {
				return Upstream{}, fmt.Errorf("upstream %s: headers.%s: the value holds a line break or NUL", u.Name, k)
			}
			r.Header.Set(k, x)
		}
	}
	return r, nil
}

// expand replaces ${NAME} with the variable's value and $$ with $. Any
// other $ is an error, so that a typo cannot silently send a literal.
func expand(s string, getenv func(string) (string, bool)) (string, error) {
	if !strings.Contains(s, "$") {
		return s, nil
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' {
			b.WriteByte(s[i])
			continue
		}
		switch {
		case strings.HasPrefix(s[i:], "$$"):
			b.WriteByte('$')
			i++
		case strings.HasPrefix(s[i:], "${"):
			end := strings.IndexByte(s[i:], '}')
			if end < 0 {
				return "", errors.New("${ without its closing }")
			}
			name := s[i+2 : i+end]
			if !envNameRE.MatchString(name) {
				return "", fmt.Errorf("${%s} does not name a variable", strconv.Quote(name))
			}
			if isARXVariable(name) {
				return "", fmt.Errorf("${%s}: an upstream never gets ARX_* variables (hint: the agent's ARX token stays with arx mcp)", name)
			}
			v, ok := getenv(name)
			if !ok {
				return "", fmt.Errorf("${%s} is not set (hint: export %s before starting arx mcp)", name, name)
			}
			b.WriteString(v)
			i += end
		default:
			return "", errors.New("a $ that is neither ${NAME} nor $$ (hint: write $$ for a dollar sign)")
		}
	}
	return b.String(), nil
}
