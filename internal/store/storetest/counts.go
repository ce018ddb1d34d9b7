package storetest

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/arxsec/arx/internal/store"
	"github.com/arxsec/arx/record"
)

// minute is the Unix minute of th+d.
func minute(d time.Duration) int64 { return th.Add(d).Unix() / 60 }

// testCallCounts: CallCounts counts every call an agent asked for (refused
// ones too) by minute, the calls not refused by quarter hour, and the calls
// open now (approved or pending), across Updates and batches, each Update
// seeing its own appends; a failed Update's asks are not counted; closing
// a call changes only Open.
func testCallCounts(t *testing.T, s store.Store) {
	ctx := t.Context()
	hire(t, s, "a", "b")
	T := func(d time.Duration) time.Time { return th.Add(d) }
	type minuteWant struct {
		m, since, n, earlier int64
	}
	type want struct {
		minutes []minuteWant
		since   map[time.Duration]int64 // by offset from th
		open    int
	}
	check := func(what string, wants map[string]want) {
		t.Helper()
		probe(t, s, func(tx store.Tx) error {
			for agent, w := range wants {
				c := tx.CallCounts(agent)
				for _, m := range w.minutes {
					if n, earlier := c.Minute(m.m, m.since); n != m.n || earlier != m.earlier {
						t.Errorf("%s: CallCounts(%s).Minute(th+%dm, th+%dm) = %d, %d; want %d, %d", what, agent,
							m.m-minute(0), m.since-minute(0), n, earlier, m.n, m.earlier)
					}
				}
				for d, n := range w.since {
					if got := c.Since(T(d)); got != n {
						t.Errorf("%s: CallCounts(%s).Since(th%+v) = %d, want %d", what, agent, d, got, n)
					}
				}
				if c.Open != w.open {
					t.Errorf("%s: CallCounts(%s).Open = %d, want %d", what, agent, c.Open, w.open)
				}
			}
			return nil
		})
	}
	check("before any call", map[string]want{
		"a":      {minutes: []minuteWant{{minute(0), minute(-59), 0, 0}}, since: map[time.Duration]int64{-24 * time.Hour: 0}},
		"nobody": {minutes: []minuteWant{{minute(0), minute(-59), 0, 0}}, since: map[time.Duration]int64{-24 * time.Hour: 0}},
	})

	update(t, s, appendAll(issue("a", "a1", T(10*time.Second)), issue("a", "a2", T(20*time.Second)), refuse("a", "a3", T(30*time.Second))))
	update(t, s, appendAll(request("a", "a4", T(time.Minute+5*time.Second))...))
	update(t, s, appendAll(issue("b", "b1", T(time.Minute))))
	update(t, s, appendAll(issue("a", "a5", T(16*time.Minute))))
	update(t, s, appendAll(refuse("a", "a6", T(16*time.Minute+30*time.Second))))
	aMinutes := []minuteWant{
		{minute(0), minute(-59), 3, 0},
		{minute(time.Minute), minute(-58 * time.Minute), 1, 3},
		{minute(16 * time.Minute), minute(-43 * time.Minute), 2, 4},
		{minute(16 * time.Minute), minute(time.Minute), 2, 1},
		{minute(16 * time.Minute), minute(16 * time.Minute), 2, 0},
		{minute(2 * time.Minute), minute(-57 * time.Minute), 0, 4},
	}
	aSince := map[time.Duration]int64{-24 * time.Hour: 4, 0: 4, 15 * time.Minute: 1, 30 * time.Minute: 0}
	counted := map[string]want{
		"a": {minutes: aMinutes, since: aSince, open: 4},
		"b": {minutes: []minuteWant{{minute(time.Minute), minute(-58 * time.Minute), 1, 0}}, since: map[time.Duration]int64{0: 1}, open: 1},
		"nobody": {minutes: []minuteWant{{minute(time.Minute), minute(-58 * time.Minute), 0, 0}},
			since: map[time.Duration]int64{-24 * time.Hour: 0}},
	}
	check("after five Updates", counted)

	// Closing calls changes Open only.
	update(t, s, appendAll(complete("a", "a1", T(2*time.Minute)),
		record.ApprovalDenied(ref("a", "a4"), "user:dana@example.com", T(2*time.Minute), "dana@example.com", "no")))
	counted["a"] = want{minutes: aMinutes, since: aSince, open: 2}
	check("after closing two calls", counted)

	// A failed Update's asks are not counted.
	if err := s.Update(ctx, func(tx store.Tx) error {
		if err := tx.Append(issue("a", "a7", T(16*time.Minute))); err != nil {
			return err
		}
		c := tx.CallCounts("a")
		if n, _ := c.Minute(minute(16*time.Minute), minute(-43*time.Minute)); n != 3 {
			t.Errorf("CallCounts(a).Minute in the Update that asked = %d, want 3", n)
		}
		return errBoom
	}); err == nil {
		t.Fatal("a failing Update succeeded")
	}
	check("after a failed Update", counted)

	// Several in one Update, each counted as it is appended.
	update(t, s, func(tx store.Tx) error {
		for i, id := range []string{"a8", "a9"} {
			if err := tx.Append(issue("a", id, T(17*time.Minute+time.Duration(i)*time.Second))); err != nil {
				return err
			}
			c := tx.CallCounts("a")
			if n, earlier := c.Minute(minute(17*time.Minute), minute(-42*time.Minute)); n != int64(i+1) || earlier != 6 {
				t.Errorf("in the Update, after %s: Minute = %d, %d; want %d, 6", id, n, earlier, i+1)
			}
			if n := c.Since(T(15 * time.Minute)); n != int64(i+2) {
				t.Errorf("in the Update, after %s: Since(th+15m) = %d, want %d", id, n, i+2)
			}
			if c.Open != 3+i {
				t.Errorf("in the Update, after %s: Open = %d, want %d", id, c.Open, 3+i)
			}
		}
		return nil
	})
	// An hour on, the first minutes are out of the window; a day back,
	// every quarter hour still counts.
	update(t, s, appendAll(issue("a", "a10", T(61*time.Minute))))
	update(t, s, appendAll(issue("a", "a0", T(-20*time.Hour))))
	check("an hour on", map[string]want{
		"a": {minutes: []minuteWant{{minute(61 * time.Minute), minute(2 * time.Minute), 1, 4}},
			since: map[time.Duration]int64{-24 * time.Hour: 8, 0: 7, 15 * time.Minute: 4, time.Hour: 1}, open: 6},
		"b": {since: map[time.Duration]int64{0: 1}, open: 1},
	})
}

