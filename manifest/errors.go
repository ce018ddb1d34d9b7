package manifest

import (
	"strconv"
	"strings"
)

// A Problem is one thing wrong with a manifest.
type Problem struct {
	Line    int    `json:"line"`             // 1-based; 0 when the problem is with the whole file
	Column  int    `json:"column,omitempty"` // 1-based; 0 when unknown
	Field   string `json:"field,omitempty"`  // such as scope.connectors["salesforce"].actions["account.read"].risk
	Message string `json:"message"`
	Hint    string `json:"hint,omitempty"` // what the author can do about it
}

// String renders the problem without a file name: "LINE: field: message (hint: hint)".
func (p Problem) String() string {
	var b strings.Builder
	p.write(&b)
	return b.String()
}

func (p Problem) write(b *strings.Builder) {
	if p.Line > 0 {
		b.WriteString(strconv.Itoa(p.Line))
		b.WriteString(": ")
	}
	if p.Field != "" {
		b.WriteString(p.Field)
		b.WriteString(": ")
	}
	b.WriteString(p.Message)
	if p.Hint != "" {
		b.WriteString(" (hint: ")
		b.WriteString(p.Hint)
		b.WriteString(")")
	}
}

// Error is the error Parse and ParseFile return for an invalid manifest. It lists
// every problem found, sorted by line.
type Error struct {
	File     string    `json:"file,omitempty"`
	Problems []Problem `json:"problems"`
}

// Error renders one line per problem, "FILE:LINE: field: message (hint: ...)", with
// "manifest" in place of FILE when the file name is not known.
func (e *Error) Error() string {
	name := e.File
	if name == "" {
		name = "manifest"
	}
	if len(e.Problems) == 0 {
		return name + ": invalid manifest"
	}
	var b strings.Builder
	for i, p := range e.Problems {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(name)
		if p.Line > 0 {
			b.WriteByte(':')
		} else {
			b.WriteString(": ")
		}
		p.write(&b)
	}
	return b.String()
}
