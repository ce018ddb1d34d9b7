package storetest

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/arxsec/arx/internal/store"
	"github.com/arxsec/arx/record"
)

// A lifecycle is a call's life through its entries: the Updates that make
// it (steps), and the call and approval they leave, the fold's reading of
// them (internal/store/state).
type lifecycle struct {
	name string
	// steps are the entries of each Update, for agent a and call c, made
	// at times T(d).
	steps func(a, c string, T func(time.Duration) time.Time) [][]*record.Entry
	// call sets the fields of the asked call that its life changed.
	call func(c *store.Call, T func(time.Duration) time.Time)
	// approval sets the fields of the pending approval its life changed;
	// nil when the call has no approval.
	approval func(ap *store.Approval, T func(time.Duration) time.Time)
}

func one(es ...*record.Entry) []*record.Entry { return es }

var lifecycles = []lifecycle{
	{name: "issued",
		steps: func(a, c string, T func(time.Duration) time.Time) [][]*record.Entry {
			return [][]*record.Entry{{issue(a, c, T(0))}}
		},
		call: func(c *store.Call, T func(time.Duration) time.Time) {
			c.Status, c.ExpiresAt = store.CallApproved, T(ttl)
		}},
	{name: "refused",
		steps: func(a, c string, T func(time.Duration) time.Time) [][]*record.Entry {
			return [][]*record.Entry{{refuse(a, c, T(0))}}
		},
		call: func(c *store.Call, T func(time.Duration) time.Time) {
			done := T(0)
			c.Status, c.Refusal, c.ExpiresAt, c.CompletedAt = store.CallRefused, "manifest.connector_not_declared", T(0), &done
		}},
	{name: "requested",
		steps: func(a, c string, T func(time.Duration) time.Time) [][]*record.Entry {
			return [][]*record.Entry{request(a, c, T(0))}
		},
		call: func(c *store.Call, T func(time.Duration) time.Time) {
			c.Status, c.ExpiresAt = store.CallPending, T(decideWithin)
		},
		approval: func(ap *store.Approval, T func(time.Duration) time.Time) {}},
	{name: "granted, credential not issued yet",
		steps: func(a, c string, T func(time.Duration) time.Time) [][]*record.Entry {
			return [][]*record.Entry{request(a, c, T(0)), grant(a, c, T(time.Second))[:1]}
		},
		call: func(c *store.Call, T func(time.Duration) time.Time) {
			c.Status, c.ExpiresAt = store.CallPending, T(decideWithin)
		},
		approval: granted},
	{name: "granted",
		steps: func(a, c string, T func(time.Duration) time.Time) [][]*record.Entry {
			return [][]*record.Entry{request(a, c, T(0)), grant(a, c, T(time.Second))}
		},
		call: func(c *store.Call, T func(time.Duration) time.Time) {
			c.Status, c.ExpiresAt = store.CallApproved, T(time.Second+ttl)
		},
		approval: granted},
	{name: "granted, then completed",
		steps: func(a, c string, T func(time.Duration) time.Time) [][]*record.Entry {
			return [][]*record.Entry{request(a, c, T(0)), grant(a, c, T(time.Second)), {complete(a, c, T(2*time.Second))}}
		},
		call: func(c *store.Call, T func(time.Duration) time.Time) {
			done := T(2 * time.Second)
			c.Status, c.ExpiresAt, c.CompletedAt = store.CallCompleted, T(time.Second+ttl), &done
			c.Outcome, c.DurationMS = "success", 42
		},
		approval: granted},
	{name: "denied",
		steps: func(a, c string, T func(time.Duration) time.Time) [][]*record.Entry {
			return [][]*record.Entry{request(a, c, T(0)),
				{record.ApprovalDenied(ref(a, c), "user:dana@example.com", T(time.Second), "dana@example.com", "not today")}}
		},
		call: func(c *store.Call, T func(time.Duration) time.Time) {
			done := T(time.Second)
			c.Status, c.ExpiresAt, c.CompletedAt = store.CallDenied, T(decideWithin), &done
		},
		approval: func(ap *store.Approval, T func(time.Duration) time.Time) {
			decided := T(time.Second)
			ap.Status, ap.DecidedBy, ap.DecidedAt, ap.Reason = store.ApprovalDenied, "user:dana@example.com", &decided, "not today"
		}},
	{name: "approval expired",
		steps: func(a, c string, T func(time.Duration) time.Time) [][]*record.Entry {
			return [][]*record.Entry{request(a, c, T(0)),
				{record.ApprovalExpired(ref(a, c), T(decideWithin+time.Second), T(decideWithin), "deny")}}
		},
		call: func(c *store.Call, T func(time.Duration) time.Time) {
			done := T(decideWithin + time.Second)
			c.Status, c.ExpiresAt, c.CompletedAt = store.CallExpired, T(decideWithin), &done
		},
		approval: func(ap *store.Approval, T func(time.Duration) time.Time) {
			decided := T(decideWithin + time.Second)
			ap.Status, ap.DecidedBy, ap.DecidedAt = store.ApprovalExpired, "system", &decided
		}},
	{name: "withdrawn",
		steps: func(a, c string, T func(time.Duration) time.Time) [][]*record.Entry {
			return [][]*record.Entry{request(a, c, T(0)),
				{record.ApprovalWithdrawn(ref(a, c), "agent:"+a, T(time.Second),
					record.Outcome{Outcome: "cancelled", Error: "gave up waiting", DurationMS: 1500})}}
		},
		call: func(c *store.Call, T func(time.Duration) time.Time) {
			done := T(time.Second)
			c.Status, c.ExpiresAt, c.CompletedAt = store.CallFailed, T(decideWithin), &done
			c.Outcome, c.Error, c.DurationMS = "cancelled", "gave up waiting", 1500
		},
		approval: func(ap *store.Approval, T func(time.Duration) time.Time) {
			decided := T(time.Second)
			ap.Status, ap.DecidedBy, ap.DecidedAt = store.ApprovalWithdrawn, "agent:"+ap.AgentID, &decided
		}},
	{name: "cancelled",
		steps: func(a, c string, T func(time.Duration) time.Time) [][]*record.Entry {
			return [][]*record.Entry{request(a, c, T(0)),
				{record.ApprovalCancelled(ref(a, c), "admin:root", T(time.Second), "agent terminated")}}
		},
		call: func(c *store.Call, T func(time.Duration) time.Time) {
			done := T(time.Second)
			c.Status, c.ExpiresAt, c.CompletedAt = store.CallRevoked, T(decideWithin), &done
		},
		approval: func(ap *store.Approval, T func(time.Duration) time.Time) {
			decided := T(time.Second)
			ap.Status, ap.DecidedBy, ap.DecidedAt, ap.Reason = store.ApprovalCancelled, "admin:root", &decided, "agent terminated"
		}},
	{name: "completed",
		steps: func(a, c string, T func(time.Duration) time.Time) [][]*record.Entry {
			return [][]*record.Entry{{issue(a, c, T(0))}, {complete(a, c, T(time.Second))}}
		},
		call: func(c *store.Call, T func(time.Duration) time.Time) {
			done := T(time.Second)
			c.Status, c.ExpiresAt, c.CompletedAt, c.Outcome, c.DurationMS = store.CallCompleted, T(ttl), &done, "success", 42
		}},
	{name: "completed with an error",
		steps: func(a, c string, T func(time.Duration) time.Time) [][]*record.Entry {
			return [][]*record.Entry{{issue(a, c, T(0))}, {record.CallCompleted(ref(a, c), "agent:"+a, T(time.Second),
				record.Outcome{Outcome: "error", Error: "upstream answered 503", DurationMS: 1234})}}
		},
		call: func(c *store.Call, T func(time.Duration) time.Time) {
			done := T(time.Second)
			c.Status, c.ExpiresAt, c.CompletedAt = store.CallFailed, T(ttl), &done
			c.Outcome, c.Error, c.DurationMS = "error", "upstream answered 503", 1234
		}},
	{name: "expired",
		steps: func(a, c string, T func(time.Duration) time.Time) [][]*record.Entry {
			return [][]*record.Entry{{issue(a, c, T(0))}, {record.CallExpired(ref(a, c), T(ttl+time.Second), T(ttl))}}
		},
		call: func(c *store.Call, T func(time.Duration) time.Time) {
			c.Status, c.ExpiresAt = store.CallExpired, T(ttl) // not completed: a late completion may come
		}},
	{name: "expired, then completed late",
		steps: func(a, c string, T func(time.Duration) time.Time) [][]*record.Entry {
			return [][]*record.Entry{{issue(a, c, T(0))}, {record.CallExpired(ref(a, c), T(ttl+time.Second), T(ttl))},
				{record.CallCompleted(ref(a, c), "agent:"+a, T(ttl+2*time.Second),
					record.Outcome{Outcome: "success", DurationMS: 302000, Late: true})}}
		},
		call: func(c *store.Call, T func(time.Duration) time.Time) {
			done := T(ttl + 2*time.Second)
			c.Status, c.ExpiresAt, c.CompletedAt, c.Outcome, c.DurationMS = store.CallCompleted, T(ttl), &done, "success", 302000
		}},
	{name: "revoked",
		steps: func(a, c string, T func(time.Duration) time.Time) [][]*record.Entry {
			return [][]*record.Entry{{issue(a, c, T(0))},
				{record.CredentialsRevoked(a, "admin:root", T(time.Second), "agent terminated", []string{c})}}
		},
		call: func(c *store.Call, T func(time.Duration) time.Time) {
			done := T(time.Second)
			c.Status, c.ExpiresAt, c.CompletedAt = store.CallRevoked, T(ttl), &done
		}},
}

