package record

import (
	"bytes"
	"testing"
)

// FuzzParse: Parse never panics, and what it accepts re-encodes to the
// same bytes.
func FuzzParse(f *testing.F) {
	e := testEntry(7, "agent-1", "")
	b, _ := e.Marshal()
	f.Add(b)
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"action":"","actor":"","agent":"","call":"","connector":"","data":{"x":[1,{"y":null}]},"index":0,"prev":"","risk":"","time":"2026-11-26T07:00:00.000000Z","type":"t"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		e, err := Parse(data)
		if err != nil {
			return
		}
		again, err := e.Marshal()
		if err != nil {
			t.Fatalf("accepted entry does not re-encode: %v", err)
		}
		if !bytes.Equal(again, data) {
			t.Fatalf("accepted entry re-encodes differently:\n%s\n%s", data, again)
		}
	})
}

// FuzzCanonicalize: never panics; its output is a fixed point.
func FuzzCanonicalize(f *testing.F) {
	f.Add([]byte(`{"b":1,"a":[true,null,"\u00e9"]}`))
	f.Add([]byte(`"\ud83d\ude00"`))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Canonicalize(data)
		if err != nil {
			return
		}
		c2, err := Canonicalize(c)
		if err != nil || !bytes.Equal(c, c2) {
			t.Fatalf("not a fixed point: %s -> %s (%v)", c, c2, err)
		}
	})
}

// FuzzOpenCheckpoint: never panics on any note.
func FuzzOpenCheckpoint(f *testing.F) {
	skey, vkey, _ := GenerateKey("arx.test/fuzz")
	s, _ := NewSigner(skey)
	signed, _ := SignCheckpoint(s, 3, emptyRoot)
	f.Add(signed)
	f.Add([]byte("arx.test/fuzz\n1\nAAAA\n\n— arx.test/fuzz AAAA\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cp, _, err := OpenCheckpoint(data, vkey)
		if err == nil && cp.Origin != "arx.test/fuzz" {
			t.Fatalf("opened a checkpoint of another origin: %q", cp.Origin)
		}
	})
}
