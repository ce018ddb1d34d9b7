// Package inert renders text that ARX did not write (an agent's summary,
// an error an upstream returned, a reason, a name from a job description)
// harmless for a terminal: nothing in it can move the cursor, clear the
// screen, set a window title, hide what follows or reorder it.
//
// Text escapes, visibly and in Go's notation, every byte or rune a
// terminal would act on rather than show: C0 controls (newlines and tabs
// too, so one field cannot pose as several lines or columns), DEL, C1
// controls, Unicode format characters (bidirectional overrides and
// isolates, zero-width characters), line and paragraph separators, and
// bytes that are not UTF-8. Everything else is left as it is, so ordinary
// text in any script reads as written. JSON output needs none of this: it
// is for programs, and stays exact.
package inert

import (
	"encoding/json"
	"fmt"
	"io"
	"reflect"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Text returns s with everything a terminal would act on escaped.
func Text(s string) string {
	i := 0
	for i < len(s) {
		r, n := utf8.DecodeRuneInString(s[i:])
		if active(r, n) {
			break
		}
		i += n
	}
	if i == len(s) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 16)
	b.WriteString(s[:i])
	for i < len(s) {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n == 1:
			b.WriteString(`\x`)
			b.WriteString(hex2(s[i]))
		case !active(r, n):
			b.WriteString(s[i : i+n])
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\t':
			b.WriteString(`\t`)
		case r < 0x80:
			b.WriteString(`\x`)
			b.WriteString(hex2(byte(r)))
		case r <= 0xffff:
			b.WriteString(`\u`)
			b.WriteString(pad(strconv.FormatUint(uint64(r), 16), 4))
		default:
			b.WriteString(`\U`)
			b.WriteString(pad(strconv.FormatUint(uint64(r), 16), 8))
		}
		i += n
	}
	return b.String()
}

// Block is Text for a block of text shown as lines (a quoted summary in
// the console): its line breaks stay, and each line is made inert.
func Block(s string) string {
	if !strings.Contains(s, "\n") {
		return Text(s)
	}
	lines := strings.Split(s, "\n")
	for i := range lines {
		lines[i] = Text(lines[i])
	}
	return strings.Join(lines, "\n")
}

// active says whether a terminal would act on the rune (n bytes long)
// rather than show it.
func active(r rune, n int) bool {
	switch {
	case r == utf8.RuneError && n == 1: // not UTF-8
		return true
	case r < 0x20, r == 0x7f, r >= 0x80 && r <= 0x9f:
		return true
	case r < 0xa0:
		return false
	}
	return unicode.In(r, unicode.Cf, unicode.Zl, unicode.Zp)
}

func hex2(b byte) string {
	const digits = "0123456789abcdef"
	return string([]byte{digits[b>>4], digits[b&0xf]})
}

func pad(s string, n int) string {
	return strings.Repeat("0", max(0, n-len(s))) + s
}

// Fprintf is fmt.Fprintf with every string argument made inert: strings,
// string slices, errors and fmt.Stringers. The format is the caller's own
// text and is written as it is.
func Fprintf(w io.Writer, format string, args ...any) (int, error) {
	return fmt.Fprintf(w, format, Args(args...)...)
}

// Fprintln is fmt.Fprintln with every string argument made inert.
func Fprintln(w io.Writer, args ...any) (int, error) {
	return fmt.Fprintln(w, Args(args...)...)
}

// Args returns args with Text applied to what prints as text: strings and
// named string types, slices and arrays of them, JSON (json.RawMessage),
// errors and fmt.Stringers (a nil one prints as fmt prints it), and what a
// type's own fmt.Formatter writes. Numbers, booleans and other values pass
// as they are, byte slices too (a hash printed with %x must stay its
// bytes): make text held in bytes a string first.
func Args(args ...any) []any {
	out := make([]any, len(args))
	for i, a := range args {
		switch v := a.(type) {
		case nil:
			out[i] = a
		case string:
			out[i] = Text(v)
		case json.RawMessage:
			out[i] = Text(string(v))
		case error:
			out[i] = Text(call(a, v.Error))
		case fmt.Stringer:
			out[i] = Text(call(a, v.String))
		case fmt.Formatter:
			out[i] = formatted{a}
		default:
			out[i] = a
			switch rv := reflect.ValueOf(a); {
			case rv.Kind() == reflect.String:
				out[i] = Text(rv.String())
			case (rv.Kind() == reflect.Slice || rv.Kind() == reflect.Array) && rv.Type().Elem().Kind() == reflect.String:
				if rv.Type().Elem().NumMethod() > 0 { // each element formats itself
					s := make([]any, rv.Len())
					for j := range s {
						s[j] = rv.Index(j).Interface()
					}
					out[i] = Args(s...)
					break
				}
				s := make([]string, rv.Len())
				for j := range s {
					s[j] = Text(rv.Index(j).String())
				}
				out[i] = s
			}
		}
	}
	return out
}

// formatted is a value with its own fmt.Formatter, made inert: what it
// writes for a verb, through Text.
type formatted struct{ v any }

func (f formatted) Format(st fmt.State, verb rune) {
	io.WriteString(st, Text(fmt.Sprintf(fmt.FormatString(st, verb), f.v)))
}

// call returns f's text, or what fmt prints for a nil a (a typed nil
// pointer whose method does not take one) instead of panicking.
func call(a any, f func() string) (s string) {
	defer func() {
		if recover() != nil {
			s = fmt.Sprint(a)
		}
	}()
	return f()
}