func granted(ap *store.Approval, T func(time.Duration) time.Time) {
	decided := T(time.Second)
	ap.Status, ap.DecidedBy, ap.DecidedAt, ap.Reason = store.ApprovalGranted, "user:dana@example.com", &decided, "looks right"
	ap.Grants = []string{"dana@example.com"}
}

func open(status string) bool { return status == store.CallApproved || status == store.CallPending }

// testLifecycles: every life a call can have, made through its entries,
// each step in an Update of its own and all steps in one Update, reads
// back the same through every read of the store and of a later Update:
// Call, Calls, OverdueCalls, Approval, Approvals, OverdueApprovals;
// tx.Call, tx.Approval, AgentOpenCalls, CallCounts, CallByIdempotencyKey.
func testLifecycles(t *testing.T, s store.Store) {
	ctx := t.Context()
	type made struct {
		agent, call string
		asked       time.Time
		want        store.Call
		approval    *store.Approval
	}
	var all []made
	var ids []string
	for m, mode := range []string{"steps", "one"} {
		for i, lc := range lifecycles {
			k := m*len(lifecycles) + i
			T := func(d time.Duration) time.Time { return at(time.Duration(k)*time.Minute + d) }
			x := made{agent: fmt.Sprintf("%s-%02d", mode, i), asked: T(0)}
			x.call = x.agent + "-call"
			x.want = askedCall(x.agent, x.call, T(0))
			lc.call(&x.want, T)
			if lc.approval != nil {
				ap := pendingApproval(x.agent, x.call, T(0))
				lc.approval(&ap, T)
				x.approval = &ap
			}
			all = append(all, x)
			ids = append(ids, x.agent)
		}
	}
	hire(t, s, ids...)

	for m, mode := range []string{"steps", "one"} {
		for i, lc := range lifecycles {
			x := all[m*len(lifecycles)+i]
			k := m*len(lifecycles) + i
			T := func(d time.Duration) time.Time { return at(time.Duration(k)*time.Minute + d) }
			steps := lc.steps(x.agent, x.call, T)
			if mode == "steps" {
				for _, es := range steps {
					update(t, s, appendAll(es...))
				}
				continue
			}
			// All in one Update, which reads what it appended.
			update(t, s, func(tx store.Tx) error {
				if err := appendAll(cat(steps...)...)(tx); err != nil {
					return err
				}
				checkCallTx(t, tx, "in the Update that appended "+lc.name, x.want, x.approval)
				return nil
			})
		}
	}

	// The store's reads.
	lists := map[string][]store.Approval{}
	for _, st := range []string{"", store.ApprovalPending, store.ApprovalGranted, store.ApprovalDenied, store.ApprovalExpired,
		store.ApprovalWithdrawn, store.ApprovalCancelled} {
		l, err := s.Approvals(ctx, st, 1000)
		if err != nil {
			t.Fatalf("Approvals(%q): %v", st, err)
		}
		lists[st] = l
	}
	far := th.Add(48 * time.Hour)
	overdue, err := s.OverdueCalls(ctx, far, 1000)
	if err != nil {
		t.Fatalf("OverdueCalls: %v", err)
	}
	overdueAps, err := s.OverdueApprovals(ctx, far, 1000)
	if err != nil {
		t.Fatalf("OverdueApprovals: %v", err)
	}
	for i, x := range all {
		lc := lifecycles[i%len(lifecycles)]
		t.Run(fmt.Sprintf("%s/%s", x.agent[:len(x.agent)-3], lc.name), func(t *testing.T) {
			got, err := s.Call(ctx, x.call)
			if err != nil {
				t.Fatalf("Call: %v", err)
			}
			checkSame(t, "Call", *got, x.want)
			cs, err := s.Calls(ctx, x.agent, 10)
			if err != nil || len(cs) != 1 {
				t.Errorf("Calls(%s) = %q, %v; want its one call", x.agent, callIDs(cs), err)
			} else {
				checkSame(t, "Calls()[0]", cs[0], x.want)
			}
			i := slices.IndexFunc(overdue, func(c store.Call) bool { return c.ID == x.call })
			if (i >= 0) != (x.want.Status == store.CallApproved) {
				t.Errorf("OverdueCalls(a day later) lists the call: %v; want %v (approved)", i >= 0, x.want.Status == store.CallApproved)
			} else if i >= 0 {
				checkSame(t, "OverdueCalls()[i]", overdue[i], x.want)
			}

			ap, err := s.Approval(ctx, x.call)
			if x.approval == nil {
				mustNotFound(t, "Approval of a call that has none", err)
			} else if err != nil {
				t.Errorf("Approval: %v", err)
			} else {
				checkSame(t, "Approval", *ap, *x.approval)
			}
			for st, l := range lists {
				i := slices.IndexFunc(l, func(a store.Approval) bool { return a.CallID == x.call })
				want := x.approval != nil && (st == "" || st == x.approval.Status)
				if (i >= 0) != want {
					t.Errorf("Approvals(%q) lists the approval: %v; want %v", st, i >= 0, want)
				} else if i >= 0 {
					checkSame(t, fmt.Sprintf("Approvals(%q)[i]", st), l[i], *x.approval)
				}
			}
			i = slices.IndexFunc(overdueAps, func(a store.Approval) bool { return a.CallID == x.call })
			if want := x.approval != nil && x.approval.Status == store.ApprovalPending; (i >= 0) != want {
				t.Errorf("OverdueApprovals(a day later) lists the approval: %v; want %v (pending)", i >= 0, want)
			} else if i >= 0 {
				checkSame(t, "OverdueApprovals()[i]", overdueAps[i], *x.approval)
			}

			// A later Update's reads.
			probe(t, s, func(tx store.Tx) error {
				checkCallTx(t, tx, "in a later Update", x.want, x.approval)
				// Every ask counts in its minute; all but refused ones in
				// their quarter hour.
				counts := tx.CallCounts(x.agent)
				m := x.asked.Unix() / 60
				if n, earlier := counts.Minute(m, m-59); n != 1 || earlier != 0 {
					t.Errorf("CallCounts.Minute = %d, %d; want 1, 0", n, earlier)
				}
				want := int64(1)
				if x.want.Status == store.CallRefused {
					want = 0
				}
				if n := counts.Since(x.asked.Truncate(15 * time.Minute)); n != want {
					t.Errorf("CallCounts.Since = %d, want %d", n, want)
				}
				return nil
			})
		})
	}
}

