// Package storetest is the conformance suite for store.Store. Every backend
// runs Run against fresh stores of its own, so that SQLite, PostgreSQL and
// whatever follows keep one contract: the one written in package store, made
// precise here where the interface leaves room (list orders, nanosecond
// times, which writes an error undoes).
package storetest

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/arxsec/arx/internal/store"
	"github.com/arxsec/arx/record"
	"golang.org/x/mod/sumdb/tlog"
)

// Run runs the suite. open returns a fresh, empty store and closes it with
// t.Cleanup; a test may close it earlier, so a second Close must not hang.
func Run(t *testing.T, open func(t *testing.T) store.Store) {
	for _, tc := range []struct {
		name string
		test func(t *testing.T, s store.Store)
	}{
		{"Agents", testAgents},
		{"Tokens", testTokens},
		{"Calls", testCalls},
		{"CallQueries", testCallQueries},
		{"Checkpoints", testCheckpoints},
		{"Meta", testMeta},
		{"Users", testUsers},
		{"SetupTokens", testSetupTokens},
		{"Sessions", testSessions},
		{"Approvals", testApprovals},
		{"Outbox", testOutbox},
		{"AgentOpenCalls", testAgentOpenCalls},
		{"RevokeAgentTokens", testRevokeAgentTokens},
		{"RevokeAgentCredentials", testRevokeAgentCredentials},
		{"CallCounts", testCallCounts},
		{"CallMinutes", testCallMinutes},
		{"Failures", testFailures},
		{"AgentByToken", testAgentByToken},
		{"Append", testAppend},
		{"Hashes", testHashes},
		{"Atomicity", testAtomicity},
		{"GroupCommit", testGroupCommit},
		{"Serializable", testSerializable},
		{"ReadsDuringWrites", testReadsDuringWrites},
		{"CancelledContext", testCancelledContext},
		{"Close", testClose},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.test(t, open(t)) })
	}
}

// t0 has nanoseconds on purpose: the store keeps times to the nanosecond.
var t0 = time.Date(2025, 6, 1, 9, 30, 0, 123456789, time.UTC)

// zone is not UTC on purpose: the store keeps the instant, not the location.
var zone = time.FixedZone("UTC+2", 2*60*60)

var errBoom = errors.New("storetest: update failed on purpose")

// update runs fn in an Update that must succeed.
func update(t *testing.T, s store.Store, fn func(tx store.Tx) error) {
	t.Helper()
	if err := s.Update(t.Context(), fn); err != nil {
		t.Fatalf("Update: %v", err)
	}
}

// within fails the test when fn has not returned after d: a store must never
// leave a caller hanging.
func within(t *testing.T, d time.Duration, what string, fn func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn()
	}()
	select {
	case <-done:
	case <-time.After(d):
		t.Fatalf("%s did not return within %v", what, d)
	}
}

func newAgent(id string, created time.Time) *store.Agent {
	return &store.Agent{ID: id, Name: "agent " + id, Owner: "owner-" + id + "@example.com", Status: store.AgentActive,
		Manifest: []byte("name: " + id + "\nscope: []\n"), ManifestHash: "sha256:" + id, CreatedAt: created}
}

func insertAgents(t *testing.T, s store.Store, ids ...string) {
	t.Helper()
	update(t, s, func(tx store.Tx) error {
		for i, id := range ids {
			if err := tx.InsertAgent(newAgent(id, t0.Add(time.Duration(i)*time.Second))); err != nil {
				return err
			}
		}
		return nil
	})
}

func newCall(id, agent, key string, created time.Time) *store.Call {
	return &store.Call{ID: id, AgentID: agent, Connector: "crm", Action: "account.read", DeclaredRisk: "low",
		Risk: "low", Status: store.CallApproved, IdempotencyKey: key, CreatedAt: created, ExpiresAt: created.Add(time.Minute)}
}

func mustNotFound(t *testing.T, what string, err error) {
	t.Helper()
	if !errors.Is(err, store.ErrNotFound) {
		t.Errorf("%s: got error %v, want store.ErrNotFound", what, err)
	}
}

func mustConflict(t *testing.T, what string, err error) {
	t.Helper()
	if !errors.Is(err, store.ErrConflict) {
		t.Errorf("%s: got error %v, want store.ErrConflict", what, err)
	}
}

// checkSame reports the fields in which got and want, structs of one type,
// differ.
func checkSame(t *testing.T, what string, got, want any) {
	t.Helper()
	if d := diff(got, want); len(d) > 0 {
		t.Errorf("%s differs:\n\t%s", what, strings.Join(d, "\n\t"))
	}
}

