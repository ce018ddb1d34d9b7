package runtime

import (
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/arxsec/arx/internal/inert"
)

// MaxSummary bounds a call's summary, in bytes.
const MaxSummary = 512

// TextProblem says what makes s unfit to store as a text field of at most
// max bytes, or "" when it is fit. One rule for every text a caller sends
// (a summary, an error, a reason, a note): both stores keep it as it is,
// and PostgreSQL's text cannot hold a NUL.
func TextProblem(s string, max int) string {
	switch {
	case len(s) > max:
		return fmt.Sprintf("is longer than %d bytes", max)
	case !utf8.ValidString(s):
		return "is not valid UTF-8"
	case strings.IndexByte(s, 0) >= 0:
		return "holds a NUL character"
	}
	return ""
}

// ShownText is unfit text made fit to record what was attempted: escaped
// as the CLI shows it (inert.Text), cut to max bytes on a rune boundary.
func ShownText(s string, max int) string {
	s = inert.Text(s)
	if len(s) <= max {
		return s
	}
	cut := max - len("...")
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "..."
}
