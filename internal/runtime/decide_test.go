package runtime

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/arxsec/arx/arxerr"
	"github.com/arxsec/arx/internal/store"
	"github.com/arxsec/arx/manifest"
	"github.com/arxsec/arx/record"
)

const decideManifest = `apiVersion: arx.dev/v1
kind: JobDescription
agent:
  name: decide
  owner: dana@example.com
scope:
  connectors:
    crm:
      actions:
        account.read: {risk: low}
        account.update: {risk: high, max_duration: 30s}
approval:
  approvers: [dana@example.com]
  delegates: [lee@example.com]
  timeout: 15m
budget:
  calls_per_day: 3
  max_call_duration: 2m
  max_concurrent: 2
  active_hours:
    timezone: Europe/Berlin
    days: [mon, tue, wed, thu, fri]
    start: "07:00"
    end: "20:00"
termination:
  notify: [dana@example.com]
  revoke: all
on_drift: %s
`

func decideFixture(t *testing.T, onDrift string) *manifest.Manifest {
	t.Helper()
	m, err := manifest.Parse(fmt.Appendf(nil, decideManifest, onDrift))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// Thursday 3 December 2026, 10:00 in Berlin: inside the active hours.
var (
	berlin, _ = time.LoadLocation("Europe/Berlin")
	working   = time.Date(2026, 12, 3, 10, 0, 0, 0, berlin)
)

// counts is an agent's counts with calls already made today, open ones, and
// calls in the current minute.
func counts(now time.Time, today, open, thisMinute int) store.Counts {
	var c store.Counts
	for range today {
		c.Add(now.Add(-time.Hour), true)
	}
	for range thisMinute {
		c.Add(now, false) // refused ones: they count toward the rate, not the day
	}
	c.Open = open
	return c
}

func TestDecideCall(t *testing.T) {
	for _, tc := range []struct {
		name             string
		onDrift          string
		connector        string
		action           string
		declared         manifest.Risk
		now              time.Time
		counts           store.Counts
		wantStatus       string
		wantRefusal      arxerr.Code
		wantDrift        []string
		wantRisk         string
		wantExpiresAfter time.Duration
		invalid          bool
		unmet            string // the otherwise of an unmet condition // the request's content is unfit (validate's verdict)
	}{
		{name: "unfit content is refused whatever the manifest allows", onDrift: "record", connector: "crm", action: "account.read", now: working,
			invalid: true, wantStatus: store.CallRefused, wantRefusal: arxerr.BadRequest, wantRisk: "low"},
		{name: "unfit content is refused before drift is looked at", onDrift: "refuse", connector: "crm", action: "account.read", now: working.Add(12 * time.Hour),
			invalid: true, wantStatus: store.CallRefused, wantRefusal: arxerr.BadRequest, wantRisk: "low"},
		{name: "declared, low risk", onDrift: "record", connector: "crm", action: "account.read", now: working,
			wantStatus: store.CallApproved, wantRisk: "low", wantExpiresAfter: 2 * time.Minute},
		{name: "high risk waits for an approver", onDrift: "record", connector: "crm", action: "account.update", now: working,
			wantStatus: store.CallPending, wantRisk: "high", wantDrift: []string{manifest.DriftRiskUnderdeclared}, wantExpiresAfter: 15 * time.Minute},
		{name: "declared high risk, no drift", onDrift: "record", connector: "crm", action: "account.update", declared: manifest.RiskHigh, now: working,
			wantStatus: store.CallPending, wantRisk: "high", wantExpiresAfter: 15 * time.Minute},
		{name: "undeclared connector is refused whatever on_drift says", onDrift: "record", connector: "hubspot", action: "account.read", now: working,
			wantStatus: store.CallRefused, wantRefusal: arxerr.ConnectorNotDeclared, wantRisk: "low"},
		{name: "undeclared action is drift under record", onDrift: "record", connector: "crm", action: "account.delete", now: working,
			wantStatus: store.CallApproved, wantDrift: []string{manifest.DriftUndeclaredAction}, wantRisk: "low", wantExpiresAfter: 2 * time.Minute},
		{name: "undeclared action is refused under refuse", onDrift: "refuse", connector: "crm", action: "account.delete", now: working,
			wantStatus: store.CallRefused, wantRefusal: arxerr.ActionNotDeclared, wantRisk: "low"},
		{name: "off hours is drift", onDrift: "record", connector: "crm", action: "account.read", now: working.Add(12 * time.Hour),
			wantStatus: store.CallApproved, wantDrift: []string{DriftOffHours}, wantRisk: "low", wantExpiresAfter: 2 * time.Minute},
		{name: "off hours on a weekend", onDrift: "record", connector: "crm", action: "account.read", now: working.Add(48 * time.Hour),
			wantStatus: store.CallApproved, wantDrift: []string{DriftOffHours}, wantRisk: "low", wantExpiresAfter: 2 * time.Minute},
		{name: "off hours held for approval", onDrift: "require_approval", connector: "crm", action: "account.read", now: working.Add(12 * time.Hour),
			wantStatus: store.CallPending, wantDrift: []string{DriftOffHours}, wantRisk: "low", wantExpiresAfter: 15 * time.Minute},
		{name: "off hours refused", onDrift: "refuse", connector: "crm", action: "account.read", now: working.Add(12 * time.Hour),
			wantStatus: store.CallRefused, wantRefusal: arxerr.DriftRefused, wantDrift: []string{DriftOffHours}, wantRisk: "low"},
		{name: "calls per day reached", onDrift: "record", connector: "crm", action: "account.read", now: working, counts: counts(working, 3, 0, 0),
			wantStatus: store.CallApproved, wantDrift: []string{DriftCallsPerDay}, wantRisk: "low", wantExpiresAfter: 2 * time.Minute},
		{name: "calls of yesterday do not count", onDrift: "record", connector: "crm", action: "account.read", now: working.Add(-9*time.Hour - time.Minute + 10*time.Hour),
			counts: counts(working.Add(-10*time.Hour), 3, 0, 0), wantStatus: store.CallApproved, wantRisk: "low", wantExpiresAfter: 2 * time.Minute},
		{name: "max concurrent reached", onDrift: "record", connector: "crm", action: "account.read", now: working, counts: counts(working, 0, 2, 0),
			wantStatus: store.CallApproved, wantDrift: []string{DriftMaxConcurrent}, wantRisk: "low", wantExpiresAfter: 2 * time.Minute},
		{name: "max concurrent refused", onDrift: "refuse", connector: "crm", action: "account.read", now: working, counts: counts(working, 0, 2, 0),
			wantStatus: store.CallRefused, wantRefusal: arxerr.DriftRefused, wantDrift: []string{DriftMaxConcurrent}, wantRisk: "low"},
		{name: "rate spike on the call that crosses it", onDrift: "record", connector: "crm", action: "account.read", now: working,
			counts: counts(working, 0, 0, SpikeMinCalls), wantStatus: store.CallApproved, wantDrift: []string{DriftRateSpike},
			wantRisk: "low", wantExpiresAfter: 2 * time.Minute},
		{name: "unmet condition refused", onDrift: "record", connector: "crm", action: "account.read", now: working, unmet: manifest.OtherwiseRefuse,
			wantStatus: store.CallRefused, wantRefusal: arxerr.ConditionNotMet, wantRisk: "low"},
		{name: "unmet condition held for approval", onDrift: "record", connector: "crm", action: "account.read", now: working,
			unmet: manifest.OtherwiseRequireApproval, wantStatus: store.CallPending, wantRisk: "low", wantExpiresAfter: 15 * time.Minute},
		{name: "unmet condition is drift", onDrift: "record", connector: "crm", action: "account.read", now: working, unmet: manifest.OtherwiseDrift,
			wantStatus: store.CallApproved, wantDrift: []string{manifest.DriftConditionNotMet}, wantRisk: "low", wantExpiresAfter: 2 * time.Minute},
		{name: "unmet condition as drift, refused by on_drift", onDrift: "refuse", connector: "crm", action: "account.read", now: working,
			unmet: manifest.OtherwiseDrift, wantStatus: store.CallRefused, wantRefusal: arxerr.DriftRefused,
			wantDrift: []string{manifest.DriftConditionNotMet}, wantRisk: "low"},
		{name: "rate spike reported once a minute", onDrift: "record", connector: "crm", action: "account.read", now: working,
			counts: counts(working, 0, 0, SpikeMinCalls+1), wantStatus: store.CallApproved, wantRisk: "low", wantExpiresAfter: 2 * time.Minute},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := decideFixture(t, tc.onDrift)
			if tc.declared == 0 {
				tc.declared = manifest.RiskLow // what validate makes of ""
			}
			var invalid *arxerr.Error
			if tc.invalid {
				invalid = arxerr.New(arxerr.BadRequest, "summary holds a NUL character")
			}
			var unmet *manifest.Condition
			if tc.unmet != "" {
				unmet = &manifest.Condition{Expr: "args.amount <= 500", Otherwise: tc.unmet}
			}
			d := decideCall(callInput{M: m, Req: CallRequest{Connector: tc.connector, Action: tc.action, IdempotencyKey: "k"},
				Declared: tc.declared, Invalid: invalid, Now: tc.now, Counts: tc.counts, Unmet: unmet})
			if d.Status != tc.wantStatus {
				t.Errorf("status = %s, want %s", d.Status, tc.wantStatus)
			}
			var code arxerr.Code
			if d.Refusal != nil {
				code = d.Refusal.Code
			}
			if code != tc.wantRefusal {
				t.Errorf("refusal = %q, want %q", code, tc.wantRefusal)
			}
			var rules []string
			for _, dr := range d.Drift {
				rules = append(rules, dr.Rule)
			}
			if !slices.Equal(rules, tc.wantDrift) {
				t.Errorf("drift = %v, want %v", rules, tc.wantDrift)
			}
			if d.Risk.String() != tc.wantRisk {
				t.Errorf("risk = %s, want %s", d.Risk, tc.wantRisk)
			}
			if tc.wantStatus == store.CallRefused {
				if !d.ExpiresAt.Equal(tc.now) {
					t.Errorf("a refused call expires at %v, want at once", d.ExpiresAt)
				}
			} else if got := d.ExpiresAt.Sub(tc.now); got != tc.wantExpiresAfter {
				t.Errorf("expires after %v, want %v", got, tc.wantExpiresAfter)
			}
		})
	}
}

