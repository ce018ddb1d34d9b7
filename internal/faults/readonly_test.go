//go:build linux

package faults

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/arxsec/arx/internal/faults/faultfs"
	"github.com/arxsec/arx/record"
	"golang.org/x/sys/unix"
)

// TestReadOnly makes arx serve's data directory read-only (EROFS on every
// write path, through a fault-injecting FUSE mount) under a load of governed
// calls: calls are refused with record.unavailable and carry no credential,
// every call acknowledged before stays in the record, and when the directory
// is writable again service comes back by itself, without a restart. The data
// directory then restarts and verifies, its indexes contiguous.
func TestReadOnly(t *testing.T) {
	if testing.Short() {
		t.Skip("fault test skipped in -short mode")
	}
	ff := faultfs.MountForTest(t)
	p := startServe(t, ff.Dir)
	t.Cleanup(p.kill) // runs before the unmount when the test fails early
	admin := storeFaultAdmin(t, ff.Dir)
	load := storeFaultStart(t, p, admin, "ro", 4)

	load.waitAcks(t, 20, 10*time.Second)
	ff.Fail(syscall.EROFS)
	failedAt := time.Now()
	// Refusals come at once: the writes fail, nothing waits.
	load.waitRefusals(t, failedAt, 20, 10*time.Second)
	// Push the kernel to write back what SQLite wrote into its mapped
	// wal-index (-shm) during the fault: that writeback fails too.
	roSyncfs(t, ff.Dir)
	time.Sleep(500 * time.Millisecond)
	if code, b, err := storeFaultDo(t.Context(), p.url, "GET", "/v1/agents", admin, nil); err != nil || code != 200 {
		t.Errorf("reading agents with the data directory read-only: %d %s %v", code, b, err)
	}
	storeFaultReadyz(t, p, 503, 10*time.Second) // out of a load balancer's rotation
	ff.Heal()
	healedAt := time.Now()
	recovery := load.waitRecovery(t, healedAt, 15*time.Second)
	storeFaultReadyz(t, p, 200, 10*time.Second)
	load.waitAcks(t, load.acks()+20, 10*time.Second)
	// WAL checkpoints resume too, or the WAL would grow for good.
	time.Sleep(time.Until(healedAt.Add(2 * time.Second)))
	load.stop()
	roNoCheckpointWarning(t, p, healedAt.Add(time.Second))

	if n := ff.Failed(); n == 0 {
		t.Fatal("the fault refused no write: the test proves nothing")
	}
	refusedWith := load.check(t)
	p.stop(t)
	if err := ff.Close(); err != nil {
		t.Fatal(err)
	}
	// What is durable is what reached the backing directory: start over
	// from it alone.
	lost := storeFaultVerify(t, ff.Backing, admin, load)
	t.Logf("CAMPAIGN read_only refused_with=%s recovered=true lost=%d recovery_ms=%d acknowledged=%d refused=%d write_ops_failed=%d",
		refusedWith, lost, recovery.Milliseconds(), load.acks(), load.refusals(), ff.Failed())
}

