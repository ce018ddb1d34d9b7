package record

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/tlog"
)

// The C2SP tlog-tiles layout (https://c2sp.org/tlog-tiles): the log as
// static objects under a prefix. A hash tile at level L holds up to 256
// consecutive Merkle tree hashes of tree level 8L; the entry bundle N holds
// the entries whose leaf hashes are level-0 tile N, each prefixed by its
// length as a big-endian uint16. The rightmost tiles of a tree are partial,
// with their width in the path. Note that x/mod's tlog tile paths differ
// (they name the tile height); these follow C2SP.

// TileWidth is the number of hashes in a full tile and entries in a full
// bundle.
const TileWidth = 256

// TileHeight is log2(TileWidth): a tile spans 8 levels of the tree.
const TileHeight = 8

// MaxBundleEntry is the largest entry an entry bundle can hold.
const MaxBundleEntry = 1<<16 - 1

// CheckpointPath is the object holding the latest (cosigned) checkpoint.
const CheckpointPath = "checkpoint"

// maxTileLevel bounds the level in a path; level 8 already spans 2^72
// entries, more than an int64 counts.
const maxTileLevel = 63

// TilePath is the path of hash tile n at level, of the given width (1 to
// 256; 256 is a full tile).
func TilePath(level int, n int64, width int) string {
	return "tile/" + strconv.Itoa(level) + "/" + indexPath(n, width)
}

// BundlePath is the path of entry bundle n of the given width.
func BundlePath(n int64, width int) string {
	return "tile/entries/" + indexPath(n, width)
}

// indexPath encodes n as zero-padded 3-digit path elements, all but the
// last prefixed with "x", and appends ".p/<W>" for partial tiles.
func indexPath(n int64, width int) string {
	var b []byte
	var digits [8]int // an int64 has at most 7 groups of three digits
	k := 0
	for {
		digits[k] = int(n % 1000)
		k++
		n /= 1000
		if n == 0 {
			break
		}
	}
	for i := k - 1; i >= 0; i-- {
		if i > 0 {
			b = append(b, 'x')
		}
		d := digits[i]
		b = append(b, byte('0'+d/100), byte('0'+d/10%10), byte('0'+d%10))
		if i > 0 {
			b = append(b, '/')
		}
	}
	if width < TileWidth {
		b = append(b, ".p/"...)
		b = strconv.AppendInt(b, int64(width), 10)
	}
	return string(b)
}

// TileRef names one tile or entry bundle. Level is -1 for an entry bundle.
type TileRef struct {
	Level int
	N     int64
	Width int
}

// Entries reports whether t is an entry bundle.
func (t TileRef) Entries() bool { return t.Level < 0 }

// Path is t's path in the layout.
func (t TileRef) Path() string {
	if t.Entries() {
		return BundlePath(t.N, t.Width)
	}
	return TilePath(t.Level, t.N, t.Width)
}

var errTilePath = errors.New("record: not a tile path")

// ParseTilePath parses a tile or entry bundle path written by TilePath or
// BundlePath. It accepts only the canonical encoding, so that every tile has
// exactly one path.
func ParseTilePath(path string) (TileRef, error) {
	rest, ok := strings.CutPrefix(path, "tile/")
	if !ok {
		return TileRef{}, errTilePath
	}
	var t TileRef
	if r, ok := strings.CutPrefix(rest, "entries/"); ok {
		t.Level, rest = -1, r
	} else {
		l, r, ok := strings.Cut(rest, "/")
		if !ok {
			return TileRef{}, errTilePath
		}
		level, err := strconv.Atoi(l)
		if err != nil || level < 0 || level > maxTileLevel || strconv.Itoa(level) != l {
			return TileRef{}, errTilePath
		}
		t.Level, rest = level, r
	}
	t.Width = TileWidth
	if i := strings.Index(rest, ".p/"); i >= 0 {
		w := rest[i+3:]
		width, err := strconv.Atoi(w)
		if err != nil || width < 1 || width >= TileWidth || strconv.Itoa(width) != w {
			return TileRef{}, errTilePath
		}
		t.Width, rest = width, rest[:i]
	}
	elems := strings.Split(rest, "/")
	if len(elems) > 7 {
		return TileRef{}, errTilePath
	}
	for i, e := range elems {
		last := i == len(elems)-1
		if !last {
			var ok bool
			if e, ok = strings.CutPrefix(e, "x"); !ok {
				return TileRef{}, errTilePath
			}
		}
		if len(e) != 3 || e[0] < '0' || e[0] > '9' || e[1] < '0' || e[1] > '9' || e[2] < '0' || e[2] > '9' {
			return TileRef{}, errTilePath
		}
		if i == 0 && e == "000" && !last {
			return TileRef{}, errTilePath // leading zero group
		}
		d := int64(e[0]-'0')*100 + int64(e[1]-'0')*10 + int64(e[2]-'0')
		if t.N > (1<<63-1-d)/1000 {
			return TileRef{}, errTilePath
		}
		t.N = t.N*1000 + d
	}
	return t, nil
}

