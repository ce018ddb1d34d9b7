package record

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/tlog"
)

// hashStore is a tlog.HashReader over a map, for cross-checking Tree
// against x/mod's reference implementation.
type hashStore map[int64]tlog.Hash

func (s hashStore) ReadHashes(idx []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(idx))
	for i, x := range idx {
		h, ok := s[x]
		if !ok {
			return nil, fmt.Errorf("no hash at %d", x)
		}
		out[i] = h
	}
	return out, nil
}

func TestTreeMatchesTlog(t *testing.T) {
	var tree Tree
	store := hashStore{}
	if tree.Root() != emptyRoot {
		t.Fatal("empty root")
	}
	for n := int64(0); n < 300; n++ {
		leaf := tlog.RecordHash([]byte(fmt.Sprint("entry ", n)))
		want, err := tlog.StoredHashes(n, []byte(fmt.Sprint("entry ", n)), store)
		if err != nil {
			t.Fatal(err)
		}
		got := tree.Append(leaf)
		if len(got) != len(want) {
			t.Fatalf("n=%d: %d stored hashes, want %d", n, len(got), len(want))
		}
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("n=%d: stored hash %d differs", n, i)
			}
			store[tlog.StoredHashIndex(0, n)+int64(i)] = want[i]
		}
		root, err := tlog.TreeHash(n+1, store)
		if err != nil {
			t.Fatal(err)
		}
		if tree.Root() != root {
			t.Fatalf("size %d: root differs from tlog.TreeHash", n+1)
		}
		// Rebuild from the frontier, as a restarted sequencer does.
		idx := FrontierIndexes(n + 1)
		fr, err := store.ReadHashes(idx)
		if err != nil {
			t.Fatal(err)
		}
		rebuilt, err := NewTree(n+1, fr)
		if err != nil {
			t.Fatal(err)
		}
		if rebuilt.Root() != root {
			t.Fatalf("size %d: rebuilt root differs", n+1)
		}
	}
}

func TestCanonicalVectors(t *testing.T) {
	for _, tc := range []struct {
		in, want string
	}{
		{`{"b":1,"a":"x"}`, `{"a":"x","b":1}`},
		{`{"a":[true,false,null,-7]}`, `{"a":[true,false,null,-7]}`},
		{`"\u00e9\n\t\"\\\u001f\u007f"`, "\"é\\n\\t\\\"\\\\\\u001f\u007f\""},
		{`"<>&\u2028"`, "\"<>&\u2028\""},
		{`{"\ud83d\ude00":1,"\ufb33":2}`, "{\"\U0001F600\":1,\"\ufb33\":2}"}, // UTF-16 order: surrogates sort before U+FB33
		{`"\b\f\r"`, `"\b\f\r"`},
	} {
		got, err := Canonicalize([]byte(tc.in))
		if err != nil {
			t.Fatalf("%s: %v", tc.in, err)
		}
		if string(got) != tc.want {
			t.Errorf("Canonicalize(%s) = %s, want %s", tc.in, got, tc.want)
		}
	}
	for _, bad := range []string{`1.5`, `1e3`, `9007199254740993`, `{"a":1}{}`, `"\xff"`} {
		if _, err := Canonicalize([]byte(bad)); err == nil {
			t.Errorf("Canonicalize(%s): no error", bad)
		}
	}
}

func testEntry(i int64, agent, prev string) *Entry {
	return &Entry{Index: i, Time: time.Date(2026, 11, 26, 7, 0, 0, int(i)*1000, time.UTC), Agent: agent, Prev: prev,
		Type: TypeCredentialIssued, Call: fmt.Sprint("call-", i), Connector: "salesforce", Action: "account.read",
		Risk: "low", Actor: "agent:" + agent, Data: map[string]any{"n": i, "note": "x"}}
}

