package record

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

func TestTilePaths(t *testing.T) {
	for _, tc := range []struct {
		ref  TileRef
		path string
	}{
		{TileRef{Level: 0, N: 0, Width: 256}, "tile/0/000"},
		{TileRef{Level: 0, N: 1234067, Width: 256}, "tile/0/x001/x234/067"},
		{TileRef{Level: 2, N: 1000, Width: 17}, "tile/2/x001/000.p/17"},
		{TileRef{Level: -1, N: 5, Width: 1}, "tile/entries/005.p/1"},
		{TileRef{Level: -1, N: 999, Width: 256}, "tile/entries/999"},
		{TileRef{Level: 63, N: 1<<63 - 1, Width: 255}, "tile/63/x009/x223/x372/x036/x854/x775/807.p/255"},
	} {
		if got := tc.ref.Path(); got != tc.path {
			t.Errorf("%+v.Path() = %q, want %q", tc.ref, got, tc.path)
		}
		got, err := ParseTilePath(tc.path)
		if err != nil || got != tc.ref {
			t.Errorf("ParseTilePath(%q) = %+v, %v; want %+v", tc.path, got, err, tc.ref)
		}
	}
	for _, bad := range []string{"tile/0/1", "tile/0/x000/001", "tile/00/000", "tile/0/000.p/0", "tile/0/000.p/256",
		"tile/0/000.p/07", "tile/0/001/002", "tile/entries/x1/000", "tile/64/000", "checkpoint", "tile/0/000/",
		"tile/0/x999/x999/x999/x999/x999/x999/x999/999"} {
		if r, err := ParseTilePath(bad); err == nil {
			t.Errorf("ParseTilePath(%q) = %+v, want an error", bad, r)
		}
	}
}

func TestTileWidthAt(t *testing.T) {
	// The example of the spec: a tree of 70,000 entries.
	for _, tc := range []struct {
		level   int
		full    int64
		partial int
	}{{0, 273, 112}, {1, 1, 17}, {2, 0, 1}, {3, 0, 0}} {
		full, partial := TileWidthAt(70000, tc.level)
		if full != tc.full || partial != tc.partial {
			t.Errorf("level %d: %d full, partial %d; want %d, %d", tc.level, full, partial, tc.full, tc.partial)
		}
	}
	if n := TileLevels(70000); n != 3 {
		t.Errorf("TileLevels(70000) = %d", n)
	}
	if n := TileLevels(256); n != 2 {
		t.Errorf("TileLevels(256) = %d", n) // a full level-0 tile and a level-1 tile of width 1
	}
}

func TestAppendLeafTiles(t *testing.T) {
	var tree Tree
	var leaves, level1 []tlog.Hash
	var done [8]tlog.Hash
	const n = 256*256 + 300
	for i := 0; i < n; i++ {
		leaf := LeafHash([]byte(fmt.Sprint(i)))
		leaves = append(leaves, leaf)
		k := tree.AppendLeafTiles(leaf, &done)
		if (i+1)%256 == 0 {
			if k < 1 {
				t.Fatalf("leaf %d completed no tile", i)
			}
			if want := TileHash(leaves[i+1-256:i+1], nil); done[0] != want {
				t.Fatalf("tile hash at leaf %d: %x, want %x", i, done[0], want)
			}
			level1 = append(level1, done[0])
		} else if k != 0 {
			t.Fatalf("leaf %d reported %d tiles", i, k)
		}
		if (i+1)%(256*256) == 0 {
			if k != 2 || done[1] != TileHash(level1[len(level1)-256:], nil) {
				t.Fatalf("level-2 hash at leaf %d wrong", i)
			}
		}
	}
	var plain Tree
	for _, l := range leaves {
		plain.AppendLeaf(l)
	}
	if tree.Root() != plain.Root() {
		t.Fatal("AppendLeafTiles changes the root")
	}
}

func TestBundle(t *testing.T) {
	var b []byte
	var err error
	for _, e := range []string{"a", "", strings.Repeat("x", 300)} {
		if b, err = AppendBundleEntry(b, []byte(e)); err != nil {
			t.Fatal(err)
		}
	}
	es, err := ParseEntryBundle(b)
	if err != nil || len(es) != 3 || string(es[0]) != "a" || len(es[1]) != 0 || len(es[2]) != 300 {
		t.Fatalf("ParseEntryBundle = %q, %v", es, err)
	}
	if _, err := AppendBundleEntry(nil, make([]byte, MaxBundleEntry+1)); err == nil {
		t.Fatal("an entry of 64 KiB fits a bundle")
	}
	if _, err := ParseEntryBundle(b[:len(b)-1]); err == nil {
		t.Fatal("a truncated bundle parses")
	}
}

