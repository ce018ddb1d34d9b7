package mcpgw

import (
	"slices"
	"strings"
	"testing"

	"github.com/arxsec/arx/manifest"
)

func env(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		v, ok := m[k]
		return v, ok
	}
}

func TestParseConfig(t *testing.T) {
	ups, err := ParseConfig([]byte(`# two upstreams
upstreams:
  everything:
    command: node
    args: [/opt/everything/index.js, stdio]
    env:
      API_KEY: ${KEY}
      PRICE: "$$5"
    inherit_env: [NODE_OPTIONS]
    tools:
      get-sum: {risk: high}
      Legacy_Tool: {action: legacy-tool}
  crm:
    url: https://crm.example.com/mcp
    headers:
      Authorization: Bearer ${CRM_TOKEN}
    prefix: crm_
`))
	if err != nil {
		t.Fatal(err)
	}
	if len(ups) != 2 || ups[0].Name != "everything" || ups[1].Name != "crm" {
		t.Fatalf("upstreams %+v, want everything then crm", ups)
	}
	getenv := env(map[string]string{"KEY": "k-123", "CRM_TOKEN": "t-456", "PATH": "/usr/bin", "NODE_OPTIONS": "--x",
		"ARX_TOKEN": "arxa_secret", "OTHER": "not passed"})
	e, err := ups[0].Resolve(getenv)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"API_KEY=k-123", "NODE_OPTIONS=--x", "PATH=/usr/bin", "PRICE=$5"}; !slices.Equal(e.Env, want) {
		t.Errorf("env %v, want %v", e.Env, want)
	}
	if e.Tools["get-sum"].Risk != manifest.RiskHigh || e.Tools["Legacy_Tool"].Action != "legacy-tool" {
		t.Errorf("tools %+v", e.Tools)
	}
	c, err := ups[1].Resolve(getenv)
	if err != nil {
		t.Fatal(err)
	}
	if c.Header.Get("Authorization") != "Bearer t-456" || c.Prefix != "crm_" || c.Env != nil {
		t.Errorf("crm %+v", c)
	}
}

func TestParseConfigProblems(t *testing.T) {
	for _, tc := range []struct {
		name, file, want string
	}{
		{"unknown field", "upstreams:\n  a:\n    command: x\n    comand: y\n", "4: field comand not found"},
		{"duplicate upstream", "upstreams:\n  a:\n    command: x\n  a:\n    command: y\n", `4: mapping key "a" already defined`},
		{"no upstream", "upstreams: {}\n", "1: upstreams: no upstream"},
		{"both", "upstreams:\n  a:\n    command: x\n    url: http://h/mcp\n", "2: upstreams.a: has both a command and a url"},
		{"neither", "upstreams:\n  a:\n    args: [x]\n", "2: upstreams.a: needs a command"},
		{"bad name", "upstreams:\n  CRM:\n    command: x\n", `2: upstreams.CRM: "CRM" is not a connector name`},
		{"bad url", "upstreams:\n  a:\n    url: ftp://h/\n", "upstreams.a.url: \"ftp://h/\" is not an absolute http or https URL"},
		{"url with password", "upstreams:\n  a:\n    url: https://u:p@h/\n", "upstreams.a.url: carries credentials"},
		{"ARX variable", "upstreams:\n  a:\n    command: x\n    env: {ARX_TOKEN: x}\n", "upstreams.a.env.ARX_TOKEN: an upstream never gets ARX_* variables"},
		{"inherited ARX variable", "upstreams:\n  a:\n    command: x\n    inherit_env: [arx_token]\n", "an upstream never gets ARX_* variables"},
		{"headers on a subprocess", "upstreams:\n  a:\n    command: x\n    headers: {A: b}\n", "upstreams.a.headers: only an HTTP upstream"},
		{"bad risk", "upstreams:\n  a:\n    command: x\n    tools: {t: {risk: extreme}}\n", `upstreams.a.tools.t.risk: "extreme" is not low, medium or high`},
		{"bad action", "upstreams:\n  a:\n    command: x\n    tools: {t: {action: Read}}\n", `upstreams.a.tools.t.action: "Read" is not an action name`},
		{"two documents", "upstreams:\n  a:\n    command: x\n---\nupstreams: {}\n", "more than one YAML document"},
		{"wrong type", "upstreams:\n  a:\n    command: [x]\n", "3: cannot unmarshal"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseConfig([]byte(tc.file))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}
}

func TestResolveReferences(t *testing.T) {
	for _, tc := range []struct {
		value, want, err string
	}{
		{"plain", "plain", ""},
		{"Bearer ${T}", "Bearer tok", ""},
		{"$${T}", "${T}", ""},
		{"${MISSING}", "", "${MISSING} is not set"},
		{"$T", "", "neither ${NAME} nor $$"},
		{"${T", "", "without its closing }"},
		{"${ARX_TOKEN}", "", "never gets ARX_* variables"},
	} {
		got, err := expand(tc.value, env(map[string]string{"T": "tok", "ARX_TOKEN": "arxa_x"}))
		if tc.err == "" && (err != nil || got != tc.want) || tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("%q: got %q %v, want %q %q", tc.value, got, err, tc.want, tc.err)
		}
		if err != nil && strings.Contains(err.Error(), "arxa_x") {
			t.Errorf("%q: the error shows a value: %v", tc.value, err)
		}
	}
}

func TestActionFor(t *testing.T) {
	u := &upstream{cfg: Upstream{Tools: map[string]Tool{"Renamed": {Action: "renamed.read"}}}}
	for tool, want := range map[string]string{
		"echo":         "echo",
		"get-sum":      "get-sum",
		"Renamed":      "renamed.read",
		"getAccount":   "getaccount",
		"list files!":  "list_files_",
		"_private":     "x_private",
		"Ümlaut":       "x_mlaut",
		"crm/contacts": "crm_contacts",
	} {
		if got := u.actionFor(tool); got != want {
			t.Errorf("%q: action %q, want %q", tool, got, want)
		}
		if !manifest.ValidName(u.actionFor(tool), manifest.MaxActionName) {
			t.Errorf("%q: %q is not a valid action", tool, u.actionFor(tool))
		}
	}
}

func FuzzParseConfig(f *testing.F) {
	f.Add([]byte("upstreams:\n  a:\n    command: x\n    env: {K: ${V}}\n"))
	f.Add([]byte("upstreams:\n  b:\n    url: https://h/mcp\n    headers: {A: b}\n    prefix: p_\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		ups, err := ParseConfig(data)
		if err != nil {
			return
		}
		for _, u := range ups {
			if _, err := u.Resolve(env(map[string]string{"V": "v"})); err != nil && !strings.Contains(err.Error(), "is not set") &&
				!strings.Contains(err.Error(), "$") && !strings.Contains(err.Error(), "line break") {
				t.Fatalf("parsed, then did not resolve: %v", err)
			}
		}
	})
}
