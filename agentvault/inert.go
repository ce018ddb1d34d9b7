package agentvault

import "github.com/arxsec/arx/internal/inert"

// Inert returns s made safe to print on a terminal. Text an agent, an
// upstream or a record holds is hostile wherever it is shown: Inert
// escapes, visibly and in Go's notation (\x1b, \u202e), every character a
// terminal would act on rather than show (controls, escape sequences,
// line breaks, bidirectional overrides, zero-width characters, bytes that
// are not UTF-8), and leaves everything else as written. The arx CLI and
// the local-only mode's approval prompt show such text the same way.
func Inert(s string) string { return inert.Text(s) }
