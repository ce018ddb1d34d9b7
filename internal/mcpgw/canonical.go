package mcpgw

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/arxsec/arx/record"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// The record gets a digest of a call's arguments, never the arguments: an
// auditor who holds the arguments recomputes it, nobody else learns them.
// The digest is SHA-256 over the arguments in the JSON Canonicalization
// Scheme (RFC 8785), so that it does not depend on how the client happened
// to order keys, space or escape its JSON.

// maxCanonicalDepth bounds nesting, so hostile arguments cannot exhaust the
// stack.
const maxCanonicalDepth = 256

// errNotObject reports tool arguments that are not a JSON object.
var errNotObject = errors.New("arguments must be a JSON object")

// ArgumentsDigest returns "sha256:" and the hex SHA-256 of the RFC 8785
// canonical form of a tool call's arguments. Absent or null arguments are
// the empty object. Arguments that are not one valid JSON object (invalid
// UTF-8, duplicate keys, numbers outside IEEE 754 double range) are an
// error.
func ArgumentsDigest(args json.RawMessage) (string, error) {
	trimmed := bytes.TrimSpace(args)
	if len(trimmed) == 0 || string(trimmed) == "null" {
		trimmed = []byte("{}")
	}
	if trimmed[0] != '{' {
		return "", errNotObject
	}
	c, err := Canonicalize(trimmed)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(c)
	return "sha256:" + hex.EncodeToString(sum[:]), nil
}

// Canonicalize returns the RFC 8785 canonical form of one JSON value:
// object members sorted by the UTF-16 code units of their names, numbers in
// the shortest form ECMAScript prints them, strings escaped only where JSON
// requires, no insignificant whitespace.
func Canonicalize(data []byte) ([]byte, error) {
	if !utf8.Valid(data) {
		return nil, errors.New("JSON is not valid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	out, err := canonicalValue(dec, nil, 0)
	if err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("JSON holds more than one value")
	}
	return out, nil
}

func canonicalValue(dec *json.Decoder, b []byte, depth int) ([]byte, error) {
	if depth > maxCanonicalDepth {
		return nil, fmt.Errorf("JSON nests deeper than %d", maxCanonicalDepth)
	}
	tok, err := dec.Token()
	if err != nil {
		return nil, fmt.Errorf("invalid JSON: %w", err)
	}
	switch t := tok.(type) {
	case nil:
		return append(b, "null"...), nil
	case bool:
		return strconv.AppendBool(b, t), nil
	case string:
		return record.AppendJSONString(b, t)
	case json.Number:
		f, err := strconv.ParseFloat(string(t), 64)
		if err != nil {
			return nil, fmt.Errorf("number %.32s is outside the range of IEEE 754 doubles", string(t))
		}
		return append(b, formatES6(f)...), nil
	case json.Delim:
		switch t {
		case '[':
			b = append(b, '[')
			for i := 0; dec.More(); i++ {
				if i > 0 {
					b = append(b, ',')
				}
				if b, err = canonicalValue(dec, b, depth+1); err != nil {
					return nil, err
				}
			}
			if _, err := dec.Token(); err != nil { // ]
				return nil, fmt.Errorf("invalid JSON: %w", err)
			}
			return append(b, ']'), nil
		case '{':
			type member struct {
				key   string
				value []byte
			}
			var ms []member
			seen := map[string]bool{}
			for dec.More() {
				kt, err := dec.Token()
				if err != nil {
					return nil, fmt.Errorf("invalid JSON: %w", err)
				}
				k := kt.(string)
				if seen[k] {
					return nil, fmt.Errorf("JSON object has the member %.64q twice", k)
				}
				seen[k] = true
				v, err := canonicalValue(dec, nil, depth+1)
				if err != nil {
					return nil, err
				}
				ms = append(ms, member{k, v})
			}
			if _, err := dec.Token(); err != nil { // }
				return nil, fmt.Errorf("invalid JSON: %w", err)
			}
			slices.SortFunc(ms, func(x, y member) int { return record.CompareUTF16(x.key, y.key) })
			b = append(b, '{')
			for i, m := range ms {
				if i > 0 {
					b = append(b, ',')
				}
				var err error
				if b, err = record.AppendJSONString(b, m.key); err != nil {
					return nil, err
				}
				b = append(b, ':')
				b = append(b, m.value...)
			}
			return append(b, '}'), nil
		}
	}
	return nil, fmt.Errorf("invalid JSON token %v", tok)
}

// formatES6 prints a finite double as ECMAScript's Number.prototype.toString
// does (RFC 8785 §3.2.2.3): the shortest digits that read back the same,
// in plain notation from 1e-6 up to 1e21 and in exponent notation outside.
func formatES6(f float64) string {
	if f == 0 {
		return "0" // also -0
	}
	if math.IsInf(f, 0) || math.IsNaN(f) {
		panic("formatES6: not a finite number") // ParseFloat of JSON never yields these
	}
	sign := ""
	if f < 0 {
		sign, f = "-", -f
	}
	format := byte('e')
	if f >= 1e-6 && f < 1e21 {
		format = 'f'
	}
	s := strconv.FormatFloat(f, format, -1, 64)
	if e := strings.IndexByte(s, 'e'); e > 0 && s[e+2] == '0' {
		s = s[:e+2] + s[e+3:] // Go writes e-07, ECMAScript e-7
	}
	return sign + s
}
