package runtime

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/arxsec/arx/internal/store"
	"github.com/arxsec/arx/manifest"
	"github.com/arxsec/arx/record"
)

func TestReplayChanges(t *testing.T) {
	const ref, pend, ok = store.CallRefused, store.CallPending, store.CallApproved
	for _, tc := range []struct {
		was, would         string
		wasDrift, wouldDft []string
		want               []string
	}{
		{ok, ok, nil, nil, nil},
		{ok, ref, nil, nil, []string{ChangeRefused}},
		{pend, ref, nil, nil, []string{ChangeRefused}},
		{ref, ok, nil, nil, []string{ChangeNoLongerRefused}},
		{ref, pend, nil, nil, []string{ChangeNoLongerRefused}},
		{ok, pend, nil, nil, []string{ChangeHeld}},
		{pend, ok, nil, nil, []string{ChangeNoLongerHeld}},
		{ok, ok, nil, []string{"off_hours"}, []string{ChangeNewDrift}},
		{ok, ok, []string{"off_hours"}, nil, []string{ChangeDriftGone}},
		{ok, ok, []string{"off_hours"}, []string{"off_hours"}, nil},
		{ok, ok, []string{"off_hours"}, []string{"calls_per_day"}, []string{ChangeNewDrift, ChangeDriftGone}},
		// A refusal says it all: no drift change on top.
		{ok, ref, nil, []string{"undeclared_action"}, []string{ChangeRefused}},
		{ref, ok, []string{"undeclared_action"}, nil, []string{ChangeNoLongerRefused}},
		{ref, ref, []string{"undeclared_action"}, []string{"undeclared_action"}, nil},
	} {
		if got := replayChanges(tc.was, tc.would, tc.wasDrift, tc.wouldDft); !slices.Equal(got, tc.want) {
			t.Errorf("replayChanges(%s, %s, %v, %v) = %v, want %v", tc.was, tc.would, tc.wasDrift, tc.wouldDft, got, tc.want)
		}
	}
}

const replayBase = `apiVersion: arx.dev/v1
kind: JobDescription
agent: {name: sales, owner: dana@example.com}
scope:
  connectors:
    crm:
      actions:
        account.read: {risk: low}
        account.delete: {risk: high}
approval: {approvers: [boss@example.com]}
budget: {max_call_duration: 1m}
termination: {notify: []}
`

