package manifest

import (
	"errors"
	"strings"
	"testing"
)

// base is a minimal valid manifest; the invalid cases below edit it. Its line numbers
// matter: the cases name them.
const base = `apiVersion: arx.dev/v1
kind: JobDescription
agent:
  name: test-agent
  owner: owner@example.com
scope:
  connectors:
    crm:
      actions:
        account.read:
          risk: low
termination:
  notify: []
`

// complete adds to a job description the sections every new one must
// declare (requiredSince), where it lacks them: a test about something else
// then parses with Parse.
func complete(s string) string {
	if !strings.Contains(s, "approval:") {
		s += "approval:\n  approvers: [boss@example.com]\n"
	}
	switch {
	case !strings.Contains(s, "budget:"):
		s += "budget:\n  max_call_duration: 5m\n"
	case !strings.Contains(s, "max_call_duration"):
		s = strings.Replace(s, "\nbudget:\n", "\nbudget:\n  max_call_duration: 5m\n", 1)
	}
	return s
}

// edit returns base with each old string replaced by the new one that follows it.
// It panics when an old string is missing, so a case cannot silently test base.
func edit(pairs ...string) string {
	s := base
	for i := 0; i+1 < len(pairs); i += 2 {
		if !strings.Contains(s, pairs[i]) {
			panic("edit: base has no " + pairs[i])
		}
		s = strings.Replace(s, pairs[i], pairs[i+1], 1)
	}
	return s
}

type invalidCase struct {
	name  string
	yaml  string
	line  int
	field string
	msg   string // substring of the message
}

