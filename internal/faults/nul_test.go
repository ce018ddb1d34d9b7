//go:build linux

package faults

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/arxsec/arx/internal/arxtest"
	"github.com/arxsec/arx/internal/server"
	"github.com/arxsec/arx/internal/store/postgres/pgtest"
	"github.com/arxsec/arx/record"
)

// TestTextTheStoreCannotHold: a NUL in a call's summary (PostgreSQL's text
// cannot hold one) is refused with 400 request.invalid and the attempt is
// recorded, the summary shown escaped; NULs in the other texts a caller
// sends are refused with 400. Sent amid other agents' calls, on both
// backends: the calls batched with it are not failed by it, and the
// server stays ready.
func TestTextTheStoreCannotHold(t *testing.T) {
	for _, backend := range []string{"sqlite", "postgres"} {
		t.Run(backend, func(t *testing.T) {
			var s *arxtest.Server
			if backend == "postgres" {
				db := pgtest.Database(t)
				s = arxtest.StartWith(t, t.TempDir(), func(c *server.Config) { c.Database.URL = db })
			} else {
				s = arxtest.Start(t)
			}
			id, token := s.Hire(arxtest.Manifest)
			_, other := s.Hire(strings.Replace(arxtest.Manifest, "name: test-agent", "name: bystander", 1))

			// Bystanders' calls, in the same batches as the hostile ones.
			var wg sync.WaitGroup
			var mu sync.Mutex
			var failed []string
			for w := range 8 {
				wg.Go(func() {
					for i := range 20 {
						r := s.Do("POST", "/v1/calls", other, map[string]string{"connector": "crm", "action": "account.read",
							"idempotency_key": fmt.Sprint("by-", w, "-", i)})
						if r.Status != http.StatusCreated {
							mu.Lock()
							failed = append(failed, fmt.Sprintf("%d %s", r.Status, r.Body))
							mu.Unlock()
						}
					}
				})
			}
			var ids []string
			for i, summary := range []string{"account\x00 7", "\x00", strings.Repeat("\x00", 600)} {
				r := s.Do("POST", "/v1/calls", token, map[string]string{"connector": "crm", "action": "account.read",
					"idempotency_key": fmt.Sprint("nul-", i), "summary": summary})
				if r.Status != http.StatusBadRequest || r.ErrorCode() != "request.invalid" {
					t.Errorf("summary %q: %d %.200s, want 400 request.invalid", summary[:min(len(summary), 12)], r.Status, r.Body)
					continue
				}
				var body struct {
					Error struct {
						CallID string `json:"call_id"`
						Hint   string `json:"hint"`
					} `json:"error"`
				}
				r.JSON(t, &body)
				if body.Error.CallID == "" || !strings.Contains(body.Error.Hint, "NUL") {
					t.Errorf("the refusal names no call or gives no hint: %s", r.Body)
				}
				ids = append(ids, body.Error.CallID)
				// A retry with the same key gets the same refusal.
				if r := s.Do("POST", "/v1/calls", token, map[string]string{"connector": "crm", "action": "account.read",
					"idempotency_key": fmt.Sprint("nul-", i), "summary": summary}); r.Status != http.StatusBadRequest {
					t.Errorf("the retry: %d %s", r.Status, r.Body)
				}
			}
			wg.Wait()
			if len(failed) > 0 {
				t.Errorf("%d bystander calls failed, first: %s", len(failed), failed[0])
			}

			// The attempts are in the record, the summary escaped.
			r := s.Do("GET", "/v1/agents/"+id+"/record?limit=100", s.AdminToken, nil)
			var page struct {
				Entries []struct {
					Entry json.RawMessage `json:"entry"`
				} `json:"entries"`
			}
			r.JSON(t, &page)
			refused := map[string]string{}
			for _, pe := range page.Entries {
				e, err := record.Parse(pe.Entry)
				if err != nil {
					t.Fatal(err)
				}
				if e.Type == "credential.refused" {
					refused[e.Call], _ = e.Data["summary"].(string)
				}
			}
			for i, id := range ids {
				sum, ok := refused[id]
				if !ok {
					t.Errorf("attempt %d (call %s) is not in the record", i, id)
				}
				if strings.Contains(sum, "\x00") || len(sum) > 512 {
					t.Errorf("attempt %d recorded with summary %q", i, sum)
				}
			}
			if len(ids) > 0 && refused[ids[0]] != `account\x00 7` {
				t.Errorf("the summary is recorded as %q, want it escaped", refused[ids[0]])
			}

			// Other texts with a NUL: refused, nothing written.
			call := s.Do("POST", "/v1/calls", token, map[string]string{"connector": "crm", "action": "account.read", "idempotency_key": "fine"})
			var c struct {
				ID string `json:"id"`
			}
			call.JSON(t, &c)
			for _, tc := range []struct {
				path, token string
				body        map[string]any
			}{
				{"/v1/calls/" + c.ID + "/complete", token, map[string]any{"outcome": "error", "error": "boom\x00"}},
				{"/v1/agents/" + id + "/terminate", s.AdminToken, map[string]any{"reason": "bye\x00"}},
			} {
				if r := s.Do("POST", tc.path, tc.token, tc.body); r.Status != http.StatusBadRequest || !strings.Contains(string(r.Body), "NUL") {
					t.Errorf("%s: %d %s, want 400 naming the NUL", tc.path, r.Status, r.Body)
				}
			}
			if r := s.Do("GET", "/readyz", "", nil); r.Status != http.StatusOK {
				t.Errorf("readyz: %d %s", r.Status, r.Body)
			}
		})
	}
}