// testCallUsage: what calls cost is counted by quarter hour from the
// entries that charge it (a declared cost with the credential, at once or
// when granted; a reported amount and tokens with the completion), and
// nothing else: a call held and denied costs nothing.
func testCallUsage(t *testing.T, s store.Store) {
	hire(t, s, "u")
	T := func(d time.Duration) time.Time { return th.Add(d) }
	costed := func(e *record.Entry) *record.Entry { e.Data["cost"] = "0.40 USD"; return e }
	used := func(call string, at time.Time, tokens int64, amount, charged string) *record.Entry {
		return record.CallCompleted(ref("u", call), "agent:u", at, record.Outcome{Outcome: "success", Tokens: tokens, Amount: amount, Charged: charged})
	}
	update(t, s, appendAll(costed(issue("u", "u1", T(time.Minute))), used("u1", T(2*time.Minute), 1000, "5.00 USD", "")))
	update(t, s, appendAll(issue("u", "u2", T(3*time.Minute)), used("u2", T(20*time.Minute), 250, "0.013 USD", "0.013 USD")))
	held := request("u", "u3", T(4*time.Minute))
	held[0].Data["cost"] = "0.40 USD" // what it will cost once approved
	update(t, s, appendAll(held...))
	g := grant("u", "u3", T(5*time.Minute))
	update(t, s, appendAll(g[0], costed(g[1])))
	denied := request("u", "u4", T(6*time.Minute))
	denied[0].Data["cost"] = "0.40 USD"
	update(t, s, appendAll(append(denied, record.ApprovalDenied(ref("u", "u4"), "user:dana@example.com", T(7*time.Minute), "dana@example.com", "no"))...))
	probe(t, s, func(tx store.Tx) error {
		c := tx.CallCounts("u")
		if m, tk := c.Spent(T(0)); m != 813_000 || tk != 1250 {
			t.Errorf("Spent(th) = %d, %d; want 813000 (two costs and one report), 1250", m, tk)
		}
		if m, tk := c.Spent(T(15 * time.Minute)); m != 13_000 || tk != 250 {
			t.Errorf("Spent(th+15m) = %d, %d; want 13000, 250", m, tk)
		}
		return nil
	})
}

// testCallMinutes: concurrent Updates each read an agent's count of a
// minute and ask in it: each sees the others' asks, as if run one at a
// time (the rate-spike rule fires once).
func testCallMinutes(t *testing.T, s store.Store) {
	hire(t, s, "b")
	const ops = 40
	m := minute(30 * time.Minute)
	got := make([]int64, ops)
	var wg sync.WaitGroup
	for i := range ops {
		wg.Go(func() {
			if err := s.Update(t.Context(), func(tx store.Tx) error {
				c := tx.CallCounts("b")
				got[i], _ = c.Minute(m, m-59)
				return tx.Append(issue("b", fmt.Sprint("cm-", i), th.Add(30*time.Minute+time.Duration(i)*time.Millisecond)))
			}); err != nil {
				t.Errorf("Update: %v", err)
			}
		})
	}
	wg.Wait()
	slices.Sort(got)
	for i, n := range got {
		if n != int64(i) {
			t.Fatalf("concurrent counts = %v, want 0 to %d once each", got, ops-1)
		}
	}
	probe(t, s, func(tx store.Tx) error {
		c := tx.CallCounts("b")
		if n, earlier := c.Minute(m, m-59); n != ops || earlier != 0 {
			t.Errorf("Minute = %d, %d; want %d, 0", n, earlier, ops)
		}
		if n := c.Since(th.Add(30 * time.Minute)); n != ops {
			t.Errorf("Since = %d, want %d", n, ops)
		}
		if c.Open != ops {
			t.Errorf("Open = %d, want %d", c.Open, ops)
		}
		return nil
	})
}