func TestReplay(t *testing.T) {
	at := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	ref := func(call, conn, action, risk string) record.CallRef {
		return record.CallRef{Agent: "a", Call: call, Connector: conn, Action: action, Risk: risk}
	}
	low := record.Ask{DeclaredRisk: "low"}
	var log []*record.Entry
	add := func(e *record.Entry) { e.Time = at; at = at.Add(time.Minute); log = append(log, e) }
	// A read that went ahead, a delete that waited and was approved, an
	// export of an undeclared connector refused, another read before
	// --since.
	add(record.CredentialIssued(ref("c0", "crm", "account.read", "low"), "agent:a", at, low, at.Add(time.Minute), ""))
	add(record.CallCompleted(ref("c0", "crm", "account.read", "low"), "agent:a", at, record.Outcome{Outcome: "success"}))
	since := at
	add(record.CredentialIssued(ref("c1", "crm", "account.read", "low"), "agent:a", at, low, at.Add(time.Minute), ""))
	add(record.CallCompleted(ref("c1", "crm", "account.read", "low"), "agent:a", at, record.Outcome{Outcome: "success"}))
	add(record.CallRequested(ref("c2", "crm", "account.delete", "high"), "agent:a", at, record.Ask{DeclaredRisk: "high"}))
	add(record.ApprovalGranted(ref("c2", "crm", "account.delete", "high"), "user:boss@example.com", at, "boss@example.com", ""))
	add(record.CredentialIssued(ref("c2", "crm", "account.delete", "high"), "user:boss@example.com", at, record.Ask{DeclaredRisk: "high"}, at.Add(time.Minute), "boss@example.com"))
	add(record.CallCompleted(ref("c2", "crm", "account.delete", "high"), "agent:a", at, record.Outcome{Outcome: "success"}))
	add(record.CredentialRefused(ref("c3", "hubspot", "contact.export", "low"), "agent:a", at, low, "manifest.connector_not_declared", "no"))
	add(record.CredentialRefused(ref("c4", "crm", "account.read", "low"), "agent:a", at, low, "request.invalid", "bad summary"))

	replay := func(yaml string) *ReplayReport {
		t.Helper()
		m, err := manifest.Parse([]byte(yaml))
		if err != nil {
			t.Fatal(err)
		}
		r := &Replayer{M: m, Since: since}
		for _, e := range log {
			r.Add(e)
		}
		return r.Report()
	}
	same := replay(replayBase)
	if same.Calls != 3 || same.Changed != 0 || same.NotReplay != 1 {
		t.Errorf("the same job description: %+v", same)
	}
	changed := replay(`apiVersion: arx.dev/v1
kind: JobDescription
agent: {name: sales, owner: dana@example.com}
scope:
  connectors:
    crm:
      actions:
        account.delete: {risk: medium}
    hubspot:
      actions:
        contact.export: {risk: low}
approval: {approvers: [boss@example.com]}
budget: {max_call_duration: 1m}
termination: {notify: []}
on_drift: refuse
`)
	// The delete still waits: the code declares it high, whatever the job
	// description says.
	want := map[string]int64{ChangeRefused: 1, ChangeNoLongerRefused: 1}
	if changed.Calls != 3 || changed.Changed != 2 || len(changed.ByChange) != 2 {
		t.Fatalf("changed: %+v", changed)
	}
	for k, n := range want {
		if changed.ByChange[k] != n {
			t.Errorf("%s: %d, want %d (%+v)", k, changed.ByChange[k], n, changed.ByChange)
		}
	}
	if len(changed.Examples) != 2 || changed.Examples[0].Call != "c1" || changed.Examples[0].Would != "refused (manifest.action_not_declared)" {
		t.Errorf("examples: %+v", changed.Examples)
	}
	if got := changed.Summary(); len(got) != 2 {
		t.Errorf("summary: %q", got)
	}
	held := replay(`apiVersion: arx.dev/v1
kind: JobDescription
agent: {name: sales, owner: dana@example.com}
scope:
  connectors:
    crm:
      actions:
        account.delete: {risk: high}
approval: {approvers: [boss@example.com]}
budget: {max_call_duration: 1m}
termination: {notify: []}
on_drift: require_approval
`)
	// The read waits for an approver now, as drift; the export is still
	// refused (a connector off the job description always is).
	if held.Changed != 1 || len(held.ByChange) != 2 || held.ByChange[ChangeHeld] != 1 || held.ByChange[ChangeNewDrift] != 1 {
		t.Errorf("held: %+v", held)
	}
}

// TestReplayBudget: spend caps are replayed with what the calls used,
// priced as the new job description prices them.
func TestReplayBudget(t *testing.T) {
	at := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	var log []*record.Entry
	add := func(e *record.Entry) { e.Time = at; at = at.Add(time.Minute); log = append(log, e) }
	for _, id := range []string{"r1", "r2"} {
		ref := record.CallRef{Agent: "a", Call: id, Connector: "crm", Action: "account.read", Risk: "low"}
		add(record.CredentialIssued(ref, "agent:a", at, record.Ask{DeclaredRisk: "low"}, at.Add(time.Minute), ""))
		add(record.CallCompleted(ref, "agent:a", at, record.Outcome{Outcome: "success", Tokens: 100, Amount: "0.60 USD", Charged: "0.60 USD"}))
	}
	const yaml = `apiVersion: arx.dev/v1
kind: JobDescription
agent: {name: sales, owner: dana@example.com}
scope:
  connectors:
    crm:
      actions:
        account.read: {risk: low%s}
approval: {approvers: [boss@example.com]}
budget:
  max_call_duration: 1m
  spend: {per_day: 0.50 USD}
termination: {notify: []}
`
	for _, tc := range []struct{ name, cost string }{
		{"reported amounts", ""},
		{"declared costs", ", cost: 0.30 USD"},
	} {
		m, err := manifest.Parse(fmt.Appendf(nil, yaml, tc.cost))
		if err != nil {
			t.Fatal(err)
		}
		r := &Replayer{M: m}
		for _, e := range log {
			r.Add(e)
		}
		rep := r.Report()
		if rep.Calls != 2 || rep.Changed != 1 || rep.ByChange[ChangeHeld] != 1 || rep.ByChange[ChangeNewDrift] != 1 ||
			len(rep.Examples) != 1 || rep.Examples[0].Call != "r2" || !slices.Equal(rep.Examples[0].Drift, []string{DriftSpendPerDay}) {
			t.Errorf("%s: %+v", tc.name, rep)
		}
	}
}
