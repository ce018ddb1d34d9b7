package audit

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"

	"github.com/arxsec/arx/record"
	"golang.org/x/mod/sumdb/tlog"
)

// A BufferedSource is a Source that can also append an object to a buffer
// the caller owns. Verify reads bundles and tiles from one into memory it
// reuses, rather than into a fresh buffer for each of the thousands of
// objects a large log has.
type BufferedSource interface {
	Source
	// GetAppend appends the object at path to dst and returns the result;
	// like Get, a missing object is an error wrapping fs.ErrNotExist.
	GetAppend(ctx context.Context, path string, dst []byte) ([]byte, error)
}

// Dir is the published log in a local directory (the bucket of
// `arx serve --bucket file:///DIR`), as a BufferedSource.
func Dir(dir string) BufferedSource { return localDir(dir) }

type localDir string

func (d localDir) Get(ctx context.Context, p string) ([]byte, error) {
	return d.GetAppend(ctx, p, nil)
}

func (d localDir) GetAppend(ctx context.Context, p string, dst []byte) ([]byte, error) {
	if p == "" || p[0] == '/' || !fs.ValidPath(p) {
		return dst, fmt.Errorf("audit: invalid object path %q", p)
	}
	if err := ctx.Err(); err != nil {
		return dst, err
	}
	return readFileAppend(filepath.Join(string(d), filepath.FromSlash(p)), dst)
}

// growForRead makes room in dst for a read when there is none left.
func growForRead(dst []byte) []byte {
	if len(dst) < cap(dst) {
		return dst
	}
	return append(dst, make([]byte, max(64<<10, cap(dst)))...)[:len(dst)]
}

// getInto reads an object into buf's memory when src is a BufferedSource
// (the result then aliases buf, or its replacement), and with Get
// otherwise.
func getInto(ctx context.Context, src Source, path string, buf []byte) ([]byte, error) {
	if bs, ok := src.(BufferedSource); ok {
		data, err := bs.GetAppend(ctx, path, buf[:0])
		if err != nil {
			return nil, err
		}
		return data, nil
	}
	return src.Get(ctx, path)
}

// getTile reads a tile; a partial tile that is gone (the publisher removes
// those a newer checkpoint made full) is taken from the full one.
func getTile(ctx context.Context, src Source, level int, n int64, w int) ([]byte, error) {
	return getTileInto(ctx, src, level, n, w, nil)
}

func getTileInto(ctx context.Context, src Source, level int, n int64, w int, buf []byte) ([]byte, error) {
	data, err := getInto(ctx, src, record.TilePath(level, n, w), buf)
	if w < record.TileWidth && errors.Is(err, fs.ErrNotExist) {
		full, ferr := getInto(ctx, src, record.TilePath(level, n, record.TileWidth), buf)
		if ferr == nil && len(full) >= w*tlog.HashSize {
			return full[:w*tlog.HashSize], nil
		}
	}
	if errors.Is(err, fs.ErrNotExist) {
		return nil, errMissing
	}
	return data, err
}

var errMissing = fmt.Errorf("missing from the bucket: %w", fs.ErrNotExist)

// getBundle reads an entry bundle, falling back to the full bundle for a
// partial one that is gone.
func getBundle(ctx context.Context, src Source, n int64, w int) ([]byte, error) {
	return getBundleInto(ctx, src, n, w, nil)
}

func getBundleInto(ctx context.Context, src Source, n int64, w int, buf []byte) ([]byte, error) {
	data, err := getInto(ctx, src, record.BundlePath(n, w), buf)
	if w < record.TileWidth && errors.Is(err, fs.ErrNotExist) {
		full, ferr := getInto(ctx, src, record.BundlePath(n, record.TileWidth), buf)
		if ferr == nil {
			rest := full
			for k := 0; k < w; k++ {
				if _, rest, ferr = record.NextBundleEntry(rest); ferr != nil {
					return full, nil // let the checks say what is wrong
				}
			}
			return full[:len(full)-len(rest)], nil
		}
	}
	return data, err
}

// fetched is one entry bundle and its level-0 tile.
type fetched struct {
	bundle, tile []byte // nil when missing
	// the memory they were read into, kept for the next batch
	bundleBuf, tileBuf []byte
}

// batch is consecutive bundles, read together ahead of the verifier.
type batch struct {
	items []fetched
	err   error
}

