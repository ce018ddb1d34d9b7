package storetest

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/arxsec/arx/internal/store"
	"github.com/arxsec/arx/record"
)

// A view is everything a scope of the store shows through its reads and a
// later Update's, each read rendered as a line: two views compare equal
// when the store shows the same. Atomicity compares the views before and
// after a failed Update, RunReopen before and after a reopen.
type view map[string]string

// scope names what a view reads.
type scope struct {
	agents   []string
	calls    []string
	keys     [][2]string // (agent, key)
	tokens   [][]byte    // hashes
	users    []string
	sessions [][]byte
	meta     []string
	failures [][]byte  // keys, counted since t0-1h
	at       time.Time // OverdueCalls and OverdueApprovals are read at at and at at+24h
}

func errLine(err error) string {
	if errors.Is(err, store.ErrNotFound) {
		return "not found"
	}
	return "error: " + err.Error()
}

func line(v any, err error) string {
	if err != nil {
		return errLine(err)
	}
	return render(v)
}

// calls renders a list of calls, newest first then by id, whatever order
// the store gave (the tests of each list check their orders).
func callsLine(cs []store.Call, err error) string {
	if err != nil {
		return errLine(err)
	}
	cs = slices.Clone(cs)
	slices.SortStableFunc(cs, func(a, b store.Call) int {
		if c := b.CreatedAt.Compare(a.CreatedAt); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	var b strings.Builder
	fmt.Fprintf(&b, "%d:", len(cs))
	for _, c := range cs {
		b.WriteString("\n\t\t" + render(c))
	}
	return b.String()
}

func approvalsLine(as []store.Approval, err error) string {
	if err != nil {
		return errLine(err)
	}
	as = slices.Clone(as)
	slices.SortStableFunc(as, func(a, b store.Approval) int {
		if c := b.RequestedAt.Compare(a.RequestedAt); c != 0 {
			return c
		}
		return strings.Compare(a.CallID, b.CallID)
	})
	var b strings.Builder
	fmt.Fprintf(&b, "%d:", len(as))
	for _, a := range as {
		b.WriteString("\n\t\t" + render(a))
	}
	return b.String()
}

func countsLine(c store.Counts) string {
	buckets := func(l []store.Bucket) string {
		l = slices.Clone(l)
		slices.SortFunc(l, func(a, b store.Bucket) int { return int(a.At - b.At) })
		var b strings.Builder
		for _, x := range l {
			if x.N != 0 {
				fmt.Fprintf(&b, " %d:%d", x.At, x.N)
			}
		}
		return b.String()
	}
	var usage []store.Usage
	if c.Usage != nil {
		usage = slices.Clone(c.Usage[:])
	}
	slices.SortFunc(usage, func(a, b store.Usage) int { return int(a.At - b.At) })
	var u strings.Builder
	for _, x := range usage {
		if x.Micros != 0 || x.Tokens != 0 {
			fmt.Fprintf(&u, " %d:%d/%d", x.At, x.Micros, x.Tokens)
		}
	}
	return fmt.Sprintf("open %d; minutes%s; quarters%s; usage%s", c.Open, buckets(c.Minutes[:]), buckets(c.Quarters[:]), u.String())
}

func entriesLine(es []store.Entry, err error) string {
	if err != nil {
		return errLine(err)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%d:", len(es))
	for _, e := range es {
		fmt.Fprintf(&b, " %d/%s/%s/%s/%x", e.Index, e.Agent, e.Type, e.Call, e.Leaf[:4])
	}
	return b.String()
}

// look reads the view of sc.
func look(t *testing.T, s store.Store, sc scope) view {
	t.Helper()
	ctx := t.Context()
	v := view{}
	size, err := s.TreeSize(ctx)
	v["TreeSize"] = fmt.Sprint(size)
	if err != nil {
		v["TreeSize"] = errLine(err)
	}
	es := allEntries(t, s)
	v["Entries"] = entriesLine(es, nil)
	var data bytes.Buffer
	for _, e := range es {
		data.Write(e.Data)
		data.WriteByte('\n')
	}
	v["Entries.Data"] = fmt.Sprintf("%x", record.LeafHash(data.Bytes()))
	as, err := s.Agents(ctx)
	v["Agents()"] = fmt.Sprint(len(as))
	if err != nil {
		v["Agents()"] = errLine(err)
	}
	for _, a := range as {
		v["Agents()/"+a.ID] = render(a)
	}
	for _, id := range sc.agents {
		a, err := s.Agent(ctx, id)
		v["Agent("+id+")"] = line(a, err)
		v["Calls("+id+")"] = callsLine(s.Calls(ctx, id, 1000))
		v["AgentEntries("+id+")"] = entriesLine(s.AgentEntries(ctx, id, -1, 1<<20))
	}
	for _, id := range sc.calls {
		c, err := s.Call(ctx, id)
		v["Call("+id+")"] = line(c, err)
		a, err := s.Approval(ctx, id)
		v["Approval("+id+")"] = line(a, err)
	}
	for _, st := range []string{"", store.ApprovalPending, store.ApprovalGranted, store.ApprovalDenied, store.ApprovalExpired,
		store.ApprovalWithdrawn, store.ApprovalCancelled} {
		v["Approvals("+st+")"] = approvalsLine(s.Approvals(ctx, st, 1000))
	}
	for _, x := range []time.Time{sc.at, sc.at.Add(24 * time.Hour)} {
		v["OverdueCalls("+show(x)+")"] = callsLine(s.OverdueCalls(ctx, x, 1000))
		v["OverdueApprovals("+show(x)+")"] = approvalsLine(s.OverdueApprovals(ctx, x, 1000))
	}
	for _, h := range sc.tokens {
		k, err := s.TokenByHash(ctx, h)
		v[fmt.Sprintf("TokenByHash(%q)", h)] = line(k, err)
		k, a, err := s.AgentByToken(ctx, h)
		if err == nil {
			v[fmt.Sprintf("AgentByToken(%q)", h)] = render(k) + " " + render(a)
		} else {
			v[fmt.Sprintf("AgentByToken(%q)", h)] = errLine(err)
		}
	}
	for _, id := range sc.users {
		u, err := s.User(ctx, id)
		v["User("+id+")"] = line(u, err)
	}
	for _, h := range sc.sessions {
		x, err := s.SessionByHash(ctx, h)
		v[fmt.Sprintf("SessionByHash(%q)", h)] = line(x, err)
	}
	for _, k := range sc.meta {
		m, err := s.Meta(ctx, k)
		v["Meta("+k+")"] = fmt.Sprintf("%q", m)
		if err != nil {
			v["Meta("+k+")"] = errLine(err)
		}
	}
	cp, err := s.LatestCheckpoint(ctx)
	v["LatestCheckpoint"] = line(cp, err)
	for _, k := range sc.failures {
		n, err := s.Failures(ctx, k, t0.Add(-time.Hour))
		v[fmt.Sprintf("Failures(%x)", k[:4])] = fmt.Sprint(n)
		if err != nil {
			v[fmt.Sprintf("Failures(%x)", k[:4])] = errLine(err)
		}
	}

	// What a later Update reads.
	probe(t, s, func(tx store.Tx) error {
		for _, id := range sc.agents {
			a, err := tx.Agent(id)
			v["tx.Agent("+id+")"] = line(a, err)
			v["tx.CallCounts("+id+")"] = countsLine(tx.CallCounts(id))
			v["tx.AgentOpenCalls("+id+")"] = callsLine(tx.AgentOpenCalls(id))
		}
		for _, id := range sc.calls {
			c, err := tx.Call(id)
			v["tx.Call("+id+")"] = line(c, err)
			a, err := tx.Approval(id)
			v["tx.Approval("+id+")"] = line(a, err)
		}
		for _, k := range sc.keys {
			c, err := tx.CallByIdempotencyKey(k[0], k[1])
			v["tx.CallByIdempotencyKey("+k[0]+", "+k[1]+")"] = line(c, err)
		}
		for _, id := range sc.users {
			u, err := tx.User(id)
			v["tx.User("+id+")"] = line(u, err)
		}
		for _, k := range sc.failures {
			n, err := tx.Failures(k, t0.Add(-time.Hour))
			v[fmt.Sprintf("tx.Failures(%x)", k[:4])] = fmt.Sprint(n)
			if err != nil {
				v[fmt.Sprintf("tx.Failures(%x)", k[:4])] = errLine(err)
			}
		}
		return nil
	})
	return v
}

// sameView reports every read in which got and want differ.
func sameView(t *testing.T, what string, got, want view) {
	t.Helper()
	var keys []string
	for k := range want {
		keys = append(keys, k)
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	var out []string
	for _, k := range keys {
		g, gok := got[k]
		w, wok := want[k]
		switch {
		case !gok:
			out = append(out, fmt.Sprintf("%s: no longer read (was %s)", k, w))
		case !wok:
			out = append(out, fmt.Sprintf("%s: now %s (was not read)", k, g))
		case g != w:
			out = append(out, fmt.Sprintf("%s:\n\t  got  %s\n\t  want %s", k, g, w))
		}
	}
	if len(out) > 0 {
		t.Errorf("%s: the store shows something else:\n\t%s", what, strings.Join(out, "\n\t"))
	}
}
