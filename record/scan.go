package record

import (
	"bytes"
	"encoding/binary"
	"errors"
	"strconv"
	"unicode/utf8"

	"golang.org/x/mod/sumdb/tlog"
)

// ScanEntry is the fast path of Parse for verifiers that stream millions of
// entries: it checks that data is a canonical entry, accepting exactly what
// Parse accepts, and returns the fields a chain check needs as slices of
// data, without allocating. The fuzz test FuzzScanEntry holds it to Parse.
func ScanEntry(data []byte) (EntryRef, error) {
	var r EntryRef
	if len(data) > MaxEntrySize {
		return r, errScan
	}
	s := scanner{b: data}
	ok := s.lit(`{"action":`) && s.str() &&
		s.lit(`,"actor":`) && s.str() &&
		s.lit(`,"agent":`)
	if !ok {
		return r, errScan
	}
	a := s.i
	if !s.str() {
		return r, errScan
	}
	r.Agent = data[a+1 : s.i-1]
	ok = s.lit(`,"call":`) && s.str() &&
		s.lit(`,"connector":`) && s.str() &&
		s.lit(`,"data":`) && s.object(1) &&
		s.lit(`,"index":`)
	if !ok {
		return r, errScan
	}
	idx, ok := s.uint()
	if !ok {
		return r, errScan
	}
	r.Index = idx
	if !s.lit(`,"prev":"`) {
		return r, errScan
	}
	p := s.i
	if len(data)-p > 2*tlog.HashSize && data[p] != '"' {
		// 64 hex digits, decoded on the way: PrevIs then compares bytes.
		lower := true
		for k := 0; k < tlog.HashSize; k++ {
			hi, lo := hexVal[data[p+2*k]], hexVal[data[p+2*k+1]]
			if hi|lo > 0x1f {
				return r, errScan
			}
			lower = lower && hi < 0x10 && lo < 0x10
			r.prev[k] = (hi&0xf)<<4 | lo&0xf
		}
		r.prevLower = lower
		s.i += 2 * tlog.HashSize
	}
	if !s.lit(`"`) {
		return r, errScan
	}
	r.Prev = data[p : s.i-1]
	ok = s.lit(`,"risk":`) && s.str() &&
		s.lit(`,"time":"`) && s.time() &&
		s.lit(`","type":`)
	if !ok {
		return r, errScan
	}
	t := s.i
	if !s.str() || s.i-t == 2 || !s.lit(`}`) || s.i != len(data) {
		return r, errScan
	}
	r.Type = data[t+1 : s.i-2]
	return r, nil
}

// EntryRef is what ScanEntry returns: slices of the entry's bytes, strings
// still in their JSON escaped form (unique, since the form is canonical).
type EntryRef struct {
	Index int64
	Agent []byte
	Prev  []byte // "" or 64 hex digits
	Type  []byte

	prev      tlog.Hash // Prev decoded
	prevLower bool      // Prev is in lowercase, as Append writes it
}

// PrevIs reports whether the entry's prev names h in lowercase hex, as
// Append writes it (HashString).
func (r *EntryRef) PrevIs(h tlog.Hash) bool {
	return len(r.Prev) == 2*tlog.HashSize && r.prevLower && r.prev == h
}

var errScan = errors.New("record: entry is not canonical")

type scanner struct {
	b []byte
	i int
}

func (s *scanner) lit(l string) bool {
	if len(s.b)-s.i < len(l) || string(s.b[s.i:s.i+len(l)]) != l {
		return false
	}
	s.i += len(l)
	return true
}

// hexVal is a hex digit's value: 0-15 for lowercase, 0x10-0x1f for
// uppercase (value + 0x10), 0xff for anything else.
var hexVal = func() (t [256]byte) {
	for i := range t {
		t[i] = 0xff
	}
	for c := byte('0'); c <= '9'; c++ {
		t[c] = c - '0'
	}
	for c := byte('a'); c <= 'f'; c++ {
		t[c] = c - 'a' + 10
	}
	for c := byte('A'); c <= 'F'; c++ {
		t[c] = c - 'A' + 10 + 0x10
	}
	return t
}()

// special8 reports whether any of eight bytes may need a closer look: a
// control character, '"', '\\' or a byte of multi-byte UTF-8. (It may say
// yes for a plain byte next to such a byte; never no for one.)
func special8(x uint64) bool {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	q, bs := x^'"'*ones, x^'\\'*ones
	return (x-0x20*ones|(q-ones)&^q|(bs-ones)&^bs|x)&highs != 0
}

// plainChar marks bytes a canonical string holds as they are, with no
// escape and no multi-byte UTF-8 check: the fast path of str.
var plainChar [256]bool

func init() {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		plainChar[c] = c != '"' && c != '\\'
	}
}