// TileWidthAt says which tiles of a level a tree of the given size has:
// full tiles 0 to full-1, then one partial tile of the given width (0 when
// there is none).
func TileWidthAt(size int64, level int) (full int64, partial int) {
	n := size >> (TileHeight * level)
	return n / TileWidth, int(n % TileWidth)
}

// TileLevels is the number of tile levels a tree of the given size has:
// the levels with at least one hash.
func TileLevels(size int64) int {
	l := 0
	for size>>(TileHeight*l) > 0 {
		l++
	}
	return l
}

// AppendBundleEntry appends one entry to an entry bundle.
func AppendBundleEntry(bundle, entry []byte) ([]byte, error) {
	if len(entry) > MaxBundleEntry {
		return bundle, fmt.Errorf("record: entry of %d bytes does not fit an entry bundle (at most %d)", len(entry), MaxBundleEntry)
	}
	bundle = binary.BigEndian.AppendUint16(bundle, uint16(len(entry)))
	return append(bundle, entry...), nil
}

// ErrBundle reports a malformed entry bundle.
var ErrBundle = errors.New("record: malformed entry bundle")

// NextBundleEntry splits the first entry off an entry bundle without
// copying: entry aliases bundle.
func NextBundleEntry(bundle []byte) (entry, rest []byte, err error) {
	if len(bundle) < 2 {
		return nil, nil, ErrBundle
	}
	n := int(binary.BigEndian.Uint16(bundle))
	if len(bundle)-2 < n {
		return nil, nil, ErrBundle
	}
	return bundle[2 : 2+n], bundle[2+n:], nil
}

// ParseEntryBundle splits an entry bundle into its entries (which alias
// data). It allows at most 2*TileWidth entries, so that a hostile bundle
// cannot make the reader allocate without bound, yet a tampered bundle with
// extra entries can still be examined.
func ParseEntryBundle(data []byte) ([][]byte, error) {
	var out [][]byte
	for len(data) > 0 {
		if len(out) >= 2*TileWidth {
			return nil, fmt.Errorf("%w: more than %d entries", ErrBundle, 2*TileWidth)
		}
		e, rest, err := NextBundleEntry(data)
		if err != nil {
			return nil, err
		}
		out = append(out, e)
		data = rest
	}
	return out, nil
}

// ParseHashTile splits a hash tile into its hashes. A tile is whole hashes
// only, 1 to 256 of them.
func ParseHashTile(data []byte) ([]tlog.Hash, error) {
	if len(data) == 0 || len(data)%tlog.HashSize != 0 || len(data) > TileWidth*tlog.HashSize {
		return nil, fmt.Errorf("record: hash tile of %d bytes is not 1 to %d whole hashes", len(data), TileWidth)
	}
	out := make([]tlog.Hash, len(data)/tlog.HashSize)
	for i := range out {
		copy(out[i][:], data[i*tlog.HashSize:])
	}
	return out, nil
}

// TileHash is the Merkle tree hash of a full tile's hashes: the hash one
// level up. tmp is scratch space of at least 128 hashes (nil allocates).
func TileHash(hashes []tlog.Hash, tmp []tlog.Hash) tlog.Hash {
	if len(hashes) != TileWidth {
		panic("record: TileHash of a partial tile")
	}
	if len(tmp) < TileWidth/2 {
		tmp = make([]tlog.Hash, TileWidth/2)
	}
	for i := 0; i < TileWidth/2; i++ {
		tmp[i] = tlog.NodeHash(hashes[2*i], hashes[2*i+1])
	}
	for n := TileWidth / 2; n > 1; n /= 2 {
		for i := 0; i < n/2; i++ {
			tmp[i] = tlog.NodeHash(tmp[2*i], tmp[2*i+1])
		}
	}
	return tmp[0]
}

// AppendLeafTiles is AppendLeaf that also reports the subtrees the leaf
// completed whose height is a multiple of TileHeight: done[k] is the root of
// the completed subtree of 256^(k+1) leaves ending at this leaf, for k <
// the returned count. Those are the hashes of the tiles one level up.
func (t *Tree) AppendLeafTiles(leaf tlog.Hash, done *[8]tlog.Hash) int {
	h := leaf
	count, height := 0, 0
	for n := t.size; n&1 == 1; n >>= 1 {
		h = tlog.NodeHash(t.nodes[len(t.nodes)-1], h)
		t.nodes = t.nodes[:len(t.nodes)-1]
		height++
		if height%TileHeight == 0 {
			done[height/TileHeight-1] = h
			count = height / TileHeight
		}
	}
	t.nodes = append(t.nodes, h)
	t.size++
	return count
}
