package record

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math/bits"
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
	// Each key is compared with a constant (see skip), which the compiler
	// turns into a load or two.
	ok := string(s.skip(len(keyAction))) == keyAction && s.str() &&
		string(s.skip(len(keyActor))) == keyActor && s.str() &&
		string(s.skip(len(keyAgent))) == keyAgent
	if !ok {
		return r, errScan
	}
	a := s.i
	if !s.str() {
		return r, errScan
	}
	r.Agent = data[a+1 : s.i-1]
	if string(s.skip(len(keyCall))) != keyCall {
		return r, errScan
	}
	c := s.i
	if !s.str() {
		return r, errScan
	}
	r.Call = data[c+1 : s.i-1]
	ok = string(s.skip(len(keyConnector))) == keyConnector && s.str() &&
		string(s.skip(len(keyData))) == keyData && s.object(1) &&
		string(s.skip(len(keyIndex))) == keyIndex
	if !ok {
		return r, errScan
	}
	idx, ok := s.uint()
	if !ok {
		return r, errScan
	}
	r.Index = idx
	if string(s.skip(len(keyPrev))) != keyPrev {
		return r, errScan
	}
	p := s.i
	if len(data)-p > 2*tlog.HashSize && data[p] != '"' {
		// 64 hex digits, decoded on the way: PrevIs then compares bytes.
		if r.prevLower, ok = decodeHash(&r.prev, data[p:p+2*tlog.HashSize]); !ok {
			return r, errScan
		}
		s.i += 2 * tlog.HashSize
	}
	if string(s.skip(1)) != `"` {
		return r, errScan
	}
	r.Prev = data[p : s.i-1]
	ok = string(s.skip(len(keyRisk))) == keyRisk && s.str() &&
		string(s.skip(len(keyTime))) == keyTime && s.time() &&
		string(s.skip(len(keyType))) == keyType
	if !ok {
		return r, errScan
	}
	t := s.i
	if !s.str() || s.i-t == 2 || string(s.skip(1)) != `}` || s.i != len(data) {
		return r, errScan
	}
	r.Type = data[t+1 : s.i-2]
	return r, nil
}

// The keys of an entry, in their canonical order, with what surrounds them.
const (
	keyAction    = `{"action":`
	keyActor     = `,"actor":`
	keyAgent     = `,"agent":`
	keyCall      = `,"call":`
	keyConnector = `,"connector":`
	keyData      = `,"data":`
	keyIndex     = `,"index":`
	keyPrev      = `,"prev":"`
	keyRisk      = `,"risk":`
	keyTime      = `,"time":"`
	keyType      = `","type":`
)

// EntryRef is what ScanEntry returns: slices of the entry's bytes, strings
// still in their JSON escaped form (unique, since the form is canonical).
type EntryRef struct {
	Index int64
	Agent []byte
	Call  []byte
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
	b     []byte
	i     int
	plain bool // the string str read last is printable ASCII without escapes
}

// skip returns the next n bytes and moves past them; nil if fewer are left.
// Compared with a constant, as string(s.skip(len(c))) == c, it compiles to
// a few loads, where lit calls memequal for more than eight bytes.
func (s *scanner) skip(n int) []byte {
	i := s.i
	if len(s.b)-i < n {
		return nil
	}
	s.i = i + n
	return s.b[i : i+n]
}

func (s *scanner) lit(l string) bool {
	if len(s.b)-s.i < len(l) || string(s.b[s.i:s.i+len(l)]) != l {
		return false
	}
	s.i += len(l)
	return true
}

const ones, highs = 0x0101010101010101, 0x8080808080808080

// inRange marks the bytes of x (all below 0x80) in [lo, hi] with their high
// bit.
func inRange(x uint64, lo, hi byte) uint64 {
	return (x + (0x80-uint64(lo))*ones) &^ (x + (0x7f-uint64(hi))*ones) & highs
}

// decodeHash decodes 64 hex digits into h, eight at a time, and reports
// whether they were all hex digits, and all lowercase.
func decodeHash(h *tlog.Hash, hex []byte) (lower, ok bool) {
	hex = hex[:2*tlog.HashSize]
	lower = true
	for k := 0; k < tlog.HashSize/4; k++ {
		x := binary.LittleEndian.Uint64(hex[8*k:])
		if x&highs != 0 {
			return false, false
		}
		if digits := inRange(x, '0', '9') | inRange(x, 'a', 'f'); digits != highs {
			if digits|inRange(x, 'A', 'F') != highs {
				return false, false
			}
			lower = false
		}
		// Each byte's value: its low four bits, plus 9 for a letter (0x40
		// set); then pairs of them into bytes, and the bytes together.
		n := x&0x0f0f0f0f0f0f0f0f + (x>>6&ones)*9
		n = (n<<4 | n>>8) & 0x00ff00ff00ff00ff
		n = (n | n>>8) & 0x0000ffff0000ffff
		n = (n | n>>16) & 0xffffffff
		binary.LittleEndian.PutUint32(h[4*k:], uint32(n))
	}
	return lower, true
}

