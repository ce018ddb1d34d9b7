package manifest

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

func FuzzParse(f *testing.F) {
	// The canonical example without its comment lines: the fuzzer's minimisation is
	// quadratic in the input's size, and comments only slow it down.
	var canonical []string
	for _, l := range strings.SplitAfter(string(readCanonical(f)), "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "#") {
			canonical = append(canonical, l)
		}
	}
	f.Add([]byte(strings.Join(canonical, "")))
	f.Add([]byte("# yaml-language-server: $schema=x.json\n" + base + "# done\n"))
	f.Add([]byte(base))
	for _, tc := range invalidCases() {
		if len(tc.yaml) <= 64<<10 {
			f.Add([]byte(tc.yaml))
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := Parse(data)
		if err != nil {
			checkError(t, err)
			return
		}
		checkInvariants(t, m)
	})
}

func checkError(t *testing.T, err error) {
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("error is %T, want *Error: %v", err, err)
	}
	if len(e.Problems) == 0 || e.Error() == "" {
		t.Fatalf("error without problems: %#v", e)
	}
	for i := 1; i < len(e.Problems); i++ {
		a, b := e.Problems[i-1], e.Problems[i]
		if a.Line > b.Line && b.Line != 0 {
			t.Fatalf("problems not sorted by line:\n%v", err)
		}
	}
}

// checkInvariants holds what every manifest that Parse accepts promises.
func checkInvariants(t *testing.T, m *Manifest) {
	t.Helper()
	if m == nil {
		t.Fatal("Parse returned neither manifest nor error")
	}
	if m.APIVersion != APIVersion || m.Kind != Kind {
		t.Fatalf("apiVersion %q, kind %q", m.APIVersion, m.Kind)
	}
	if !agentNameRE.MatchString(m.Agent.Name) || !validEmail(m.Agent.Owner) {
		t.Fatalf("agent %+v", m.Agent)
	}
	if len(m.Scope.Connectors) == 0 {
		t.Fatal("no connectors")
	}
	high := false
	for i, c := range m.Scope.Connectors {
		if !connectorNameRE.MatchString(c.Name) || c.Name == RevokeAll || len(c.Actions) == 0 {
			t.Fatalf("connector %+v", c)
		}
		if got, ok := m.Connector(c.Name); !ok || got != &m.Scope.Connectors[i] {
			t.Fatalf("connector %q is declared twice", c.Name)
		}
		for j, a := range c.Actions {
			if !actionNameRE.MatchString(a.Name) || a.Risk < RiskLow || a.Risk > RiskHigh ||
				a.MaxDuration < 0 || a.MaxDuration > maxCallDuration {
				t.Fatalf("action %+v", a)
			}
			if got, ok := m.Action(c.Name, a.Name); !ok || got != &c.Actions[j] {
				t.Fatalf("action %q is declared twice", a.Name)
			}
			if ttl := m.CallTTL(c.Name, a.Name); ttl <= 0 || ttl > maxCallDuration {
				t.Fatalf("CallTTL %v", ttl)
			}
			high = high || a.Risk == RiskHigh
		}
	}
	ap := m.Approval
	if high && len(ap.Approvers) == 0 {
		t.Fatal("high-risk action without approvers")
	}
	for _, e := range append(append([]string{}, ap.Approvers...), ap.Delegates...) {
		if !validEmail(e) || !m.IsApprover(e) {
			t.Fatalf("approver %q", e)
		}
	}
	if ap.Timeout <= 0 || ap.Timeout > maxApprovalTimeout || ap.OnTimeout != "deny" {
		t.Fatalf("approval %+v", ap)
	}
	b := m.Budget
	if b.CallsPerDay < 0 || b.MaxConcurrent < 0 || b.MaxCallDuration <= 0 || b.MaxCallDuration > maxCallDuration {
		t.Fatalf("budget %+v", b)
	}
	if h := b.ActiveHours; h != nil {
		if h.Location == nil || len(h.Days) == 0 || h.Start == h.End {
			t.Fatalf("active hours %+v", h)
		}
		h.Contains(time.Now()) // must not panic
	}
	if len(m.Termination.Revoke) == 0 || m.Termination.Notify == nil {
		t.Fatalf("termination %+v", m.Termination)
	}
	if !m.Termination.RevokesAll() {
		for _, c := range m.Termination.Revoke {
			if _, ok := m.Connector(c); !ok {
				t.Fatalf("revoke names undeclared %q", c)
			}
		}
	}
	switch m.OnDrift {
	case DriftRecord, DriftRequireApproval, DriftRefuse:
	default:
		t.Fatalf("on_drift %q", m.OnDrift)
	}
	if _, err := json.Marshal(m); err != nil {
		t.Fatalf("cannot render as JSON: %v", err)
	}
}
