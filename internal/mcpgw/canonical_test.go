package mcpgw

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"math"
	"testing"
)

// RFC 8785 Appendix B: IEEE 754 doubles and their canonical form.
func TestFormatES6(t *testing.T) {
	for _, tc := range []struct {
		bits uint64
		want string
	}{
		{0x0000000000000000, "0"},
		{0x8000000000000000, "0"},
		{0x0000000000000001, "5e-324"},
		{0x8000000000000001, "-5e-324"},
		{0x7fefffffffffffff, "1.7976931348623157e+308"},
		{0xffefffffffffffff, "-1.7976931348623157e+308"},
		{0x4340000000000000, "9007199254740992"},
		{0xc340000000000000, "-9007199254740992"},
		{0x4430000000000000, "295147905179352830000"},
		{0x44b52d02c7e14af5, "9.999999999999997e+22"},
		{0x44b52d02c7e14af6, "1e+23"},
		{0x44b52d02c7e14af7, "1.0000000000000001e+23"},
		{0x444b1ae4d6e2ef4e, "999999999999999700000"},
		{0x444b1ae4d6e2ef4f, "999999999999999900000"},
		{0x444b1ae4d6e2ef50, "1e+21"},
		{0x3eb0c6f7a0b5ed8c, "9.999999999999997e-7"},
		{0x3eb0c6f7a0b5ed8d, "0.000001"},
		{0x41b3de4355555553, "333333333.3333332"},
		{0x41b3de4355555554, "333333333.33333325"},
		{0x41b3de4355555555, "333333333.3333333"},
		{0x41b3de4355555556, "333333333.3333334"},
		{0x41b3de4355555557, "333333333.33333343"},
		{0xbecbf647612f3696, "-0.0000033333333333333333"},
		{0x43143ff3c1cb0959, "1424953923781206.2"},
	} {
		if got := formatES6(math.Float64frombits(tc.bits)); got != tc.want {
			t.Errorf("%016x: got %s, want %s", tc.bits, got, tc.want)
		}
	}
}

func TestCanonicalize(t *testing.T) {
	for _, tc := range []struct {
		in, want string
	}{
		// RFC 8785 §3.2.4.
		{`{
		  "numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],
		  "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/",
		  "literals": [null, true, false]
		}`, `{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],"string":"€$\u000f\nA'B\"\\\\\"/"}`},
		// RFC 8785 §3.2.3: sorted by UTF-16 code units, not by code points.
		{`{"\u20ac":"Euro Sign","\r":"Carriage Return","\ufb33":"Hebrew Letter Dalet With Dagesh","1":"One","\ud83d\ude00":"Emoji: Grinning Face","\u0080":"Control","\u00f6":"Latin Small Letter O With Diaeresis"}`,
			"{\"\\r\":\"Carriage Return\",\"1\":\"One\",\"\u0080\":\"Control\",\"\u00f6\":\"Latin Small Letter O With Diaeresis\",\"\u20ac\":\"Euro Sign\",\"\U0001F600\":\"Emoji: Grinning Face\",\"\ufb33\":\"Hebrew Letter Dalet With Dagesh\"}"},
		{` { "b" : [ 1 , { "d": 2, "c": 1 } ], "a": "<&>" } `, `{"a":"<&>","b":[1,{"c":1,"d":2}]}`},
		{`-0.0`, `0`},
		{`1e-400`, `0`},
	} {
		got, err := Canonicalize([]byte(tc.in))
		if err != nil {
			t.Errorf("%s: %v", tc.in, err)
			continue
		}
		if string(got) != tc.want {
			t.Errorf("%s:\n got %s\nwant %s", tc.in, got, tc.want)
		}
	}
}

func TestCanonicalizeRefuses(t *testing.T) {
	for _, in := range []string{
		`{"a":1,"a":2}`,
		`1e400`,
		"\"\xff\"",
		`{"a":1} {}`,
		`{"a":`,
		`[]]`,
	} {
		if got, err := Canonicalize([]byte(in)); err == nil {
			t.Errorf("%q: canonicalized as %s, want an error", in, got)
		}
	}
}

func TestArgumentsDigest(t *testing.T) {
	sum := func(s string) string {
		h := sha256.Sum256([]byte(s))
		return "sha256:" + hex.EncodeToString(h[:])
	}
	for _, tc := range []struct {
		args json.RawMessage
		want string
	}{
		{nil, sum(`{}`)},
		{json.RawMessage(`null`), sum(`{}`)},
		{json.RawMessage(` {"message" : "hi",  "n": 1.0 } `), sum(`{"message":"hi","n":1}`)},
	} {
		got, err := ArgumentsDigest(tc.args)
		if err != nil || got != tc.want {
			t.Errorf("%s: got %s %v, want %s", tc.args, got, err, tc.want)
		}
	}
	for _, bad := range []string{`[1]`, `"x"`, `{"a":1,"a":1}`} {
		if d, err := ArgumentsDigest(json.RawMessage(bad)); err == nil {
			t.Errorf("%s: digest %s, want an error", bad, d)
		}
	}
}

func FuzzCanonicalize(f *testing.F) {
	for _, s := range []string{`{"a":[1,2.5,"x",null,true]}`, `{"\u20ac":1,"\r":2}`, `1e21`, `[[[]]]`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Canonicalize(data)
		if err != nil {
			return
		}
		// Canonical form is a fixed point, and still the same JSON value.
		again, err := Canonicalize(c)
		if err != nil || string(again) != string(c) {
			t.Fatalf("%q -> %q -> %q, %v", data, c, again, err)
		}
		if !json.Valid(c) {
			t.Fatalf("%q -> invalid JSON %q", data, c)
		}
	})
}
