package record

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

// Canonical JSON, after RFC 8785 (JCS), restricted to the values a record
// entry holds: objects, arrays, strings, booleans, null and integers in
// [-(2^53-1), 2^53-1]. Fractions and exponents are refused rather than
// formatted, so that every implementation (the Python SDK included) can
// produce the same bytes with its standard JSON encoder: keys sorted by
// UTF-16 code units, no insignificant whitespace, strings escaped only where
// JSON requires it.

const maxSafeInt = 1<<53 - 1

// maxDepth bounds nesting in data, so hostile input cannot exhaust the stack.
const maxDepth = 32

var errDepth = errors.New("data nested too deeply")

// appendCanonical appends the canonical encoding of v to b. v is one of the
// types encoding/json produces with UseNumber, or the Go types entries are
// built from (string, bool, integers, map[string]any, []any, []string).
func appendCanonical(b []byte, v any, depth int) ([]byte, error) {
	if depth > maxDepth {
		return nil, errDepth
	}
	switch v := v.(type) {
	case nil:
		return append(b, "null"...), nil
	case bool:
		return strconv.AppendBool(b, v), nil
	case string:
		return appendString(b, v)
	case int:
		return appendInt(b, int64(v))
	case int64:
		return appendInt(b, v)
	case uint64:
		if v > maxSafeInt {
			return nil, fmt.Errorf("integer %d out of range", v)
		}
		return strconv.AppendUint(b, v, 10), nil
	case float64:
		if v != math.Trunc(v) || math.Abs(v) > maxSafeInt {
			return nil, fmt.Errorf("number %v is not a safe integer", v)
		}
		return appendInt(b, int64(v))
	case json.Number:
		i, err := strconv.ParseInt(string(v), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("number %s is not a safe integer", v)
		}
		return appendInt(b, i)
	case []string:
		b = append(b, '[')
		for i, s := range v {
			if i > 0 {
				b = append(b, ',')
			}
			var err error
			if b, err = appendString(b, s); err != nil {
				return nil, err
			}
		}
		return append(b, ']'), nil
	case []any:
		b = append(b, '[')
		for i, e := range v {
			if i > 0 {
				b = append(b, ',')
			}
			var err error
			if b, err = appendCanonical(b, e, depth+1); err != nil {
				return nil, err
			}
		}
		return append(b, ']'), nil
	case map[string]string:
		m := make(map[string]any, len(v))
		for k, s := range v {
			m[k] = s
		}
		return appendObject(b, m, depth)
	case map[string]any:
		return appendObject(b, v, depth)
	default:
		return nil, fmt.Errorf("unsupported value of type %T", v)
	}
}

func appendInt(b []byte, i int64) ([]byte, error) {
	if i > maxSafeInt || i < -maxSafeInt {
		return nil, fmt.Errorf("integer %d out of range", i)
	}
	return strconv.AppendInt(b, i, 10), nil
}

func appendObject(b []byte, m map[string]any, depth int) ([]byte, error) {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sortUTF16(keys)
	b = append(b, '{')
	for i, k := range keys {
		if i > 0 {
			b = append(b, ',')
		}
		var err error
		if b, err = appendString(b, k); err != nil {
			return nil, err
		}
		b = append(b, ':')
		if b, err = appendCanonical(b, m[k], depth+1); err != nil {
			return nil, err
		}
	}
	return append(b, '}'), nil
}

// sortUTF16 sorts keys by their UTF-16 code units (RFC 8785 §3.2.3).
func sortUTF16(keys []string) { slices.SortFunc(keys, CompareUTF16) }

// CompareUTF16 orders strings by their UTF-16 code units (RFC 8785 §3.2.3);
// for ASCII (and any text in the Basic Multilingual Plane) this is the byte
// order of UTF-8.
func CompareUTF16(a, b string) int {
	if isASCII(a) && isASCII(b) {
		return strings.Compare(a, b)
	}
	return slices.Compare(utf16.Encode([]rune(a)), utf16.Encode([]rune(b)))
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

const hexDigits = "0123456789abcdef"

// AppendJSONString appends s as an RFC 8785 JSON string; other canonical
// encoders (the MCP gateway's argument digests) share it.
func AppendJSONString(b []byte, s string) ([]byte, error) { return appendString(b, s) }

// appendString escapes as RFC 8785 §3.2.2.2: the two-character escapes for
// \b \t \n \f \r " \\, \u00xx for other control characters, and everything
// else as UTF-8. Invalid UTF-8 is an error, not silently replaced.
func appendString(b []byte, s string) ([]byte, error) {
	if !utf8.ValidString(s) {
		return nil, errors.New("string is not valid UTF-8")
	}
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' {
			continue
		}
		b = append(b, s[start:i]...)
		switch c {
		case '"', '\\':
			b = append(b, '\\', c)
		case '\b':
			b = append(b, '\\', 'b')
		case '\t':
			b = append(b, '\\', 't')
		case '\n':
			b = append(b, '\\', 'n')
		case '\f':
			b = append(b, '\\', 'f')
		case '\r':
			b = append(b, '\\', 'r')
		default:
			b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		}
		start = i + 1
	}
	b = append(b, s[start:]...)
	return append(b, '"'), nil
}

// Canonicalize re-encodes any JSON document canonically. It is what a
// verifier uses to check that stored bytes are in canonical form.
func Canonicalize(data []byte) ([]byte, error) {
	d := json.NewDecoder(bytes.NewReader(data))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return nil, err
	}
	if d.More() {
		return nil, errors.New("trailing data after JSON value")
	}
	return appendCanonical(nil, v, 0)
}
