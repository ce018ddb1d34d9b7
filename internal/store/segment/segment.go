// Package segment is the embedded store's log: record entries, each with the
// Merkle hashes its append stored, in append-only segment files.
//
// A batch of entries is one frame, written with one write and made durable
// with one fdatasync: the whole commit cost of a group of governed calls.
// A frame carries a CRC-32C of its contents and the sequence number of the
// write attempt that made it, which rises with every attempt, failed or not;
// at open, the frames of the last segment are read back and the log ends at
// the first frame that is torn (short, or its CRC does not match), out of
// sequence or out of index order: a torn write is cut, and a failed
// attempt's bytes that a later, shorter frame did not overwrite are never
// taken for entries.
//
// Files, in the log's directory:
//
//	00000000000000000000.seg   frames, from entry 0 (the name is the first index)
//	00000000000000000000.idx   the offset of each entry in its .seg, written
//	                           when the segment is sealed
//
// Frame: "ARXB", payload length (u32), CRC-32C of the payload (u32), 0 (u32),
// then the payload: seq (u64), first index (u64), count (u32), and count
// records of: data length (u32), stored hash count (u8), the stored hashes
// (32 bytes each, tlog.StoredHashes order: the leaf hash first), the entry's
// canonical bytes. Integers are big-endian.
//
// Segments are sealed (their offsets written and synced, no longer written
// to) once they pass Config.SegmentSize; the active segment's offsets are
// kept in memory and rebuilt from its frames at open.
//
// The active segment is zero-filled ahead of its end (Config.Prealloc at a
// time, made durable before a frame is written there), so that a frame's
// fdatasync flushes data only: appending past a file's end also changes
// its size, which makes every fdatasync commit the filesystem's journal
// too (on ext4 here, 300 µs a frame instead of 550). Zeros after the last
// frame are the end of the log, never damage; a sealed segment is cut to
// its last frame.
//
// Where the filesystem takes direct writes (O_DIRECT, on Linux; statx says
// their alignment, 512 bytes on most disks), a frame is written with one,
// past the page cache: from the start of the block the log ends in (those
// bytes of the last frame, kept in memory), the frame, then zeros to the
// end of its last block. A frame then costs the disk its own blocks, where
// through the page cache each 4 KiB page it touches is written whole, and
// the page the log ends in once per frame: on this project's disk a frame
// of 2.2 KB made the device write 2.9 KB instead of 6.5 KB, in the same
// time. The fdatasync after it is the same (the device's cache is flushed
// either way). Elsewhere, or if the filesystem refuses one, frames go
// through the page cache.
package segment

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/mod/sumdb/tlog"
)

// Config configures a Log.
type Config struct {
	Dir string
	// SegmentSize is the size past which the active segment is sealed and
	// a new one started.
	SegmentSize int64
	Logger      *slog.Logger
	// Sync makes written frames durable (tests may count or fail it);
	// nil means (*os.File).Sync through fdatasync.
	Sync func(*os.File) error
	// Fault, when set, is called before each frame is written; an error
	// fails the append as a failed write would (tests of what the store
	// does when the disk refuses the log).
	Fault func() error
	// Prealloc is how much of the active segment is zero-filled ahead of
	// its end, at a time: 0 means DefaultPrealloc, a negative value none.
	Prealloc int64
	// Buffered writes frames through the page cache even where the
	// filesystem takes direct writes (tests of both ways).
	Buffered bool
}

// DefaultPrealloc is the default Config.Prealloc.
const DefaultPrealloc = 8 << 20

// DefaultSegmentSize is the default Config.SegmentSize.
const DefaultSegmentSize = 64 << 20

