package audit

import (
	"context"
	"encoding/base64"
	"fmt"

	"github.com/arxsec/arx/record"
	"golang.org/x/mod/sumdb/tlog"
)

// Proof is an entry with its RFC 6962 inclusion proof in a checkpoint.
type Proof struct {
	Index      int64    `json:"index"`
	Entry      []byte   `json:"entry"` // canonical bytes
	LeafHash   string   `json:"leaf_hash"`
	TreeSize   int64    `json:"tree_size"`
	Root       string   `json:"root"`
	Hashes     []string `json:"proof"` // base64, leaf to root
	Checkpoint string   `json:"checkpoint"`
}

// Prove fetches entry index from src and proves it is in the log the
// (cosigned) checkpoint commits to, from the published tiles. The proof is
// checked before it is returned.
func Prove(ctx context.Context, src Source, opts Options, index int64) (*Proof, error) {
	signed, err := src.Get(ctx, record.CheckpointPath)
	if err != nil {
		return nil, fmt.Errorf("audit: checkpoint: %w", err)
	}
	cs, err := record.OpenCosigned(signed, opts.LogKey, opts.WitnessKeys)
	if err != nil {
		return nil, err
	}
	if len(cs.Invalid) > 0 || len(cs.Cosigs) < opts.Quorum {
		return nil, fmt.Errorf("audit: %d of the %d required witnesses cosigned the checkpoint", len(cs.Cosigs), opts.Quorum)
	}
	size, root := int64(cs.Checkpoint.Size), tlog.Hash(cs.Checkpoint.Hash)
	if index < 0 || index >= size {
		return nil, fmt.Errorf("audit: the checkpoint commits to entries 0..%d, not %d", size-1, index)
	}
	n := index / record.TileWidth
	w := int(min(size-n*record.TileWidth, record.TileWidth))
	bundle, err := getBundle(ctx, src, n, w)
	if err != nil {
		return nil, fmt.Errorf("audit: %s: %w", record.BundlePath(n, w), err)
	}
	entries, err := record.ParseEntryBundle(bundle)
	if err != nil {
		return nil, fmt.Errorf("audit: %s: %w", record.BundlePath(n, w), err)
	}
	j := int(index % record.TileWidth)
	if j >= len(entries) {
		return nil, fmt.Errorf("audit: %s holds %d entries, not entry %d", record.BundlePath(n, w), len(entries), index)
	}
	entry := entries[j]
	leaf := record.LeafHash(entry)
	tree := tlog.Tree{N: size, Hash: root}
	proof, err := tlog.ProveRecord(size, index, tlog.TileHashReader(tree, &tileReader{ctx: ctx, src: src}))
	if err != nil {
		return nil, fmt.Errorf("audit: the published tiles do not prove entry %d: %w", index, err)
	}
	if err := tlog.CheckRecord(proof, size, root, index, leaf); err != nil {
		return nil, fmt.Errorf("audit: entry %d as published is not the one the log committed to: %w", index, err)
	}
	p := &Proof{Index: index, Entry: entry, LeafHash: base64.StdEncoding.EncodeToString(leaf[:]), TreeSize: size,
		Root: base64.StdEncoding.EncodeToString(root[:]), Checkpoint: string(signed)}
	for _, h := range proof {
		p.Hashes = append(p.Hashes, base64.StdEncoding.EncodeToString(h[:]))
	}
	return p, nil
}

// tileReader serves x/mod's tile hash reader from the C2SP layout (tiles of
// height 8; only the paths differ).
type tileReader struct {
	ctx context.Context
	src Source
}

func (r *tileReader) Height() int { return record.TileHeight }

func (r *tileReader) ReadTiles(tiles []tlog.Tile) ([][]byte, error) {
	out := make([][]byte, len(tiles))
	for i, t := range tiles {
		if t.H != record.TileHeight || t.L < 0 {
			return nil, fmt.Errorf("audit: unexpected tile %+v", t)
		}
		data, err := getTile(r.ctx, r.src, t.L, t.N, t.W)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", record.TilePath(t.L, t.N, t.W), err)
		}
		out[i] = data
	}
	return out, nil
}

func (r *tileReader) SaveTiles([]tlog.Tile, [][]byte) {}