// checkCallTx checks what tx reads of a call: the call, its approval, the
// open calls and open count of its agent, its idempotency key.
func checkCallTx(t *testing.T, tx store.Tx, when string, want store.Call, approval *store.Approval) {
	t.Helper()
	got, err := tx.Call(want.ID)
	if err != nil {
		t.Errorf("%s: tx.Call(%s): %v", when, want.ID, err)
	} else {
		checkSame(t, when+": tx.Call", *got, want)
	}
	ap, err := tx.Approval(want.ID)
	switch {
	case approval == nil:
		mustNotFound(t, when+": tx.Approval of a call that has none", err)
	case err != nil:
		t.Errorf("%s: tx.Approval(%s): %v", when, want.ID, err)
	default:
		checkSame(t, when+": tx.Approval", *ap, *approval)
	}
	openCalls, err := tx.AgentOpenCalls(want.AgentID)
	if err != nil {
		t.Errorf("%s: tx.AgentOpenCalls: %v", when, err)
	} else if open(want.Status) {
		if len(openCalls) != 1 {
			t.Errorf("%s: tx.AgentOpenCalls = %q, want the call (%s)", when, callIDs(openCalls), want.Status)
		} else {
			checkSame(t, when+": tx.AgentOpenCalls()[0]", openCalls[0], want)
		}
	} else if len(openCalls) != 0 {
		t.Errorf("%s: tx.AgentOpenCalls = %q, want none (%s)", when, callIDs(openCalls), want.Status)
	}
	wantOpen := 0
	if open(want.Status) {
		wantOpen = 1
	}
	if n := tx.CallCounts(want.AgentID).Open; n != wantOpen {
		t.Errorf("%s: tx.CallCounts().Open = %d, want %d (%s)", when, n, wantOpen, want.Status)
	}
	got, err = tx.CallByIdempotencyKey(want.AgentID, want.IdempotencyKey)
	if err != nil {
		t.Errorf("%s: tx.CallByIdempotencyKey(%s, %s): %v", when, want.AgentID, want.IdempotencyKey, err)
	} else {
		checkSame(t, when+": tx.CallByIdempotencyKey", *got, want)
	}
}