const (
	magic       = "ARXB"
	frameHeader = 16
	payloadHead = 8 + 8 + 4
	recordHead  = 4 + 1
	maxHashes   = 64
	// MaxFrame bounds one frame (and so one batch).
	MaxFrame = 256 << 20
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// Errors a caller decides on.
var (
	// ErrSyncFailed wraps the error of an fdatasync that failed for a
	// reason other than a read-only or full disk: what reached the disk is
	// unknown, and the Log refuses every later append (open it again to
	// recover what is there).
	ErrSyncFailed = errors.New("segment: sync failed")
	// ErrNotFound is returned for an index at or past the log's size.
	ErrNotFound = errors.New("segment: no such entry")
)

// Record is one entry of the log.
type Record struct {
	Index  int64
	Hashes []tlog.Hash // the hashes its append stored, leaf hash first
	Data   []byte      // the entry's canonical bytes
}

// Log is an open log. One goroutine appends; any number read.
type Log struct {
	cfg Config
	log *slog.Logger

	wmu     sync.Mutex // appends
	seq     uint64     // the last write attempt's sequence number
	failed  error
	buf     []byte
	pending bool       // a frame is written and its sync not waited for
	idle    *sync.Cond // on wmu: signalled when pending is cleared

	mu     sync.RWMutex
	sealed []*sealedSeg // by first index
	active *activeSeg
	size   int64

	fdmu   sync.Mutex
	opened []*sealedSeg // sealed segments with open files, least recently opened first

	retired []*os.File // files of segments sealed since open, closed by Close
}

type sealedSeg struct {
	first, n int64
	path     string
	mu       sync.Mutex // held while the segment is read
	data     *os.File   // opened on demand (maxOpen at most)
	idx      *os.File
}

// maxOpen bounds the sealed segments whose files are open at once.
const maxOpen = 32

type activeSeg struct {
	first     int64
	f         *os.File
	path      string
	end       int64   // where the next frame goes
	offsets   []int64 // of each entry's record in f
	alloc     int64   // f is zero-filled, durably, up to here (on wmu)
	extending bool    // a goroutine is zero-filling past alloc (on wmu)

	// Direct writes (see the package comment), nil when frames go through
	// the page cache; on wmu.
	dio   *os.File
	align int    // of a direct write's offset and length
	tail  []byte // the bytes of f from end rounded down to align, to end
}

func segName(first int64) string { return fmt.Sprintf("%020d", first) }

// Open opens the log in cfg.Dir, creating it when needed, and recovers its
// end (see the package comment).
func Open(cfg Config) (*Log, error) {
	if cfg.SegmentSize <= 0 {
		cfg.SegmentSize = DefaultSegmentSize
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Sync == nil {
		cfg.Sync = fdatasync
	}
	if cfg.Prealloc == 0 {
		cfg.Prealloc = DefaultPrealloc
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("segment: %w", err)
	}
	ents, err := os.ReadDir(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("segment: %w", err)
	}
	var firsts []int64
	for _, e := range ents {
		name, ok := strings.CutSuffix(e.Name(), ".seg")
		if !ok || len(name) != 20 {
			continue
		}
		n, err := strconv.ParseInt(name, 10, 64)
		if err != nil || n < 0 {
			return nil, fmt.Errorf("segment: %s: not a segment name", e.Name())
		}
		firsts = append(firsts, n)
	}
	slices.Sort(firsts)
	l := &Log{cfg: cfg, log: cfg.Logger}
	l.idle = sync.NewCond(&l.wmu)
	if len(firsts) == 0 {
		firsts = []int64{0}
	} else if firsts[0] != 0 {
		return nil, fmt.Errorf("segment: the log in %s starts at entry %d, not 0: a segment is missing", cfg.Dir, firsts[0])
	}
	for i, first := range firsts[:len(firsts)-1] {
		next := firsts[i+1]
		s := &sealedSeg{first: first, n: next - first, path: filepath.Join(cfg.Dir, segName(first))}
		if err := l.checkSealed(s); err != nil {
			return nil, err
		}
		l.sealed = append(l.sealed, s)
	}
	if err := l.openActive(firsts[len(firsts)-1]); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}

// checkSealed makes sure a sealed segment has its offsets, rebuilding them
// when the seal did not finish (a crash between sealing and starting the
// next segment leaves the next one empty, and this one without an .idx).
func (l *Log) checkSealed(s *sealedSeg) error {
	fi, err := os.Stat(s.path + ".idx")
	if err == nil && fi.Size() == 8*s.n {
		return nil
	}
	f, err := os.Open(s.path + ".seg")
	if err != nil {
		return fmt.Errorf("segment: %w", err)
	}
	defer f.Close()
	offs, _, _, err := scan(f, s.first)
	if err != nil {
		return err
	}
	if int64(len(offs)) != s.n {
		return fmt.Errorf("segment: %s.seg holds %d entries, the next segment starts at %d: the log is damaged", s.path, len(offs), s.first+s.n)
	}
	l.log.Warn("segment: rebuilding the offsets of a sealed segment", "segment", s.path+".seg")
	return writeOffsets(s.path+".idx", offs)
}

func (l *Log) openActive(first int64) error {
	path := filepath.Join(l.cfg.Dir, segName(first))
	f, err := os.OpenFile(path+".seg", os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("segment: %w", err)
	}
	offs, end, seq, err := scan(f, first)
	if err != nil {
		f.Close()
		return err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("segment: %w", err)
	}
	alloc := end
	if fi.Size() > end {
		zeros, err := zeroFrom(f, end, fi.Size())
		if err != nil {
			f.Close()
			return err
		}
		if zeros {
			alloc = fi.Size() // zero-filled ahead: the log ends at end
		}
	}
	if alloc < fi.Size() {
		// A torn write can only be the last frame. Bytes that fail their
		// check with a good frame after them are damage in the middle of
		// the log, which must not be cut away as if it were torn.
		if at, ok := goodFrameAfter(f, end, fi.Size(), seq); ok {
			f.Close()
			return fmt.Errorf("segment: %s.seg is damaged after entry %d (offset %d), and a good frame follows at offset %d: this is not a torn write; restore the log from a backup or the bucket",
				path, first+int64(len(offs))-1, end, at)
		}
		// A torn or failed write at the end: cut it, so the next frame is
		// not read after garbage at the next open either.
		l.log.Warn("segment: cutting a torn write at the end of the log", "segment", path+".seg",
			"entries", first+int64(len(offs)), "bytes_cut", fi.Size()-end)
		if err := f.Truncate(end); err != nil {
			f.Close()
			return fmt.Errorf("segment: cut torn write: %w", err)
		}
		if err := l.cfg.Sync(f); err != nil {
			f.Close()
			return fmt.Errorf("segment: cut torn write: %w", err)
		}
	}
	if err := syncDir(l.cfg.Dir); err != nil {
		f.Close()
		return err
	}
	a := &activeSeg{first: first, f: f, path: path, end: end, offsets: offs, alloc: alloc}
	if err := l.direct(a); err != nil {
		f.Close()
		return err
	}
	l.active = a
	l.size = first + int64(len(offs))
	l.seq = seq
	return nil
}

// direct opens a's segment for direct writes, unless the configuration or
// the filesystem says no, and reads the bytes of its last partial block,
// which the next frame's write starts with.
func (l *Log) direct(a *activeSeg) error {
	if l.cfg.Buffered {
		return nil
	}
	dio, align := openDirect(a.path + ".seg")
	if dio == nil {
		return nil
	}
	tail := make([]byte, a.end%int64(align), maxAlign)
	if _, err := a.f.ReadAt(tail, a.end-int64(len(tail))); err != nil {
		dio.Close()
		return fmt.Errorf("segment: read: %w", err)
	}
	a.dio, a.align, a.tail = dio, align, tail
	return nil
}

// zeroFrom says whether f holds only zero bytes from off to size.
func zeroFrom(f *os.File, off, size int64) (bool, error) {
	buf := make([]byte, 1<<20)
	for off < size {
		n, err := f.ReadAt(buf[:min(int64(len(buf)), size-off)], off)
		for _, c := range buf[:n] {
			if c != 0 {
				return false, nil
			}
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return false, fmt.Errorf("segment: read: %w", err)
		}
		if n == 0 {
			break
		}
		off += int64(n)
	}
	return true, nil
}

// scan reads the frames of a segment from offset 0 and returns the offset
// of each entry's record, where the last good frame ends and the last
// frame's sequence number. It stops at the first frame that is torn, out
// of sequence or out of order.
func scan(f *os.File, first int64) (offsets []int64, end int64, seq uint64, err error) {
	r := io.NewSectionReader(f, 0, 1<<62)
	var hdr [frameHeader]byte
	buf := make([]byte, 0, 1<<20)
	next := first
	for {
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			break
		}
		if string(hdr[:4]) != magic {
			break
		}
		n := binary.BigEndian.Uint32(hdr[4:])
		if n < payloadHead || n > MaxFrame {
			break
		}
		if cap(buf) < int(n) {
			buf = make([]byte, n)
		}
		buf = buf[:n]
		if _, err := io.ReadFull(r, buf); err != nil {
			break
		}
		if crc32.Checksum(buf, crcTable) != binary.BigEndian.Uint32(hdr[8:]) {
			break
		}
		fseq := binary.BigEndian.Uint64(buf)
		ffirst := int64(binary.BigEndian.Uint64(buf[8:]))
		count := binary.BigEndian.Uint32(buf[16:])
		if fseq <= seq || ffirst != next {
			break
		}
		recs, err := parseRecords(buf[payloadHead:], count)
		if err != nil {
			break
		}
		base := end + frameHeader + payloadHead
		for _, off := range recs {
			offsets = append(offsets, base+int64(off))
		}
		next += int64(count)
		end += frameHeader + int64(n)
		seq = fseq
	}
	return offsets, end, seq, nil
}

// goodFrameAfter looks for a frame that checks out (its CRC, a sequence
// number above seq) anywhere in f after from.
func goodFrameAfter(f *os.File, from, size int64, seq uint64) (int64, bool) {
	const chunk = 1 << 20
	buf := make([]byte, chunk+frameHeader)
	for off := from + 1; off < size; off += chunk {
		n, _ := f.ReadAt(buf, off)
		for i := 0; i+frameHeader <= n; i++ {
			if string(buf[i:i+4]) != magic {
				continue
			}
			at := off + int64(i)
			l := binary.BigEndian.Uint32(buf[i+4:])
			if l < payloadHead || l > MaxFrame || at+frameHeader+int64(l) > size {
				continue
			}
			p := make([]byte, l)
			if _, err := f.ReadAt(p, at+frameHeader); err != nil {
				continue
			}
			if crc32.Checksum(p, crcTable) == binary.BigEndian.Uint32(buf[i+8:]) && binary.BigEndian.Uint64(p) > seq {
				return at, true
			}
		}
	}
	return 0, false
}

// parseRecords checks count records fill p exactly and returns their
// offsets in p.
func parseRecords(p []byte, count uint32) ([]int, error) {
	offs := make([]int, 0, count)
	at := 0
	for range count {
		if len(p)-at < recordHead {
			return nil, errors.New("short record")
		}
		n := int(binary.BigEndian.Uint32(p[at:]))
		h := int(p[at+4])
		if h == 0 || h > maxHashes || len(p)-at-recordHead < h*tlog.HashSize+n {
			return nil, errors.New("short record")
		}
		offs = append(offs, at)
		at += recordHead + h*tlog.HashSize + n
	}
	if at != len(p) {
		return nil, errors.New("trailing bytes")
	}
	return offs, nil
}

// Size is the number of entries in the log.
func (l *Log) Size() int64 {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.size
}

// SyncFailed reports whether a failed fsync has failed the log for good
// (ErrSyncFailed), as opposed to its being closed.
func (l *Log) SyncFailed() bool {
	l.wmu.Lock()
	defer l.wmu.Unlock()
	return errors.Is(l.failed, ErrSyncFailed)
}

// Probe writes an empty frame and makes it durable: whether the log takes
// writes now (a readiness check), without adding to it. While another
// frame's fdatasync runs it answers nil at once: the log is being written.
func (l *Log) Probe() error {
	wait, err := l.start(nil, true)
	if err != nil {
		return err
	}
	return wait()
}

// Append writes records as one frame and makes it durable. The records'
// indexes must be Size(), Size()+1, ... An error leaves the log as it was
// (the next Append writes over whatever this one left), except that a
// failed sync that is not a read-only or full disk fails the log for good
// (ErrSyncFailed).
func (l *Log) Append(recs []Record) error {
	if len(recs) == 0 {
		return nil
	}
	wait, err := l.start(recs, false)
	if err != nil {
		return err
	}
	return wait()
}

// start writes a frame of recs (wmu held) and returns sync, which makes it
// durable in its caller's goroutine without wmu. The frame is pending until
// sync returned: other frames wait for it, a probe answers at once. The
// records are readable, and Size counts them, once sync returned nil.
func (l *Log) start(recs []Record, probe bool) (sync func() error, err error) {
	l.wmu.Lock()
	defer l.wmu.Unlock()
	if l.failed != nil {
		return nil, l.failed
	}
	if l.pending && probe {
		return func() error { return nil }, nil // being written: it takes writes
	}
	for l.pending { // a probe's frame: wait for its sync
		l.idle.Wait()
	}
	if l.failed != nil {
		return nil, l.failed
	}
	l.mu.RLock()
	size, a := l.size, l.active
	l.mu.RUnlock()
	if a.end >= l.cfg.SegmentSize {
		if err := l.roll(); err != nil {
			return nil, err
		}
		a = l.active
	}
	fsz := frameHeader + payloadHead
	for i, r := range recs {
		if r.Index != size+int64(i) {
			return nil, fmt.Errorf("segment: append entry %d at index %d", r.Index, size+int64(i))
		}
		if len(r.Hashes) == 0 || len(r.Hashes) > maxHashes {
			return nil, fmt.Errorf("segment: entry %d has %d stored hashes", r.Index, len(r.Hashes))
		}
		fsz += recordHead + len(r.Hashes)*tlog.HashSize + len(r.Data)
	}
	if fsz-frameHeader > MaxFrame {
		return nil, fmt.Errorf("segment: batch of %d bytes exceeds %d", fsz-frameHeader, MaxFrame)
	}
	// A direct write starts at a block's start: with the bytes of the log
	// before the frame in that block (a.tail, empty when buffered), the
	// frame, and zeros to the end of the frame's last block.
	head := len(a.tail)
	at := a.end - int64(head)
	span := head + fsz
	if a.dio != nil {
		span = (span + a.align - 1) &^ (a.align - 1)
	}
	if cap(l.buf) < span {
		l.buf = alignedBytes(max(span, 2*cap(l.buf)))
	}
	l.seq++
	b := append(l.buf[:0], a.tail...)
	b = append(b, magic...)
	b = append(b, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
	b = binary.BigEndian.AppendUint64(b, l.seq)
	b = binary.BigEndian.AppendUint64(b, uint64(size))
	b = binary.BigEndian.AppendUint32(b, uint32(len(recs)))
	offs := make([]int64, len(recs))
	for i, r := range recs {
		offs[i] = at + int64(len(b))
		b = binary.BigEndian.AppendUint32(b, uint32(len(r.Data)))
		b = append(b, byte(len(r.Hashes)))
		for _, h := range r.Hashes {
			b = append(b, h[:]...)
		}
		b = append(b, r.Data...)
	}
	frame := b[head:]
	binary.BigEndian.PutUint32(frame[4:], uint32(fsz-frameHeader))
	binary.BigEndian.PutUint32(frame[8:], crc32.Checksum(frame[frameHeader:], crcTable))
	b = b[:span]
	clear(b[head+fsz:])
	if l.cfg.Fault != nil {
		if err := l.cfg.Fault(); err != nil {
			return nil, fmt.Errorf("segment: write: %w", err)
		}
	}
	n := int64(fsz)
	if err := l.room(a, at+int64(span)); err != nil {
		return nil, err
	}
	if err := l.write(a, b, at, head, fsz); err != nil {
		return nil, fmt.Errorf("segment: write: %w", err)
	}
	if l.cfg.Prealloc > 0 && !a.extending && a.alloc-(a.end+n) < l.cfg.Prealloc/2 && l.roomAhead(l.cfg.Prealloc) {
		// Zero-fill the next stretch while this frame and the next are
		// written in the stretch before it.
		a.extending = true
		go l.extend(a, a.alloc)
	}
	l.pending = true
	return func() error {
		err := l.cfg.Sync(a.f)
		l.wmu.Lock()
		defer l.wmu.Unlock()
		l.pending = false
		l.idle.Broadcast()
		if err != nil {
			if refused(err) {
				return fmt.Errorf("segment: sync: %w", err)
			}
			l.failed = fmt.Errorf("%w: %w", ErrSyncFailed, err)
			l.log.Error("segment: the disk failed an fsync: refusing every write until restart", "err", err,
				"hint", "check the disk, then restart arx serve")
			return l.failed
		}
		l.mu.Lock()
		a.end += n
		a.offsets = append(a.offsets, offs...)
		l.size += int64(len(recs))
		l.mu.Unlock()
		if a.dio != nil {
			k := int(a.end % int64(a.align))
			a.tail = append(a.tail[:0], b[head+fsz-k:head+fsz]...)
		}
		return nil
	}, nil
}

// write writes a frame of size bytes (wmu held): b from at with a direct
// write, or, when frames go through the page cache, the frame alone (at
// head in b).
func (l *Log) write(a *activeSeg, b []byte, at int64, head, size int) error {
	if a.dio != nil {
		_, err := a.dio.WriteAt(b, at)
		if !errors.Is(err, syscall.EINVAL) {
			return err
		}
		// The filesystem said what direct writes need, then refused one:
		// go through the page cache from now on.
		l.log.Warn("segment: the filesystem refused a direct write; writing through the page cache", "segment", a.path+".seg", "err", err)
		a.dio.Close()
		a.dio, a.tail = nil, nil
	}
	_, err := a.f.WriteAt(b[head:head+size], at+int64(head))
	return err
}

// room makes sure the active segment is zero-filled up to need before a
// frame is written there (wmu held): it waits for a zero-fill in flight,
// or zero-fills itself when none is (the first frame of a segment, or a
// zero-fill that failed).
func (l *Log) room(a *activeSeg, need int64) error {
	if l.cfg.Prealloc < 0 {
		return nil
	}
	for need > a.alloc {
		if a.extending {
			l.idle.Wait()
			continue
		}
		ahead := l.cfg.Prealloc
		if !l.roomAhead(need - a.alloc + ahead) {
			ahead = 0
		}
		err := l.zeroFill(a, a.alloc, need-a.alloc+ahead)
		if err != nil && refused(err) {
			// A nearly full disk may still take the frame itself.
			ahead = 0
			err = l.zeroFill(a, a.alloc, need-a.alloc)
		}
		if err != nil {
			return err
		}
		a.alloc = need + ahead
	}
	return nil
}

// extend zero-fills a stretch of the active segment past from, in the
// background; room waits for it.
func (l *Log) extend(a *activeSeg, from int64) {
	err := l.zeroFill(a, from, l.cfg.Prealloc)
	l.wmu.Lock()
	defer l.wmu.Unlock()
	a.extending = false
	if err == nil {
		a.alloc = max(a.alloc, from+l.cfg.Prealloc)
	} else {
		l.log.Warn("segment: could not zero-fill ahead of the log's end; the next frame will try again", "err", err)
	}
	l.idle.Broadcast()
}

// roomAhead says whether zero-filling n bytes ahead of the log's end
// leaves the filesystem room for everything else (the state database, its
// checkpoints, other segments): twice the stretch, at least. On a nearly
// full disk the log takes only what each frame needs, so that the space an
// operator frees is not swallowed by zeros.
func (l *Log) roomAhead(n int64) bool {
	free, ok := freeBytes(l.cfg.Dir)
	if !ok {
		return true // cannot tell: zero-fill, and a full disk says so
	}
	return free-n >= 2*max(l.cfg.Prealloc, n)
}

// zeroChunk is the size of one write of zeros: a page. Larger writes make
// the page cache hold the file in large folios, and a frame written into
// one later marks the whole folio dirty: the kernel then counts a megabyte
// written per frame (write_bytes in /proc/PID/io), though the disk gets
// what changed.
const zeroChunk = 4 << 10

// zeroFill writes n zero bytes at off and makes them, and the file's new
// size, durable.
func (l *Log) zeroFill(a *activeSeg, off, n int64) error {
	z := make([]byte, min(n, zeroChunk))
	for done := int64(0); done < n; {
		k := min(int64(len(z)), n-done)
		if _, err := a.f.WriteAt(z[:k], off+done); err != nil {
			return fmt.Errorf("segment: zero-fill: %w", err)
		}
		done += k
	}
	if err := fdatasync(a.f); err != nil {
		return fmt.Errorf("segment: zero-fill: %w", err)
	}
	return nil
}

// refused reports whether err says the filesystem refuses writes now
// (read-only, full, over quota): a condition that clears, unlike EIO.
func refused(err error) bool {
	return errors.Is(err, syscall.EROFS) || errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)
}

// roll seals the active segment and starts the next one.
func (l *Log) roll() error {
	a := l.active
	for a.extending {
		l.idle.Wait()
	}
	if a.alloc > a.end {
		// The zero-filled stretch is not part of a sealed segment.
		if err := a.f.Truncate(a.end); err != nil {
			return fmt.Errorf("segment: seal: %w", err)
		}
		if err := fdatasync(a.f); err != nil {
			return fmt.Errorf("segment: seal: %w", err)
		}
		a.alloc = a.end
	}
	if err := writeOffsets(a.path+".idx", a.offsets); err != nil {
		return err
	}
	next := a.first + int64(len(a.offsets))
	path := filepath.Join(l.cfg.Dir, segName(next))
	f, err := os.OpenFile(path+".seg", os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("segment: %w", err)
	}
	if err := syncDir(l.cfg.Dir); err != nil {
		f.Close()
		os.Remove(path + ".seg")
		return err
	}
	na := &activeSeg{first: next, f: f, path: path}
	if err := l.direct(na); err != nil {
		f.Close()
		os.Remove(path + ".seg")
		return err
	}
	if a.dio != nil {
		a.dio.Close()
		a.dio = nil
	}
	l.mu.Lock()
	l.sealed = append(l.sealed, &sealedSeg{first: a.first, n: int64(len(a.offsets)), path: a.path})
	l.active = na
	l.mu.Unlock()
	// A reader may still read the old active segment through its file:
	// close it only after every reader that could have it is done.
	l.retired = append(l.retired, a.f)
	return nil
}

func writeOffsets(path string, offs []int64) error {
	b := make([]byte, 8*len(offs))
	for i, o := range offs {
		binary.BigEndian.PutUint64(b[8*i:], uint64(o))
	}
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("segment: %w", err)
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("segment: seal: %w", err)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("segment: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("segment: sync %s: %w", dir, err)
	}
	return nil
}

// Close closes the files; appends fail afterwards.
func (l *Log) Close() error {
	l.wmu.Lock()
	defer l.wmu.Unlock()
	for l.active != nil && l.active.extending {
		l.idle.Wait()
	}
	if l.failed == nil {
		l.failed = errors.New("segment: log closed")
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	var errs []error
	if l.active != nil {
		if l.active.dio != nil {
			errs = append(errs, l.active.dio.Close())
			l.active.dio = nil
		}
		errs = append(errs, l.active.f.Close())
	}
	for _, f := range l.retired {
		errs = append(errs, f.Close())
	}
	l.retired = nil
	for _, s := range l.sealed {
		s.mu.Lock()
		if s.data != nil {
			errs = append(errs, s.data.Close(), s.idx.Close())
			s.data, s.idx = nil, nil
		}
		s.mu.Unlock()
	}
	return errors.Join(errs...)
}

// Read calls fn with the entries from start, in order, until n were read,
// the log's end, or fn returns an error. The slices fn gets are valid
// during the call only, and fn must not read the log itself.
func (l *Log) Read(start int64, n int, fn func(r Record) error) error {
	for n > 0 {
		l.mu.RLock()
		if start < 0 || start >= l.size {
			l.mu.RUnlock()
			return nil
		}
		i := sort.Search(len(l.sealed), func(i int) bool { return l.sealed[i].first+l.sealed[i].n > start })
		var k int
		if i < len(l.sealed) {
			s := l.sealed[i]
			l.mu.RUnlock()
			k = int(min(int64(n), s.first+s.n-start))
			if err := l.readSealed(s, start, k, fn); err != nil {
				return err
			}
		} else {
			a := l.active
			from := start - a.first
			k = int(min(int64(n), int64(len(a.offsets))-from))
			offs := slices.Clone(a.offsets[from : from+int64(k)])
			f, end := a.f, endOf(a.offsets, from+int64(k), a.end)
			l.mu.RUnlock()
			if err := readRange(f, offs, end, start, fn); err != nil {
				return err
			}
		}
		start += int64(k)
		n -= k
	}
	return nil
}

// endOf bounds the records up to k (excluded): the next record's offset,
// or the segment's end.
func endOf(offs []int64, k, end int64) int64 {
	if k < int64(len(offs)) {
		return offs[k]
	}
	return end
}

// readRange reads the records at offs (the last one ends at or before end)
// with one read.
func readRange(f *os.File, offs []int64, end, index int64, fn func(Record) error) error {
	if len(offs) == 0 {
		return nil
	}
	buf := make([]byte, end-offs[0])
	if _, err := f.ReadAt(buf, offs[0]); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("segment: read: %w", err)
	}
	hashes := make([]tlog.Hash, 0, 8)
	for i, off := range offs {
		r, err := parseRecord(buf[off-offs[0]:], hashes[:0])
		if err != nil {
			return fmt.Errorf("segment: entry %d: %w", index+int64(i), err)
		}
		r.Index = index + int64(i)
		if err := fn(r); err != nil {
			return err
		}
	}
	return nil
}

// readSealed reads k entries from start in a sealed segment.
func (l *Log) readSealed(s *sealedSeg, start int64, k int, fn func(Record) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := l.openSealed(s); err != nil {
		return err
	}
	i := start - s.first
	b := make([]byte, 8*(k+1))
	m, err := s.idx.ReadAt(b, 8*i)
	if err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("segment: read offsets: %w", err)
	}
	if m < 8*k {
		return fmt.Errorf("segment: %s.idx is short", s.path)
	}
	offs := make([]int64, k)
	for j := range offs {
		offs[j] = int64(binary.BigEndian.Uint64(b[8*j:]))
	}
	var end int64
	if m >= 8*(k+1) {
		end = int64(binary.BigEndian.Uint64(b[8*k:]))
	} else {
		fi, err := s.data.Stat()
		if err != nil {
			return fmt.Errorf("segment: %w", err)
		}
		end = fi.Size()
	}
	return readRange(s.data, offs, end, start, fn)
}