// fill reads bundles of a log of the given size from first on, at most max
// of them and no more once they hold maxBytes, and returns how many it read.
func (b *batch) fill(ctx context.Context, src Source, first int64, max, maxBytes int, size int64) int {
	b.items, b.err = b.items[:0], nil
	_, buffered := src.(BufferedSource)
	bundles := (size + record.TileWidth - 1) / record.TileWidth
	read := 0
	for n := first; n < bundles && len(b.items) < max && read < maxBytes; n++ {
		if len(b.items) < cap(b.items) {
			b.items = b.items[:len(b.items)+1] // with the buffers it had
		} else {
			b.items = append(b.items, fetched{})
		}
		it := &b.items[len(b.items)-1]
		w := int(min(size-n*record.TileWidth, record.TileWidth))
		var err error
		if it.bundle, err = getBundleInto(ctx, src, n, w, it.bundleBuf); err != nil {
			it.bundle = nil
			if !errors.Is(err, fs.ErrNotExist) {
				b.err = err
				break
			}
		} else if buffered {
			it.bundleBuf = it.bundle[:0]
		}
		if it.tile, err = getTileInto(ctx, src, 0, n, w, it.tileBuf); err != nil {
			it.tile = nil
			if !errors.Is(err, fs.ErrNotExist) {
				b.err = err
				break
			}
		} else if buffered {
			it.tileBuf = it.tile[:0]
		}
		read += len(it.bundle) + len(it.tile)
	}
	return len(b.items)
}

// fetcher reads bundles and level-0 tiles ahead of the verifier, in order,
// a batch at a time. A BufferedSource is read by one goroutine, a batch of
// up to bundlesPerBatch bundles (and batchBytes) ahead, into memory reused
// from batch to batch. Any other Source is read one bundle a batch, as many
// at once as Options.Fetchers says (a remote bucket answers each request
// after a round trip).
type fetcher struct {
	ctx    context.Context
	cancel context.CancelFunc
	queue  chan chan *batch
	free   chan *batch
	cur    *batch // the batch next takes bundles from
	k      int    // the next bundle in it
}

// bundlesPerBatch and batchBytes bound a batch of a BufferedSource: a
// couple of hundred hand-offs between the reader and the verifier per
// million entries, and a few megabytes of buffers (entries of up to 64 KiB
// make bundles of up to 16 MiB: then a batch is one bundle).
const (
	bundlesPerBatch = 16
	batchBytes      = 4 << 20
)

func newFetcher(ctx context.Context, src Source, size int64, workers int) *fetcher {
	if workers <= 0 {
		workers = 8
	}
	_, buffered := src.(BufferedSource)
	ahead := workers
	if buffered {
		ahead = 2
	}
	ctx, cancel := context.WithCancel(ctx)
	f := &fetcher{ctx: ctx, cancel: cancel, queue: make(chan chan *batch, ahead), free: make(chan *batch, ahead+1)}
	for range ahead + 1 { // those read ahead, and the one being verified
		f.free <- &batch{}
	}
	bundles := (size + record.TileWidth - 1) / record.TileWidth
	go func() {
		defer close(f.queue)
		for first := int64(0); first < bundles; {
			var b *batch
			select {
			case b = <-f.free:
			case <-ctx.Done():
				return
			}
			ch := make(chan *batch, 1)
			if buffered {
				first += int64(b.fill(ctx, src, first, bundlesPerBatch, batchBytes, size))
				ch <- b
				if b.err != nil {
					first = bundles // the verifier stops at it
				}
			} else {
				go func(first int64) {
					b.fill(ctx, src, first, 1, 1, size)
					ch <- b
				}(first)
				first++
			}
			select {
			case f.queue <- ch:
			case <-ctx.Done():
				return
			}
		}
	}()
	return f
}

// next returns the next bundle and its tile, in order. They stay valid
// until the following call.
func (f *fetcher) next() (*fetched, error) {
	if f.cur != nil && f.k == len(f.cur.items) {
		f.free <- f.cur // never blocks: there are as many places as batches
		f.cur = nil
	}
	if f.cur == nil {
		ch, ok := <-f.queue
		if !ok {
			if err := f.ctx.Err(); err != nil {
				return nil, err
			}
			return nil, errors.New("audit: read past the last bundle")
		}
		f.cur, f.k = <-ch, 0
		if f.cur.err != nil {
			return nil, f.cur.err
		}
	}
	f.k++
	return &f.cur.items[f.k-1], nil
}

func (f *fetcher) stop() { f.cancel() }