func invalidCases() []invalidCase {
	return []invalidCase{
		{"unknown top-level field", base + "extra: 1\n",
			14, "extra", `unknown field "extra"`},
		{"unknown agent field", edit("  owner: owner@example.com\n", "  owner: owner@example.com\n  nmae: x\n"),
			6, "agent.nmae", `unknown field "nmae"`},
		{"unknown action field", edit("          risk: low\n", "          risk: low\n          rsik: low\n"),
			12, `scope.connectors["crm"].actions["account.read"].rsik`, "unknown field"},
		{"string expected, list given", edit("name: test-agent", "name: [a, b]"),
			4, "agent.name", "expected a string, got a list"},
		{"string expected, number given", edit("name: test-agent", "name: 42"),
			4, "agent.name", "expected a string, got a whole number"},
		{"number expected, string given", base + "budget:\n  calls_per_day: lots\n",
			15, "budget.calls_per_day", "expected a whole number, got a string"},
		{"mapping expected", base + "budget: 5\n",
			14, "budget", "expected a mapping, got a whole number"},
		{"empty section", base + "approval:\n",
			14, "approval", "expected a mapping, got nothing"},
		{"missing apiVersion", edit("apiVersion: arx.dev/v1\n", ""),
			1, "apiVersion", "required field is missing"},
		{"wrong apiVersion", edit("arx.dev/v1", "arx.dev/v2"),
			1, "apiVersion", `unsupported apiVersion "arx.dev/v2"`},
		{"wrong kind", edit("kind: JobDescription", "kind: Job"),
			2, "kind", `unsupported kind "Job"`},
		{"missing termination", edit("termination:\n  notify: []\n", ""),
			1, "termination", "required field is missing"},
		{"missing notify", edit("  notify: []\n", "  revoke: all\n"),
			12, "termination.notify", "required field is missing"},
		{"empty scope", edit("scope:\n  connectors:\n    crm:\n      actions:\n        account.read:\n          risk: low\n", "scope: {}\n"),
			6, "scope.connectors", "required field is missing"},
		{"no connectors", edit("  connectors:\n    crm:\n      actions:\n        account.read:\n          risk: low\n", "  connectors: {}\n"),
			7, "scope.connectors", "no connectors are declared"},
		{"connector without actions", edit("      actions:\n        account.read:\n          risk: low\n", "      actions: {}\n"),
			9, `scope.connectors["crm"].actions`, "no actions are declared"},
		{"connector without actions field", edit("      actions:\n        account.read:\n          risk: low\n", "      description: CRM\n"),
			8, `scope.connectors["crm"].actions`, "required field is missing"},
		{"bad connector name", edit("    crm:", "    CRM:"),
			8, `scope.connectors["CRM"]`, `invalid connector name "CRM"`},
		{"reserved connector name", edit("    crm:", "    all:"),
			8, `scope.connectors["all"]`, "reserved"},
		{"bad action name", edit("account.read:", "Account Read:"),
			10, `scope.connectors["crm"].actions["Account Read"]`, "invalid action name"},
		{"duplicate action", edit("          risk: low\n", "          risk: low\n        account.read:\n          risk: high\n"),
			12, `scope.connectors["crm"].actions["account.read"]`, `duplicate key "account.read" (first on line 10)`},
		{"duplicate connector", edit("          risk: low\n", "          risk: low\n    crm:\n      actions:\n        x:\n          risk: low\n"),
			12, `scope.connectors["crm"]`, `duplicate key "crm" (first on line 8)`},
		{"duplicate field", edit("  owner: owner@example.com\n", "  owner: owner@example.com\n  owner: other@example.com\n"),
			6, "agent.owner", "duplicate key"},
		{"bad duration", base + "budget:\n  max_call_duration: 5 minutes\n",
			15, "budget.max_call_duration", `invalid duration "5 minutes"`},
		{"duration without unit", base + "budget:\n  max_call_duration: 300\n",
			15, "budget.max_call_duration", "expected a duration, got a whole number"},
		{"zero duration", edit("          risk: low\n", "          risk: low\n          max_duration: 0s\n"),
			12, `scope.connectors["crm"].actions["account.read"].max_duration`, "greater than zero"},
		{"duration too long", base + "approval:\n  approvers: [a@example.com]\n  timeout: 200h\n",
			16, "approval.timeout", "longer than the limit of 168h"},
		{"negative calls per day", base + "budget:\n  calls_per_day: -1\n",
			15, "budget.calls_per_day", "must not be negative"},
		{"zero max concurrent", base + "budget:\n  max_concurrent: 0\n",
			15, "budget.max_concurrent", "must be at least 1"},
		{"huge number", base + "budget:\n  calls_per_day: 99999999999999999999999\n",
			15, "budget.calls_per_day", "out of range"},
		{"bad risk", edit("risk: low", "risk: extreme"),
			11, `scope.connectors["crm"].actions["account.read"].risk`, `unknown risk "extreme"`},
		{"missing risk", edit("          risk: low\n", "          description: x\n"),
			10, `scope.connectors["crm"].actions["account.read"].risk`, "required field is missing"},
		{"bad timezone", base + "budget:\n  active_hours:\n    timezone: Mars/Olympus\n    start: \"08:00\"\n    end: \"17:00\"\n",
			16, "budget.active_hours.timezone", `unknown time zone "Mars/Olympus"`},
		{"host timezone", base + "budget:\n  active_hours:\n    timezone: Local\n    start: \"08:00\"\n    end: \"17:00\"\n",
			16, "budget.active_hours.timezone", "unknown time zone"},
		{"bad time of day", base + "budget:\n  active_hours:\n    timezone: UTC\n    start: \"8:00\"\n    end: \"17:00\"\n",
			17, "budget.active_hours.start", `invalid time of day "8:00"`},
		{"empty window", base + "budget:\n  active_hours:\n    timezone: UTC\n    start: \"08:00\"\n    end: \"08:00\"\n",
			18, "budget.active_hours.end", "same as start"},
		{"duplicate day", base + "budget:\n  active_hours:\n    timezone: UTC\n    days: [mon, mon]\n    start: \"08:00\"\n    end: \"17:00\"\n",
			17, "budget.active_hours.days[1]", "listed twice"},
		{"bad day", base + "budget:\n  active_hours:\n    timezone: UTC\n    days:\n      - monday\n    start: \"08:00\"\n    end: \"17:00\"\n",
			18, "budget.active_hours.days[0]", `unknown day "monday"`},
		{"bad email", edit("owner: owner@example.com", "owner: owner"),
			5, "agent.owner", `"owner" is not an email address`},
		{"email with display name", base + "approval:\n  approvers: [\"Dana <dana@example.com>\"]\n",
			15, "approval.approvers[0]", "is not an email address"},
		{"duplicate approver", base + "approval:\n  approvers: [dana@example.com, Dana@Example.com]\n",
			15, "approval.approvers[1]", "already listed"},
		{"delegate is an approver", base + "approval:\n  approvers: [dana@example.com]\n  delegates: [dana@example.com]\n",
			16, "approval.delegates[0]", "already listed"},
		{"on_timeout approve", base + "approval:\n  approvers: [dana@example.com]\n  on_timeout: approve\n",
			16, "approval.on_timeout", `on_timeout "approve" is not supported`},
		{"require_passkey as text", base + "approval:\n  approvers: [dana@example.com]\n  require_passkey: \"yes\"\n",
			16, "approval.require_passkey", "true or false"},
		{"high risk without approval", edit("risk: low", "risk: high"),
			11, "approval", `scope.connectors["crm"].actions["account.read"] is high risk but no approvers are named`},
		{"high risk with empty approvers", edit("risk: low", "risk: high") + "approval:\n  approvers: []\n",
			15, "approval.approvers", "is high risk but no approvers are named"},
		{"revoke undeclared connector", edit("  notify: []\n", "  notify: []\n  revoke: [crm, hubspot]\n"),
			14, "termination.revoke[1]", `connector "hubspot" is not declared`},
		{"revoke all with others", edit("  notify: []\n", "  notify: []\n  revoke: [all, crm]\n"),
			14, "termination.revoke[0]", "cannot be combined"},
		{"revoke nothing", edit("  notify: []\n", "  notify: []\n  revoke: []\n"),
			14, "termination.revoke", "no connectors are listed"},
		{"revoke word", edit("  notify: []\n", "  notify: []\n  revoke: everything\n"),
			14, "termination.revoke", `invalid revoke "everything"`},
		{"notify http", edit("notify: []", "notify: [http://hooks.example.com/x]"),
			13, "termination.notify[0]", `scheme "http" is not allowed`},
		{"notify with password", edit("notify: []", "notify: [\"https://u:p@hooks.example.com/x\"]"),
			13, "termination.notify[0]", "must not contain a user name or password"},
		{"bad drift policy", base + "on_drift: ignore\n",
			14, "on_drift", `unknown drift policy "ignore"`},
		{"malformed YAML", edit("kind: JobDescription", "kind: [JobDescription"),
			2, "", "invalid YAML"},
		{"unclosed quote", edit("name: test-agent", "name: \"test-agent"),
			4, "", "invalid YAML"},
		{"tab indentation", edit("  name: test-agent", "\tname: test-agent"),
			4, "", "indented with a tab"},
		{"anchor", base + "on_drift: &d record\n",
			14, "", "anchor &d is not allowed"},
		{"alias", edit("  owner: owner@example.com\n", "  owner: &o owner@example.com\n  description: *o\n"),
			6, "", "alias *o is not allowed"},
		{"merge key", edit("    crm:\n", "    crm: &c\n") + "budget:\n  <<: *c\n",
			15, "", "alias *c is not allowed"},
		{"complex key", base + "? [a, b]\n: c\n",
			14, "", "mapping keys must be plain text"},
		{"second document", base + "---\nkind: JobDescription\n",
			14, "", "more than one YAML document"},
		{"not a mapping", "- a\n- b\n",
			1, "", "expected a mapping, got a list"},
		{"empty", "# nothing here\n",
			0, "", "manifest is empty"},
		{"invalid UTF-8", edit("name: test-agent", "name: test-\xffagent"),
			4, "", "invalid YAML"},
		{"oversized", base + "# " + strings.Repeat("x", MaxSize) + "\n",
			0, "", "manifest too large"},
		{"cost not an amount", edit("          risk: low\n", "          risk: low\n          cost: 5 dollars\n"),
			12, `scope.connectors["crm"].actions["account.read"].cost`, "is not an amount and a currency"},
		{"cost with too many decimals", edit("          risk: low\n", "          risk: low\n          cost: 0.0000001 USD\n"),
			12, `scope.connectors["crm"].actions["account.read"].cost`, "at most six decimals"},
		{"cost in another currency", edit("          risk: low\n", "          risk: low\n          cost: 0.02 EUR\n") +
			"budget:\n  spend:\n    per_day: 50 USD\n  on_budget: refuse\n",
			12, `scope.connectors["crm"].actions["account.read"].cost`, "the cost is in EUR but budget.spend.per_day is in USD"},
		{"zero spend", base + "budget:\n  on_budget: refuse\n  spend:\n    per_day: 0 USD\n",
			17, "budget.spend.per_day", "the daily spend is zero"},
		{"spend without per_day", base + "budget:\n  on_budget: refuse\n  spend:\n    notify_at: 50%\n",
			16, "budget.spend.per_day", "missing"},
		{"notify_at over 100%", base + "budget:\n  on_budget: refuse\n  spend:\n    per_day: 5 USD\n    notify_at: 120%\n",
			18, "budget.spend.notify_at", "not a percentage"},
		{"notify_at without %", base + "budget:\n  on_budget: refuse\n  tokens:\n    per_day: 5\n    notify_at: 80\n",
			18, "budget.tokens.notify_at", "expected a string"},
		{"zero tokens", base + "budget:\n  on_budget: refuse\n  tokens:\n    per_day: 0\n",
			17, "budget.tokens.per_day", "must be at least 1"},
		{"on_budget without a cap", base + "budget:\n  on_budget: refuse\n",
			15, "budget.on_budget", "no spend or tokens cap"},
		{"unknown on_budget", base + "budget:\n  tokens:\n    per_day: 5\n  on_budget: pause\n",
			17, "budget.on_budget", `on_budget "pause" is not require_approval or refuse`},
		{"budget cap held for nobody", base + "budget:\n  tokens:\n    per_day: 5\n",
			14, "budget", "no approvers are named"},
	}
}