func callIDs(cs []store.Call) []string {
	var ids []string
	for _, c := range cs {
		ids = append(ids, c.ID)
	}
	return ids
}

// testCalls: every field of a call, as its entries wrote it, read in and
// out of transactions; an unknown call is not found.
func testCalls(t *testing.T, s store.Store) {
	ctx := t.Context()
	hire(t, s, "a", "b")
	created := at(0).In(zone)
	exp := at(5*time.Minute + time.Microsecond)
	done := at(90 * time.Second)
	r := record.CallRef{Agent: "a", Call: "call-full", Connector: "salesforce", Action: "account.update", Risk: "high"}
	ak := record.Ask{DeclaredRisk: "low", Summary: "update account 42 \"quoted\" ünïcode", IdempotencyKey: "idem-1",
		RaisedBy: "user:alice@example.com", Args: `{"account":"42","industry":"ünïcode"}`, ArgsHash: strings.Repeat("ab", 32)}
	full := store.Call{ID: "call-full", AgentID: "a", Connector: "salesforce", Action: "account.update", DeclaredRisk: "low",
		Risk: "high", Status: store.CallFailed, IdempotencyKey: "idem-1", Summary: ak.Summary, RaisedBy: "user:alice@example.com",
		Args: ak.Args, ArgsHash: ak.ArgsHash, CreatedAt: created, ExpiresAt: exp, CompletedAt: &done, Outcome: "error", Error: "upstream 503", DurationMS: 1234}
	rr := record.CallRef{Agent: "a", Call: "call-refused", Connector: "github", Action: "repo.delete", Risk: "high"}
	refusedAt := at(time.Second)
	refused := store.Call{ID: "call-refused", AgentID: "a", Connector: "github", Action: "repo.delete", DeclaredRisk: "high",
		Risk: "high", Status: store.CallRefused, IdempotencyKey: "idem-3", Refusal: "manifest.risk_exceeds_ceiling",
		RaisedBy: "user:bob@example.com", CreatedAt: refusedAt, ExpiresAt: refusedAt, CompletedAt: &refusedAt}
	minimal := store.Call{ID: "call-min", AgentID: "a", Connector: "crm", Action: "account.read", Risk: "low",
		Status: store.CallApproved, IdempotencyKey: "idem-2", CreatedAt: at(2 * time.Second), ExpiresAt: at(time.Hour)}
	update(t, s, appendAll(
		record.CredentialIssued(r, "agent:a", created, ak, exp, ""),
		record.CallCompleted(r, "agent:a", done, record.Outcome{Outcome: "error", Error: "upstream 503", DurationMS: 1234}),
		record.CredentialRefused(rr, "agent:a", refusedAt, record.Ask{DeclaredRisk: "high", IdempotencyKey: "idem-3",
			RaisedBy: "user:bob@example.com"}, "manifest.risk_exceeds_ceiling", "high risk is above the ceiling"),
		record.CredentialIssued(ref("a", "call-min"), "agent:a", at(2*time.Second), record.Ask{IdempotencyKey: "idem-2"}, at(time.Hour), ""),
	))
	for _, want := range []store.Call{full, refused, minimal} {
		got, err := s.Call(ctx, want.ID)
		if err != nil {
			t.Fatalf("Call(%s): %v", want.ID, err)
		}
		checkSame(t, "Call("+want.ID+")", *got, want)
		probe(t, s, func(tx store.Tx) error {
			got, err := tx.Call(want.ID)
			if err != nil {
				return fmt.Errorf("tx.Call(%s): %w", want.ID, err)
			}
			checkSame(t, "tx.Call("+want.ID+")", *got, want)
			got, err = tx.CallByIdempotencyKey(want.AgentID, want.IdempotencyKey)
			if err != nil {
				return fmt.Errorf("tx.CallByIdempotencyKey(%s, %s): %w", want.AgentID, want.IdempotencyKey, err)
			}
			checkSame(t, "tx.CallByIdempotencyKey("+want.IdempotencyKey+")", *got, want)
			return nil
		})
	}
	cs, err := s.Calls(ctx, "a", 10)
	if err != nil || len(cs) != 3 {
		t.Fatalf("Calls(a) = %q, %v", callIDs(cs), err)
	}
	for i, want := range []store.Call{minimal, refused, full} {
		checkSame(t, fmt.Sprintf("Calls(a)[%d]", i), cs[i], want)
	}

	_, err = s.Call(ctx, "nope")
	mustNotFound(t, "Call(nope)", err)
	probe(t, s, func(tx store.Tx) error {
		_, err := tx.Call("nope")
		mustNotFound(t, "tx.Call(nope)", err)
		_, err = tx.CallByIdempotencyKey("a", "nope")
		mustNotFound(t, "tx.CallByIdempotencyKey(a, nope)", err)
		_, err = tx.CallByIdempotencyKey("b", "idem-1")
		mustNotFound(t, "tx.CallByIdempotencyKey(b, idem-1) (the key is a's)", err)
		_, err = tx.CallByIdempotencyKey("nobody", "idem-1")
		mustNotFound(t, "tx.CallByIdempotencyKey(nobody, idem-1)", err)
		return nil
	})
}

