package api_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/arxsec/arx/internal/arxtest"
	"github.com/arxsec/arx/internal/runtime"
	"github.com/arxsec/arx/internal/server"
)

// TestTerminationNotices: the people the manifest's termination procedure
// names are told through the server's webhooks, from the outbox, and each
// notice is recorded; without a channel the notice is recorded as
// undeliverable, never dropped silently.
func TestTerminationNotices(t *testing.T) {
	var mu sync.Mutex
	var got []map[string]any
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var m map[string]any
		json.NewDecoder(r.Body).Decode(&m)
		mu.Lock()
		got = append(got, m)
		mu.Unlock()
	}))
	defer hook.Close()
	for _, withHook := range []bool{true, false} {
		s := arxtest.StartWith(t, t.TempDir(), func(c *server.Config) {
			if withHook {
				c.Webhooks = []runtime.Webhook{{URL: hook.URL, Format: "json"}}
			}
		})
		agent, _ := s.Hire(arxtest.Manifest) // termination.notify: [owner@example.com]
		if r := s.Do("POST", "/v1/agents/"+agent+"/terminate", s.AdminToken, map[string]string{"reason": "retired"}); r.Status != 200 {
			t.Fatalf("terminate: %d %s", r.Status, r.Body)
		}
		deadline := time.Now().Add(10 * time.Second)
		for {
			var notified map[string]any
			for _, e := range entries(t, s, agent) {
				if e.Type == "termination.notified" {
					notified = e.Data
				}
			}
			if notified != nil {
				ch, _ := notified["channel"].(string)
				if notified["target"] != "owner@example.com" || withHook != (ch == "server webhooks") {
					t.Fatalf("notice entry: %v", notified)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("no termination.notified entry (webhook %v)", withHook)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 1 || got[0]["event"] != "agent.terminated" || got[0]["to"] != "owner@example.com" || !strings.Contains(got[0]["reason"].(string), "retired") {
		t.Fatalf("webhook deliveries: %v", got)
	}
}
