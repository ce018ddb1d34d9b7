package sqlite

import (
	"fmt"
	"slices"
	"time"

	"github.com/arxsec/arx/internal/store"
	"github.com/arxsec/arx/internal/store/segment"
	"github.com/arxsec/arx/record"
	"golang.org/x/mod/sumdb/tlog"
)

// scrubChunk is how many entries the check reads at once.
const scrubChunk = 4096

// scrubLog checks, in the background after an open, that every entry of
// the log up to size still hashes to the leaf its append stored, and that
// the tree hashes stored beside the entries are the tree's. An entry
// changed at rest is reported by index, and the store then refuses writes
// (and /readyz fails): appending to a log whose past changed would only
// hide it. It uses about half a core at most (an eighth while calls are
// being appended), and stops with the store.
func (s *Store) scrubLog(size int64) {
	defer close(s.scrub)
	start := time.Now()
	var tree record.Tree
	var stored []tlog.Hash
	for from := int64(0); from < size; from += scrubChunk {
		select {
		case <-s.quit:
			return
		default:
		}
		t0, appended := time.Now(), s.seg.Size()
		var bad error
		err := s.seg.Read(from, int(min(scrubChunk, size-from)), func(r segment.Record) error {
			leaf := record.LeafHash(r.Data)
			if leaf != r.Hashes[0] {
				bad = fmt.Errorf("entry %d: its bytes do not hash to the leaf the log stores: it was edited", r.Index)
				return bad
			}
			if stored = tree.AppendTo(stored[:0], leaf); !slices.Equal(stored, r.Hashes) {
				bad = fmt.Errorf("entry %d: the tree hashes stored with it are not the tree's: the log was edited", r.Index)
				return bad
			}
			return nil
		})
		if bad == nil && err != nil {
			bad = fmt.Errorf("reading entries from %d: %w", from, err)
		}
		if bad != nil {
			ferr := fmt.Errorf("%w: the log in %s was changed at rest: %w", store.ErrStorageFailed, s.cfg.LogDir, bad)
			if s.failed.CompareAndSwap(nil, &ferr) {
				s.log.Error("sqlite: the personnel record failed its check at open: refusing every write",
					"err", bad, "hint", "restore the log directory from a backup, or compare it with the bucket using arx audit verify")
			}
			return
		}
		// At most half a core when the store is idle, an eighth while it
		// takes calls: the check must not slow the calls a restart lets in.
		pause := time.Since(t0)
		if s.seg.Size() != appended {
			pause *= 7
		}
		time.Sleep(pause)
	}
	if size > 0 {
		s.log.Info("sqlite: the log checks out", "entries", size, "took", time.Since(start).Round(time.Millisecond))
	}
}
