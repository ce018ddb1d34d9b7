package segment

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/mod/sumdb/tlog"
)

// records makes n records from index first, each with its own data and
// 1 to 3 stored hashes.
func records(first int64, n int) []Record {
	out := make([]Record, n)
	for i := range out {
		idx := first + int64(i)
		data := []byte(fmt.Sprintf(`{"index":%d,"pad":%q}`, idx, bytes.Repeat([]byte{'x'}, int(idx%97))))
		hs := make([]tlog.Hash, 1+idx%3)
		for j := range hs {
			hs[j] = tlog.RecordHash([]byte(fmt.Sprintf("%d/%d", idx, j)))
		}
		out[i] = Record{Index: idx, Hashes: hs, Data: data}
	}
	return out
}

func open(t *testing.T, dir string, size int64) *Log {
	t.Helper()
	l, err := Open(Config{Buffered: testBuffered, Dir: dir, SegmentSize: size, Prealloc: 64 << 10})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func appendAll(t *testing.T, l *Log, recs []Record, batch int) {
	t.Helper()
	for len(recs) > 0 {
		n := min(batch, len(recs))
		if err := l.Append(recs[:n]); err != nil {
			t.Fatalf("Append %d..: %v", recs[0].Index, err)
		}
		recs = recs[n:]
	}
}

// check reads the whole log back, in pieces of every size from 1 to 7,
// and compares it with want.
func check(t *testing.T, l *Log, want []Record) {
	t.Helper()
	if got := l.Size(); got != int64(len(want)) {
		t.Fatalf("Size = %d, want %d", got, len(want))
	}
	for step := 1; step <= 7; step++ {
		var got []Record
		for start := int64(0); start < int64(len(want)); start += int64(step) {
			err := l.Read(start, step, func(r Record) error {
				got = append(got, Record{Index: r.Index, Hashes: append([]tlog.Hash(nil), r.Hashes...), Data: bytes.Clone(r.Data)})
				return nil
			})
			if err != nil {
				t.Fatalf("Read(%d, %d): %v", start, step, err)
			}
		}
		if len(got) != len(want) {
			t.Fatalf("step %d: read %d records, want %d", step, len(got), len(want))
		}
		for i := range want {
			g, w := got[i], want[i]
			if g.Index != w.Index || !bytes.Equal(g.Data, w.Data) || fmt.Sprint(g.Hashes) != fmt.Sprint(w.Hashes) {
				t.Fatalf("step %d: record %d = %d %q, want %d %q", step, i, g.Index, g.Data, w.Index, w.Data)
			}
		}
	}
	if _, err := l.Entry(int64(len(want))); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Entry past the end: %v, want ErrNotFound", err)
	}
}

func TestAppendRead(t *testing.T) {
	for _, tc := range []struct {
		name    string
		segSize int64
		batch   int
		n       int
	}{
		{"one segment, batches of 1", DefaultSegmentSize, 1, 50},
		{"one segment, batches of 13", DefaultSegmentSize, 13, 200},
		{"many segments", 2 << 10, 5, 300},
		{"a segment per batch", 1, 3, 40},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			want := records(0, tc.n)
			l := open(t, dir, tc.segSize)
			appendAll(t, l, want, tc.batch)
			check(t, l, want)
			l.Close()
			l = open(t, dir, tc.segSize)
			check(t, l, want)
			// And it goes on where it was.
			more := records(int64(tc.n), 10)
			appendAll(t, l, more, 4)
			check(t, l, append(want, more...))
		})
	}
}

func TestAppendRefusesWrongIndex(t *testing.T) {
	l := open(t, t.TempDir(), 0)
	appendAll(t, l, records(0, 3), 3)
	for _, recs := range [][]Record{records(2, 1), records(4, 1), {{Index: 3, Data: []byte("{}")}}} {
		if err := l.Append(recs); err == nil {
			t.Fatalf("Append(%d) succeeded", recs[0].Index)
		}
	}
	check(t, l, records(0, 3))
}

