package runtime

import (
	"unicode/utf8"

	"github.com/arxsec/arx/internal/inert"
)

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