// openSealed opens a sealed segment's files (s.mu held), closing those of
// the segment opened longest ago when maxOpen are open.
func (l *Log) openSealed(s *sealedSeg) error {
	if s.data != nil {
		return nil
	}
	d, err := os.Open(s.path + ".seg")
	if err != nil {
		return fmt.Errorf("segment: %w", err)
	}
	x, err := os.Open(s.path + ".idx")
	if err != nil {
		d.Close()
		return fmt.Errorf("segment: %w", err)
	}
	s.data, s.idx = d, x
	l.fdmu.Lock()
	l.opened = append(l.opened, s)
	var old *sealedSeg
	if len(l.opened) > maxOpen {
		old = l.opened[0]
		l.opened = l.opened[1:]
	}
	l.fdmu.Unlock()
	if old != nil && old != s {
		go old.close() // its lock may be held by a reader: close when it is done
	}
	return nil
}

func (s *sealedSeg) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.data != nil {
		s.data.Close()
		s.idx.Close()
		s.data, s.idx = nil, nil
	}
}

func parseRecord(p []byte, hashes []tlog.Hash) (Record, error) {
	if len(p) < recordHead {
		return Record{}, errors.New("short record")
	}
	n := int(binary.BigEndian.Uint32(p))
	h := int(p[4])
	if h == 0 || h > maxHashes || len(p)-recordHead < h*tlog.HashSize+n {
		return Record{}, errors.New("short record")
	}
	p = p[recordHead:]
	for j := range h {
		hashes = append(hashes, tlog.Hash(p[j*tlog.HashSize:]))
	}
	return Record{Hashes: hashes, Data: p[h*tlog.HashSize : h*tlog.HashSize+n]}, nil
}