// TestCallEntries: what records each kind of decision, in order.
func TestCallEntries(t *testing.T) {
	m := decideFixture(t, "record")
	c := &store.Call{ID: "c1", AgentID: "a1", Connector: "crm", Action: "account.update", DeclaredRisk: "low", Risk: "high",
		IdempotencyKey: "k", Summary: "acct 7", RaisedBy: "user:lee@example.com", CreatedAt: working}
	for _, tc := range []struct {
		status string
		drift  int
		want   []string
	}{
		{store.CallApproved, 0, []string{record.TypeCredentialIssued}},
		{store.CallPending, 1, []string{record.TypeDriftDetected, record.TypeCallRequested, record.TypeApprovalRequested}},
		{store.CallRefused, 2, []string{record.TypeDriftDetected, record.TypeDriftDetected, record.TypeCredentialRefused}},
	} {
		d := callDecision{Status: tc.status, ExpiresAt: working.Add(time.Minute), Drift: make([]manifest.Drift, tc.drift)}
		if tc.status == store.CallRefused {
			d.Refusal = arxerr.New(arxerr.DriftRefused, "no")
		}
		var got []string
		for _, e := range callEntries(c, d, m, "agent:a1") {
			got = append(got, e.Type)
			if e.Call != "c1" || e.Agent != "a1" || e.Risk != "high" || !e.Time.Equal(working) {
				t.Errorf("%s: entry %+v", tc.status, e)
			}
			if e.Type != record.TypeDriftDetected && e.Type != record.TypeApprovalRequested && record.AskOf(e).RaisedBy != "user:lee@example.com" {
				t.Errorf("%s: %s does not say who raised the call", tc.status, e.Type)
			}
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("%s: entries %v, want %v", tc.status, got, tc.want)
		}
	}
}

