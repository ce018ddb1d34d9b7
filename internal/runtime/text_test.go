package runtime

import (
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/arxsec/arx/manifest"
	"github.com/arxsec/arx/record"
)

func TestShownText(t *testing.T) {
	if got := ShownText("a\x00b\xff", 64); got != `a\x00b\xff` {
		t.Errorf("ShownText = %q", got)
	}
	long := strings.Repeat("é", 400) + "\x00"
	got := ShownText(long, manifest.MaxSummary)
	if len(got) > manifest.MaxSummary || !utf8.ValidString(got) || record.TextProblem(got, manifest.MaxSummary) != "" || !strings.HasSuffix(got, "...") {
		t.Errorf("ShownText of %d bytes: %d bytes, fit: %q", len(long), len(got), record.TextProblem(got, manifest.MaxSummary))
	}
}

func TestLoginDelay(t *testing.T) {
	for failures, want := range map[int]time.Duration{0: 0, 4: 0, 5: time.Second, 6: 2 * time.Second, 14: 10 * time.Second, 500: LoginSlowdownMax} {
		if got := loginDelay(failures); got != want {
			t.Errorf("loginDelay(%d) = %v, want %v", failures, got, want)
		}
	}
}
