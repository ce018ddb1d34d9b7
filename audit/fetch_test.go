package audit

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/arxsec/arx/record"
)

// writeDir writes a bucket's objects into a directory.
func writeDir(t *testing.T, m memBucket) string {
	t.Helper()
	dir := t.TempDir()
	for p, b := range m {
		fp := filepath.Join(dir, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(fp), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(fp, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// sameReport fails unless two reports say the same, but for timing.
func sameReport(t *testing.T, what string, a, b *Report) {
	t.Helper()
	x, y := *a, *b
	x.Duration, y.Duration = 0, 0
	if x.State != nil && y.State != nil {
		sx, sy := *x.State, *y.State
		sx.VerifiedAt = sy.VerifiedAt
		x.State, y.State = &sx, &sy
	}
	if !reflect.DeepEqual(x, y) {
		t.Fatalf("%s: the reports differ:\n%+v\n%+v", what, x, y)
	}
}

// TestDirAgrees: reading a bucket from a directory into reused buffers,
// in batches of bundles, finds exactly what reading it object by object
// does, for every way of tampering with it.
func TestDirAgrees(t *testing.T) {
	pristine, vkey, es := smallLog(t, 600)
	for _, tc := range tamperCases(es) {
		t.Run(tc.name, func(t *testing.T) {
			m := maps.Clone(pristine)
			tc.tamper(m)
			want, err := Verify(t.Context(), m, Options{LogKey: vkey})
			if err != nil {
				t.Fatal(err)
			}
			got, err := Verify(t.Context(), Dir(writeDir(t, m)), Options{LogKey: vkey})
			if err != nil {
				t.Fatal(err)
			}
			sameReport(t, tc.name, want, got)
		})
	}
}

// TestDirBatches: a log of several batches of bundles and a partial one,
// with the progress reported on the way, tampered with in the second batch.
func TestDirBatches(t *testing.T) {
	n := 2*bundlesPerBatch*record.TileWidth + 300
	m, vkey, es := smallLog(t, n)
	dir := writeDir(t, m)
	var last int64
	progress := func(done, total int64) {
		if done < last || total != int64(n) {
			t.Fatalf("progress %d/%d after %d", done, total, last)
		}
		last = done
	}
	rep, err := Verify(t.Context(), Dir(dir), Options{LogKey: vkey, Progress: progress})
	if err != nil || !rep.OK || rep.Entries != int64(n) || last != int64(n) {
		t.Fatalf("%v %+v, progress at %d", err, rep, last)
	}
	b := bundlesPerBatch + 3
	c := append([][]byte(nil), es[b*256:(b+1)*256]...)
	c[7], c[8] = c[8], c[7]
	setBundle(m, record.BundlePath(int64(b), 256), c)
	want, err := Verify(t.Context(), m, Options{LogKey: vkey})
	if err != nil || want.OK {
		t.Fatalf("%v %+v", err, want)
	}
	got, err := Verify(t.Context(), Dir(writeDir(t, m)), Options{LogKey: vkey})
	if err != nil {
		t.Fatal(err)
	}
	sameReport(t, "reordered", want, got)
}

func TestDirGetAppend(t *testing.T) {
	dir := t.TempDir()
	big := bytes.Repeat([]byte("0123456789abcdef"), 20000) // more than one read
	os.WriteFile(filepath.Join(dir, "big"), big, 0o644)
	os.WriteFile(filepath.Join(dir, "empty"), nil, 0o644)
	d := Dir(dir)
	ctx := context.Background()
	got, err := d.GetAppend(ctx, "big", []byte("x"))
	if err != nil || !bytes.Equal(got, append([]byte("x"), big...)) {
		t.Fatalf("GetAppend(big) = %d bytes, %v", len(got), err)
	}
	buf := make([]byte, 0, 10)
	got, err = d.GetAppend(ctx, "empty", buf)
	if err != nil || got == nil || len(got) != 0 {
		t.Fatalf("GetAppend(empty) = %q, %v", got, err)
	}
	if got, err := d.Get(ctx, "big"); err != nil || !bytes.Equal(got, big) {
		t.Fatalf("Get(big) = %d bytes, %v", len(got), err)
	}
	if got, err := d.GetAppend(ctx, "gone", []byte("x")); !errors.Is(err, fs.ErrNotExist) || string(got) != "x" {
		t.Fatalf("GetAppend(gone) = %q, %v", got, err)
	}
	for _, p := range []string{"../big", "/big", "", "a//b", "."} {
		if _, err := d.Get(ctx, p); err == nil || errors.Is(err, fs.ErrNotExist) {
			t.Errorf("Get(%q) = %v", p, err)
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := d.Get(ctx, "big"); !errors.Is(err, context.Canceled) {
		t.Fatalf("Get after cancel: %v", err)
	}
}
