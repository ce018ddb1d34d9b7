package record

import (
	"fmt"

	"golang.org/x/mod/sumdb/tlog"
)

// Tree is the right edge of an RFC 6962 Merkle tree: the roots of the
// perfect subtrees that make up its leaves so far, largest first. It appends
// in O(1) amortised time and computes the root in O(log n), which is all a
// sequencer or a verifier streaming a million entries needs.
//
// The zero Tree is the empty tree.
type Tree struct {
	size  int64
	nodes []tlog.Hash // roots of the perfect subtrees, one per set bit of size, highest first
}

// Size is the number of leaves.
func (t *Tree) Size() int64 { return t.size }

// Append adds a leaf hash and returns the hashes that RFC 6962 storage keeps
// for it, in the order of tlog.StoredHashes: the leaf, then every interior
// node the leaf completes. They belong at tlog.StoredHashIndex(0, size-1)
// onwards.
func (t *Tree) Append(leaf tlog.Hash) []tlog.Hash {
	return t.AppendTo(nil, leaf)
}

// AppendTo is Append, with the stored hashes appended to dst: a check that
// only compares them reuses one slice and allocates nothing.
func (t *Tree) AppendTo(dst []tlog.Hash, leaf tlog.Hash) []tlog.Hash {
	stored := append(dst, leaf)
	h := leaf
	for n := t.size; n&1 == 1; n >>= 1 {
		left := t.nodes[len(t.nodes)-1]
		t.nodes = t.nodes[:len(t.nodes)-1]
		h = tlog.NodeHash(left, h)
		stored = append(stored, h)
	}
	t.nodes = append(t.nodes, h)
	t.size++
	return stored
}

// AppendLeaf is Append without the stored hashes, for verifiers.
func (t *Tree) AppendLeaf(leaf tlog.Hash) {
	h := leaf
	for n := t.size; n&1 == 1; n >>= 1 {
		h = tlog.NodeHash(t.nodes[len(t.nodes)-1], h)
		t.nodes = t.nodes[:len(t.nodes)-1]
	}
	t.nodes = append(t.nodes, h)
	t.size++
}

// Root is the RFC 6962 tree hash (MTH). The empty tree's is SHA-256("").
func (t *Tree) Root() tlog.Hash {
	if t.size == 0 {
		return emptyRoot
	}
	h := t.nodes[len(t.nodes)-1]
	for i := len(t.nodes) - 2; i >= 0; i-- {
		h = tlog.NodeHash(t.nodes[i], h)
	}
	return h
}

// Clone returns an independent copy, so a batch can be rolled back.
func (t *Tree) Clone() *Tree {
	return &Tree{size: t.size, nodes: append([]tlog.Hash(nil), t.nodes...)}
}

// CopyTo makes dst a copy of t, reusing dst's memory: a sequencer keeps
// one to roll an Update back without allocating for each.
func (t *Tree) CopyTo(dst *Tree) {
	dst.size = t.size
	dst.nodes = append(dst.nodes[:0], t.nodes...)
}

// FrontierIndexes lists the stored-hash indexes (tlog.StoredHashIndex) whose
// hashes rebuild the Tree of the given size, highest subtree first.
func FrontierIndexes(size int64) []int64 {
	var idx []int64
	for level := 62; level >= 0; level-- {
		if size>>level&1 == 1 {
			k := size>>level - 1 // the subtree root's index at its level
			idx = append(idx, tlog.StoredHashIndex(level, k))
		}
	}
	return idx
}

// NewTree rebuilds a Tree of the given size from the hashes stored at
// FrontierIndexes(size), in that order.
func NewTree(size int64, frontier []tlog.Hash) (*Tree, error) {
	if want := len(FrontierIndexes(size)); len(frontier) != want {
		return nil, fmt.Errorf("record: tree of size %d needs %d frontier hashes, got %d", size, want, len(frontier))
	}
	return &Tree{size: size, nodes: append([]tlog.Hash(nil), frontier...)}, nil
}

var emptyRoot = tlog.Hash{0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9, 0x24,
	0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52, 0xb8, 0x55}
