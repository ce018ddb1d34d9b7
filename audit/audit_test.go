package audit

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"maps"
	"sync"
	"testing"
	"time"

	"github.com/arxsec/arx/internal/publish"
	"github.com/arxsec/arx/record"
)

// memBucket is a bucket in memory. Tests change it only while nothing
// writes to it; writers (the uploader's workers) take the lock.
type memBucket map[string][]byte

var memMu sync.Mutex

func (m memBucket) Get(_ context.Context, p string) ([]byte, error) {
	memMu.Lock()
	defer memMu.Unlock()
	b, ok := m[p]
	if !ok {
		return nil, fmt.Errorf("%s: %w", p, fs.ErrNotExist)
	}
	return b, nil
}
func (m memBucket) Put(_ context.Context, p string, b []byte, _ publish.PutOptions) error {
	memMu.Lock()
	defer memMu.Unlock()
	m[p] = bytes.Clone(b)
	return nil
}
func (m memBucket) Delete(_ context.Context, p string) error {
	memMu.Lock()
	defer memMu.Unlock()
	delete(m, p)
	return nil
}
func (m memBucket) String() string { return "mem" }

// smallLog is a log of n entries of 3 agents with a signed checkpoint.
func smallLog(t *testing.T, n int) (memBucket, string, [][]byte) {
	t.Helper()
	skey, vkey, _ := record.GenerateKey("arx.test/small")
	signer, _ := record.NewSigner(skey)
	m := memBucket{}
	w := publish.NewLogWriter(t.Context(), m)
	heads := map[string]string{}
	var es [][]byte
	for i := 0; i < n; i++ {
		agent := fmt.Sprintf("agent-%d", i%3)
		e := &record.Entry{Index: int64(i), Time: time.Unix(int64(i), 0), Agent: agent, Prev: heads[agent], Type: record.TypeCallRequested,
			Connector: "crm", Action: "account.read", Data: map[string]any{"n": i}}
		b, err := e.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		heads[agent] = record.HashString(record.LeafHash(b))
		w.Add(b)
		es = append(es, b)
	}
	size, root, err := w.Finish()
	if err != nil {
		t.Fatal(err)
	}
	cp, _ := record.SignCheckpoint(signer, size, root)
	m[record.CheckpointPath] = cp
	return m, vkey, es
}

func setBundle(m memBucket, path string, es [][]byte) {
	var b []byte
	for _, e := range es {
		b, _ = record.AppendBundleEntry(b, e)
	}
	m[path] = b
}

// tamperCase changes a log of 600 entries (two full bundles and a partial
// one of 88) built by smallLog.
type tamperCase struct {
	name   string
	tamper func(m memBucket)
	want   string // "" means OK
	only   bool   // every problem is of kind want (nothing else is blamed)
}