func diff(got, want any) []string {
	gv, wv := reflect.ValueOf(got), reflect.ValueOf(want)
	var out []string
	for i := range gv.NumField() {
		g, w := gv.Field(i).Interface(), wv.Field(i).Interface()
		if !same(g, w) {
			out = append(out, fmt.Sprintf("%s: got %s, want %s", gv.Type().Field(i).Name, show(g), show(w)))
		}
	}
	return out
}

// same compares times with Equal (a store may hand back another location,
// never another instant) and treats nil and empty bytes alike.
func same(a, b any) bool {
	switch a := a.(type) {
	case time.Time:
		return a.Equal(b.(time.Time))
	case *time.Time:
		b := b.(*time.Time)
		if a == nil || b == nil {
			return a == nil && b == nil
		}
		return a.Equal(*b)
	case []byte:
		return bytes.Equal(a, b.([]byte))
	}
	return reflect.DeepEqual(a, b)
}

func show(v any) string {
	switch v := v.(type) {
	case *time.Time:
		if v != nil {
			return v.Format(time.RFC3339Nano)
		}
	case time.Time:
		return v.Format(time.RFC3339Nano)
	case []byte:
		return fmt.Sprintf("%q", v)
	case string:
		return fmt.Sprintf("%q", v)
	}
	return fmt.Sprintf("%v", v)
}

// allEntries reads the whole log, a page at a time.
func allEntries(t *testing.T, s store.Store) []store.Entry {
	t.Helper()
	var all []store.Entry
	for {
		page, err := s.Entries(t.Context(), int64(len(all)), 100)
		if err != nil {
			t.Fatalf("Entries(%d, 100): %v", len(all), err)
		}
		all = append(all, page...)
		if len(page) < 100 {
			return all
		}
	}
}

// verify checks the whole log as an auditor would (canonical entries,
// contiguous indexes, every agent's chain, no problem from record.Verifier)
// and that the store's stored hashes give the same root. It returns the log.
func verify(t *testing.T, s store.Store) []store.Entry {
	t.Helper()
	ctx := t.Context()
	es := allEntries(t, s)
	var v record.Verifier
	for i, e := range es {
		if e.Index != int64(i) {
			t.Fatalf("entry at position %d has index %d", i, e.Index)
		}
		if leaf := record.LeafHash(e.Data); leaf != e.Leaf {
			t.Errorf("entry %d: Leaf %v, but the leaf hash of its data is %v", i, e.Leaf, leaf)
		}
		v.Add(e.Data)
	}
	size, err := s.TreeSize(ctx)
	if err != nil {
		t.Fatalf("TreeSize: %v", err)
	}
	if size != int64(len(es)) {
		t.Fatalf("TreeSize is %d, Entries returned %d", size, len(es))
	}
	var cp *record.Checkpoint
	if size > 0 {
		th, err := tlog.TreeHash(size, store.HashReader(ctx, s))
		if err != nil {
			t.Fatalf("tlog.TreeHash(%d) over ReadHashes: %v", size, err)
		}
		if root := v.Root(); th != root {
			t.Errorf("tlog.TreeHash(%d) over ReadHashes is %v, the entries hash to %v", size, th, root)
		}
		cp = &record.Checkpoint{Origin: "storetest", Size: uint64(size), Hash: th[:]}
	}
	for _, p := range v.Finish(cp) {
		t.Errorf("record.Verifier: %v", p)
	}
	checkChains(t, s, es)
	return es
}

// checkChains checks that AgentEntries returns each agent's entries of es,
// in order, each naming the leaf hash of the one before.
func checkChains(t *testing.T, s store.Store, es []store.Entry) {
	t.Helper()
	byAgent := map[string][]store.Entry{}
	for _, e := range es {
		byAgent[e.Agent] = append(byAgent[e.Agent], e)
	}
	for agent, want := range byAgent {
		got, err := s.AgentEntries(t.Context(), agent, -1, len(want)+1)
		if err != nil {
			t.Fatalf("AgentEntries(%q): %v", agent, err)
		}
		if len(got) != len(want) {
			t.Errorf("AgentEntries(%q) returned %d entries, the log has %d", agent, len(got), len(want))
			continue
		}
		prev := ""
		for i, e := range got {
			if e.Index != want[i].Index || !bytes.Equal(e.Data, want[i].Data) {
				t.Errorf("AgentEntries(%q)[%d] is entry %d, want entry %d", agent, i, e.Index, want[i].Index)
			}
			p, err := record.Parse(e.Data)
			if err != nil {
				t.Errorf("entry %d: %v", e.Index, err)
				continue
			}
			if p.Prev != prev {
				t.Errorf("entry %d of agent %q: prev %q, want %q", e.Index, agent, p.Prev, prev)
			}
			prev = record.HashString(e.Leaf)
		}
	}
}
