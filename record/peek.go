package record

import (
	"bytes"
	"encoding/json"
)

// Peek reads an entry's agent, call and type from its canonical bytes
// without parsing the rest: a store listing entries needs no more. In the
// canonical form the top-level keys come in a fixed order and a string
// value cannot hold an unescaped quote, so the first `,"agent":"` is the
// key agent, and the last `,"type":"` the key type. Malformed input gives
// empty strings.
func Peek(data []byte) (agent, call, typ string) {
	agent = peekString(data, []byte(`,"agent":"`), false)
	call = peekString(data, []byte(`,"call":"`), false)
	typ = peekString(data, []byte(`,"type":"`), true)
	return agent, call, typ
}

// PeekCall reads an entry's call as Peek does, without copying it (nil
// when there is none).
func PeekCall(data []byte) []byte {
	key := []byte(`,"call":"`)
	i := bytes.Index(data, key)
	if i < 0 {
		return nil
	}
	v := data[i+len(key):]
	for end := 0; end < len(v); end++ {
		switch v[end] {
		case '\\':
			return nil // call ids are plain: an escape is not one of them
		case '"':
			return v[:end]
		}
	}
	return nil
}

func peekString(data, key []byte, last bool) string {
	var i int
	if last {
		i = bytes.LastIndex(data, key)
	} else {
		i = bytes.Index(data, key)
	}
	if i < 0 {
		return ""
	}
	v := data[i+len(key)-1:] // from the opening quote
	end := 1
	escaped := false
	for ; end < len(v); end++ {
		if v[end] == '\\' {
			escaped = true
			end++
			continue
		}
		if v[end] == '"' {
			break
		}
	}
	if end >= len(v) {
		return ""
	}
	if !escaped {
		return string(v[1:end])
	}
	var s string
	if json.Unmarshal(v[:end+1], &s) != nil {
		return ""
	}
	return s
}