func TestNoticeRoutes(t *testing.T) {
	for _, tc := range []struct {
		name     string
		targets  []string
		channels []string
		want     string
	}{
		{"a person, no channel", []string{"dana@example.com"}, nil, "[{dana@example.com []}]"},
		{"a person, two channels", []string{"dana@example.com"}, []string{"webhook", "Slack"}, "[{dana@example.com [webhook Slack]}]"},
		{"an endpoint keeps its secret path", []string{"https://hooks.example.com/T0/B0/secret?token=x"}, nil, "[{https://hooks.example.com/… [endpoint]}]"},
		{"an endpoint without a path", []string{"https://hooks.example.com"}, []string{"Slack"}, "[{https://hooks.example.com [endpoint]}]"},
		{"nobody", nil, []string{"Slack"}, "[]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := fmt.Sprint(noticeRoutes(tc.targets, tc.channels)); got != tc.want {
				t.Errorf("got %s, want %s", got, tc.want)
			}
		})
	}
}

func TestSignatureRule(t *testing.T) {
	for _, tc := range []struct {
		required, signed bool
		want             arxerr.Code // "" allowed
	}{
		{false, false, ""},
		{false, true, ""},
		{true, true, ""},
		{true, false, arxerr.PasskeyRequired},
	} {
		err := signatureRule(tc.required, tc.signed)
		var ae *arxerr.Error
		if tc.want == "" && err != nil || tc.want != "" && (!errors.As(err, &ae) || ae.Code != tc.want) {
			t.Errorf("signatureRule(required %v, signed %v) = %v, want %q", tc.required, tc.signed, err, tc.want)
		}
	}
}

