package main

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// terminatePhase measures, over several rounds, the time from sending a
// termination to the first gateway request refused, with 1000 outstanding
// credentials of the agent in each round: a prober keeps sending gateway
// requests with those credentials, round robin, while the terminate
// request is sent.
func terminatePhase(ctx context.Context, client *http.Client, arxURL, admin string, rounds, outstanding int) error {
	var lat []time.Duration
	var after atomic.Int64 // requests honoured after the terminate answer arrived: must stay 0
	for round := 0; round < rounds && ctx.Err() == nil; round++ {
		var hired struct {
			Agent struct {
				ID string `json:"id"`
			} `json:"agent"`
			Token string `json:"token"`
		}
		if err := postJSON(ctx, client, arxURL+"/v1/agents", admin, map[string]string{"manifest": fmt.Sprintf(gwManifest, "term-"+randHex(4))}, 201, &hired); err != nil {
			return fmt.Errorf("hire: %w", err)
		}
		creds := make([]string, outstanding)
		var wg sync.WaitGroup
		errs := make(chan error, outstanding)
		sem := make(chan struct{}, 32)
		for i := range creds {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				var call struct {
					Credential struct {
						Token string `json:"token"`
					} `json:"credential"`
				}
				if err := postJSON(ctx, client, arxURL+"/v1/calls", hired.Token, map[string]string{"connector": "upstream", "action": "read", "idempotency_key": randHex(8)}, 201, &call); err != nil {
					errs <- err
					return
				}
				creds[i] = call.Credential.Token
			}()
		}
		wg.Wait()
		close(errs)
		if err := <-errs; err != nil {
			return fmt.Errorf("outstanding credentials: %w", err)
		}

		stop := make(chan struct{})
		refused := make(chan time.Time, 1)
		var answered atomic.Bool
		var probers sync.WaitGroup
		for p := 0; p < 4; p++ {
			probers.Add(1)
			go func() {
				defer probers.Done()
				for i := p; ; i += 4 {
					select {
					case <-stop:
						return
					default:
					}
					req, _ := http.NewRequestWithContext(ctx, "GET", arxURL+"/v1/gateway/upstream/ping", nil)
					req.Header.Set("Authorization", "Bearer "+creds[i%len(creds)])
					sent := answered.Load()
					resp, err := client.Do(req)
					if err != nil {
						continue
					}
					resp.Body.Close()
					if resp.StatusCode == http.StatusOK && sent {
						after.Add(1)
					}
					if resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden {
						select {
						case refused <- time.Now():
						default:
						}
					}
				}
			}()
		}
		time.Sleep(100 * time.Millisecond) // the probers are in full swing
		start := time.Now()
		if err := postJSON(ctx, client, arxURL+"/v1/agents/"+hired.Agent.ID+"/terminate", admin, map[string]string{"reason": "bench"}, 200, nil); err != nil {
			close(stop)
			probers.Wait()
			return fmt.Errorf("terminate: %w", err)
		}
		answered.Store(true)
		var first time.Time
		select {
		case first = <-refused:
		case <-time.After(10 * time.Second):
			close(stop)
			probers.Wait()
			return fmt.Errorf("no gateway request was refused within 10s of the termination")
		}
		close(stop)
		probers.Wait()
		lat = append(lat, first.Sub(start))
	}
	l := summarize(lat)
	fmt.Printf("\ntermination: %d rounds, each with %d outstanding credentials and 4 probers on the gateway\n", len(lat), outstanding)
	fmt.Printf("terminate sent -> first refused gateway request   p50 %.3f ms  p99 %.3f ms  (target < 10 ms)\n",
		float64(l.p50)/float64(time.Millisecond), float64(l.p99)/float64(time.Millisecond))
	fmt.Printf("gateway requests sent after the terminate answer and still honoured: %d (must be 0)\n", after.Load())
	if after.Load() != 0 {
		return fmt.Errorf("%d gateway requests honoured after termination", after.Load())
	}
	return nil
}
