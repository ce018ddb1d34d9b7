package record

import (
	"strings"
	"testing"
)

func TestTextProblem(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		max      int
		want     string
	}{
		{"ordinary text", "refund order 42 — für Zürich", 64, ""},
		{"empty", "", 64, ""},
		{"at the limit", strings.Repeat("a", 8), 8, ""},
		{"over the limit", strings.Repeat("a", 9), 8, "is longer than 8 bytes"},
		{"over the limit by a rune's last byte", strings.Repeat("a", 7) + "é", 8, "is longer than 8 bytes"},
		{"not UTF-8", "caf\xc3", 64, "is not valid UTF-8"},
		{"a NUL", "a\x00b", 64, "holds a NUL character"},
		{"controls are fit (shown inert)", "a\x1b[2Jb\n", 64, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := TextProblem(tc.in, tc.max); got != tc.want {
				t.Errorf("TextProblem(%q, %d) = %q, want %q", tc.in, tc.max, got, tc.want)
			}
		})
	}
}
