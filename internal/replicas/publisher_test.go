package replicas

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/arxsec/arx/internal/store/postgres/pgtest"
	"github.com/arxsec/arx/record"
)

// takeoverBound is how long after the leader's death another replica must
// publish: PostgreSQL frees the dead replica's lock when its socket closes,
// the others try every second. Generous for a loaded 2-core machine.
const takeoverBound = 15 * time.Second

// TestPublisherElection: three replicas on one database are all given the
// same file:// bucket and a real witness. Exactly one publishes
// (arx_publish_leader). Under a load of governed calls through all three,
// the publisher is killed with SIGKILL; another takes over within
// takeoverBound, the bucket's checkpoint goes on growing, every call a
// replica acknowledged ends up in the bucket, and arx audit verify passes
// on the bucket, with the state of a run from before the kill (the log
// only grew) and the witness's latest cosigned checkpoint.
func TestPublisherElection(t *testing.T) {
	db := pgtest.Database(t)
	bin := arxBinary(t)
	root := t.TempDir()
	bucket := filepath.Join(root, "bucket")
	dirs := make([]string, 3)
	for i := range dirs {
		dirs[i] = filepath.Join(root, string(rune('A'+i)))
		if err := os.MkdirAll(dirs[i], 0o700); err != nil {
			t.Fatal(err)
		}
	}
	// The log key first: the witness is told it before the replicas start.
	skey, vkey, err := record.GenerateKey("arx.test/publisher")
	if err != nil {
		t.Fatal(err)
	}
	logPub := filepath.Join(dirs[0], "log.pub")
	if err := os.WriteFile(filepath.Join(dirs[0], "log.key"), []byte(skey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(logPub, []byte(vkey+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	wdir := filepath.Join(root, "witness")
	wkey, wpub := filepath.Join(wdir, "witness.key"), filepath.Join(wdir, "witness.pub")
	os.MkdirAll(wdir, 0o700)
	if out, err := exec.Command(bin, "witness", "keygen", "--name", "witness.test/w1", "--key", wkey, "--pub", wpub).CombinedOutput(); err != nil {
		t.Fatalf("witness keygen: %v %s", err, out)
	}
	witURL := startWitness(t, bin, wkey, filepath.Join(wdir, "state"), vkey)
	wpubKey, err := os.ReadFile(wpub)
	if err != nil {
		t.Fatal(err)
	}
	flags := []string{"--bucket", "file://" + bucket, "--publish-interval", "200ms",
		"--witness", witURL + "=" + strings.TrimSpace(string(wpubKey)), "--witness-interval", "1s"}

	rs := []*replica{startReplica(t, bin, "A", dirs[0], db, flags...)}
	b, err := os.ReadFile(filepath.Join(dirs[0], "admin.token"))
	if err != nil {
		t.Fatal(err)
	}
	d := &deployment{db: db, admin: strings.TrimSpace(string(b)), logPub: vkey}
	for i := 1; i < 3; i++ {
		for _, f := range []string{"log.key", "log.pub", "credential.key"} {
			b, err := os.ReadFile(filepath.Join(dirs[0], f))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dirs[i], f), b, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		rs = append(rs, startReplica(t, bin, string(rune('A'+i)), dirs[i], db, flags...))
	}
	d.replicas = rs

	var dead atomic.Pointer[replica]
	live := func() []*replica {
		var out []*replica
		for _, r := range rs {
			if r != dead.Load() {
				out = append(out, r)
			}
		}
		return out
	}
	leader := waitLeader(t, live(), 15*time.Second)
	t.Logf("replica %s publishes", leader.name)

	// Load: governed calls through every live replica.
	type agent struct{ id, token string }
	var agents []agent
	for i := range 3 {
		id, tok := d.hire(t, rs[i], fmt.Sprint("pub-", i))
		agents = append(agents, agent{id, tok})
	}
	var mu sync.Mutex
	acked := map[string]bool{}
	var afterKill atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 6 {
		wg.Go(func() {
			a := agents[w%len(agents)]
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				on := live()[(w+i)%len(live())]
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				r, err := do(ctx, "POST", on.url+"/v1/calls", a.token, map[string]string{"connector": "crm", "action": "account.read",
					"risk": "low", "idempotency_key": fmt.Sprintf("p%d-%d", w, i)})
				cancel()
				var c callView
				if err == nil && r.status == http.StatusCreated && json.Unmarshal(r.body, &c) == nil && c.Credential != nil {
					mu.Lock()
					acked[c.ID] = true
					mu.Unlock()
					if dead.Load() != nil {
						afterKill.Add(1)
					}
				}
			}
		})
	}
	defer func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		wg.Wait()
	}()

	// Entries reach the bucket, and an auditor's run keeps its state.
	state := filepath.Join(root, "audit.state")
	verify := func(what string) {
		t.Helper()
		out, err := exec.Command(bin, "audit", "verify", "--bucket", "file://"+bucket, "--log-key", logPub,
			"--witness-key", wpub, "--quorum", "1", "--state", state, "--witness-url", witURL).CombinedOutput()
		if err != nil {
			t.Fatalf("arx audit verify (%s): %v\n%s", what, err, out)
		}
	}
	before := waitBucket(t, bucket, vkey, 100, 20*time.Second) // mid-load
	verify("before the kill")
	for range 3 { // steady state: one publisher
		if got := leaders(live()); len(got) != 1 || got[0] != leader {
			t.Fatalf("publishers before the kill: %v, want %s only", names(got), leader.name)
		}
		time.Sleep(300 * time.Millisecond)
	}

	// Kill the publisher.
	atKill := bucketSize(t, bucket, vkey)
	dead.Store(leader)
	killed := time.Now()
	leader.kill(t)
	var next *replica
	for next == nil {
		if got := leaders(live()); len(got) > 1 {
			t.Fatalf("two publishers at once: %v", names(got))
		} else if len(got) == 1 {
			next = got[0]
		}
		if time.Since(killed) > takeoverBound {
			t.Fatalf("no replica publishes %v after the publisher was killed", takeoverBound)
		}
		time.Sleep(50 * time.Millisecond)
	}
	took := time.Since(killed)
	grown := waitBucket(t, bucket, vkey, atKill+1, 30*time.Second)
	t.Logf("replica %s killed; %s publishes after %v; the bucket's checkpoint went from %d (at the kill) to %d %v after it",
		leader.name, next.name, took.Round(time.Millisecond), atKill, grown, time.Since(killed).Round(time.Millisecond))

	time.Sleep(2 * time.Second)
	close(stop)
	wg.Wait()
	if afterKill.Load() == 0 {
		t.Fatal("no call was acknowledged after the kill")
	}
	if got := leaders(live()); len(got) != 1 {
		t.Fatalf("publishers after the takeover: %v, want one", names(got))
	}

	// Every acknowledged call is in the bucket, under a cosigned checkpoint.
	deadline := time.Now().Add(30 * time.Second)
	for {
		calls, size := bucketCalls(t, bucket, vkey)
		missing := 0
		mu.Lock()
		for id := range acked {
			if !calls[id] {
				missing++
			}
		}
		n := len(acked)
		mu.Unlock()
		if missing == 0 {
			t.Logf("%d calls acknowledged (%d after the kill), all in the bucket's %d entries (%d before the kill)", n, afterKill.Load(), size, before)
			t.Logf("CAMPAIGN publisher takeover_ms=%d acknowledged=%d after_kill=%d bucket_entries=%d lost=0",
				took.Milliseconds(), n, afterKill.Load(), size)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d acknowledged calls are not in the bucket (checkpoint size %d)", missing, n, size)
		}
		time.Sleep(200 * time.Millisecond)
	}
	verify("after the takeover")
	for _, r := range rs {
		if n := strings.Count(r.Logs(), "another publisher writes to this bucket"); n > 0 {
			t.Logf("replica %s: the bucket guard refused %d checkpoint(s)", r.name, n)
		}
	}
}

// startWitness starts arx witness serve on loopback and returns its URL.
func startWitness(t *testing.T, bin, key, state, logKey string) string {
	t.Helper()
	cmd := exec.Command(bin, "witness", "serve", "--listen", "127.0.0.1:0", "--key", key, "--state", state, "--log", logKey)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	cmd.Stderr = &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	urls := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		re := regexp.MustCompile(`listening on (http://\S+)`)
		for sc.Scan() {
			if m := re.FindStringSubmatch(sc.Text()); m != nil {
				select {
				case urls <- m[1]:
				default:
				}
			}
		}
	}()
	select {
	case u := <-urls:
		return u
	case <-time.After(20 * time.Second):
		t.Fatal("arx witness serve did not start")
		return ""
	}
}

// leaders lists the replicas whose /metrics say they publish.
func leaders(rs []*replica) []*replica {
	var out []*replica
	for _, r := range rs {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		resp, err := do(ctx, "GET", r.url+"/metrics", "", nil)
		cancel()
		if err != nil || resp.status != http.StatusOK {
			continue
		}
		for line := range strings.SplitSeq(string(resp.body), "\n") {
			if line == "arx_publish_leader 1" {
				out = append(out, r)
			}
		}
	}
	return out
}

func names(rs []*replica) []string {
	var out []string
	for _, r := range rs {
		out = append(out, r.name)
	}
	return out
}

func waitLeader(t *testing.T, rs []*replica, within time.Duration) *replica {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		got := leaders(rs)
		if len(got) > 1 {
			t.Fatalf("two publishers at once: %v", names(got))
		}
		if len(got) == 1 {
			return got[0]
		}
		if time.Now().After(deadline) {
			t.Fatalf("no replica publishes after %v", within)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// bucketSize is the size of the bucket's checkpoint (0 without one).
func bucketSize(t *testing.T, bucket, vkey string) int64 {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(bucket, record.CheckpointPath))
	if os.IsNotExist(err) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	cp, _, err := record.OpenCheckpoint(b, vkey)
	if err != nil {
		t.Fatalf("the bucket's checkpoint: %v", err)
	}
	return int64(cp.Size)
}

// waitBucket waits for the bucket's checkpoint to reach size, checking
// that it never shrinks, and returns the size it reached.
func waitBucket(t *testing.T, bucket, vkey string, size int64, within time.Duration) int64 {
	t.Helper()
	deadline := time.Now().Add(within)
	last := int64(0)
	for {
		n := bucketSize(t, bucket, vkey)
		if n < last {
			t.Fatalf("the bucket's checkpoint went back from %d to %d", last, n)
		}
		last = n
		if n >= size {
			return n
		}
		if time.Now().After(deadline) {
			t.Fatalf("the bucket's checkpoint has %d entries after %v, want %d", n, within, size)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// bucketCalls reads the entries the bucket's checkpoint covers and returns
// the calls they record.
func bucketCalls(t *testing.T, bucket, vkey string) (map[string]bool, int64) {
	t.Helper()
	size := bucketSize(t, bucket, vkey)
	calls := map[string]bool{}
	for n := int64(0); n*record.TileWidth < size; n++ {
		w := int(min(size-n*record.TileWidth, record.TileWidth))
		b, err := os.ReadFile(filepath.Join(bucket, record.BundlePath(n, w)))
		if os.IsNotExist(err) && w < record.TileWidth {
			// A later publish may have completed the tile meanwhile.
			b, err = os.ReadFile(filepath.Join(bucket, record.BundlePath(n, record.TileWidth)))
		}
		if err != nil {
			t.Fatal(err)
		}
		es, err := record.ParseEntryBundle(b)
		if err != nil {
			t.Fatal(err)
		}
		for _, data := range es[:min(len(es), w)] {
			e, err := record.Parse(data)
			if err != nil {
				t.Fatal(err)
			}
			if e.Call != "" {
				calls[e.Call] = true
			}
		}
	}
	return calls, size
}