// storeFaultReadyz waits until /readyz answers want.
func storeFaultReadyz(t *testing.T, p *proc, want int, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		code, b, err := storeFaultDo(t.Context(), p.url, "GET", "/readyz", "", nil)
		if err == nil && code == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz did not answer %d within %v: %d %s %v", want, within, code, b, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// roSyncfs asks the kernel to write back everything cached for the
// filesystem dir is on.
func roSyncfs(t *testing.T, dir string) {
	t.Helper()
	d, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	unix.Syncfs(int(d.Fd())) // fails under the fault, as it should
}

// roNoCheckpointWarning fails the test if arx serve logged a failed WAL
// checkpoint after since.
func roNoCheckpointWarning(t *testing.T, p *proc, since time.Time) {
	t.Helper()
	for _, line := range strings.Split(p.logText(), "\n") {
		var m struct {
			Time time.Time `json:"time"`
			Msg  string    `json:"msg"`
			Err  string    `json:"err"`
		}
		if json.Unmarshal([]byte(line), &m) == nil && m.Msg == "sqlite: checkpoint" && m.Time.After(since) {
			t.Errorf("WAL checkpoints still fail after recovery: %s", line)
		}
	}
}

// storeFaultAdmin reads the admin token arx serve left in dir.
func storeFaultAdmin(t *testing.T, dir string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "admin.token"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// storeFaultClient waits longer than the busy timeout: a refusal must reach
// the caller, not the caller's patience.
var storeFaultClient = &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}

func storeFaultDo(ctx context.Context, base, method, path, token string, body any) (int, []byte, error) {
	return callWith(ctx, storeFaultClient, base, method, path, token, body)
}

// storeFaultAnswer is one answer to POST /v1/calls or, when complete is
// set, to POST /v1/calls/{id}/complete.
type storeFaultAnswer struct {
	complete bool
	sent, at time.Time
	status   int
	code     string // error code, when refused
	id       string
	cred     bool
	err      error
}

// ok reports whether a is an acknowledgement.
func (a storeFaultAnswer) ok() bool {
	return a.err == nil && (a.status == 201 && !a.complete || a.status == 200 && a.complete)
}

// storeFaultLoad drives governed calls from several agents, each opening a
// call and completing it, and keeps every answer.
type storeFaultLoad struct {
	p      *proc
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu        sync.Mutex
	answers   []storeFaultAnswer
	completed map[string]bool // completions acknowledged with 200
}

func storeFaultStart(t *testing.T, p *proc, admin, name string, agents int) *storeFaultLoad {
	t.Helper()
	tokens := make([]string, agents)
	for i := range tokens {
		code, b, err := storeFaultDo(t.Context(), p.url, "POST", "/v1/agents", admin, map[string]string{"manifest": fmt.Sprintf(crashManifest, fmt.Sprint(name, "-", i))})
		if err != nil || code != 201 {
			t.Fatalf("hire: %d %s %v", code, b, err)
		}
		var out struct {
			Token string `json:"token"`
		}
		json.Unmarshal(b, &out)
		tokens[i] = out.Token
	}
	ctx, cancel := context.WithCancel(context.Background())
	l := &storeFaultLoad{p: p, cancel: cancel, completed: map[string]bool{}}
	for i, tok := range tokens {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for n := 0; ctx.Err() == nil; n++ {
				a := storeFaultAnswer{sent: time.Now()}
				code, b, err := storeFaultDo(ctx, p.url, "POST", "/v1/calls", tok, map[string]string{"connector": "crm", "action": "account.read", "idempotency_key": fmt.Sprintf("%s-a%d-%d", name, i, n)})
				a.at, a.status, a.err = time.Now(), code, err
				if ctx.Err() != nil {
					return // stopped: this answer may be cut short
				}
				var c struct {
					ID         string          `json:"id"`
					Credential json.RawMessage `json:"credential"`
					Error      struct {
						Code string `json:"code"`
					} `json:"error"`
				}
				json.Unmarshal(b, &c)
				a.id, a.code, a.cred = c.ID, c.Error.Code, len(c.Credential) > 0 && string(c.Credential) != "null"
				l.mu.Lock()
				l.answers = append(l.answers, a)
				l.mu.Unlock()
				if err != nil || code != 201 {
					time.Sleep(20 * time.Millisecond) // a client backing off
					continue
				}
				a = storeFaultAnswer{complete: true, id: c.ID, sent: time.Now()}
				code, b, err = storeFaultDo(ctx, p.url, "POST", "/v1/calls/"+c.ID+"/complete", tok, map[string]string{"outcome": "success"})
				a.at, a.status, a.err = time.Now(), code, err
				if ctx.Err() != nil {
					return
				}
				c.Error.Code = ""
				json.Unmarshal(b, &c)
				a.code = c.Error.Code
				l.mu.Lock()
				l.answers = append(l.answers, a)
				if a.ok() {
					l.completed[c.ID] = true
				}
				l.mu.Unlock()
			}
		}()
	}
	return l
}

func (l *storeFaultLoad) stop() {
	l.cancel()
	l.wg.Wait()
}

// count counts the answers keep accepts.
func (l *storeFaultLoad) count(keep func(storeFaultAnswer) bool) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, a := range l.answers {
		if keep(a) {
			n++
		}
	}
	return n
}

// lastAck returns the id of the last call acknowledged.
func (l *storeFaultLoad) lastAck() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, a := range slices.Backward(l.answers) {
		if a.ok() && !a.complete {
			return a.id
		}
	}
	return ""
}

// acks counts the calls acknowledged with a credential.
func (l *storeFaultLoad) acks() int {
	return l.count(func(a storeFaultAnswer) bool { return a.ok() && !a.complete })
}

// refusals counts the calls and completions refused.
func (l *storeFaultLoad) refusals() int {
	return l.count(func(a storeFaultAnswer) bool { return a.err == nil && !a.ok() })
}