func TestReadHashes(t *testing.T) {
	// A real tree: the stored hashes of each append.
	dir := t.TempDir()
	l := open(t, dir, 4<<10)
	var recs []Record
	var all []tlog.Hash
	for i := range int64(300) {
		data := []byte(fmt.Sprintf(`{"i":%d}`, i))
		hs, err := tlog.StoredHashes(i, data, tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) {
			out := make([]tlog.Hash, len(idx))
			for j, x := range idx {
				out[j] = all[x]
			}
			return out, nil
		}))
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, hs...)
		recs = append(recs, Record{Index: i, Hashes: hs, Data: data})
	}
	appendAll(t, l, recs, 7)
	idx := make([]int64, len(all))
	for i := range idx {
		idx[i] = int64(i)
	}
	got, err := l.ReadHashes(idx)
	if err != nil {
		t.Fatal(err)
	}
	for i := range all {
		if got[i] != all[i] {
			t.Fatalf("stored hash %d differs", i)
		}
	}
	// Proofs work through it.
	root, err := tlog.TreeHash(300, l.hashReader())
	if err != nil {
		t.Fatal(err)
	}
	p, err := tlog.ProveRecord(300, 123, l.hashReader())
	if err != nil {
		t.Fatal(err)
	}
	if err := tlog.CheckRecord(p, 300, root, 123, tlog.RecordHash(recs[123].Data)); err != nil {
		t.Fatal(err)
	}
}

func (l *Log) hashReader() tlog.HashReader { return tlog.HashReaderFunc(l.ReadHashes) }

// activeFile is the path of the active segment's data.
func activeFile(l *Log) string { return l.active.path + ".seg" }

func TestTornWriteCut(t *testing.T) {
	for _, tc := range []struct {
		name string
		// last is where the last frame starts, end where it ends (the
		// file goes on with zeros: preallocated).
		tear func(t *testing.T, path string, last, end int64)
	}{
		{"half a frame", func(t *testing.T, path string, last, end int64) {
			os.Truncate(path, last+(end-last)/2)
		}},
		{"header only", func(t *testing.T, path string, last, end int64) { os.Truncate(path, last+frameHeader) }},
		{"half a frame, zeros after", func(t *testing.T, path string, last, end int64) {
			f, _ := os.OpenFile(path, os.O_RDWR, 0)
			defer f.Close()
			f.WriteAt(make([]byte, (end-last)/2), last+(end-last)/2)
		}},
		{"a flipped byte", func(t *testing.T, path string, last, end int64) {
			f, _ := os.OpenFile(path, os.O_RDWR, 0)
			defer f.Close()
			b := make([]byte, 1)
			f.ReadAt(b, last+frameHeader+30)
			b[0] ^= 1
			f.WriteAt(b, last+frameHeader+30)
		}},
		{"garbage after", func(t *testing.T, path string, last, end int64) {
			f, _ := os.OpenFile(path, os.O_RDWR|os.O_APPEND, 0)
			defer f.Close()
			f.Write(bytes.Repeat([]byte{0xa5}, 1000))
		}},
		{"garbage in the zero-filled stretch", func(t *testing.T, path string, last, end int64) {
			f, _ := os.OpenFile(path, os.O_RDWR, 0)
			defer f.Close()
			f.WriteAt(bytes.Repeat([]byte{0xa5}, 1000), end+100)
		}},
		{"zeros after", func(t *testing.T, path string, last, end int64) {
			f, _ := os.OpenFile(path, os.O_RDWR|os.O_APPEND, 0)
			defer f.Close()
			f.Write(make([]byte, 5000))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			l := open(t, dir, 0)
			want := records(0, 20)
			appendAll(t, l, want[:15], 5)
			path := activeFile(l)
			last := l.active.end
			appendAll(t, l, want[15:], 5)
			end := l.active.end
			l.Close()
			tc.tear(t, path, last, end)
			l = open(t, dir, 0)
			keep := want
			if !strings.Contains(tc.name, "garbage") && tc.name != "zeros after" {
				keep = want[:15]
			}
			check(t, l, keep)
			// The cut is durable and the log goes on.
			appendAll(t, l, records(int64(len(keep)), 3), 3)
			l.Close()
			l = open(t, dir, 0)
			check(t, l, append(keep, records(int64(len(keep)), 3)...))
		})
	}
}

