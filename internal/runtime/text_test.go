package runtime

import (
	"strings"
	"testing"
	"time"
	"unicode/utf8"
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
		{"not UTF-8", "caf\xc3", 64, "is not valid UTF-8"},
		{"a NUL", "a\x00b", 64, "holds a NUL character"},
		{"controls are fit (shown escaped)", "a\x1b[2Jb\n", 64, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := TextProblem(tc.in, tc.max); got != tc.want {
				t.Errorf("TextProblem(%q, %d) = %q, want %q", tc.in, tc.max, got, tc.want)
			}
		})
	}
}

func TestShownText(t *testing.T) {
	if got := ShownText("a\x00b\xff", 64); got != `a\x00b\xff` {
		t.Errorf("ShownText = %q", got)
	}
	long := strings.Repeat("é", 400) + "\x00"
	got := ShownText(long, MaxSummary)
	if len(got) > MaxSummary || !utf8.ValidString(got) || TextProblem(got, MaxSummary) != "" || !strings.HasSuffix(got, "...") {
		t.Errorf("ShownText of %d bytes: %d bytes, fit: %q", len(long), len(got), TextProblem(got, MaxSummary))
	}
}

func TestLoginDelay(t *testing.T) {
	for failures, want := range map[int]time.Duration{0: 0, 4: 0, 5: time.Second, 6: 2 * time.Second, 14: 10 * time.Second, 500: LoginSlowdownMax} {
		if got := loginDelay(failures); got != want {
			t.Errorf("loginDelay(%d) = %v, want %v", failures, got, want)
		}
	}
}