func TestParseInvalid(t *testing.T) {
	for _, tc := range invalidCases() {
		t.Run(tc.name, func(t *testing.T) {
			m, err := Parse([]byte(tc.yaml))
			if err == nil {
				t.Fatalf("Parse succeeded, want an error\n%s", tc.yaml)
			}
			if m != nil {
				t.Errorf("Parse returned a manifest with its error")
			}
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("error is %T, want *Error: %v", err, err)
			}
			for _, p := range e.Problems {
				if p.Line == tc.line && p.Field == tc.field && strings.Contains(p.Message, tc.msg) {
					checkMessage(t, p)
					return
				}
			}
			t.Errorf("no problem at line %d, field %q, message ~%q; got:\n%v", tc.line, tc.field, tc.msg, err)
		})
	}
}

// checkMessage holds messages to the house style: lowercase start, no trailing period.
func checkMessage(t *testing.T, p Problem) {
	t.Helper()
	for _, s := range []string{p.Message, p.Hint} {
		if s == "" {
			continue
		}
		if strings.HasSuffix(s, ".") {
			t.Errorf("message %q ends with a period", s)
		}
		if c := s[0]; 'A' <= c && c <= 'Z' && !strings.HasPrefix(s, "YAML") {
			t.Errorf("message %q starts with a capital letter", s)
		}
	}
}