// testIdempotencyKeys: every ask remembers its key, per agent, from the
// Update that appends it on, whatever becomes of the call.
func testIdempotencyKeys(t *testing.T, s store.Store) {
	ctx := t.Context()
	hire(t, s, "a", "b")
	find := func(tx store.Tx, agent, k string) string {
		c, err := tx.CallByIdempotencyKey(agent, k)
		if err != nil {
			return errLine(err)
		}
		if c.AgentID != agent || c.IdempotencyKey != k {
			t.Errorf("CallByIdempotencyKey(%s, %s) = call %s of %s with key %s", agent, k, c.ID, c.AgentID, c.IdempotencyKey)
		}
		return c.ID + " " + c.Status
	}
	// One key per kind of ask, and one key that both agents use.
	keys := map[[2]string]string{
		{"a", key("issued")}:    "issued approved",
		{"a", key("refused")}:   "refused refused",
		{"a", key("requested")}: "requested pending_approval",
		{"b", key("issued")}:    "b-issued approved",
	}
	update(t, s, func(tx store.Tx) error {
		for k := range keys {
			if got := find(tx, k[0], k[1]); got != "not found" {
				t.Errorf("CallByIdempotencyKey(%s, %s) before any ask = %s", k[0], k[1], got)
			}
		}
		es := cat(one(issue("a", "issued", at(0)), refuse("a", "refused", at(0))), request("a", "requested", at(0)),
			one(record.CredentialIssued(ref("b", "b-issued"), "agent:b", at(0), ask("issued"), at(ttl), "")))
		if err := appendAll(es...)(tx); err != nil {
			return err
		}
		for k, want := range keys {
			if got := find(tx, k[0], k[1]); got != want {
				t.Errorf("in the Update that asked: CallByIdempotencyKey(%s, %s) = %s, want %s", k[0], k[1], got, want)
			}
		}
		return nil
	})
	// Once the calls are closed, and whatever the store did with them
	// since (a list reads every committed change; later Updates run).
	update(t, s, appendAll(complete("a", "issued", at(time.Second)),
		record.ApprovalDenied(ref("a", "requested"), "user:dana@example.com", at(time.Second), "dana@example.com", "no")))
	if _, err := s.Calls(ctx, "a", 10); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		update(t, s, func(store.Tx) error { return nil })
		update(t, s, appendAll(record.DriftDetected(ref("b", "b-issued"), "system", at(time.Second), nil)))
	}
	probe(t, s, func(tx store.Tx) error {
		for k, want := range map[[2]string]string{
			{"a", key("issued")}:    "issued completed",
			{"a", key("refused")}:   "refused refused",
			{"a", key("requested")}: "requested denied",
			{"b", key("issued")}:    "b-issued approved",
			{"b", key("refused")}:   "not found",
			{"a", "nope"}:           "not found",
		} {
			if got := find(tx, k[0], k[1]); got != want {
				t.Errorf("later: CallByIdempotencyKey(%s, %s) = %s, want %s", k[0], k[1], got, want)
			}
		}
		return nil
	})

	// A key is no unique index: an agent may use it again (no
	// ErrConflict), and then finds one of the calls made with it.
	update(t, s, appendAll(issue("a", "again", at(2*time.Second))))
	update(t, s, func(tx store.Tx) error {
		e := issue("a", "again-2", at(3*time.Second))
		if err := tx.Append(e); err != nil {
			return err
		}
		e = record.CredentialIssued(ref("a", "again-3"), "agent:a", at(3*time.Second), ask("again"), at(time.Hour), "")
		return tx.Append(e)
	})
	for _, id := range []string{"again", "again-3"} {
		if c, err := s.Call(ctx, id); err != nil || c.IdempotencyKey != key("again") {
			t.Errorf("Call(%s) = %+v, %v; want a call with key %s", id, c, err, key("again"))
		}
	}
	probe(t, s, func(tx store.Tx) error {
		c, err := tx.CallByIdempotencyKey("a", key("again"))
		if err != nil || (c.ID != "again" && c.ID != "again-3") {
			t.Errorf("CallByIdempotencyKey(a, %s) = %+v, %v; want one of the calls made with it", key("again"), c, err)
		}
		return nil
	})
}