func TestEntryRoundTrip(t *testing.T) {
	e := testEntry(3, "a1", "")
	b, err := e.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	want := `{"action":"account.read","actor":"agent:a1","agent":"a1","call":"call-3","connector":"salesforce","data":{"n":3,"note":"x"},"index":3,"prev":"","risk":"low","time":"2026-11-26T07:00:00.000003Z","type":"credential.issued"}`
	if string(b) != want {
		t.Fatalf("got  %s\nwant %s", b, want)
	}
	if !json.Valid(b) {
		t.Fatal("not valid JSON")
	}
	p, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	b2, _ := p.Marshal()
	if string(b2) != want {
		t.Fatalf("round trip changed bytes: %s", b2)
	}
	for _, bad := range []string{
		strings.Replace(want, `"index":3`, `"index":3.0`, 1),
		strings.Replace(want, `{"action"`, `{ "action"`, 1),
		strings.Replace(want, `,"type":"credential.issued"`, ``, 1),
		strings.Replace(want, `"prev":""`, `"prev":"zz"`, 1),
		strings.Replace(want, `"data":{`, `"data":{"x":{"y":1.5},`, 1),
		strings.Replace(want, `}`, `,"extra":1}`, 1),
		`[]`, ``, `{`,
	} {
		if _, err := Parse([]byte(bad)); err == nil {
			t.Errorf("Parse accepted %s", bad)
		}
	}
}

// buildLog makes n entries spread over three agents, chained as the runtime does.
func buildLog(t *testing.T, n int) [][]byte {
	t.Helper()
	heads := map[string]string{}
	var out [][]byte
	for i := 0; i < n; i++ {
		agent := fmt.Sprint("agent-", i%3)
		e := testEntry(int64(i), agent, heads[agent])
		b, err := e.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		heads[agent] = HashString(LeafHash(b))
		out = append(out, b)
	}
	return out
}

func verifyAll(entries [][]byte, cp *Checkpoint) []Problem {
	var v Verifier
	for _, e := range entries {
		v.Add(e)
	}
	return v.Finish(cp)
}

func TestVerifyDetectsTampering(t *testing.T) {
	skey, vkey, err := GenerateKey("arx.test/log")
	if err != nil {
		t.Fatal(err)
	}
	entries := buildLog(t, 20)
	var v Verifier
	for _, e := range entries {
		v.Add(e)
	}
	signer, err := NewSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	signed, err := SignCheckpoint(signer, v.Size(), v.Root())
	if err != nil {
		t.Fatal(err)
	}
	cp, _, err := OpenCheckpoint(signed, vkey)
	if err != nil {
		t.Fatal(err)
	}
	if p := verifyAll(entries, cp); len(p) != 0 {
		t.Fatalf("untouched log: %v", p)
	}

	clone := func() [][]byte { return append([][]byte(nil), entries...) }
	edit := func(i int) [][]byte {
		c := clone()
		c[i] = []byte(strings.Replace(string(c[i]), `"note":"x"`, `"note":"y"`, 1))
		return c
	}
	for _, tc := range []struct {
		name  string
		log   [][]byte
		kinds []string
	}{
		{"edited", edit(4), []string{ProblemChainBroken, ProblemRootMismatch}},
		{"edited last", edit(19), []string{ProblemRootMismatch}},
		{"deleted", append(clone()[:7:7], entries[8:]...), []string{ProblemMissing, ProblemChainBroken, ProblemTruncated}},
		{"reordered", func() [][]byte { c := clone(); c[5], c[6] = c[6], c[5]; return c }(), []string{ProblemMissing, ProblemOutOfOrder, ProblemRootMismatch}},
		{"inserted", append(append(clone()[:3:3], entries[2]), entries[3:]...), []string{ProblemOutOfOrder, ProblemChainBroken, ProblemExtra}},
		{"truncated", clone()[:15], []string{ProblemTruncated}},
		{"garbage", func() [][]byte { c := clone(); c[2] = []byte("{nope"); return c }(), []string{ProblemMalformed}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := verifyAll(tc.log, cp)
			kinds := map[string]bool{}
			for _, p := range got {
				kinds[p.Kind] = true
			}
			for _, k := range tc.kinds {
				if !kinds[k] {
					t.Errorf("want a %s problem, got %v", k, got)
				}
			}
		})
	}

	// A checkpoint signed by another key is refused.
	_, otherV, _ := GenerateKey("arx.test/log")
	if _, _, err := OpenCheckpoint(signed, otherV); err == nil {
		t.Error("checkpoint accepted under another key")
	}
}
