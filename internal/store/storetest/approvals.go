package storetest

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/arxsec/arx/internal/store"
	"github.com/arxsec/arx/record"
)

// testApprovals: an approval as approval.requested made it (approvers and
// delegates, its time, its expiry) and its decision as the deciding entry
// recorded it, read in and out of transactions; Approvals lists by status,
// newest request first; OverdueApprovals lists pending approvals whose
// expiry is strictly before a time.
func testApprovals(t *testing.T, s store.Store) {
	ctx := t.Context()
	hire(t, s, "a", "b")
	tq := at(-time.Hour)
	var aps []store.Approval
	var es []*record.Entry
	for i, x := range []struct {
		id, agent string
		expires   time.Time
		delegates []string
	}{
		{"ap-1", "a", tq.Add(-time.Minute), nil},
		{"ap-2", "a", tq.Add(-time.Microsecond), []string{"lee@example.com"}},
		{"ap-3", "b", tq, nil},
		{"ap-4", "b", tq.Add(time.Minute).In(zone), []string{"lee@example.com", "kim@example.com"}},
		{"ap-5", "a", tq.Add(-time.Hour), nil},
	} {
		T := at(-2*time.Hour + time.Duration(i)*time.Second).In(zone)
		r := ref(x.agent, x.id)
		es = append(es, record.CallRequested(r, "agent:"+x.agent, T.Add(-time.Millisecond), ask(x.id)),
			record.ApprovalRequested(r, "agent:"+x.agent, T, []string{"alice@example.com", "Bob@example.com"}, x.delegates, x.expires))
		aps = append(aps, store.Approval{CallID: x.id, AgentID: x.agent, Status: store.ApprovalPending,
			Approvers: append([]string{"alice@example.com", "Bob@example.com"}, x.delegates...), RequestedAt: T, ExpiresAt: x.expires})
	}
	update(t, s, func(tx store.Tx) error {
		if err := appendAll(es...)(tx); err != nil {
			return err
		}
		got, err := tx.Approval("ap-1")
		if err != nil {
			return fmt.Errorf("tx.Approval after approval.requested in the same Update: %w", err)
		}
		checkSame(t, "tx.Approval(ap-1)", *got, aps[0])
		return nil
	})
	for _, want := range aps {
		got, err := s.Approval(ctx, want.CallID)
		if err != nil {
			t.Fatalf("Approval(%s): %v", want.CallID, err)
		}
		checkSame(t, "Approval("+want.CallID+")", *got, want)
		// The call waits until the approval expires.
		if c, err := s.Call(ctx, want.CallID); err != nil || c.Status != store.CallPending || !c.ExpiresAt.Equal(want.ExpiresAt) {
			t.Errorf("Call(%s) = %+v, %v; want pending until %s", want.CallID, c, err, show(want.ExpiresAt))
		}
	}
	_, err := s.Approval(ctx, "nope")
	mustNotFound(t, "Approval(nope)", err)
	probe(t, s, func(tx store.Tx) error {
		_, err := tx.Approval("nope")
		mustNotFound(t, "tx.Approval(nope)", err)
		return nil
	})

	// Decide two: the deciding entry's actor, time and reason.
	decided := at(-90 * time.Minute).In(zone)
	update(t, s, appendAll(cat(grant("b", "ap-3", decided),
		one(record.ApprovalSigned(ref("a", "ap-5"), "user:alice@example.com", decided, record.DecisionDeny, "alice@example.com", "not this one",
			&record.Signature{CredentialID: []byte{7, 7}, AuthenticatorData: []byte{1}, ClientData: []byte("{}"), Signature: []byte{2}, DecidedAt: decided})))...))
	grantAp := aps[2]
	grantAp.Status, grantAp.DecidedBy, grantAp.DecidedAt, grantAp.Reason = store.ApprovalGranted, "user:dana@example.com", &decided, "looks right"
	grantAp.Grants = []string{"dana@example.com"}
	denyAp := aps[4]
	denyAp.Status, denyAp.DecidedBy, denyAp.DecidedAt, denyAp.Reason = store.ApprovalDenied, "user:alice@example.com", &decided, "not this one"
	denyAp.Passkey = record.EncodeID([]byte{7, 7}) // the denial was signed with a passkey
	for _, want := range []store.Approval{grantAp, denyAp} {
		got, err := s.Approval(ctx, want.CallID)
		if err != nil {
			t.Fatalf("Approval(%s): %v", want.CallID, err)
		}
		checkSame(t, "Approval("+want.CallID+") decided", *got, want)
		probe(t, s, func(tx store.Tx) error {
			got, err := tx.Approval(want.CallID)
			if err != nil {
				return err
			}
			checkSame(t, "tx.Approval("+want.CallID+") decided", *got, want)
			return nil
		})
	}

	// Approvals lists by status ("" for all), newest request first.
	for _, tc := range []struct {
		status string
		limit  int
		want   []string
	}{
		{"", 10, []string{"ap-5", "ap-4", "ap-3", "ap-2", "ap-1"}},
		{"", 2, []string{"ap-5", "ap-4"}},
		{store.ApprovalPending, 10, []string{"ap-4", "ap-2", "ap-1"}},
		{store.ApprovalPending, 1, []string{"ap-4"}},
		{store.ApprovalGranted, 10, []string{"ap-3"}},
		{store.ApprovalDenied, 10, []string{"ap-5"}},
		{store.ApprovalExpired, 10, nil},
	} {
		got, err := s.Approvals(ctx, tc.status, tc.limit)
		if err != nil {
			t.Fatalf("Approvals(%q, %d): %v", tc.status, tc.limit, err)
		}
		if ids := approvalIDs(got); !slices.Equal(ids, tc.want) {
			t.Errorf("Approvals(%q, %d) = %q, want %q", tc.status, tc.limit, ids, tc.want)
		}
	}
	if got, err := s.Approvals(ctx, store.ApprovalGranted, 1); err == nil && len(got) == 1 {
		checkSame(t, "Approvals(granted)[0]", got[0], grantAp)
	}
	if got, err := s.Approvals(ctx, store.ApprovalPending, 1); err == nil && len(got) == 1 {
		checkSame(t, "Approvals(pending)[0]", got[0], aps[3])
	}

	// OverdueApprovals: pending, expiry strictly before t.
	for _, tc := range []struct {
		at   time.Time
		want []string
	}{
		{tq.Add(-time.Minute), nil},
		{tq.Add(-time.Minute + 1), []string{"ap-1"}},
		{tq.Add(-time.Microsecond), []string{"ap-1"}},
		{tq, []string{"ap-1", "ap-2"}},
		{tq.Add(time.Hour), []string{"ap-1", "ap-2", "ap-4"}}, // ap-3 and ap-5 are decided
	} {
		got, err := s.OverdueApprovals(ctx, tc.at.In(zone), 10)
		if err != nil {
			t.Fatalf("OverdueApprovals(%v): %v", tc.at, err)
		}
		ids := approvalIDs(got)
		slices.Sort(ids)
		if !slices.Equal(ids, tc.want) {
			t.Errorf("OverdueApprovals(%v) = %q, want %q", tc.at, ids, tc.want)
		}
		for _, a := range got {
			if i := slices.IndexFunc(aps, func(x store.Approval) bool { return x.CallID == a.CallID }); i >= 0 {
				checkSame(t, "OverdueApprovals()["+a.CallID+"]", a, aps[i])
			}
		}
	}
	if got, err := s.OverdueApprovals(ctx, tq.Add(time.Hour), 2); err != nil || len(got) != 2 {
		t.Errorf("OverdueApprovals(limit 2) = %d approvals, %v; want 2", len(got), err)
	}
}

func approvalIDs(as []store.Approval) []string {
	var ids []string
	for _, a := range as {
		ids = append(ids, a.CallID)
	}
	return ids
}