// testCallQueries: Calls lists an agent's calls newest first; OverdueCalls
// the approved calls whose expiry is strictly before a time, to the
// microsecond the record keeps; CallCounts().Open counts approved and
// pending calls.
func testCallQueries(t *testing.T, s store.Store) {
	ctx := t.Context()
	hire(t, s, "a", "b", "c")
	// a: one call in each status, a second apart.
	statuses := []string{store.CallPending, store.CallApproved, store.CallCompleted, store.CallFailed,
		store.CallExpired, store.CallRefused, store.CallDenied, store.CallRevoked}
	var es []*record.Entry
	for i, st := range statuses {
		T := at(time.Duration(i) * time.Second)
		c := "a-" + st
		switch st {
		case store.CallPending:
			es = append(es, request("a", c, T)...)
		case store.CallApproved:
			es = append(es, issue("a", c, T))
		case store.CallCompleted:
			es = append(es, issue("a", c, T), complete("a", c, T.Add(time.Minute)))
		case store.CallFailed:
			es = append(es, issue("a", c, T), record.CallCompleted(ref("a", c), "agent:a", T.Add(time.Minute), record.Outcome{Outcome: "error"}))
		case store.CallExpired:
			es = append(es, issue("a", c, T), record.CallExpired(ref("a", c), T.Add(ttl), T.Add(ttl)))
		case store.CallRefused:
			es = append(es, refuse("a", c, T))
		case store.CallDenied:
			es = append(es, request("a", c, T)...)
			es = append(es, record.ApprovalDenied(ref("a", c), "user:dana@example.com", T.Add(time.Minute), "dana@example.com", "no"))
		case store.CallRevoked:
			es = append(es, issue("a", c, T), record.CredentialsRevoked("a", "admin:root", T.Add(time.Minute), "r", []string{c}))
		}
	}
	es = append(es, issue("b", "b-approved", at(0)))
	es = append(es, request("b", "b-pending", at(0))...)
	// c's calls straddle tq, to the microsecond.
	tq := at(-time.Hour)
	made := at(-2 * time.Hour)
	for _, x := range []struct {
		id     string
		expiry time.Time
	}{
		{"c-2m", tq.Add(-2 * time.Minute)},
		{"c-1m", tq.Add(-time.Minute).In(zone)},
		{"c-1us", tq.Add(-time.Microsecond)},
		{"c-at", tq},
		{"c-later", tq.Add(time.Minute)},
	} {
		es = append(es, record.CredentialIssued(ref("c", x.id), "agent:c", made, ask(x.id), x.expiry, ""))
	}
	es = append(es, record.CallRequested(ref("c", "c-pending"), "agent:c", made, ask("c-pending")),
		record.ApprovalRequested(ref("c", "c-pending"), "agent:c", made, approvers, nil, tq.Add(-5*time.Minute)))
	es = append(es, record.CredentialIssued(ref("c", "c-completed"), "agent:c", made, ask("c-completed"), tq.Add(-5*time.Minute), ""),
		complete("c", "c-completed", made.Add(time.Second)))
	es = append(es, record.CredentialIssued(ref("c", "c-expired"), "agent:c", made, ask("c-expired"), tq.Add(-5*time.Minute), ""),
		record.CallExpired(ref("c", "c-expired"), tq.Add(-4*time.Minute), tq.Add(-5*time.Minute)))
	es = append(es, request("c", "c-granted", made)...)
	es = append(es, grant("c", "c-granted", tq.Add(-3*time.Minute-ttl))...)
	// In Updates of a few entries.
	for len(es) > 0 {
		n := min(len(es), 5)
		update(t, s, appendAll(es[:n]...))
		es = es[n:]
	}

	t.Run("Open", func(t *testing.T) {
		probe(t, s, func(tx store.Tx) error {
			for agent, want := range map[string]int{"a": 2, "b": 2, "c": 7, "nobody": 0} {
				if n := tx.CallCounts(agent).Open; n != want {
					t.Errorf("CallCounts(%s).Open = %d, want %d (approved and pending only)", agent, n, want)
				}
				if cs, err := tx.AgentOpenCalls(agent); err != nil || len(cs) != want {
					t.Errorf("AgentOpenCalls(%s) = %q, %v; want %d calls", agent, callIDs(cs), err, want)
				}
			}
			return nil
		})
	})

	t.Run("Calls", func(t *testing.T) {
		newestFirst := make([]string, len(statuses))
		for i, st := range statuses {
			newestFirst[len(statuses)-1-i] = "a-" + st
		}
		for _, tc := range []struct {
			agent string
			limit int
			want  []string
		}{
			{"a", 100, newestFirst},
			{"a", len(statuses), newestFirst},
			{"a", 3, newestFirst[:3]},
			{"a", 1, newestFirst[:1]},
			{"nobody", 10, nil},
		} {
			got, err := s.Calls(ctx, tc.agent, tc.limit)
			if err != nil {
				t.Fatalf("Calls(%s, %d): %v", tc.agent, tc.limit, err)
			}
			if ids := callIDs(got); !slices.Equal(ids, tc.want) {
				t.Errorf("Calls(%s, %d) = %q, want %q (newest first)", tc.agent, tc.limit, ids, tc.want)
			}
		}
		got, err := s.Calls(ctx, "a", 1)
		if err != nil || len(got) != 1 {
			t.Fatalf("Calls(a, 1) = %v, %v", got, err)
		}
		T := at(time.Duration(len(statuses)-1) * time.Second)
		want := askedCall("a", "a-revoked", T)
		revoked := T.Add(time.Minute)
		want.Status, want.ExpiresAt, want.CompletedAt = store.CallRevoked, T.Add(ttl), &revoked
		checkSame(t, "Calls(a, 1)[0]", got[0], want)
	})

	t.Run("OverdueCalls", func(t *testing.T) {
		for _, tc := range []struct {
			at   time.Time
			want []string
		}{
			{tq, []string{"c-1m", "c-1us", "c-2m", "c-granted"}},
			{tq.Add(-2 * time.Minute), []string{"c-granted"}},
			{tq.Add(-2*time.Minute + 1), []string{"c-2m", "c-granted"}},
			{tq.Add(1), []string{"c-1m", "c-1us", "c-2m", "c-at", "c-granted"}},
			{tq.Add(3 * time.Hour), []string{"a-approved", "b-approved", "c-1m", "c-1us", "c-2m", "c-at", "c-granted", "c-later"}},
		} {
			got, err := s.OverdueCalls(ctx, tc.at.In(zone), 100)
			if err != nil {
				t.Fatalf("OverdueCalls(%v): %v", tc.at, err)
			}
			ids := callIDs(got)
			slices.Sort(ids)
			if !slices.Equal(ids, tc.want) {
				t.Errorf("OverdueCalls(%v) = %q, want %q (approved, expiry strictly before)", tc.at, ids, tc.want)
			}
		}
		got, err := s.OverdueCalls(ctx, tq, 2)
		if err != nil {
			t.Fatalf("OverdueCalls(tq, 2): %v", err)
		}
		if len(got) != 2 {
			t.Errorf("OverdueCalls(tq, 2) returned %d calls, want 2", len(got))
		}
		for _, c := range got {
			if !slices.Contains([]string{"c-1m", "c-1us", "c-2m", "c-granted"}, c.ID) {
				t.Errorf("OverdueCalls(tq, 2) returned %s, which is not overdue", c.ID)
			}
		}
		got, err = s.OverdueCalls(ctx, tq, 100)
		if err != nil {
			t.Fatal(err)
		}
		want := askedCall("c", "c-granted", made)
		want.Status, want.ExpiresAt = store.CallApproved, tq.Add(-3*time.Minute)
		if i := slices.IndexFunc(got, func(c store.Call) bool { return c.ID == "c-granted" }); i >= 0 {
			checkSame(t, "OverdueCalls(tq)[c-granted]", got[i], want)
		}
	})
}

