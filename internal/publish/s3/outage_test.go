package s3

import (
	"bytes"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/arxsec/arx/audit"
	"github.com/arxsec/arx/internal/publish"
	"github.com/arxsec/arx/internal/publish/publishtest"
	"github.com/arxsec/arx/record"
)

// versitygw is an S3 server process of the test's own, so that the test can
// stop it and start it again.
type versitygw struct {
	t    *testing.T
	bin  string
	addr string
	root string
	cmd  *exec.Cmd
}

func startVersitygw(t *testing.T) *versitygw {
	t.Helper()
	bin := os.Getenv("ARX_TEST_VERSITYGW_BIN")
	if bin == "" {
		if os.Getenv("ARX_TEST_REQUIRE_SERVERS") == "1" {
			t.Fatal("ARX_TEST_VERSITYGW_BIN is not set, and ARX_TEST_REQUIRE_SERVERS=1: source .ci/setup-s3.sh")
		}
		t.Skip("no versitygw binary: set ARX_TEST_VERSITYGW_BIN (source .ci/setup-s3.sh builds one)")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	v := &versitygw{t: t, bin: bin, addr: addr, root: t.TempDir()}
	if err := os.MkdirAll(filepath.Join(v.root, "outage"), 0o755); err != nil {
		t.Fatal(err)
	}
	v.start()
	t.Cleanup(v.stop)
	return v
}

func (v *versitygw) start() {
	v.t.Helper()
	v.cmd = exec.Command(v.bin, "--port", v.addr, "--access", "outagekey", "--secret", "outagesecret0123", "--quiet", "posix", v.root)
	if err := v.cmd.Start(); err != nil {
		v.t.Fatal(err)
	}
	for i := 0; ; i++ {
		c, err := net.Dial("tcp", v.addr)
		if err == nil {
			c.Close()
			return
		}
		if i == 100 {
			v.t.Fatalf("versitygw did not start on %s", v.addr)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (v *versitygw) stop() {
	if v.cmd == nil {
		return
	}
	v.cmd.Process.Signal(syscall.SIGKILL)
	v.cmd.Wait()
	v.cmd = nil
}

// TestOutage stops the S3 server during a load of calls and starts it
// again: calls go on (the database is the spool), and once the bucket is
// back every entry arrives, once, in order, and the audit passes.
func TestOutage(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	v := startVersitygw(t)
	b, err := New(Config{Endpoint: "http://" + v.addr, Bucket: "outage", PathStyle: true, Region: "us-east-1",
		AccessKey: "outagekey", SecretKey: "outagesecret0123", MaxRetries: 1})
	if err != nil {
		t.Fatal(err)
	}
	data := t.TempDir()
	vkey := publishtest.LogKey(t, data, "arx.test/outage")
	w := publishtest.StartWitness(t, "w.outage.test", vkey)
	s := publishtest.StartServer(t, data, &publish.Config{Bucket: b, Witnesses: []publish.Witness{{URL: w.URL, VKey: w.VKey}},
		PublishInterval: 50 * time.Millisecond, WitnessInterval: 100 * time.Millisecond, ObjectTimeout: 2 * time.Second})

	var calls, failed atomic.Int64
	stop := make(chan struct{})
	loadDone := make(chan struct{})
	go func() {
		defer close(loadDone)
		for {
			select {
			case <-stop:
				return
			default:
			}
			if err := s.Call(); err != nil {
				failed.Add(1)
				t.Errorf("call during the outage test: %v", err)
				return
			}
			calls.Add(1)
		}
	}()
	ctx := context.Background()
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s (status %+v)", what, s.Publisher.Status())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitFor("a first checkpoint in the bucket", func() bool { return s.Publisher.Status().CheckpointSize > 20 })

	v.stop() // the bucket goes away
	// An upload that finished just before the kill may still be counted
	// a moment later: the size is taken once those have settled (each
	// attempt against the stopped server fails at once).
	time.Sleep(300 * time.Millisecond)
	outageAt := s.Publisher.Status().Size
	before := calls.Load()
	time.Sleep(1200 * time.Millisecond)
	if calls.Load()-before < 10 {
		t.Fatalf("only %d calls during the outage: calls must not wait for the bucket", calls.Load()-before)
	}
	tree, _ := s.Runtime.Store().TreeSize(ctx)
	if got := s.Publisher.Status().Size; got > outageAt || tree <= got {
		t.Fatalf("published %d (from %d) of %d entries while the bucket was down", got, outageAt, tree)
	}

	v.start() // it comes back
	time.Sleep(300 * time.Millisecond)
	close(stop)
	<-loadDone
	if err := s.Runtime.Checkpoint(ctx); err != nil {
		t.Fatal(err)
	}
	final, _ := s.Runtime.Store().TreeSize(ctx)
	waitFor("every entry in the bucket", func() bool { return s.Publisher.Status().CheckpointSize == final })
	rep, err := audit.Verify(ctx, b, audit.Options{LogKey: vkey, WitnessKeys: []string{w.VKey}, Quorum: 1})
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK || rep.Entries != final || rep.Size != final {
		t.Fatalf("audit after the outage: ok=%v entries=%d size=%d want %d: %v", rep.OK, rep.Entries, rep.Size, final, rep.Problems)
	}
	// Every entry once: the bucket's entries are exactly the store's.
	es, err := s.Runtime.Store().Entries(ctx, 0, int(final)+10)
	if err != nil || int64(len(es)) != final {
		t.Fatalf("store entries: %d %v", len(es), err)
	}
	i := 0
	for n := int64(0); n*256 < final; n++ {
		wd := int(min(final-n*256, 256))
		data, err := b.Get(ctx, record.BundlePath(n, wd))
		if err != nil {
			t.Fatal(err)
		}
		got, err := record.ParseEntryBundle(data)
		if err != nil || len(got) != wd {
			t.Fatalf("bundle %d: %d entries, %v", n, len(got), err)
		}
		for _, e := range got {
			if !bytes.Equal(e, es[i].Data) {
				t.Fatalf("entry %d in the bucket differs from the store's", i)
			}
			i++
		}
	}
	t.Logf("CAMPAIGN bucket_down calls=%d entries=%d published_at_outage=%d recovered=true lost=0", calls.Load(), final, outageAt)
}