func TestRelyingParty(t *testing.T) {
	for _, tc := range []struct {
		url, rpID, origin string
		err               string
	}{
		{"https://arx.example.com", "arx.example.com", "https://arx.example.com", ""},
		{"https://ARX.example.com:8443/", "arx.example.com", "https://ARX.example.com:8443", ""},
		{"http://localhost:8080", "localhost", "http://localhost:8080", ""},
		{"http://console.localhost:8080", "console.localhost", "http://console.localhost:8080", ""},
		{"http://127.0.0.1:8080", "", "", "IP address"},
		{"https://[::1]:8443", "", "", "IP address"},
		{"http://arx.example.com", "", "", "https"},
		{"", "", "", "no public URL"},
	} {
		rpID, origin, err := relyingParty(tc.url)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("relyingParty(%q) = %v, want an error saying %q", tc.url, err, tc.err)
			}
			continue
		}
		if err != nil || rpID != tc.rpID || origin != tc.origin {
			t.Errorf("relyingParty(%q) = %q, %q, %v; want %q, %q", tc.url, rpID, origin, err, tc.rpID, tc.origin)
		}
	}
}

func TestParseArgs(t *testing.T) {
	for _, tc := range []struct {
		in, text, err string
	}{
		{``, ``, ``},
		{`null`, ``, ``},
		{`{"b": 2, "a": "x", "n": 1.5, "big": 9007199254740993}`, `{"a":"x","b":2,"big":9007199254740993,"n":1.5}`, ``},
		{` {"nested": {"list": [1, 2.5, "three", null, true]}} `, `{"nested":{"list":[1,2.5,"three",null,true]}}`, ``},
		{`[1, 2]`, ``, `not a JSON object`},
		{`"text"`, ``, `not a JSON object`},
		{`{"a": 1} {"b": 2}`, ``, `not valid JSON`},
		{`{"a": `, ``, `not valid JSON`},
		{`{"a": 1e999}`, ``, `out of range`},
		{`{"a":` + strings.Repeat(`[`, 10) + strings.Repeat(`]`, 10) + `}`, ``, `nested more than 8 deep`},
		{`{"a": "` + strings.Repeat("x", MaxArgsBytes) + `"}`, ``, `larger than`},
	} {
		got, err := parseArgs([]byte(tc.in))
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("parseArgs(%.40q) = %v, want an error with %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || got.text != tc.text || (tc.text == "") != (got.hash == "") {
			t.Errorf("parseArgs(%.40q) = %q %q, %v; want %q", tc.in, got.text, got.hash, err, tc.text)
		}
	}
	a, _ := parseArgs([]byte(`{"n": 9007199254740993, "f": 0.5}`))
	if a.value["n"] != int64(9007199254740993) || a.value["f"] != 0.5 {
		t.Errorf("values: %#v", a.value)
	}
}

func TestQuorumRule(t *testing.T) {
	for _, tc := range []struct {
		quorum int
		grants []string
		email  string
		grant  bool
		want   int
		enough bool
		err    arxerr.Code
	}{
		{0, nil, "a@x", true, 1, true, ""},
		{1, nil, "a@x", true, 1, true, ""},
		{2, nil, "a@x", true, 1, false, ""},
		{2, []string{"a@x"}, "b@x", true, 2, true, ""},
		{2, []string{"a@x"}, "A@X", true, 1, false, arxerr.ApprovalDecided},
		{2, []string{"a@x"}, "a@x", false, 1, false, arxerr.ApprovalDecided},
		{3, []string{"a@x"}, "b@x", true, 2, false, ""},
		{2, []string{"a@x"}, "b@x", false, 1, false, ""},
	} {
		n, enough, err := quorumRule(&store.Approval{Quorum: tc.quorum, Grants: tc.grants}, tc.email, tc.grant)
		var ae *arxerr.Error
		if n != tc.want || enough != tc.enough || (tc.err == "") != (err == nil) || err != nil && (!errors.As(err, &ae) || ae.Code != tc.err) {
			t.Errorf("quorumRule(%d, %v, %s, %v) = %d, %v, %v; want %d, %v, %q", tc.quorum, tc.grants, tc.email, tc.grant, n, enough, err, tc.want, tc.enough, tc.err)
		}
	}
}