func canonEntry(t testing.TB, i int64, data map[string]any) []byte {
	t.Helper()
	e := &Entry{Index: i, Time: time.Date(2026, 2, 28, 23, 59, 59, 123456000, time.UTC), Agent: "9a1d0c7e-agent",
		Type: TypeCallRequested, Call: "c-1", Connector: "crm", Action: "account.read", Risk: "low", Actor: "agent:x",
		Data: data}
	b, err := e.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestScanEntryAgreesWithParse(t *testing.T) {
	good := [][]byte{
		canonEntry(t, 0, nil),
		canonEntry(t, 9007199254740991, map[string]any{"a": []any{int64(-5), "x\n\u0001\"\\", true, nil, map[string]any{}}, "b": []any{}}),
		canonEntry(t, 7, map[string]any{"é": "ü", "\U0001F600": 1, "\uffff": 2, "z\x7f": "/<>&"}),
	}
	for _, g := range good {
		r, err := ScanEntry(g)
		if err != nil {
			t.Fatalf("ScanEntry(%s): %v", g, err)
		}
		e, _ := Parse(g)
		if r.Index != e.Index || string(r.Agent) != e.Agent || string(r.Prev) != e.Prev || string(r.Type) != e.Type {
			t.Fatalf("ScanEntry(%s) = %+v", g, r)
		}
	}
	base := string(good[0])
	for _, bad := range []string{
		strings.Replace(base, `"index":0`, `"index":00`, 1),
		strings.Replace(base, `"index":0`, `"index":-1`, 1),
		strings.Replace(base, `"data":{}`, `"data":{"b":1,"a":2}`, 1),
		strings.Replace(base, `"data":{}`, `"data":{"a":1,"a":2}`, 1),
		strings.Replace(base, `"data":{}`, `"data":{"a":1.5}`, 1),
		strings.Replace(base, `"data":{}`, `"data":{"a":-0}`, 1),
		strings.Replace(base, `"data":{}`, `"data":{"a":"\u0041"}`, 1),
		strings.Replace(base, `"data":{}`, `"data":{"a":"\u000a"}`, 1),
		strings.Replace(base, `"data":{}`, `"data":{"a":"\/"}`, 1),
		strings.Replace(base, `"data":{}`, `"data":null`, 1),
		strings.Replace(base, `"data":{}`, `"data":{"a":9007199254740992}`, 1),
		strings.Replace(base, `2026-02-28`, `2026-02-29`, 1),
		strings.Replace(base, `"type":"call.requested"`, `"type":""`, 1),
		strings.Replace(base, `"prev":""`, `"prev":"abc"`, 1),
		base + " ",
		strings.Replace(base, `{"action"`, `{ "action"`, 1),
	} {
		if _, err := ScanEntry([]byte(bad)); err == nil {
			t.Errorf("ScanEntry accepts %s", bad)
		}
		if _, err := Parse([]byte(bad)); err == nil {
			t.Errorf("Parse accepts %s (the test is wrong)", bad)
		}
	}
}

// FuzzScanEntry holds the fast scanner to Parse: the same verdict on every
// input, and the same fields.
func FuzzScanEntry(f *testing.F) {
	f.Add(canonEntry(f, 0, nil))
	f.Add(canonEntry(f, 42, map[string]any{"a": []any{int64(-5), "x\n\u0001", true, nil, map[string]any{"k": "v"}}}))
	f.Add(canonEntry(f, 3, map[string]any{"é": "ü", "\U0001F600": 1, "\uffff": 2}))
	f.Add([]byte(`{"action":"","actor":"","agent":"","call":"","connector":"","data":{},"index":1,"prev":"ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef0123456789","risk":"","time":"2000-02-29T00:00:00.000000Z","type":"t"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, serr := ScanEntry(data)
		e, perr := Parse(data)
		if (serr == nil) != (perr == nil) {
			t.Fatalf("ScanEntry: %v, Parse: %v on %q", serr, perr, data)
		}
		if serr == nil && (r.Index != e.Index || agentName(r.Agent) != e.Agent || string(r.Prev) != e.Prev || agentName(r.Type) != e.Type || agentName(r.Call) != e.Call) {
			t.Fatalf("fields differ: %+v vs %+v", r, e)
		}
		// Without an escape, the call is PeekCall's (what verifiers read before ScanEntry gave it).
		if serr == nil && (r.Call == nil || !bytes.Contains(r.Call, []byte{'\\'}) && string(PeekCall(data)) != string(r.Call)) {
			t.Fatalf("Call %q, PeekCall %q", r.Call, PeekCall(data))
		}
		if serr == nil && e.Prev != "" {
			h, _ := parseHash(e.Prev)
			if r.PrevIs(h) != (HashString(h) == e.Prev) {
				t.Fatalf("PrevIs(%s) = %v", e.Prev, r.PrevIs(h))
			}
		}
	})
}

func FuzzParseTilePath(f *testing.F) {
	for _, s := range []string{"tile/0/000", "tile/1/x001/x234/067.p/3", "tile/entries/x001/000", "tile/entries/000.p/255"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, path string) {
		r, err := ParseTilePath(path)
		if err != nil {
			return
		}
		if got := r.Path(); got != path {
			t.Fatalf("ParseTilePath(%q) = %+v, which prints as %q", path, r, got)
		}
	})
}

func FuzzParseEntryBundle(f *testing.F) {
	b, _ := AppendBundleEntry(nil, []byte("hello"))
	b, _ = AppendBundleEntry(b, nil)
	f.Add(b)
	f.Add([]byte{0, 5, 'a'})
	f.Fuzz(func(t *testing.T, data []byte) {
		es, err := ParseEntryBundle(data)
		if err != nil {
			return
		}
		var again []byte
		for _, e := range es {
			if again, err = AppendBundleEntry(again, e); err != nil {
				t.Fatal(err)
			}
		}
		if !bytes.Equal(again, data) {
			t.Fatalf("bundle does not round-trip")
		}
	})
}

func FuzzParseHashTile(f *testing.F) {
	f.Add(make([]byte, 32))
	f.Add(make([]byte, 8192))
	f.Add(make([]byte, 33))
	f.Fuzz(func(t *testing.T, data []byte) {
		hs, err := ParseHashTile(data)
		if err != nil {
			return
		}
		if len(hs)*32 != len(data) || len(hs) > 256 {
			t.Fatalf("%d hashes from %d bytes", len(hs), len(data))
		}
	})
}

func TestCosign(t *testing.T) {
	lskey, lvkey, _ := GenerateKey("example.com/log")
	signer, _ := NewSigner(lskey)
	signed, err := SignCheckpoint(signer, 10, tlog.Hash{1})
	if err != nil {
		t.Fatal(err)
	}
	var vkeys []string
	var lines []string
	for _, name := range []string{"w1.example", "w2.example", "w3.example"} {
		skey, vkey, err := GenerateWitnessKey(name)
		if err != nil {
			t.Fatal(err)
		}
		vkeys = append(vkeys, vkey)
		cs, err := NewCosigner(skey)
		if err != nil {
			t.Fatal(err)
		}
		if name == "w3.example" {
			continue // trusted, but did not cosign
		}
		n, _ := note.Open(signed, note.VerifierList(mustVerifier(t, lvkey)))
		line, err := Cosign(cs, n.Text)
		if err != nil || !strings.HasPrefix(line, "— "+name+" ") {
			t.Fatalf("Cosign = %q, %v", line, err)
		}
		lines = append(lines, line)
	}
	c, err := OpenCosigned(AppendSignatures(signed, lines...), lvkey, vkeys)
	if err != nil || len(c.Cosigs) != 2 || c.Cosigs[0].Witness != "w1.example" || len(c.Invalid) != 0 || time.Since(c.Cosigs[0].Time) > time.Minute {
		t.Fatalf("OpenCosigned = %+v, %v", c, err)
	}
	// A forged cosignature line from a trusted witness is named.
	forged := strings.Replace(lines[1], lines[1][len(lines[1])-6:len(lines[1])-1], "AAAAA", 1)
	c, err = OpenCosigned(AppendSignatures(signed, lines[0], forged), lvkey, vkeys)
	if err != nil || len(c.Cosigs) != 1 || len(c.Invalid) != 1 || c.Invalid[0] != "w2.example" {
		t.Fatalf("OpenCosigned with a forged line = %+v, %v", c, err)
	}
}

func mustVerifier(t *testing.T, vkey string) note.Verifier {
	v, err := note.NewVerifier(vkey)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// FuzzOpenCosigned feeds checkpoints, cosigned and mangled, to the parser
// an auditor runs first: it must never panic, and what it accepts must be
// signed by the log key.
func FuzzOpenCosigned(f *testing.F) {
	lskey, lvkey, _ := GenerateKey("example.com/log")
	signer, _ := NewSigner(lskey)
	wskey, wvkey, _ := GenerateWitnessKey("w.example")
	cs, _ := NewCosigner(wskey)
	signed, _ := SignCheckpoint(signer, 7, tlog.Hash{9})
	body := string(signed[:bytes.Index(signed, []byte("\n\n"))+1])
	line, _ := Cosign(cs, body)
	f.Add(AppendSignatures(signed, line))
	f.Add(signed)
	f.Add([]byte("example.com/log\n7\nAAAA\n\n— example.com/log AAAAAAAA\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := OpenCosigned(data, lvkey, []string{wvkey})
		if err != nil {
			return
		}
		if c.Checkpoint.Origin != "example.com/log" || len(c.Checkpoint.Hash) != tlog.HashSize || !strings.HasPrefix(c.Body, "example.com/log\n") {
			t.Fatalf("accepted %+v", c)
		}
	})
}
