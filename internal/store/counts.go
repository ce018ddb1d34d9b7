package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
)

// EncodeCounts is the stored form of counts: the non-empty buckets.
// Open is not kept: it is counted from the open calls at load.
func EncodeCounts(c *Counts) []byte {
	b := []byte{2}
	put := func(bs []Bucket) {
		n := 0
		for _, x := range bs {
			if x.N > 0 {
				n++
			}
		}
		b = binary.AppendUvarint(b, uint64(n))
		for _, x := range bs {
			if x.N > 0 {
				b = binary.AppendVarint(b, int64(x.At))
				b = binary.AppendUvarint(b, uint64(x.N))
			}
		}
	}
	put(c.Minutes[:])
	put(c.Quarters[:])
	var usage []Usage
	if c.Usage != nil {
		usage = c.Usage[:]
	}
	n := 0
	for _, u := range usage {
		if u.Micros != 0 || u.Tokens != 0 {
			n++
		}
	}
	b = binary.AppendUvarint(b, uint64(n))
	for _, u := range usage {
		if u.Micros != 0 || u.Tokens != 0 {
			b = binary.AppendVarint(b, int64(u.At))
			b = binary.AppendVarint(b, u.Micros)
			b = binary.AppendVarint(b, u.Tokens)
		}
	}
	return b
}

func DecodeCounts(b []byte) (*Counts, error) {
	c := &Counts{}
	if len(b) == 0 {
		return c, nil
	}
	version := b[0]
	if version != 1 && version != 2 { // 1: before usage was counted
		return nil, fmt.Errorf("counts: version %d", b[0])
	}
	b = b[1:]
	read := func(bs []Bucket, size int64) error {
		n, k := binary.Uvarint(b)
		if k <= 0 {
			return errors.New("counts: short")
		}
		b = b[k:]
		for range n {
			at, k := binary.Varint(b)
			if k <= 0 {
				return errors.New("counts: short")
			}
			b = b[k:]
			v, k := binary.Uvarint(b)
			if k <= 0 {
				return errors.New("counts: short")
			}
			b = b[k:]
			i := at % size
			if i < 0 {
				i += size
			}
			if at < 0 || at > math.MaxInt32 || v > math.MaxInt32 {
				return errors.New("counts: out of range")
			}
			if bs[i].N == 0 || int64(bs[i].At) < at { // the newest bucket of a slot
				bs[i] = Bucket{At: int32(at), N: int32(v)}
			}
		}
		return nil
	}
	if err := read(c.Minutes[:], int64(len(c.Minutes))); err != nil {
		return nil, err
	}
	if err := read(c.Quarters[:], int64(len(c.Quarters))); err != nil {
		return nil, err
	}
	if version == 1 {
		return c, nil
	}
	n, k := binary.Uvarint(b)
	if k <= 0 || n > uint64(quarters)*4 {
		return nil, errors.New("counts: short")
	}
	b = b[k:]
	if n > 0 {
		c.Usage = new(UsageWindow)
	}
	for range n {
		var v [3]int64
		for i := range v {
			x, k := binary.Varint(b)
			if k <= 0 {
				return nil, errors.New("counts: short")
			}
			v[i], b = x, b[k:]
		}
		if v[0] < 0 || v[0] > math.MaxInt32 {
			return nil, errors.New("counts: out of range")
		}
		i := v[0] % int64(len(c.Usage))
		if u := c.Usage[i]; (u.Micros == 0 && u.Tokens == 0) || int64(u.At) < v[0] {
			c.Usage[i] = Usage{At: int32(v[0]), Micros: v[1], Tokens: v[2]}
		}
	}
	return c, nil
}