const capsManifest = `apiVersion: arx.dev/v1
kind: JobDescription
agent:
  name: caps
  owner: dana@example.com
scope:
  connectors:
    llm:
      actions:
        search: {risk: low, cost: 0.50 USD}
        read: {risk: low}
approval:
  approvers: [dana@example.com]
budget:
  max_call_duration: 2m
  spend:
    per_day: 50 USD
  tokens:
    per_day: 1000
  on_budget: %s
  active_hours:
    timezone: UTC
    start: "06:00"
    end: "22:00"
termination:
  notify: [dana@example.com]
on_drift: %s
`

// TestDecideBudgetCaps: the day's spend and tokens against their caps,
// handled as on_budget says (not on_drift).
func TestDecideBudgetCaps(t *testing.T) {
	noon := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	spent := func(micros, tokens int64, at time.Time) store.Counts {
		var c store.Counts
		c.Charge(at, micros, tokens)
		return c
	}
	for _, tc := range []struct {
		name, onBudget, onDrift, action string
		now                             time.Time
		counts                          store.Counts
		wantStatus                      string
		wantRefusal                     arxerr.Code
		wantDrift                       []string
		wantCost                        string
	}{
		{name: "under the cap, the declared cost is charged", onBudget: "require_approval", onDrift: "record", action: "search", now: noon,
			counts: spent(10_000_000, 0, noon.Add(-time.Hour)), wantStatus: store.CallApproved, wantCost: "0.50 USD"},
		{name: "a cost that would pass the cap is held", onBudget: "require_approval", onDrift: "record", action: "search", now: noon,
			counts: spent(49_800_000, 0, noon.Add(-time.Hour)), wantStatus: store.CallPending, wantDrift: []string{DriftSpendPerDay}, wantCost: "0.50 USD"},
		{name: "a cost that reaches the cap exactly passes", onBudget: "require_approval", onDrift: "record", action: "search", now: noon,
			counts: spent(49_500_000, 0, noon.Add(-time.Hour)), wantStatus: store.CallApproved, wantCost: "0.50 USD"},
		{name: "at the cap, a call without a declared cost is held", onBudget: "require_approval", onDrift: "record", action: "read", now: noon,
			counts: spent(50_000_000, 0, noon.Add(-time.Hour)), wantStatus: store.CallPending, wantDrift: []string{DriftSpendPerDay}},
		{name: "below the cap, a call without a declared cost passes", onBudget: "require_approval", onDrift: "record", action: "read", now: noon,
			counts: spent(49_999_999, 0, noon.Add(-time.Hour)), wantStatus: store.CallApproved},
		{name: "tokens at the cap hold the call", onBudget: "require_approval", onDrift: "record", action: "read", now: noon,
			counts: spent(0, 1000, noon.Add(-time.Hour)), wantStatus: store.CallPending, wantDrift: []string{DriftTokensPerDay}},
		{name: "both caps", onBudget: "require_approval", onDrift: "record", action: "search", now: noon,
			counts: spent(50_000_000, 5000, noon.Add(-time.Hour)), wantStatus: store.CallPending, wantDrift: []string{DriftSpendPerDay, DriftTokensPerDay}, wantCost: "0.50 USD"},
		{name: "on_budget refuse refuses, and records why", onBudget: "refuse", onDrift: "record", action: "search", now: noon,
			counts: spent(50_000_000, 0, noon.Add(-time.Hour)), wantStatus: store.CallRefused, wantRefusal: arxerr.BudgetExceeded, wantDrift: []string{DriftSpendPerDay}},
		{name: "yesterday's spend does not count", onBudget: "refuse", onDrift: "record", action: "search", now: noon,
			counts: spent(500_000_000, 9000, noon.Add(-13*time.Hour)), wantStatus: store.CallApproved, wantCost: "0.50 USD"},
		{name: "on_drift refuse does not refuse a call at a cap", onBudget: "require_approval", onDrift: "refuse", action: "read", now: noon,
			counts: spent(60_000_000, 0, noon), wantStatus: store.CallPending, wantDrift: []string{DriftSpendPerDay}},
		{name: "other drift under on_drift refuse is refused, the cap recorded too", onBudget: "require_approval", onDrift: "refuse", action: "read", now: noon.Add(11 * time.Hour),
			counts: spent(60_000_000, 0, noon), wantStatus: store.CallRefused, wantRefusal: arxerr.DriftRefused, wantDrift: []string{DriftOffHours, DriftSpendPerDay}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := manifest.Parse(fmt.Appendf(nil, capsManifest, tc.onBudget, tc.onDrift))
			if err != nil {
				t.Fatal(err)
			}
			a, _ := m.Action("llm", tc.action)
			d := decideCall(callInput{M: m, Req: CallRequest{Connector: "llm", Action: tc.action}, Declared: manifest.RiskLow, Now: tc.now,
				Counts: tc.counts, Cost: a.Cost})
			if d.Status != tc.wantStatus {
				t.Errorf("status %s, want %s", d.Status, tc.wantStatus)
			}
			var code arxerr.Code
			if d.Refusal != nil {
				code = d.Refusal.Code
			}
			if code != tc.wantRefusal {
				t.Errorf("refusal %v, want %s", d.Refusal, tc.wantRefusal)
			}
			var rules []string
			for _, dr := range d.Drift {
				rules = append(rules, dr.Rule)
			}
			if !slices.Equal(rules, tc.wantDrift) {
				t.Errorf("drift %v, want %v", rules, tc.wantDrift)
			}
			if d.Status != store.CallRefused && d.Cost != tc.wantCost {
				t.Errorf("cost %q, want %q", d.Cost, tc.wantCost)
			}
		})
	}
	// The refusal says what the caps are.
	m, _ := manifest.Parse(fmt.Appendf(nil, capsManifest, "refuse", "record"))
	a, _ := m.Action("llm", "search")
	d := decideCall(callInput{M: m, Req: CallRequest{Connector: "llm", Action: "search"}, Declared: manifest.RiskLow, Now: noon,
		Counts: spent(49_800_000, 1200, noon), Cost: a.Cost})
	want := "the day's spend is at its cap of 50.00 USD (spent 49.80 USD, this call costs 0.50 USD); and the day's tokens are at their cap of 1000 (used 1200)"
	if d.Refusal == nil || d.Refusal.Message != want {
		t.Errorf("refusal %v\nwant %s", d.Refusal, want)
	}
	if data := d.Drift[0].Data(); data["policy"] != "refuse" {
		t.Errorf("drift data %v", data)
	} else if f, _ := data["facts"].(map[string]any); f["spent_today"] != "49.80 USD" || f["limit"] != "50.00 USD" || f["cost"] != "0.50 USD" {
		t.Errorf("drift facts %v", f)
	}
}

