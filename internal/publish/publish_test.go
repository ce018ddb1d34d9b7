package publish_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/arxsec/arx/audit"
	"github.com/arxsec/arx/internal/logbuf"
	"github.com/arxsec/arx/internal/publish"
	"github.com/arxsec/arx/internal/publish/file"
	"github.com/arxsec/arx/internal/publish/publishtest"
	"github.com/arxsec/arx/record"
)

// flaky is a bucket that fails while down is set: an unreachable bucket.
type flaky struct {
	*file.Bucket
	down atomic.Bool
}

var errDown = errors.New("bucket unreachable")

func (f *flaky) Put(ctx context.Context, p string, data []byte, o publish.PutOptions) error {
	if f.down.Load() {
		return errDown
	}
	return f.Bucket.Put(ctx, p, data, o)
}

func (f *flaky) Delete(ctx context.Context, p string) error {
	if f.down.Load() {
		return errDown
	}
	return f.Bucket.Delete(ctx, p)
}

func auditOK(t *testing.T, b audit.Source, vkey string, want int64, witnesses ...string) {
	t.Helper()
	rep, err := audit.Verify(t.Context(), b, audit.Options{LogKey: vkey, WitnessKeys: witnesses, Quorum: len(witnesses)})
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK || rep.Size != want || rep.Entries != want {
		t.Fatalf("audit: ok=%v size=%d entries=%d, want %d: %v", rep.OK, rep.Size, rep.Entries, want, rep.Problems)
	}
}

// TestSpool: while the bucket is down nothing is published and nothing is
// lost, across a restart of the server; when it is back, publishing resumes
// where it stopped.
func TestSpool(t *testing.T) {
	root := t.TempDir()
	data := filepath.Join(root, "data")
	vkey := publishtest.LogKey(t, data, "arx.test/spool")
	fb, err := file.New(filepath.Join(root, "bucket"))
	if err != nil {
		t.Fatal(err)
	}
	b := &flaky{Bucket: fb}
	pc := &publish.Config{Bucket: b, PublishInterval: time.Hour} // rounds only when the test says
	s := publishtest.StartServer(t, data, pc)
	s.Calls(150)
	s.Publish()
	first := s.Publisher.Status()
	if first.Size != first.CheckpointSize || first.Size < 300 {
		t.Fatalf("status after the first publish: %+v", first)
	}
	auditOK(t, fb, vkey, first.Size)

	b.down.Store(true)
	s.Calls(200)
	if err := s.Runtime.Checkpoint(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := s.Publisher.PublishNow(t.Context()); !errors.Is(err, errDown) {
		t.Fatalf("publish to a bucket that is down: %v", err)
	}
	if st := s.Publisher.Status(); !reflect.DeepEqual(st, first) {
		t.Fatalf("status moved while the bucket was down: %+v, was %+v", st, first)
	}
	s.Close() // the final flush fails too; the entries wait in the database

	b.down.Store(false)
	s2 := publishtest.StartServer(t, data, &publish.Config{Bucket: b, PublishInterval: time.Hour})
	if st := s2.Publisher.Status(); st.Size != 0 && st.Size != first.Size {
		t.Fatalf("progress after a restart: %+v", st)
	}
	s2.Publish()
	size, _ := s2.Runtime.Store().TreeSize(t.Context())
	if st := s2.Publisher.Status(); st.Size != size || st.CheckpointSize != size {
		t.Fatalf("after the bucket came back: %+v, log has %d", st, size)
	}
	auditOK(t, fb, vkey, size)

	// Partial tiles whose full tile is in the bucket are gone.
	filepath.Walk(fb.Dir(), func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() && strings.Contains(p, ".p/") {
			full, _, _ := strings.Cut(p, ".p/")
			if _, err := os.Stat(full); err == nil {
				t.Errorf("partial %s left beside its full tile", p)
			}
		}
		return nil
	})

	// A bucket emptied behind the server's back gets the whole log again.
	s2.Close()
	os.RemoveAll(fb.Dir())
	fb2, _ := file.New(fb.Dir())
	s3 := publishtest.StartServer(t, data, &publish.Config{Bucket: fb2, PublishInterval: time.Hour})
	s3.Publish()
	auditOK(t, fb2, vkey, size)
}