// testAgentOpenCalls: an agent's approved and pending calls, oldest first,
// as an Update sees them, its own appends included.
func testAgentOpenCalls(t *testing.T, s store.Store) {
	hire(t, s, "a", "b")
	var want []store.Call
	statuses := []string{store.CallCompleted, store.CallApproved, store.CallPending, store.CallDenied, store.CallRevoked,
		store.CallApproved, store.CallExpired, store.CallFailed, store.CallRefused, "granted"}
	check := func(tx store.Tx, when string, want []store.Call) {
		t.Helper()
		got, err := tx.AgentOpenCalls("a")
		if err != nil {
			t.Errorf("%s: AgentOpenCalls(a): %v", when, err)
			return
		}
		if len(got) != len(want) {
			t.Errorf("%s: AgentOpenCalls(a) = %q, want %q", when, callIDs(got), callIDs(want))
			return
		}
		for i := range got {
			checkSame(t, fmt.Sprintf("%s: AgentOpenCalls(a)[%d]", when, i), got[i], want[i])
		}
		if got, err := tx.AgentOpenCalls("nobody"); err != nil || len(got) != 0 {
			t.Errorf("%s: AgentOpenCalls(nobody) = %q, %v", when, callIDs(got), err)
		}
	}
	update(t, s, func(tx store.Tx) error {
		// Appended newest first; listed oldest first.
		for i, st := range statuses {
			T := at(-time.Duration(i) * time.Minute)
			c := fmt.Sprint("a-", i)
			var es []*record.Entry
			w := askedCall("a", c, T)
			switch st {
			case store.CallCompleted:
				es = one(issue("a", c, T), complete("a", c, T.Add(time.Second)))
			case store.CallApproved:
				es = one(issue("a", c, T))
				w.Status, w.ExpiresAt = st, T.Add(ttl)
			case store.CallPending:
				es = request("a", c, T)
				w.Status, w.ExpiresAt = st, T.Add(decideWithin)
			case "granted":
				es = cat(request("a", c, T), grant("a", c, T.Add(time.Second)))
				w.Status, w.ExpiresAt = store.CallApproved, T.Add(time.Second+ttl)
			case store.CallDenied:
				es = cat(request("a", c, T), one(record.ApprovalDenied(ref("a", c), "user:dana@example.com", T, "dana@example.com", "")))
			case store.CallRevoked:
				es = one(issue("a", c, T), record.CredentialsRevoked("a", "admin:root", T, "r", []string{c}))
			case store.CallExpired:
				es = one(issue("a", c, T), record.CallExpired(ref("a", c), T.Add(ttl), T.Add(ttl)))
			case store.CallFailed:
				es = one(issue("a", c, T), record.CallCompleted(ref("a", c), "agent:a", T, record.Outcome{Outcome: "error"}))
			case store.CallRefused:
				es = one(refuse("a", c, T))
			}
			if open(w.Status) {
				want = append([]store.Call{w}, want...)
			}
			if err := appendAll(es...)(tx); err != nil {
				return err
			}
		}
		if err := tx.Append(issue("b", "b-0", at(0))); err != nil {
			return err
		}
		check(tx, "in the Update that appended", want)
		return nil
	})
	probe(t, s, func(tx store.Tx) error { check(tx, "in a later Update", want); return nil })

	// A call closed drops out, in its Update and after.
	closed := want[1]
	rest := slices.Delete(slices.Clone(want), 1, 2)
	update(t, s, func(tx store.Tx) error {
		if err := tx.Append(complete("a", closed.ID, at(time.Minute))); err != nil {
			return err
		}
		check(tx, "in the Update that completed "+closed.ID, rest)
		return nil
	})
	probe(t, s, func(tx store.Tx) error { check(tx, "after "+closed.ID+" completed", rest); return nil })
}

