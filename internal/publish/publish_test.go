package publish_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/arxsec/arx/audit"
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
	if st := s.Publisher.Status(); st != first {
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

	// Only the partial tiles a checkpoint in the bucket needs remain.
	var partials []string
	filepath.Walk(fb.Dir(), func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() && strings.Contains(p, ".p/") {
			partials = append(partials, p)
		}
		return nil
	})
	if len(partials) > 3*len(publish.PartialPaths(size)) {
		t.Errorf("%d partial tiles left: %v", len(partials), partials)
	}

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