// TestQuorum: without a quorum of cosignatures, entries and tiles are
// published but the checkpoint is not; once the witness is back, it is.
func TestQuorum(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a witness process")
	}
	root := t.TempDir()
	data := filepath.Join(root, "data")
	vkey := publishtest.LogKey(t, data, "arx.test/quorum")
	w := publishtest.StartWitness(t, "w.quorum.test", vkey)
	fb, _ := file.New(filepath.Join(root, "bucket"))
	s := publishtest.StartServer(t, data, &publish.Config{Bucket: fb, PublishInterval: time.Hour, WitnessTimeout: 2 * time.Second,
		Witnesses: []publish.Witness{{URL: w.URL, VKey: w.VKey}}})
	s.Calls(20)
	s.Publish()
	cosigned := s.Publisher.Status()

	w.Stop()
	s.Calls(20)
	s.Runtime.Checkpoint(t.Context())
	err := s.Publisher.PublishNow(t.Context())
	if err == nil || !strings.Contains(err.Error(), "quorum") {
		t.Fatalf("publish without the witness: %v", err)
	}
	st := s.Publisher.Status()
	if st.CheckpointSize != cosigned.CheckpointSize || st.Size <= cosigned.Size {
		t.Fatalf("without a quorum: %+v (before %+v): entries should be published, the checkpoint not", st, cosigned)
	}
	// What is in the bucket still verifies: the old cosigned checkpoint.
	auditOK(t, fb, vkey, cosigned.CheckpointSize, w.VKey)

	w.Start()
	s.Publish()
	size, _ := s.Runtime.Store().TreeSize(t.Context())
	auditOK(t, fb, vkey, size, w.VKey)
	cp, _ := fb.Get(t.Context(), record.CheckpointPath)
	if !strings.Contains(string(cp), "— w.quorum.test ") {
		t.Fatalf("checkpoint without the cosignature:\n%s", cp)
	}
}

// pinned is a bucket read with another checkpoint: one published earlier.
type pinned struct {
	audit.Source
	checkpoint []byte
}

func (p pinned) Get(ctx context.Context, path string) ([]byte, error) {
	if path == record.CheckpointPath {
		return p.checkpoint, nil
	}
	return p.Source.Get(ctx, path)
}

// TestEveryCheckpointStaysVerifiable: as the log grows over many
// checkpoints, every checkpoint ever published stays verifiable against
// the bucket (c2sp.org/tlog-tiles: the partial tiles a published size
// needs are served until their full tile is), the oldest ones included,
// whose level-1 partial tiles stay partial for 65,536 entries.
func TestEveryCheckpointStaysVerifiable(t *testing.T) {
	root := t.TempDir()
	data := filepath.Join(root, "data")
	vkey := publishtest.LogKey(t, data, "arx.test/every")
	fb, err := file.New(filepath.Join(root, "bucket"))
	if err != nil {
		t.Fatal(err)
	}
	s := publishtest.StartServer(t, data, &publish.Config{Bucket: fb, PublishInterval: time.Hour})
	var published [][]byte
	for range 6 {
		s.Calls(70)
		s.Publish()
		cp, err := fb.Get(t.Context(), record.CheckpointPath)
		if err != nil {
			t.Fatal(err)
		}
		published = append(published, cp)
	}
	for i, cp := range published {
		c, _, err := record.OpenCheckpoint(cp, vkey)
		if err != nil {
			t.Fatal(err)
		}
		rep, err := audit.Verify(t.Context(), pinned{audit.Dir(fb.Dir()), cp}, audit.Options{LogKey: vkey})
		if err != nil {
			t.Fatal(err)
		}
		if !rep.OK || rep.Size != int64(c.Size) {
			t.Errorf("checkpoint %d (size %d) published earlier no longer verifies: %v", i, c.Size, rep.Problems)
		}
	}
}

// TestPublishedLogNamesCosigners: "checkpoint published" names the
// witnesses whose cosignature is on the checkpoint, not those configured.
func TestPublishedLogNamesCosigners(t *testing.T) {
	if testing.Short() {
		t.Skip("starts witness processes")
	}
	root := t.TempDir()
	data := filepath.Join(root, "data")
	vkey := publishtest.LogKey(t, data, "arx.test/names")
	w1 := publishtest.StartWitness(t, "w1.names.test", vkey)
	w2 := publishtest.StartWitness(t, "w2.names.test", vkey)
	w2.Stop()
	fb, _ := file.New(filepath.Join(root, "bucket"))
	var logs logbuf.Buffer
	s := publishtest.StartServer(t, data, &publish.Config{Bucket: fb, PublishInterval: time.Hour, WitnessTimeout: 2 * time.Second,
		Quorum: 1, Witnesses: []publish.Witness{{URL: w1.URL, VKey: w1.VKey}, {URL: w2.URL, VKey: w2.VKey}},
		Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
	s.Calls(5)
	s.Publish()
	var line map[string]any
	for l := range strings.Lines(logs.String()) {
		if strings.Contains(l, `"checkpoint published"`) {
			json.Unmarshal([]byte(l), &line)
		}
	}
	if line == nil {
		t.Fatalf("no checkpoint published:\n%s", logs.String())
	}
	if got := fmt.Sprint(line["cosigned_by"]); got != "[w1.names.test]" || line["cosignatures"] != float64(1) {
		t.Errorf("checkpoint published: cosigned_by %s, cosignatures %v; want [w1.names.test], 1", got, line["cosignatures"])
	}
}
