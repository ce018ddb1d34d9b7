package record

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

// TestScanEntryWordBoundaries holds ScanEntry to Parse with every kind of
// character that needs a closer look, at every offset from the start of a
// string (ScanEntry reads strings eight bytes at a time), in a key, a value
// of data and a top-level field, both as Marshal writes it and as raw
// bytes spliced into a canonical entry.
func TestScanEntryWordBoundaries(t *testing.T) {
	specials := []string{"\"", "\\", "\n", "\x01", "\x1f", "\x7f", "é", "\u2028", "\U0001F600", "\uffff", "\ufffd"}
	raw := []string{"\"", "\\", "\\u0041", "\\u000a", "\\/", "\x00", "\x1f", "\n", "\xff", "\xc3", "\xe2\x80", "\xed\xa0\x80", "\xc0\xaf"}
	t0 := time.Date(2026, 11, 26, 7, 0, 0, 0, time.UTC)
	check := func(data []byte) {
		t.Helper()
		r, serr := ScanEntry(data)
		e, perr := Parse(data)
		if (serr == nil) != (perr == nil) {
			t.Fatalf("ScanEntry: %v, Parse: %v on %q", serr, perr, data)
		}
		if serr == nil && (r.Index != e.Index || agentName(r.Agent) != e.Agent || string(r.Prev) != e.Prev || agentName(r.Type) != e.Type) {
			t.Fatalf("fields differ on %q: %+v vs %+v", data, r, e)
		}
	}
	for off := 0; off <= 17; off++ {
		pad := strings.Repeat("a", off)
		for _, c := range specials {
			s := pad + c + "bcdefghijklmnopq"
			for _, e := range []*Entry{
				{Index: 1, Time: t0, Agent: s, Type: TypeCallRequested, Data: map[string]any{"k": 1}},
				{Index: 2, Time: t0, Agent: "a", Type: s, Connector: s, Data: map[string]any{s: s, pad + "z": []any{s}}},
				{Index: 3, Time: t0, Agent: "a", Type: "t" + s, Risk: s, Data: map[string]any{"k" + s: 1, "k" + pad: 2}},
			} {
				data, err := e.Marshal()
				if err != nil {
					t.Fatal(err)
				}
				check(data)
			}
		}
		base, _ := (&Entry{Index: 4, Time: t0, Agent: "agent-" + pad + "-0123456789", Type: TypeCallRequested, Call: pad + "0123456789abcdef",
			Data: map[string]any{"summary": pad + "0123456789abcdef"}}).Marshal()
		for _, c := range raw {
			for _, at := range []string{`"agent":"agent-`, `"call":"`, `"summary":"`, `"type":"`} {
				i := min(bytes.Index(base, []byte(at))+len(at)+off, len(base)-2)
				data := append(append(append([]byte(nil), base[:i]...), c...), base[i:]...)
				check(data)
			}
		}
	}
}

// TestScanEntryDepth: data nested as deep as Parse allows, and one level
// more, with a string, a number and an empty object at the bottom.
func TestScanEntryDepth(t *testing.T) {
	base, _ := (&Entry{Index: 1, Time: time.Unix(0, 0), Agent: "a", Type: TypeCallRequested}).Marshal()
	for depth := maxDepth - 2; depth <= maxDepth+2; depth++ {
		for _, leaf := range []string{`"s"`, `1`, `{}`, `[]`, `["s"]`} {
			data := `{"k":` + leaf + `}`
			for d := 2; d < depth; d++ {
				data = `{"k":` + data + `}`
			}
			e := bytes.Replace(base, []byte(`"data":{}`), []byte(`"data":`+data), 1)
			_, serr := ScanEntry(e)
			_, perr := Parse(e)
			if (serr == nil) != (perr == nil) {
				t.Fatalf("depth %d, %s: ScanEntry: %v, Parse: %v", depth, leaf, serr, perr)
			}
		}
	}
}