// special8 marks with its high bit the first byte of x (in memory order,
// read little-endian) that needs a closer look in a string: a control
// character, '"', '\\' or a byte of multi-byte UTF-8. Bytes after it may be
// marked too; a word without such a byte is 0.
func special8(x uint64) uint64 {
	// Below 0x20, '"' and '\\' make a borrow (which can mark bytes after
	// them too, never before); 0x80 and above have the high bit already,
	// as do the bytes the subtractions mark without cause.
	return (x - 0x20*ones | (x ^ '"'*ones - ones) | (x ^ '\\'*ones - ones) | x) & highs
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
// writes it) starting at the opening quote, eight bytes at a time up to
// the first that needs a closer look: in most strings, the closing quote.
func (s *scanner) str() bool {
	b := s.b
	i := s.i
	if i >= len(b) || b[i] != '"' {
		return false
	}
	for i++; i+8 <= len(b); i += 8 {
		if m := special8(binary.LittleEndian.Uint64(b[i : i+8])); m != 0 {
			i += bits.TrailingZeros64(m) >> 3
			if b[i] == '"' {
				s.i, s.plain = i+1, true
				return true
			}
			break
		}
	}
	s.plain = false
	return s.strRest(i)
}

// strRest is the rest of str from b[i] on: escapes, multi-byte UTF-8, and
// the last bytes of b.
func (s *scanner) strRest(i int) bool {
	b := s.b
	for i < len(b) {
		if i+8 <= len(b) {
			m := special8(binary.LittleEndian.Uint64(b[i : i+8]))
			if m == 0 {
				i += 8
				continue
			}
			i += bits.TrailingZeros64(m) >> 3
		} else {
			for i < len(b) && plainChar[b[i]] {
				i++
			}
			if i >= len(b) {
				break
			}
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
	b := s.b
	if len(b)-s.i < len(timeLayout) {
		return false
	}
	t := b[s.i : s.i+len(timeLayout)]
	// Digits and separators in their places, a word at a time.
	for w, at := range timeWords {
		x := binary.LittleEndian.Uint64(t[at:])
		if x&highs != 0 || (x+timeLo[w])&^(x+timeHi[w])&highs != highs {
			return false
		}
	}
	two := func(j int) int { return int(t[j]-'0')*10 + int(t[j+1]-'0') }
	year, month, day := two(0)*100+two(2), two(5), two(8)
	if month < 1 || month > 12 || day < 1 || day > daysIn(month, year) ||
		two(11) > 23 || two(14) > 59 || two(17) > 59 {
		return false
	}
	s.i += len(timeLayout)
	return true
}

// timeLayout is TimeFormat with d for a digit.
const timeLayout = "dddd-dd-ddTdd:dd:dd.ddddddZ"

// timeWords are where time reads the words that cover timeLayout; timeLo
// and timeHi hold, for each byte of them, what inRange adds for the
// bounds of that byte: '0' to '9' for a digit, the separator itself.
var (
	timeWords      = [4]int{0, 8, 16, len(timeLayout) - 8}
	timeLo, timeHi = func() (lo, hi [4]uint64) {
		for w, at := range timeWords {
			for k := 0; k < 8; k++ {
				l, h := timeLayout[at+k], timeLayout[at+k]
				if l == 'd' {
					l, h = '0', '9'
				}
				lo[w] |= uint64(0x80-l) << (8 * k)
				hi[w] |= uint64(0x7f-h) << (8 * k)
			}
		}
		return lo, hi
	}()
)

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
	prevPlain := false
	for {
		k := s.i
		if !s.str() {
			return false
		}
		key, plain := s.b[k+1:s.i-1], s.plain
		if prev != nil {
			var less bool
			if plain && prevPlain {
				less = bytes.Compare(prev, key) < 0 // keyLess, for simple keys
			} else {
				less = keyLess(prev, key)
			}
			if !less {
				return false
			}
		}
		prev, prevPlain = key, plain
		if !s.lit(":") {
			return false
		}
		if depth < maxDepth && s.i < len(s.b) && s.b[s.i] == '"' { // value(depth+1), for a string
			if !s.str() {
				return false
			}
		} else if !s.value(depth + 1) {
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