// Entry reads one entry; ErrNotFound past the end.
func (l *Log) Entry(index int64) (Record, error) {
	var out Record
	found := false
	err := l.Read(index, 1, func(r Record) error {
		out = Record{Index: r.Index, Hashes: slices.Clone(r.Hashes), Data: slices.Clone(r.Data)}
		found = true
		return nil
	})
	if err != nil {
		return Record{}, err
	}
	if !found {
		return Record{}, ErrNotFound
	}
	return out, nil
}

// ReadHashes returns stored Merkle hashes by tlog.StoredHashIndex: hash
// (level, n) was stored by the append of entry (n+1)<<level - 1.
func (l *Log) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(indexes))
	for i, x := range indexes {
		level, n := tlog.SplitStoredHashIndex(x)
		rec := (n+1)<<level - 1
		r, err := l.Entry(rec)
		if err != nil {
			return nil, fmt.Errorf("segment: stored hash %d (entry %d): %w", x, rec, err)
		}
		if len(r.Hashes) <= level {
			return nil, fmt.Errorf("segment: entry %d keeps %d hashes, need level %d", rec, len(r.Hashes), level)
		}
		out[i] = r.Hashes[level]
	}
	return out, nil
}

// Segments describes the segment files: how many, and their bytes.
func (l *Log) Segments() (n int, bytes int64) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	n = len(l.sealed) + 1
	bytes = l.active.end
	for _, s := range l.sealed {
		if fi, err := os.Stat(s.path + ".seg"); err == nil {
			bytes += fi.Size()
		}
	}
	return n, bytes
}

