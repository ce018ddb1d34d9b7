package record

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// TextProblem says what makes s unfit to store as a text field of at most
// max bytes, or "" when it is fit. One rule for every text a caller sends
// (a call's summary, an error, a reason, a note), wherever it is checked:
// the runtime, and the Go SDK's local-only mode; the Python SDK's repeats
// it, held to it by testdata/vectors/asks.json. Entries hold such text as
// it is, their canonical form needs UTF-8, and PostgreSQL's text cannot
// hold a NUL. Controls are fit: they are stored, and shown inert.
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