// waitAcks waits until n calls in all have been acknowledged.
func (l *storeFaultLoad) waitAcks(t *testing.T, n int, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for l.acks() < n {
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d calls acknowledged within %v:\n%s", l.acks(), n, within, l.p.logText())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitRefusals waits until n calls or completions have been refused after
// since.
func (l *storeFaultLoad) waitRefusals(t *testing.T, since time.Time, n int, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	refused := func(a storeFaultAnswer) bool { return a.err == nil && !a.ok() && a.at.After(since) }
	for l.count(refused) < n {
		if time.Now().After(deadline) {
			t.Fatalf("only %d calls or completions refused within %v of the fault", l.count(refused), within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitRecovery waits for the first call sent after since to be
// acknowledged, and returns how long after since that answer came.
func (l *storeFaultLoad) waitRecovery(t *testing.T, since time.Time, within time.Duration) time.Duration {
	t.Helper()
	deadline := since.Add(within)
	for {
		l.mu.Lock()
		for _, a := range l.answers {
			if a.ok() && !a.complete && !a.sent.Before(since) {
				l.mu.Unlock()
				return a.at.Sub(since)
			}
		}
		l.mu.Unlock()
		if time.Now().After(deadline) {
			t.Fatalf("no recovery within %v, without a restart:\n%s", within, l.p.logText())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// check fails the test on any answer that is neither an acknowledgement
// with a credential nor a clear refusal without one, and returns the
// refusal code ("none" when nothing was refused). Whether every acknowledgement was durable is for
// storeFaultVerify to say.
func (l *storeFaultLoad) check(t *testing.T) string {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	codes := map[string]int{}
	for _, a := range l.answers {
		switch {
		case a.err != nil:
			t.Errorf("a request sent at %s got no answer: %v", a.sent.Format(time.StampMilli), a.err)
		case a.ok():
			if !a.complete && !a.cred {
				t.Errorf("call %s acknowledged without a credential", a.id)
			}
		case a.status == 503 && a.code == "record.unavailable":
			codes[a.code]++
			if a.cred {
				t.Errorf("a refused call carries a credential")
			}
		default:
			t.Errorf("a request (completion: %v) got %d %q, want an acknowledgement or 503 record.unavailable", a.complete, a.status, a.code)
		}
	}
	if len(codes) > 1 {
		t.Fatalf("refusal codes %v, want record.unavailable alone", codes)
	}
	if len(codes) == 0 {
		return "none"
	}
	return "record.unavailable"
}

// storeFaultVerify starts arx serve again on dir, waits for a checkpoint
// covering every entry, runs `arx record verify` against it, checks that the
// indexes are contiguous and that every acknowledged call and completion has
// its entry. It returns how many acknowledgements were lost (the test has
// failed when any was).
func storeFaultVerify(t *testing.T, dir, admin string, l *storeFaultLoad) int {
	t.Helper()
	p := startServe(t, dir)
	defer p.stop(t)

	// Every entry, in order; then a checkpoint that covers them all.
	var entries []*record.Entry
	deadline := time.Now().Add(10 * time.Second)
	for {
		entries = entries[:0]
		for {
			code, b, err := storeFaultDo(t.Context(), p.url, "GET", fmt.Sprintf("/v1/log/entries?start=%d&limit=5000", len(entries)), admin, nil)
			if err != nil || code != 200 {
				t.Fatalf("entries: %d %s %v", code, b, err)
			}
			var page struct {
				Entries []struct {
					Index int64  `json:"index"`
					Data  []byte `json:"data"`
				} `json:"entries"`
			}
			if err := json.Unmarshal(b, &page); err != nil {
				t.Fatal(err)
			}
			if len(page.Entries) == 0 {
				break
			}
			for _, e := range page.Entries {
				pe, err := record.Parse(e.Data)
				if err != nil {
					t.Fatalf("entry %d: %v", e.Index, err)
				}
				if e.Index != int64(len(entries)) || pe.Index != e.Index {
					t.Fatalf("indexes are not contiguous: entry %d (its own index %d) at position %d", e.Index, pe.Index, len(entries))
				}
				entries = append(entries, pe)
			}
		}
		code, signed, err := storeFaultDo(t.Context(), p.url, "GET", "/v1/log/checkpoint", "", nil)
		if err != nil || code != 200 {
			t.Fatalf("checkpoint: %d %v", code, err)
		}
		vkey, _ := os.ReadFile(filepath.Join(dir, "log.pub"))
		cp, _, err := record.OpenCheckpoint(signed, strings.TrimSpace(string(vkey)))
		if err != nil {
			t.Fatal(err)
		}
		if int(cp.Size) == len(entries) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no checkpoint covers the %d entries (latest: %d)", len(entries), cp.Size)
		}
		time.Sleep(200 * time.Millisecond)
	}

	out, err := exec.Command(arxBinary(t), "record", "verify", "--json", "--server", p.url, "--token", admin, "--log-key", filepath.Join(dir, "log.pub")).CombinedOutput()
	var rep struct {
		OK       bool  `json:"ok"`
		Verified int64 `json:"entries_verified"`
	}
	if err != nil || json.Unmarshal(out, &rep) != nil || !rep.OK || rep.Verified != int64(len(entries)) {
		t.Fatalf("arx record verify: %v\n%s", err, out)
	}

	issued, completed := map[string]bool{}, map[string]bool{}
	for _, e := range entries {
		switch e.Type {
		case record.TypeCredentialIssued:
			issued[e.Call] = true
		case record.TypeCallCompleted:
			completed[e.Call] = true
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	lost := 0
	for _, a := range l.answers {
		if a.ok() && !a.complete && !issued[a.id] {
			lost++
			t.Errorf("call %s was acknowledged with a credential but its credential.issued entry is missing", a.id)
		}
	}
	ids := make([]string, 0, len(l.completed))
	for id := range l.completed {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		if !completed[id] {
			lost++
			t.Errorf("completion of %s was acknowledged but its call.completed entry is missing", id)
		}
	}
	return lost
}
