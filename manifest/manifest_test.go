package manifest

import (
	"errors"
	"github.com/arxsec/arx/record"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// canonicalPath is the reference agent's manifest, the example users copy.
const canonicalPath = "../reference-agents/sales-research/manifests/job_description.yaml"

func readCanonical(t testing.TB) []byte {
	t.Helper()
	data, err := os.ReadFile(canonicalPath)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func parseCanonical(t testing.TB) *Manifest {
	t.Helper()
	m, err := ParseFile(canonicalPath)
	if err != nil {
		t.Fatalf("canonical example does not parse:\n%v", err)
	}
	return m
}

func TestCanonicalExample(t *testing.T) {
	data := readCanonical(t)
	if first, _, _ := strings.Cut(string(data), "\n"); first != "# yaml-language-server: $schema=../../../manifest/job_description.schema.json" {
		t.Errorf("first line %q does not point editors at the schema", first)
	}
	m := parseCanonical(t)

	want := &Manifest{
		APIVersion: "arx.dev/v1",
		Kind:       "JobDescription",
		Agent: Agent{
			Name:        "sales-research",
			Description: "Researches accounts before sales calls.",
			Owner:       "dana@example.com",
		},
		Scope: Scope{Connectors: []Connector{
			{Name: "salesforce", Description: "Sales CRM", Actions: []Action{
				{Name: "account.read", Description: "Read an account.", Risk: RiskLow},
				{Name: "opportunity.read", Description: "Read open opportunities of an account.", Risk: RiskLow},
				{Name: "account.update", Description: "Write research notes back to the account.", Risk: RiskHigh},
			}},
			{Name: "warehouse", Description: "analytics database", Actions: []Action{
				{Name: "orders.query", Description: "Query an account's order history.", Risk: RiskMedium},
			}},
		}},
		Approval: Approval{
			Approvers: []string{"dana@example.com", "lee@example.com"},
			Delegates: []string{"ops-oncall@example.com"},
			Timeout:   15 * time.Minute,
			OnTimeout: "deny",
		},
		Budget: Budget{
			CallsPerDay:     5000,
			MaxConcurrent:   8,
			MaxCallDuration: 2 * time.Minute,
		},
		Termination: Termination{Notify: []string{"dana@example.com"}, Revoke: []string{"all"}},
		OnDrift:     DriftRecord,
	}
	if !reflect.DeepEqual(m, want) {
		t.Errorf("canonical example parsed as\n%+v\nwant\n%+v", m, want)
	}
	if _, ok := m.Connector("hubspot"); ok {
		t.Error("hubspot is declared; the reference agent relies on it being undeclared")
	}
}

func TestAccessors(t *testing.T) {
	m := parseCanonical(t)

	if c, ok := m.Connector("warehouse"); !ok || c.Description != "analytics database" {
		t.Errorf("Connector(warehouse) = %v, %v", c, ok)
	}
	if _, ok := m.Connector("Warehouse"); ok {
		t.Error("connector names are case-sensitive")
	}
	if a, ok := m.Action("salesforce", "account.update"); !ok || a.Risk != RiskHigh {
		t.Errorf("Action(salesforce, account.update) = %v, %v", a, ok)
	}
	for _, ca := range [][2]string{{"salesforce", "orders.query"}, {"hubspot", "account.read"}, {"", ""}} {
		if _, ok := m.Action(ca[0], ca[1]); ok {
			t.Errorf("Action(%q, %q) found an undeclared action", ca[0], ca[1])
		}
	}

	for _, tc := range []struct {
		email string
		want  bool
	}{
		{"dana@example.com", true},
		{"LEE@Example.COM", true},
		{"ops-oncall@example.com", true}, // a delegate
		{"eve@example.com", false},
		{"", false},
		{"dana@example.com ", false},
	} {
		if got := m.IsApprover(tc.email); got != tc.want {
			t.Errorf("IsApprover(%q) = %v, want %v", tc.email, got, tc.want)
		}
	}

	m.Scope.Connectors[1].Actions[0].MaxDuration = 10 * time.Minute
	for _, tc := range []struct {
		connector, action string
		want              time.Duration
	}{
		{"salesforce", "account.read", 2 * time.Minute},
		{"warehouse", "orders.query", 10 * time.Minute},
		{"hubspot", "contacts.read", 2 * time.Minute},
	} {
		if got := m.CallTTL(tc.connector, tc.action); got != tc.want {
			t.Errorf("CallTTL(%q, %q) = %v, want %v", tc.connector, tc.action, got, tc.want)
		}
	}
	if got := (&Manifest{}).CallTTL("a", "b"); got != DefaultMaxCallDuration {
		t.Errorf("CallTTL on an empty manifest = %v, want %v", got, DefaultMaxCallDuration)
	}
	if !m.Termination.RevokesAll() || (Termination{Revoke: []string{"salesforce"}}).RevokesAll() {
		t.Error("RevokesAll is wrong")
	}
}

// TestRequiredSince: a new job description must declare its approval
// policy and its runtime budget (the SDK's README: scope, approval policy,
// runtime budget and termination), each refused with its own hint; the
// manifest of an agent hired before that was required still parses
// (ParseHired), with the defaults it was hired with.
func TestRequiredSince(t *testing.T) {
	_, err := Parse([]byte(base))
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("Parse of a job description without approval and budget: %v", err)
	}
	got := map[string]string{}
	for _, p := range e.Problems {
		got[p.Field] = p.Message + " / " + p.Hint
	}
	for _, f := range []string{"approval", "budget"} {
		if !strings.Contains(got[f], "required field is missing / add a"+map[string]string{"approval": "n approval section", "budget": " budget section"}[f]) {
			t.Errorf("%s: %q", f, got[f])
		}
	}
	_, err = Parse([]byte(base + "approval: {approvers: [a@example.com]}\nbudget: {calls_per_day: 10}\n"))
	if err == nil || !strings.Contains(err.Error(), "manifest:15: budget.max_call_duration: required field is missing (hint: add max_call_duration") {
		t.Errorf("budget without max_call_duration: %v", err)
	}
	if _, err := ParseHired([]byte(base + "budget: {calls_per_day: 10}\n")); err != nil {
		t.Errorf("ParseHired of a manifest hired before approval and budget were required: %v", err)
	}
	// What requiredSince relaxes and nothing else.
	if _, err := ParseHired([]byte(edit("risk: low", "risk: extreme"))); err == nil {
		t.Error("ParseHired accepts an unknown risk")
	}
}

func TestDefaults(t *testing.T) {
	m, err := ParseHired([]byte(base))
	if err != nil {
		t.Fatal(err)
	}
	if m.Approval.Timeout != 15*time.Minute || m.Approval.OnTimeout != "deny" {
		t.Errorf("approval defaults: %+v", m.Approval)
	}
	if m.Budget.MaxCallDuration != 5*time.Minute || m.Budget.CallsPerDay != 0 ||
		m.Budget.MaxConcurrent != 0 || m.Budget.ActiveHours != nil {
		t.Errorf("budget defaults: %+v", m.Budget)
	}
	if !reflect.DeepEqual(m.Termination.Revoke, []string{"all"}) || m.OnDrift != DriftRecord {
		t.Errorf("termination and drift defaults: %+v %q", m.Termination, m.OnDrift)
	}

	m, err = Parse([]byte(complete(base + "budget:\n  active_hours: {timezone: UTC, start: \"22:00\", end: \"06:00\"}\n")))
	if err != nil {
		t.Fatal(err)
	}
	if got := m.Budget.ActiveHours.Days; len(got) != 7 || got[0] != time.Monday || got[6] != time.Sunday {
		t.Errorf("default days = %v, want every day from Monday", got)
	}
}

func TestParseAcceptsVariants(t *testing.T) {
	for _, tc := range []struct {
		name string
		yaml string
		ok   func(*Manifest) bool
	}{
		{"revoke list", edit("  notify: []\n", "  notify: []\n  revoke: [crm]\n"),
			func(m *Manifest) bool { return reflect.DeepEqual(m.Termination.Revoke, []string{"crm"}) }},
		{"revoke [all]", edit("  notify: []\n", "  notify: []\n  revoke: [all]\n"),
			func(m *Manifest) bool { return m.Termination.RevokesAll() }},
		{"webhook", edit("notify: []", "notify: [a@example.com, \"https://hooks.example.com/arx?x=1\"]"),
			func(m *Manifest) bool { return len(m.Termination.Notify) == 2 }},
		{"quoted number as description", edit("name: test-agent", "name: test-agent\n  description: \"42\""),
			func(m *Manifest) bool { return m.Agent.Description == "42" }},
		{"flow style", `{apiVersion: arx.dev/v1, kind: JobDescription, agent: {name: a, owner: a@b.io},
 scope: {connectors: {db: {actions: {q: {risk: medium, max_duration: 90s}}}}}, termination: {notify: []},
 approval: {approvers: [a@b.io]}, budget: {max_call_duration: 1m}, on_drift: refuse}`,
			func(m *Manifest) bool {
				return m.CallTTL("db", "q") == 90*time.Second && m.OnDrift == DriftRefuse
			}},
		{"require_passkey", edit("risk: low", "risk: high") + "approval:\n  approvers: [dana@example.com]\n  require_passkey: true\n",
			func(m *Manifest) bool { return m.Approval.RequirePasskey }},
		{"calls_per_day zero", base + "budget:\n  calls_per_day: 0\n",
			func(m *Manifest) bool { return m.Budget.CallsPerDay == 0 }},
		{"byte order mark", "\ufeff" + base,
			func(m *Manifest) bool { return m.Agent.Name == "test-agent" }},
		{"document markers", "---\n" + complete(base) + "...\n",
			func(m *Manifest) bool { return m.Agent.Name == "test-agent" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := Parse([]byte(complete(tc.yaml)))
			if err != nil {
				t.Fatal(err)
			}
			if !tc.ok(m) {
				t.Errorf("unexpected result: %+v", m)
			}
		})
	}
}

func TestParseFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "job_description.yaml")
	if err := os.WriteFile(path, []byte(complete(edit("risk: low", "risk: none"))), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := ParseFile(path)
	var e *Error
	if !errors.As(err, &e) || e.File != path || !strings.HasPrefix(err.Error(), path+":11: ") {
		t.Errorf("ParseFile error %v, want *Error naming %s and line 11", err, path)
	}

	big := filepath.Join(dir, "big.yaml")
	if err := os.WriteFile(big, make([]byte, MaxSize+10), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ParseFile(big); err == nil || !strings.Contains(err.Error(), "manifest too large") {
		t.Errorf("ParseFile(big) = %v, want manifest too large", err)
	}

	if _, err := ParseFile(filepath.Join(dir, "missing.yaml")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("ParseFile(missing) = %v, want fs.ErrNotExist", err)
	}
}

func TestRisk(t *testing.T) {
	for _, r := range []Risk{RiskLow, RiskMedium, RiskHigh} {
		b, err := r.MarshalText()
		if err != nil {
			t.Fatal(err)
		}
		var got Risk
		if err := got.UnmarshalText(b); err != nil || got != r {
			t.Errorf("round trip of %v gave %v, %v", r, got, err)
		}
		if p, err := ParseRisk(r.String()); err != nil || p != r {
			t.Errorf("ParseRisk(%q) = %v, %v", r.String(), p, err)
		}
	}
	if !(RiskLow < RiskMedium && RiskMedium < RiskHigh) {
		t.Error("risks are not ordered")
	}
	for _, s := range []string{"", "LOW", "critical", " low"} {
		if _, err := ParseRisk(s); err == nil {
			t.Errorf("ParseRisk(%q) succeeded", s)
		}
	}
	if _, err := Risk(0).MarshalText(); err == nil {
		t.Error("MarshalText of the zero Risk succeeded")
	}
	if s := Risk(7).String(); s != "Risk(7)" {
		t.Errorf("Risk(7).String() = %q", s)
	}
}

func TestHash(t *testing.T) {
	// SHA-256 of the empty string.
	if got, want := Hash(nil), "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"; got != want {
		t.Errorf("Hash(nil) = %s, want %s", got, want)
	}
	if Hash([]byte(base)) == Hash([]byte(base+"\n")) {
		t.Error("Hash ignores a byte")
	}
}

func TestValidEmail(t *testing.T) {
	for _, s := range []string{"dana@example.com", "a.b+tag@sub.example.co", "O'Neil@example.org", "x@a-b.io"} {
		if !validEmail(s) {
			t.Errorf("validEmail(%q) = false", s)
		}
	}
	for _, s := range []string{"", "dana", "@example.com", "dana@", "dana@localhost", "dana@@example.com",
		"a@b@example.com", "Dana <dana@example.com>", "dana @example.com", ".dana@example.com",
		"da..na@example.com", "dana@-example.com", "dana@example..com", "dana@1.2.3.4", "dänä@example.com",
		strings.Repeat("a", 65) + "@example.com"} {
		if validEmail(s) {
			t.Errorf("validEmail(%q) = true", s)
		}
	}
}

func BenchmarkParse(b *testing.B) {
	data := readCanonical(b)
	for b.Loop() {
		if _, err := Parse(data); err != nil {
			b.Fatal(err)
		}
	}
}

func TestBudgetCaps(t *testing.T) {
	m, err := Parse([]byte(complete(edit("          risk: low\n", "          risk: low\n          cost: 0.02 USD\n") +
		"budget:\n  spend:\n    per_day: 50 USD\n  tokens:\n    per_day: 2000000\n    notify_at: 95%\n")))
	if err != nil {
		t.Fatal(err)
	}
	b := m.Budget
	if b.Spend == nil || b.Spend.PerDay != (record.Money{Micros: 50_000_000, Currency: "USD"}) || b.Spend.NotifyAt != DefaultNotifyAt {
		t.Errorf("spend = %+v", b.Spend)
	}
	if b.Tokens == nil || b.Tokens.PerDay != 2_000_000 || b.Tokens.NotifyAt != 95 {
		t.Errorf("tokens = %+v", b.Tokens)
	}
	if b.OnBudgetPolicy() != OnBudgetRequireApproval {
		t.Errorf("on_budget defaults to %q", b.OnBudgetPolicy())
	}
	if a, _ := m.Action("crm", "account.read"); a.Cost == nil || a.Cost.String() != "0.02 USD" {
		t.Errorf("cost = %v", a.Cost)
	}
}

// TestREADMEExample: the job description the README shows is valid.
func TestREADMEExample(t *testing.T) {
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(b), "## The job description")
	if !ok {
		t.Fatal("README has no job description section")
	}
	_, rest, ok = strings.Cut(rest, "```yaml\n")
	yaml, _, ok2 := strings.Cut(rest, "```")
	if !ok || !ok2 {
		t.Fatal("README's job description section has no yaml block")
	}
	m, err := Parse([]byte(yaml))
	if err != nil {
		t.Fatalf("README's job description: %v", err)
	}
	if m.Budget.Spend == nil || m.Budget.Tokens == nil {
		t.Error("README's job description lost its caps")
	}
}
