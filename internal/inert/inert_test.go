package inert

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"unicode/utf8"
)

func TestText(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		{"plain text is unchanged", "refund order 42 for ACME", "refund order 42 for ACME"},
		{"other scripts are unchanged", "commande n° 42 — Zürich, 東京, مرحبا", "commande n° 42 — Zürich, 東京, مرحبا"},
		{"emoji are unchanged", "ok 👍", "ok 👍"},
		{"backslashes are unchanged", `C:\tmp`, `C:\tmp`},
		{"a newline cannot start a fake line", "read\nrisk       low", `read\nrisk       low`},
		{"a tab cannot make a fake column", "a\tb", `a\tb`},
		{"carriage return cannot overwrite the line", "delete all\rread one", `delete all\rread one`},
		{"escape sequences are shown, not run", "\x1b[2J\x1b[1;1Hrisk low", `\x1b[2J\x1b[1;1Hrisk low`},
		{"an OSC title and hyperlink are shown", "\x1b]0;pwned\x07\x1b]8;;http://evil\x1b\\x", `\x1b]0;pwned\x07\x1b]8;;http://evil\x1b\x`},
		{"backspace cannot erase what was shown", "high\b\b\b\blow", `high\x08\x08\x08\x08low`},
		{"NUL and DEL", "a\x00b\x7f", `a\x00b\x7f`},
		{"C1 controls (CSI as one rune)", "a\u009b2Jb\u0085", `a\u009b2Jb\u0085`},
		{"a right-to-left override cannot reverse text", "invoice \u202egnp.exe", `invoice \u202egnp.exe`},
		{"bidi isolates and marks", "\u2066x\u2069\u200f\u061c", `\u2066x\u2069\u200f\u061c`},
		{"zero-width characters cannot hide text", "ad\u200bmin\ufeff", `ad\u200bmin\ufeff`},
		{"line and paragraph separators", "a\u2028b\u2029", `a\u2028b\u2029`},
		{"a format character outside the BMP", "x\U000e0001", `x\U000e0001`},
		{"bytes that are not UTF-8", "ok\xff\xfe\xc0", `ok\xff\xfe\xc0`},
		{"a truncated rune", "caf\xc3", `caf\xc3`},
		{"empty", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Text(tc.in)
			if got != tc.want {
				t.Errorf("Text(%q) = %q, want %q", tc.in, got, tc.want)
			}
			if !utf8.ValidString(got) {
				t.Errorf("Text(%q) is not UTF-8", tc.in)
			}
		})
	}
}

func TestBlock(t *testing.T) {
	for in, want := range map[string]string{
		"one\ntwo":               "one\ntwo",
		"a\r\nb\x1b[2J\n\u202ec": `a\r` + "\n" + `b\x1b[2J` + "\n" + `\u202ec`,
		"\t\n":                   `\t` + "\n",
	} {
		if got := Block(in); got != want {
			t.Errorf("Block(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestFprintf(t *testing.T) {
	var b bytes.Buffer
	Fprintf(&b, "%s|%v|%d|%s|%q\n", "a\x1bb", []string{"x\ny", "z"}, 7, errors.New("e\rf"), "q\x07")
	want := `a\x1bb|[x\ny z]|7|e\rf|"q\\x07"` + "\n"
	if b.String() != want {
		t.Errorf("got %q, want %q", b.String(), want)
	}
	// A call's arguments (JSON, which json.Marshal leaves DEL, C1 controls
	// and bidirectional overrides in) and named string types are text too;
	// bytes are not (a hash printed with %x stays its bytes).
	type code string
	b.Reset()
	Fprintf(&b, "%s|%s|%v|%x\n", json.RawMessage("{\"a\":\"\u009b2J\u202e\x7f\"}"), code("c\x1b"), code("d\r"), []byte{0x1b, 0x00})
	want = `{"a":"\u009b2J\u202e\x7f"}|c\x1b|d\r|1b00` + "\n"
	if b.String() != want {
		t.Errorf("got %q, want %q", b.String(), want)
	}
	// Slices and arrays of named strings are text; a nil error or
	// Stringer prints as fmt prints it, without a panic.
	type codes []code
	var nilErr *pathError
	var nilStringer *stringer
	b.Reset()
	Fprintf(&b, "%v|%v|%v|%v|%v|%v\n", codes{"a\x1b"}, []code{"b\r"}, [1]code{"c\n"}, nilErr, nilStringer, nil)
	want = `[a\x1b]|[b\r]|[c\n]|<nil>|<nil>|<nil>` + "\n"
	if b.String() != want {
		t.Errorf("got %q, want %q", b.String(), want)
	}
}

// A type's own Format, and the methods of a slice's named elements, are
// kept, and what they write is made inert.
func TestArgsFormatters(t *testing.T) {
	var b bytes.Buffer
	Fprintf(&b, "%v|%v|%s\n", formatter("f\x1b"), []status{"x\r"}, fmtError{"e\x1b"})
	want := `<f\x1b>|[S(x\r)]|E(e\x1b)` + "\n"
	if b.String() != want {
		t.Errorf("got %q, want %q", b.String(), want)
	}
}

type formatter string

func (f formatter) Format(st fmt.State, verb rune) { fmt.Fprintf(st, "<%s>", string(f)) }

type status string

func (s status) String() string { return "S(" + string(s) + ")" }

type fmtError struct{ msg string }

func (e fmtError) Error() string                  { return "E(" + e.msg + ")" }
func (e fmtError) Format(st fmt.State, verb rune) { fmt.Fprintf(st, "E(%s)", e.msg) }

type pathError struct{ path string }

func (e *pathError) Error() string { return "bad " + e.path }

type stringer struct{ s string }

func (s *stringer) String() string { return s.s }

func FuzzText(f *testing.F) {
	f.Add("\x1b[31mred\u202e\xff")
	f.Fuzz(func(t *testing.T, s string) {
		got := Text(s)
		if !utf8.ValidString(got) {
			t.Fatalf("Text(%q) = %q: not UTF-8", s, got)
		}
		for _, r := range got {
			if active(r, utf8.RuneLen(r)) {
				t.Fatalf("Text(%q) = %q: %U left active", s, got, r)
			}
		}
	})
}