// Locate finds where an entry's bytes are in the log in dir, without
// opening the log (it reads, and never changes, the files): the segment
// file, the offset of the entry's canonical bytes in it, and their length.
// Tools and tests that examine a log at rest use it.
func Locate(dir string, index int64) (path string, offset int64, length int, err error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return "", 0, 0, fmt.Errorf("segment: %w", err)
	}
	var firsts []int64
	for _, e := range ents {
		if name, ok := strings.CutSuffix(e.Name(), ".seg"); ok && len(name) == 20 {
			if n, err := strconv.ParseInt(name, 10, 64); err == nil {
				firsts = append(firsts, n)
			}
		}
	}
	slices.Sort(firsts)
	i := sort.Search(len(firsts), func(i int) bool { return firsts[i] > index }) - 1
	if i < 0 {
		return "", 0, 0, ErrNotFound
	}
	path = filepath.Join(dir, segName(firsts[i])+".seg")
	f, err := os.Open(path)
	if err != nil {
		return "", 0, 0, fmt.Errorf("segment: %w", err)
	}
	defer f.Close()
	offs, _, _, err := scan(f, firsts[i])
	if err != nil {
		return "", 0, 0, err
	}
	k := index - firsts[i]
	if k >= int64(len(offs)) {
		return "", 0, 0, ErrNotFound
	}
	var head [recordHead]byte
	if _, err := f.ReadAt(head[:], offs[k]); err != nil {
		return "", 0, 0, fmt.Errorf("segment: %w", err)
	}
	n := binary.BigEndian.Uint32(head[:])
	return path, offs[k] + recordHead + int64(head[4])*tlog.HashSize, int(n), nil
}