func tamperCases(es [][]byte) []tamperCase {
	full0, part := record.BundlePath(0, 256), record.BundlePath(2, 88)
	return []tamperCase{
		{"untouched", func(m memBucket) {}, "", false},
		{"partial tile gone, full one there", func(m memBucket) {
			// The publisher removes partial tiles once full ones exist;
			// a reader takes the prefix of the full one.
			m[record.TilePath(0, 2, 256)] = append(bytes.Clone(m[record.TilePath(0, 2, 88)]), make([]byte, 168*32)...)
			delete(m, record.TilePath(0, 2, 88))
		}, "", false},
		{"partial bundle gone, full one there", func(m memBucket) {
			var more [][]byte
			for i := 600; i < 768; i++ {
				more = append(more, bytes.Replace(es[i%600], []byte(`"n":`), []byte(`"m":`), 1))
			}
			setBundle(m, record.BundlePath(2, 256), append(append([][]byte(nil), es[512:600]...), more...))
			delete(m, part)
		}, "", false},
		{"edited", func(m memBucket) {
			c := append([][]byte(nil), es[:256]...)
			c[10] = bytes.Replace(c[10], []byte(`"n":10`), []byte(`"n":11`), 1)
			setBundle(m, full0, c)
		}, KindEdited, false},
		{"deleted", func(m memBucket) { setBundle(m, part, es[512:599]) }, KindDeleted, false},
		{"bundle gone in the middle", func(m memBucket) { delete(m, record.BundlePath(1, 256)) }, KindDeleted, false},
		{"tile gone in the middle", func(m memBucket) { delete(m, record.TilePath(0, 1, 256)) }, KindTileMismatch, false},
		{"tile cut short", func(m memBucket) {
			p := record.TilePath(0, 1, 256)
			m[p] = bytes.Clone(m[p][:255*32])
		}, KindTileMismatch, false},
		{"tile empty", func(m memBucket) { m[record.TilePath(0, 0, 256)] = []byte{} }, KindTileMismatch, false},
		{"tile hash changed", func(m memBucket) {
			p := record.TilePath(0, 1, 256)
			b := bytes.Clone(m[p])
			b[7*32] ^= 1
			m[p] = b
		}, KindTileMismatch, true},
		{"partial tile hash changed", func(m memBucket) {
			p := record.TilePath(0, 2, 88)
			b := bytes.Clone(m[p])
			b[87*32+31] ^= 1
			m[p] = b
		}, KindTileMismatch, true},
		{"first tile hashes swapped", func(m memBucket) {
			p := record.TilePath(0, 0, 256)
			b := bytes.Clone(m[p])
			h := bytes.Clone(b[:32])
			copy(b[:32], b[32:64])
			copy(b[32:64], h)
			m[p] = b
		}, KindTileMismatch, true},
		{"entry and its tile hash changed together", func(m memBucket) {
			c := append([][]byte(nil), es[256:512]...)
			c[3] = bytes.Replace(c[3], []byte(`"n":259`), []byte(`"n":9`), 1)
			setBundle(m, record.BundlePath(1, 256), c)
			p := record.TilePath(0, 1, 256)
			b := bytes.Clone(m[p])
			h := record.LeafHash(c[3])
			copy(b[3*32:], h[:])
			m[p] = b
		}, KindTileMismatch, false},
		{"bundle empty", func(m memBucket) { m[record.BundlePath(1, 256)] = []byte{} }, KindDeleted, false},
		{"bundle cut in an entry", func(m memBucket) {
			p := record.BundlePath(1, 256)
			m[p] = bytes.Clone(m[p][:len(m[p])-5])
		}, record.ProblemMalformed, false},
		{"truncated", func(m memBucket) { delete(m, part); delete(m, record.TilePath(0, 2, 88)) }, KindTruncated, false},
		{"inserted", func(m memBucket) { setBundle(m, part, append(append([][]byte(nil), es[512:600]...), es[5])) }, KindInserted, false},
		{"reordered", func(m memBucket) {
			c := append([][]byte(nil), es[256:512]...)
			c[1], c[2] = c[2], c[1]
			setBundle(m, record.BundlePath(1, 256), c)
		}, KindReordered, false},
		{"no checkpoint", func(m memBucket) { delete(m, record.CheckpointPath) }, KindReplacedCheckpoint, false},
		{"level-1 tile rewritten", func(m memBucket) {
			p := record.TilePath(1, 0, 2)
			b := bytes.Clone(m[p])
			b[0] ^= 1
			m[p] = b
		}, KindTileMismatch, false},
	}
}

func TestVerify(t *testing.T) {
	const n = 600
	pristine, vkey, es := smallLog(t, n)
	for _, tc := range tamperCases(es) {
		t.Run(tc.name, func(t *testing.T) {
			m := maps.Clone(pristine)
			tc.tamper(m)
			rep, err := Verify(t.Context(), m, Options{LogKey: vkey})
			if err != nil {
				t.Fatal(err)
			}
			found := false
			for _, p := range rep.Problems {
				found = found || p.Kind == tc.want
			}
			if tc.want == "" && !rep.OK || tc.want != "" && (rep.OK || !found) {
				t.Fatalf("ok=%v problems=%v, want %q", rep.OK, rep.Problems, tc.want)
			}
			for _, p := range rep.Problems {
				if tc.only && p.Kind != tc.want {
					t.Errorf("problem %v blamed beside %s", p, tc.want)
				}
			}
			if tc.want == "" && (rep.Entries != n || rep.Agents != 3 || rep.State == nil || rep.TilesChecked < n) {
				t.Fatalf("report %+v", rep)
			}
		})
	}
}

func TestProve(t *testing.T) {
	m, vkey, es := smallLog(t, 70000/100) // 700 entries: three levels of tiles
	for _, i := range []int64{0, 255, 256, 699} {
		p, err := Prove(t.Context(), m, Options{LogKey: vkey}, i)
		if err != nil || !bytes.Equal(p.Entry, es[i]) {
			t.Fatalf("Prove(%d) = %v, %v", i, p, err)
		}
	}
	if _, err := Prove(t.Context(), m, Options{LogKey: vkey}, 700); err == nil {
		t.Fatal("proved an entry past the checkpoint")
	}
}
