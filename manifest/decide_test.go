package manifest_test

import (
	"strings"
	"testing"

	"github.com/arxsec/arx/arxerr"
	"github.com/arxsec/arx/manifest"
)

// The full table, shared with the Python SDK, is testdata/vectors/decisions.json
// (checked in package agentvault); these are the rules spelled out.
func TestDecide(t *testing.T) {
	base := `apiVersion: arx.dev/v1
kind: JobDescription
agent: {name: a, owner: o@example.com}
scope:
  connectors:
    crm:
      actions:
        read: {risk: low}
        export: {risk: medium}
approval: {approvers: [b@example.com]}
budget: {max_call_duration: 1m}
termination: {notify: [o@example.com]}
on_drift: `
	for _, tc := range []struct {
		policy, conn, act string
		declared          manifest.Risk
		refusal           arxerr.Code
		risk              manifest.Risk
		drift             string
		approval          bool
	}{
		{"record", "hubspot", "read", manifest.RiskLow, arxerr.ConnectorNotDeclared, manifest.RiskLow, "", false},
		{"require_approval", "hubspot", "read", manifest.RiskLow, arxerr.ConnectorNotDeclared, manifest.RiskLow, "", false},
		{"record", "crm", "read", manifest.RiskLow, "", manifest.RiskLow, "", false},
		{"record", "crm", "read", manifest.RiskHigh, "", manifest.RiskHigh, "", true},
		{"record", "crm", "export", manifest.RiskLow, "", manifest.RiskMedium, manifest.DriftRiskUnderdeclared, false},
		{"require_approval", "crm", "export", manifest.RiskLow, "", manifest.RiskMedium, manifest.DriftRiskUnderdeclared, true},
		{"record", "crm", "wipe", manifest.RiskMedium, "", manifest.RiskMedium, manifest.DriftUndeclaredAction, false},
		{"require_approval", "crm", "wipe", manifest.RiskLow, "", manifest.RiskLow, manifest.DriftUndeclaredAction, true},
		{"refuse", "crm", "wipe", manifest.RiskLow, arxerr.ActionNotDeclared, manifest.RiskLow, "", false},
		{"refuse", "crm", "export", manifest.RiskLow, "", manifest.RiskMedium, manifest.DriftRiskUnderdeclared, false},
	} {
		t.Run(tc.policy+"/"+tc.conn+"/"+tc.act+"/"+tc.declared.String(), func(t *testing.T) {
			m, err := manifest.Parse([]byte(base + tc.policy + "\n"))
			if err != nil {
				t.Fatal(err)
			}
			d := m.Decide(tc.conn, tc.act, tc.declared)
			var rules []string
			for _, dr := range d.Drift {
				rules = append(rules, dr.Rule)
				if dr.Policy != manifest.DriftPolicy(tc.policy) || dr.Data()["rule"] != dr.Rule {
					t.Errorf("drift %+v", dr)
				}
			}
			if d.Refusal != tc.refusal || d.Risk != tc.risk || strings.Join(rules, ",") != tc.drift || d.NeedsApproval != tc.approval {
				t.Errorf("Decide = %+v", d)
			}
			if (d.Refusal != "") != (d.Message != "") {
				t.Errorf("refusal %q with message %q", d.Refusal, d.Message)
			}
		})
	}
}
