package replicas

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// errorCode is the code of an API error answer ("" when none).
func errorCode(r *response) string {
	var e struct {
		Error struct {
			Code string `json:"code"`
		} `json:"error"`
	}
	json.Unmarshal(r.body, &e)
	return e.Error.Code
}

// TestLoginLimitAcrossReplicas: five failed logins for one email, spread
// over three replicas, reach the limit as on one: the sixth is refused
// with request.rate_limited whichever replica gets it, even with the
// right password.
func TestLoginLimitAcrossReplicas(t *testing.T) {
	d := start(t, 3)
	const email = "boss@example.com"
	d.person(t, email) // one successful login, which does not count
	login := func(on *replica, email, password string) *response {
		t.Helper()
		r, err := do(t.Context(), "POST", on.url+"/v1/auth/tokens", "", map[string]string{"email": email, "password": password})
		if err != nil {
			t.Fatalf("login on %s: %v", on.name, err)
		}
		return r
	}
	for i := range 5 {
		on := d.replicas[i%3]
		if r := login(on, email, "wrong password!"); r.status != http.StatusUnauthorized || errorCode(r) != "auth.login_failed" {
			t.Fatalf("failure %d on %s: HTTP %d %s", i+1, on.name, r.status, r.body)
		}
	}
	for _, on := range d.replicas {
		for _, pw := range []string{"wrong password!", "correct horse battery staple"} {
			if r := login(on, email, pw); r.status != http.StatusTooManyRequests || errorCode(r) != "request.rate_limited" {
				t.Fatalf("after 5 failures, on %s: HTTP %d %s", on.name, r.status, r.body)
			}
		}
	}
	// Another email from the same address is not limited: refused
	// attempts do not count, and 5 failures are under the address's 20.
	if r := login(d.replicas[1], "nobody@example.com", "whatever you like"); errorCode(r) != "auth.login_failed" {
		t.Fatalf("another email: HTTP %d %s", r.status, r.body)
	}
}

// TestRateSpikeAcrossReplicas: 126 calls of one agent in one minute,
// spread over three replicas (42 each, under the 120 a replica alone
// would need), make one rate_spike drift: the replicas count together.
func TestRateSpikeAcrossReplicas(t *testing.T) {
	d := start(t, 3)
	agent, token := d.hire(t, d.replicas[0], "spiky")
	// All the calls fall in one minute (they take well under a second):
	// not in a minute's last seconds.
	if now := time.Now(); now.Second() >= 50 {
		time.Sleep(time.Until(now.Truncate(time.Minute).Add(time.Minute)))
	}
	const calls = 126
	began := time.Now()
	var wg sync.WaitGroup
	for w := range 6 {
		wg.Go(func() {
			for i := w; i < calls; i += 6 {
				on := d.replicas[i%3]
				r, err := do(t.Context(), "POST", on.url+"/v1/calls", token, map[string]string{
					"connector": "crm", "action": "account.read", "risk": "low", "idempotency_key": fmt.Sprint("spike-", i)})
				if err != nil || r.status != http.StatusCreated {
					t.Errorf("call %d on %s: %v %v", i, on.name, err, r)
					return
				}
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	t.Logf("%d calls in %v", calls, time.Since(began).Round(time.Millisecond))
	conn, err := pgx.Connect(t.Context(), d.db)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(t.Context())
	rows, err := conn.Query(t.Context(), `SELECT body FROM entries WHERE agent = $1 AND type = 'drift.detected' ORDER BY idx`, agent)
	if err != nil {
		t.Fatal(err)
	}
	bodies, err := pgx.CollectRows(rows, pgx.RowTo[[]byte])
	if err != nil {
		t.Fatal(err)
	}
	var spikes []map[string]any
	for _, b := range bodies {
		var e struct {
			Data map[string]any `json:"data"`
		}
		if err := json.Unmarshal(b, &e); err != nil {
			t.Fatal(err)
		}
		if e.Data["rule"] == "rate_spike" {
			spikes = append(spikes, e.Data)
		}
	}
	if len(spikes) != 1 {
		t.Fatalf("want one rate_spike drift, got %v", spikes)
	}
	if facts, _ := spikes[0]["facts"].(map[string]any); facts["calls_last_minute"] != float64(121) {
		t.Fatalf("want one rate_spike drift at the 121st call, got %v", spikes)
	}
}
