package publish

import (
	"context"

	"github.com/arxsec/arx/record"
	"golang.org/x/mod/sumdb/tlog"
)

// LogWriter writes a whole log to a bucket in the tiles layout, entry by
// entry, without a store: for benchmarks that need a large published log,
// and for tests that forge one. (The Publisher streams a live log from the
// store instead.)
type LogWriter struct {
	up     *uploader
	tree   record.Tree
	bundle []byte
	tiles  [8][]byte // the open tile at each level
	done   [8]tlog.Hash
}

// NewLogWriter starts an empty log in b.
func NewLogWriter(ctx context.Context, b Bucket) *LogWriter {
	return &LogWriter{up: newUploader(ctx, b, DefaultObjectTimeout)}
}

// Add appends an entry.
func (w *LogWriter) Add(entry []byte) error {
	var err error
	if w.bundle, err = record.AppendBundleEntry(w.bundle, entry); err != nil {
		return err
	}
	leaf := record.LeafHash(entry)
	w.tiles[0] = append(w.tiles[0], leaf[:]...)
	k := w.tree.AppendLeafTiles(leaf, &w.done)
	size := w.tree.Size()
	if size%record.TileWidth == 0 {
		n := size/record.TileWidth - 1
		w.up.put(record.BundlePath(n, record.TileWidth), w.bundle)
		w.up.put(record.TilePath(0, n, record.TileWidth), w.tiles[0])
		w.bundle, w.tiles[0] = nil, nil
	}
	for l := 1; l <= k; l++ {
		w.tiles[l] = append(w.tiles[l], w.done[l-1][:]...)
		if len(w.tiles[l]) == record.TileWidth*tlog.HashSize {
			n := size>>(record.TileHeight*(l+1)) - 1
			w.up.put(record.TilePath(l, n, record.TileWidth), w.tiles[l])
			w.tiles[l] = nil
		}
	}
	return nil
}

// Finish writes the partial tiles and returns the tree's size and root. The
// caller signs and puts the checkpoint.
func (w *LogWriter) Finish() (int64, tlog.Hash, error) {
	size := w.tree.Size()
	for l := 0; l < record.TileLevels(size); l++ {
		full, width := record.TileWidthAt(size, l)
		if width == 0 {
			continue
		}
		if l == 0 {
			w.up.put(record.BundlePath(full, width), w.bundle)
		}
		w.up.put(record.TilePath(l, full, width), w.tiles[l])
	}
	return size, w.tree.Root(), w.up.wait()
}