func TestParseReportsEveryProblem(t *testing.T) {
	src := edit(
		"name: test-agent", "name: Test Agent",
		"owner: owner@example.com", "owner: nobody",
		"risk: low", "risk: extreme",
	) + "approval:\n  approvers: [a@example.com]\nbudget:\n  max_call_duration: 1m\n  calls_per_day: -5\nextra: true\n"
	_, err := Parse([]byte(src))
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("Parse: %v, want *Error", err)
	}
	var lines []int
	for _, p := range e.Problems {
		lines = append(lines, p.Line)
	}
	want := []int{4, 5, 11, 18, 19}
	if len(lines) != len(want) {
		t.Fatalf("problems on lines %v, want %v:\n%v", lines, want, err)
	}
	for i := range want {
		if lines[i] != want[i] {
			t.Fatalf("problems on lines %v, want %v (sorted):\n%v", lines, want, err)
		}
	}
}

func TestParseBoundsProblems(t *testing.T) {
	var b strings.Builder
	b.WriteString(complete(base))
	for i := range 300 {
		b.WriteString("extra")
		b.WriteString(strings.Repeat("x", i))
		b.WriteString(": 1\n")
	}
	_, err := Parse([]byte(b.String()))
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("Parse: %v, want *Error", err)
	}
	if len(e.Problems) != maxProblems+1 {
		t.Fatalf("got %d problems, want %d", len(e.Problems), maxProblems+1)
	}
	if last := e.Problems[maxProblems].Message; last != "200 more problems not shown" {
		t.Errorf("last problem %q", last)
	}
}

func TestErrorString(t *testing.T) {
	_, err := Parse([]byte(complete(edit("risk: low", "risk: extreme"))))
	want := `manifest:11: scope.connectors["crm"].actions["account.read"].risk: unknown risk "extreme" (hint: use low, medium or high)`
	if err == nil || err.Error() != want {
		t.Errorf("got  %v\nwant %s", err, want)
	}
	e := &Error{File: "jd.yaml", Problems: []Problem{
		{Message: "manifest too large"},
		{Line: 3, Message: "invalid YAML: x", Hint: "h"},
	}}
	want = "jd.yaml: manifest too large\njd.yaml:3: invalid YAML: x (hint: h)"
	if got := e.Error(); got != want {
		t.Errorf("got  %q\nwant %q", got, want)
	}
}