// A write attempt that failed leaves its bytes; the next, shorter frame
// goes over them, and the rest of the failed one is never read as entries.
func TestFailedAttemptNotResurrected(t *testing.T) {
	dir := t.TempDir()
	fail := false
	l, err := Open(Config{Buffered: testBuffered, Dir: dir, Sync: func(f *os.File) error {
		if fail {
			return &os.PathError{Op: "fdatasync", Path: f.Name(), Err: syscall.ENOSPC}
		}
		return f.Sync()
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	appendAll(t, l, records(0, 5), 5)
	big := records(5, 40) // a long frame, written but never made durable
	fail = true
	if err := l.Append(big); err == nil || errors.Is(err, ErrSyncFailed) {
		t.Fatalf("Append with a full disk: %v, want a transient error", err)
	}
	fail = false
	short := records(5, 2)
	for i := range short {
		short[i].Data = []byte(`{"short":true}`)
	}
	appendAll(t, l, short, 2)
	l.Close()
	l2 := open(t, dir, 0)
	check(t, l2, append(records(0, 5), short...))
}

func TestSyncFailedForGood(t *testing.T) {
	dir := t.TempDir()
	l, err := Open(Config{Buffered: testBuffered, Dir: dir, Sync: func(f *os.File) error {
		return &os.PathError{Op: "fdatasync", Path: f.Name(), Err: syscall.EIO}
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := l.Append(records(0, 1)); !errors.Is(err, ErrSyncFailed) {
		t.Fatalf("Append: %v, want ErrSyncFailed", err)
	}
	if err := l.Append(records(0, 1)); !errors.Is(err, ErrSyncFailed) {
		t.Fatalf("second Append: %v, want ErrSyncFailed", err)
	}
	if l.Size() != 0 {
		t.Fatalf("Size = %d after a failed sync", l.Size())
	}
}

func TestSealInterrupted(t *testing.T) {
	dir := t.TempDir()
	l := open(t, dir, 1<<10)
	want := records(0, 60)
	appendAll(t, l, want, 6)
	l.Close()
	idx, _ := filepath.Glob(filepath.Join(dir, "*.idx"))
	if len(idx) < 2 {
		t.Fatalf("%d sealed segments, want several", len(idx))
	}
	os.Remove(idx[0])      // sealed, but the offsets never reached the disk
	os.Truncate(idx[1], 8) // or only partly
	os.WriteFile(idx[len(idx)-1], nil, 0o600)
	l = open(t, dir, 1<<10)
	check(t, l, want)
}

func TestMissingSegment(t *testing.T) {
	dir := t.TempDir()
	l := open(t, dir, 1<<10)
	appendAll(t, l, records(0, 60), 6)
	l.Close()
	segs, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
	os.Remove(segs[0])
	if _, err := Open(Config{Buffered: testBuffered, Dir: dir}); err == nil {
		t.Fatal("Open succeeded without the first segment")
	}
}

func TestManySegmentsBoundedFiles(t *testing.T) {
	dir := t.TempDir()
	l := open(t, dir, 256)
	want := records(0, 3*maxOpen+10)
	appendAll(t, l, want, 1)
	check(t, l, want)
	l.fdmu.Lock()
	n := len(l.opened)
	l.fdmu.Unlock()
	if n > maxOpen {
		t.Fatalf("%d sealed segments open, want at most %d", n, maxOpen)
	}
}

func TestConcurrentReadWrite(t *testing.T) {
	l := open(t, t.TempDir(), 8<<10)
	want := records(0, 2000)
	done := make(chan error)
	go func() {
		for i := 0; i < 2000; i += 10 {
			if err := l.Append(want[i : i+10]); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	for range 4 {
		go func() {
			for {
				size := l.Size()
				err := l.Read(0, int(size), func(r Record) error {
					if !bytes.Equal(r.Data, want[r.Index].Data) {
						return fmt.Errorf("entry %d differs", r.Index)
					}
					return nil
				})
				if err != nil || size == 2000 {
					done <- err
					return
				}
			}
		}()
	}
	for range 5 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
}

// TestDamageNotCut: a frame that fails its check with good frames after it
// is damage at rest, not a torn write: Open refuses, and cuts nothing.
func TestDamageNotCut(t *testing.T) {
	dir := t.TempDir()
	l := open(t, dir, 0)
	appendAll(t, l, records(0, 30), 5)
	path := activeFile(l)
	l.Close()
	before, _ := os.ReadFile(path)
	f, _ := os.OpenFile(path, os.O_RDWR, 0)
	f.WriteAt([]byte{'!'}, 600) // in the second frame's entries
	f.Close()
	_, err := Open(Config{Buffered: testBuffered, Dir: dir})
	if err == nil || !strings.Contains(err.Error(), "not a torn write") {
		t.Fatalf("Open of a log damaged in the middle: %v", err)
	}
	after, _ := os.ReadFile(path)
	if len(after) != len(before) {
		t.Fatalf("Open cut the damaged log from %d to %d bytes", len(before), len(after))
	}
}

// TestProbeDuringAppends: readiness probes never get in the way of appends,
// and add no entries.
func TestProbeDuringAppends(t *testing.T) {
	l := open(t, t.TempDir(), 4<<10)
	stop := make(chan struct{})
	probed := make(chan error, 1)
	go func() {
		for {
			select {
			case <-stop:
				probed <- nil
				return
			default:
			}
			if err := l.Probe(); err != nil {
				probed <- err
				return
			}
		}
	}()
	want := records(0, 500)
	for i := 0; i < len(want); i += 5 {
		if err := l.Append(want[i : i+5]); err != nil {
			t.Fatalf("Append %d: %v", i, err)
		}
	}
	close(stop)
	if err := <-probed; err != nil {
		t.Fatal(err)
	}
	check(t, l, want)
}

// TestPrealloc: the active segment is zero-filled ahead of its end, so a
// frame's write does not change the file's size; what follows the last
// frame is zeros; a sealed segment ends at its last frame; and a log with
// preallocation off ends at its last frame too.
func TestPrealloc(t *testing.T) {
	dir := t.TempDir()
	l, err := Open(Config{Buffered: testBuffered, Dir: dir, SegmentSize: 200 << 10, Prealloc: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	recs := records(0, 3000)
	grew := 0
	var last int64
	for i := 0; i < len(recs); i += 10 {
		if err := l.Append(recs[i : i+10]); err != nil {
			t.Fatal(err)
		}
		l.wmu.Lock()
		a := l.active
		end, alloc := a.end, a.alloc
		for a.extending { // let the zero-fill land, to read a settled size
			l.idle.Wait()
		}
		l.wmu.Unlock()
		fi, err := os.Stat(a.path + ".seg")
		if err != nil {
			t.Fatal(err)
		}
		if fi.Size() < end || alloc < end {
			t.Fatalf("after entry %d: file %d bytes, frames end at %d, zero-filled to %d", i+9, fi.Size(), end, alloc)
		}
		if fi.Size() != last {
			grew++
			last = fi.Size()
		}
		if zeros, err := zeroFrom(a.f, end, fi.Size()); err != nil || !zeros {
			t.Fatalf("after entry %d: not zeros after the last frame (%v)", i+9, err)
		}
	}
	if grew > 3000/10/4 {
		t.Errorf("the file grew on %d of %d appends: the zero-fill does not run ahead", grew, 3000/10)
	}
	l.mu.RLock()
	sealed := slices.Clone(l.sealed)
	l.mu.RUnlock()
	if len(sealed) == 0 {
		t.Fatal("no segment was sealed")
	}
	for _, s := range sealed {
		f, err := os.Open(s.path + ".seg")
		if err != nil {
			t.Fatal(err)
		}
		_, end, _, _ := scan(f, s.first)
		fi, _ := f.Stat()
		f.Close()
		if fi.Size() != end {
			t.Errorf("sealed %s: %d bytes, its frames end at %d", s.path, fi.Size(), end)
		}
	}
	l.Close()
	l = open(t, dir, 200<<10)
	check(t, l, recs)

	off := t.TempDir()
	l2, err := Open(Config{Buffered: testBuffered, Dir: off, Prealloc: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	appendAll(t, l2, records(0, 50), 10)
	// A direct write ends at a block's end: zeros after the last frame, to
	// the end of its block.
	end := l2.active.end
	if fi, _ := os.Stat(activeFile(l2)); fi.Size() < end || fi.Size() >= end+int64(max(l2.active.align, 1)) {
		t.Errorf("without preallocation: %d bytes, frames end at %d (direct writes aligned to %d)", fi.Size(), end, l2.active.align)
	} else if zeros, err := zeroFrom(l2.active.f, end, fi.Size()); err != nil || !zeros {
		t.Errorf("without preallocation: not zeros after the last frame (%v)", err)
	}
}

// testBuffered makes the tests' logs write through the page cache.
var testBuffered bool

// TestBuffered runs the tests again with frames written through the page
// cache, as on a filesystem that does not take direct writes.
func TestBuffered(t *testing.T) {
	testBuffered = true
	defer func() { testBuffered = false }()
	for _, tc := range []struct {
		name string
		f    func(*testing.T)
	}{
		{"AppendRead", TestAppendRead}, {"ReadHashes", TestReadHashes}, {"TornWriteCut", TestTornWriteCut},
		{"FailedAttemptNotResurrected", TestFailedAttemptNotResurrected}, {"SealInterrupted", TestSealInterrupted},
		{"ConcurrentReadWrite", TestConcurrentReadWrite}, {"DamageNotCut", TestDamageNotCut},
		{"ProbeDuringAppends", TestProbeDuringAppends}, {"Prealloc", TestPrealloc}, {"DirectWrites", TestDirectWrites},
	} {
		t.Run(tc.name, tc.f)
	}
}

// TestDirectWrites: where the filesystem takes direct writes, frames are
// written with them, whatever their size and wherever they end in a block,
// across reopens and failed writes; with Buffered, never.
func TestDirectWrites(t *testing.T) {
	dir := t.TempDir()
	l := open(t, dir, 0)
	if testBuffered {
		if l.active.dio != nil {
			t.Fatal("Buffered: frames are written directly")
		}
	} else if l.active.dio == nil {
		probe, align := openDirect(activeFile(l))
		if probe != nil {
			probe.Close()
			t.Fatalf("the filesystem takes direct writes (aligned to %d), the log does not use them", align)
		}
		t.Skipf("the filesystem of %s does not take direct writes (statx STATX_DIOALIGN): nothing to test", dir)
	}
	fail := false
	fault := func() error {
		if fail {
			return errors.New("injected")
		}
		return nil
	}
	l.cfg.Fault = fault
	var want []Record
	next := int64(0)
	add := func(n int) {
		recs := records(next, n)
		if err := l.Append(recs); err != nil {
			t.Fatalf("Append %d..%d: %v", next, next+int64(n)-1, err)
		}
		want = append(want, recs...)
		next += int64(n)
	}
	for i := 1; i <= 40; i++ {
		add(i%7 + 1)
		if a := l.active; a.dio != nil && a.end%int64(a.align) != int64(len(a.tail)) {
			t.Fatalf("the log ends at %d, its partial block holds %d bytes (alignment %d)", a.end, len(a.tail), a.align)
		}
		switch i % 10 {
		case 3: // a failed write, then the same entries again
			fail = true
			if err := l.Append(records(next, 2)); err == nil {
				t.Fatal("Append with a failed write: no error")
			}
			fail = false
		case 7: // the tail read back at open
			l.Close()
			l = open(t, dir, 0)
			l.cfg.Fault = fault
		}
	}
	check(t, l, want)
	if a := l.active; a.dio != nil {
		// A frame that ends exactly at a block's end leaves no tail.
		pad := int(int64(a.align) - a.end%int64(a.align))
		for pad < frameHeader+payloadHead+recordHead+tlog.HashSize+64 {
			pad += a.align
		}
		data := []byte(`{"pad":"` + strings.Repeat("y", pad-(frameHeader+payloadHead+recordHead+tlog.HashSize)-10) + `"}`)
		if err := l.Append([]Record{{Index: next, Hashes: []tlog.Hash{{1}}, Data: data}}); err != nil {
			t.Fatal(err)
		}
		if a.end%int64(a.align) != 0 || len(a.tail) != 0 {
			t.Fatalf("a frame ending on a block's end: the log ends at %d, %d bytes of tail", a.end, len(a.tail))
		}
		want = append(want, Record{Index: next, Hashes: []tlog.Hash{{1}}, Data: data})
		next++
		add(3)
		l.Close()
		l = open(t, dir, 0)
		check(t, l, want)
	}
}