// testRevokeCredentials: credential.revoked revokes the calls it lists, at
// its time, and nothing else; termination lists an agent's every live
// credential in entries of up to RevokedCallsPerEntry calls.
func testRevokeCredentials(t *testing.T, s store.Store) {
	ctx := t.Context()
	hire(t, s, "a", "b", "m")
	done := at(time.Second)
	update(t, s, appendAll(cat(one(issue("a", "a-0", at(0))), request("a", "a-1", at(0)),
		one(issue("a", "a-2", at(0)), issue("a", "a-3", at(0)), complete("a", "a-3", done), issue("b", "b-0", at(0))))...))
	rt := at(time.Minute).In(zone)
	update(t, s, func(tx store.Tx) error {
		open, err := tx.AgentOpenCalls("a")
		if err != nil {
			return err
		}
		var ids []string
		for _, c := range open {
			if c.Status == store.CallApproved {
				ids = append(ids, c.ID)
			}
		}
		if !slices.Equal(slices.Sorted(slices.Values(ids)), []string{"a-0", "a-2"}) {
			t.Errorf("approved open calls of a = %q, want a-0, a-2", ids)
		}
		if err := tx.Append(record.CredentialsRevoked("a", "admin:root", rt, "agent terminated", ids)); err != nil {
			return err
		}
		if c, err := tx.Call("a-0"); err != nil || c.Status != store.CallRevoked {
			t.Errorf("tx.Call(a-0) in the Update that revoked it = %+v, %v", c, err)
		}
		if n := tx.CallCounts("a").Open; n != 1 {
			t.Errorf("CallCounts(a).Open in the Update that revoked = %d, want 1", n)
		}
		return nil
	})
	for _, tc := range []struct {
		id, status string
		completed  *time.Time
	}{
		{"a-0", store.CallRevoked, &rt}, {"a-1", store.CallPending, nil}, {"a-2", store.CallRevoked, &rt},
		{"a-3", store.CallCompleted, &done}, {"b-0", store.CallApproved, nil},
	} {
		c, err := s.Call(ctx, tc.id)
		if err != nil {
			t.Fatal(err)
		}
		if c.Status != tc.status || !same(c.CompletedAt, tc.completed) {
			t.Errorf("call %s is %s, completed at %s; want %s, %s", tc.id, c.Status, show(c.CompletedAt), tc.status, show(tc.completed))
		}
	}
	probe(t, s, func(tx store.Tx) error {
		for agent, want := range map[string]int{"a": 1, "b": 1} {
			if n := tx.CallCounts(agent).Open; n != want {
				t.Errorf("CallCounts(%s).Open = %d, want %d", agent, n, want)
			}
		}
		return nil
	})
	if got, err := s.OverdueCalls(ctx, th.Add(48*time.Hour), 100); err != nil || !slices.Equal(callIDs(got), []string{"b-0"}) {
		t.Errorf("OverdueCalls = %q, %v; want only b-0 (revoked calls are not overdue)", callIDs(got), err)
	}

	// Many live credentials: all revoked in one Update, in entries of at
	// most RevokedCallsPerEntry calls.
	const many = 2*record.RevokedCallsPerEntry + 100
	update(t, s, func(tx store.Tx) error {
		for i := range many {
			if err := tx.Append(issue("m", fmt.Sprintf("m-%04d", i), at(time.Duration(i)*time.Millisecond))); err != nil {
				return err
			}
		}
		return nil
	})
	size := treeSize(t, s)
	update(t, s, func(tx store.Tx) error {
		open, err := tx.AgentOpenCalls("m")
		if err != nil {
			return err
		}
		ids := callIDs(open)
		if len(ids) != many {
			t.Errorf("AgentOpenCalls(m) lists %d calls, want %d", len(ids), many)
		}
		for len(ids) > 0 {
			n := min(len(ids), record.RevokedCallsPerEntry)
			if err := tx.Append(record.CredentialsRevoked("m", "admin:root", rt, "agent terminated", ids[:n])); err != nil {
				return err
			}
			ids = ids[n:]
		}
		return tx.Append(record.AgentTerminated("m", "admin:root", rt, record.Termination{Reason: "r", RevokedCredentials: many}))
	})
	if n := treeSize(t, s) - size; n != 4 {
		t.Errorf("the termination appended %d entries, want 4", n)
	}
	cs, err := s.Calls(ctx, "m", 2*many)
	if err != nil || len(cs) != many {
		t.Fatalf("Calls(m) = %d calls, %v; want %d", len(cs), err, many)
	}
	for _, c := range cs {
		if c.Status != store.CallRevoked || c.CompletedAt == nil || !c.CompletedAt.Equal(rt) {
			t.Errorf("call %s is %s, completed at %s; want revoked at %s", c.ID, c.Status, show(c.CompletedAt), show(rt))
			break
		}
	}
	probe(t, s, func(tx store.Tx) error {
		if n := tx.CallCounts("m").Open; n != 0 {
			t.Errorf("CallCounts(m).Open after the revocation = %d, want 0", n)
		}
		if open, err := tx.AgentOpenCalls("m"); err != nil || len(open) != 0 {
			t.Errorf("AgentOpenCalls(m) after the revocation = %d calls, %v", len(open), err)
		}
		return nil
	})
}

// testRequestedBeforeApproval: a call requested whose approval is not
// requested yet (call.requested appended alone) waits with no expiry (the
// zero time): every read shows that, until approval.requested sets it.
func testRequestedBeforeApproval(t *testing.T, s store.Store) {
	ctx := t.Context()
	hire(t, s, "a")
	update(t, s, appendAll(record.CallRequested(ref("a", "c"), "agent:a", at(0), ask("c"))))
	want := askedCall("a", "c", at(0))
	want.Status = store.CallPending
	check := func(when string, want store.Call) {
		t.Helper()
		if got, err := s.Call(ctx, "c"); err != nil {
			t.Errorf("%s: Call: %v", when, err)
		} else {
			checkSame(t, when+": Call", *got, want)
		}
		if cs, err := s.Calls(ctx, "a", 10); err != nil || len(cs) != 1 {
			t.Errorf("%s: Calls(a) = %q, %v", when, callIDs(cs), err)
		} else {
			checkSame(t, when+": Calls(a)[0]", cs[0], want)
		}
		probe(t, s, func(tx store.Tx) error {
			if got, err := tx.Call("c"); err != nil {
				t.Errorf("%s: tx.Call: %v", when, err)
			} else {
				checkSame(t, when+": tx.Call", *got, want)
			}
			return nil
		})
	}
	check("before its approval is requested", want)
	if t.Failed() {
		t.Errorf("store bug: a zero ExpiresAt does not read back as the zero time from every read")
	}
	update(t, s, appendAll(request("a", "c", at(0))[1]))
	want.ExpiresAt = at(decideWithin)
	check("once its approval is requested", want)
}

// testTextWithNUL: texts the runtime refuses (a NUL: PostgreSQL's text
// cannot hold one) that reach the store all the same commit, and do not
// fail the Updates batched with them. The record keeps them exact; a
// store may show them otherwise in its tables.
func testTextWithNUL(t *testing.T, s store.Store) {
	hire(t, s, "a")
	var wg sync.WaitGroup
	errs := make([]error, 16)
	for i := range errs {
		wg.Go(func() {
			ak := record.Ask{IdempotencyKey: fmt.Sprint("k", i)}
			if i%2 == 0 {
				ak.Summary = "a\x00b"
			}
			r := ref("a", fmt.Sprint("nul-", i))
			errs[i] = s.Update(t.Context(), appendAll(
				record.CredentialIssued(r, "agent:a", at(time.Duration(i)*time.Second), ak, at(time.Hour), ""),
				record.CallCompleted(r, "agent:a", at(time.Minute), record.Outcome{Outcome: "error", Error: "x\x00y"}),
			))
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("Update %d: %v", i, err)
		}
	}
	for i := range errs {
		c, err := s.Call(t.Context(), fmt.Sprint("nul-", i))
		if err != nil || c.Status != store.CallFailed {
			t.Errorf("call nul-%d: %+v, %v", i, c, err)
		}
	}
}