// BenchmarkDecideShadow measures what a shadow job description adds to a
// call's decision: the second decideCall and the comparison (shadowRule),
// beside the enforced decision alone.
func BenchmarkDecideShadow(b *testing.B) {
	m, err := manifest.Parse(fmt.Appendf(nil, capsManifest, "require_approval", "record"))
	if err != nil {
		b.Fatal(err)
	}
	strict, err := manifest.Parse(fmt.Appendf(nil, strings.Replace(capsManifest, "        read: {risk: low}\n", "", 1), "refuse", "refuse"))
	if err != nil {
		b.Fatal(err)
	}
	noon := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	var c store.Counts
	c.Charge(noon, 10_000_000, 100)
	in := callInput{M: m, Req: CallRequest{Connector: "llm", Action: "read"}, Declared: manifest.RiskLow, Now: noon, Counts: c}
	ref := record.CallRef{Agent: "a", Call: "c", Connector: "llm", Action: "read", Risk: "low"}
	b.Run("enforced", func(b *testing.B) {
		for b.Loop() {
			decideCall(in)
		}
	})
	b.Run("enforced+shadow", func(b *testing.B) {
		for b.Loop() {
			d := decideCall(in)
			s := in
			s.M = strict
			if shadowRule(ref, noon, "sha256:x", d, decideCall(s)) == nil {
				b.Fatal("the shadow agrees")
			}
		}
	})
}