// str checks a canonical JSON string (RFC 8785 §3.2.2.2, as appendString
// writes it) starting at the opening quote.
func (s *scanner) str() bool {
	b := s.b
	if s.i >= len(b) || b[s.i] != '"' {
		return false
	}
	i := s.i + 1
	for i < len(b) {
		for i+8 <= len(b) && !special8(binary.LittleEndian.Uint64(b[i:])) {
			i += 8
		}
		for i < len(b) && plainChar[b[i]] {
			i++
		}
		if i >= len(b) {
			break
		}
		c := b[i]
		switch {
		case c == '"':
			s.i = i + 1
			return true
		case c == '\\':
			if i+1 >= len(b) {
				return false
			}
			switch b[i+1] {
			case '"', '\\', 'b', 't', 'n', 'f', 'r':
				i += 2
			case 'u':
				// Only control characters without a short form.
				if i+5 >= len(b) || b[i+2] != '0' || b[i+3] != '0' || (b[i+4] != '0' && b[i+4] != '1') {
					return false
				}
				lo := b[i+5]
				var v byte
				switch {
				case lo >= '0' && lo <= '9':
					v = lo - '0'
				case lo >= 'a' && lo <= 'f':
					v = lo - 'a' + 10
				default:
					return false
				}
				v += (b[i+4] - '0') << 4
				switch v {
				case '\b', '\t', '\n', '\f', '\r':
					return false
				}
				i += 6
			default:
				return false
			}
		case c < 0x20:
			return false
		case c < utf8.RuneSelf:
			i++
		default:
			r, size := utf8.DecodeRune(b[i:])
			if r == utf8.RuneError && size == 1 {
				return false
			}
			i += size
		}
	}
	return false
}

// uint checks a canonical non-negative safe integer.
func (s *scanner) uint() (int64, bool) {
	b := s.b
	start := s.i
	var v int64
	for s.i < len(b) && b[s.i] >= '0' && b[s.i] <= '9' {
		v = v*10 + int64(b[s.i]-'0')
		s.i++
		if s.i-start > 16 {
			return 0, false
		}
	}
	n := s.i - start
	if n == 0 || n > 1 && b[start] == '0' || v > maxSafeInt {
		return 0, false
	}
	return v, true
}

// time checks the canonical time format 2006-01-02T15:04:05.000000Z for a
// valid instant, as time.Parse does.
func (s *scanner) time() bool {
	const layout = "dddd-dd-ddTdd:dd:dd.ddddddZ"
	b := s.b
	if len(b)-s.i < len(layout) {
		return false
	}
	t := b[s.i : s.i+len(layout)]
	for j := 0; j < len(layout); j++ {
		if layout[j] == 'd' {
			if t[j] < '0' || t[j] > '9' {
				return false
			}
		} else if t[j] != layout[j] {
			return false
		}
	}
	num := func(j, n int) int {
		v := 0
		for k := j; k < j+n; k++ {
			v = v*10 + int(t[k]-'0')
		}
		return v
	}
	year, month, day := num(0, 4), num(5, 2), num(8, 2)
	if month < 1 || month > 12 || day < 1 || day > daysIn(month, year) ||
		num(11, 2) > 23 || num(14, 2) > 59 || num(17, 2) > 59 {
		return false
	}
	s.i += len(layout)
	return true
}

func daysIn(month, year int) int {
	switch month {
	case 2:
		if year%4 == 0 && (year%100 != 0 || year%400 == 0) {
			return 29
		}
		return 28
	case 4, 6, 9, 11:
		return 30
	}
	return 31
}

// value checks one canonical value at the given depth (appendCanonical).
func (s *scanner) value(depth int) bool {
	if depth > maxDepth || s.i >= len(s.b) {
		return false
	}
	switch c := s.b[s.i]; {
	case c == '"':
		return s.str()
	case c == '{':
		return s.object(depth)
	case c == '[':
		s.i++
		if s.lit("]") {
			return true
		}
		for {
			if !s.value(depth + 1) {
				return false
			}
			if s.lit("]") {
				return true
			}
			if !s.lit(",") {
				return false
			}
		}
	case c == 't':
		return s.lit("true")
	case c == 'f':
		return s.lit("false")
	case c == 'n':
		return s.lit("null")
	case c == '-':
		s.i++
		if s.i < len(s.b) && s.b[s.i] == '0' {
			return false // no -0
		}
		_, ok := s.uint()
		return ok
	case c >= '0' && c <= '9':
		_, ok := s.uint()
		return ok
	}
	return false
}

// object checks a canonical object: keys in strictly increasing UTF-16
// order (RFC 8785 §3.2.3), members at depth+1.
func (s *scanner) object(depth int) bool {
	if !s.lit("{") {
		return false
	}
	if s.lit("}") {
		return true
	}
	var prev []byte
	for {
		k := s.i
		if !s.str() {
			return false
		}
		key := s.b[k+1 : s.i-1]
		if prev != nil && !keyLess(prev, key) {
			return false
		}
		prev = key
		if !s.lit(":") || !s.value(depth+1) {
			return false
		}
		if s.lit("}") {
			return true
		}
		if !s.lit(",") {
			return false
		}
	}
}

// keyLess compares two canonical (escaped) keys in UTF-16 code unit order.
// Without escapes and below U+E000, that is byte order; otherwise the keys
// are unescaped and compared as Parse's encoder does.
func keyLess(a, b []byte) bool {
	simple := func(k []byte) bool {
		for _, c := range k {
			if c == '\\' || c >= 0xee {
				return false
			}
		}
		return true
	}
	if simple(a) && simple(b) {
		return bytes.Compare(a, b) < 0
	}
	ua, err1 := strconv.Unquote(`"` + string(a) + `"`)
	ub, err2 := strconv.Unquote(`"` + string(b) + `"`)
	if err1 != nil || err2 != nil {
		return false
	}
	return CompareUTF16(ua, ub) < 0
}
