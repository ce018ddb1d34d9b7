package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/arxsec/arx/agentvault"
)

// The approval phase measures how fast a waiting agent resumes: an SDK call
// (agentvault.Do) on a high-risk action waits for a named approver; a
// manager approves it over the API; the time from sending the approval to
// the SDK's function starting includes the decision's commit and the
// long-poll wake-up. The anchor it beats: approval services that poll every
// few seconds.

const approvalManifest = `apiVersion: arx.dev/v1
kind: JobDescription
agent:
  name: %s
  owner: %s
scope:
  connectors:
    crm:
      actions:
        account.delete: {risk: high}
approval:
  approvers: [%s]
  timeout: 10m
termination:
  notify: []
`

type approvalResult struct {
	n          int
	toStart    latency // approve request sent -> the SDK's function starts
	roundTrip  latency // the approve request's own round trip
	afterReply latency // approve answer received -> function starts (negative: before the answer)
	negative   int     // functions that started before the approve answer arrived
}

func approvalPhase(ctx context.Context, t *target, adminToken string, n int) (approvalResult, error) {
	var res approvalResult
	var b [3]byte
	rand.Read(b[:])
	suffix := hex.EncodeToString(b[:])
	email := "approver-" + suffix + "@bench.example"
	password := "bench-password-" + suffix

	// A manager with a password and an API token.
	var added struct {
		SetupToken string `json:"setup_token"`
	}
	body, _ := json.Marshal(map[string]string{"email": email, "role": "manager"})
	if err := t.do(ctx, "POST", "/v1/users", adminToken, body, http.StatusCreated, &added); err != nil {
		return res, err
	}
	body, _ = json.Marshal(map[string]string{"token": added.SetupToken, "password": password})
	if err := t.do(ctx, "POST", "/v1/auth/setup", "", body, http.StatusOK, nil); err != nil {
		return res, err
	}
	var login struct {
		Token string `json:"token"`
	}
	body, _ = json.Marshal(map[string]string{"email": email, "password": password})
	if err := t.do(ctx, "POST", "/v1/auth/tokens", "", body, http.StatusCreated, &login); err != nil {
		return res, err
	}
	// The agent whose high-risk calls wait for that manager.
	var hired struct {
		Token string `json:"token"`
	}
	body, _ = json.Marshal(map[string]string{"manifest": fmt.Sprintf(approvalManifest, "bench-approvals-"+suffix, email, email)})
	if err := t.do(ctx, "POST", "/v1/agents", adminToken, body, http.StatusCreated, &hired); err != nil {
		return res, err
	}
	sdk, err := agentvault.New(agentvault.Config{Token: hired.Token, BaseURL: t.base + "/v1"})
	if err != nil {
		return res, err
	}

	// The manager watches requests arrive over server-sent events.
	evCtx, stopEvents := context.WithCancel(ctx)
	defer stopEvents()
	requested, err := watchRequests(evCtx, t.base, login.Token)
	if err != nil {
		return res, err
	}

	var toStart, roundTrip, afterReply []time.Duration
	for i := 0; i < n && ctx.Err() == nil; i++ {
		started := make(chan time.Time, 1)
		done := make(chan error, 1)
		go func() {
			_, err := agentvault.Do(ctx, sdk, agentvault.Action{Connector: "crm", Action: "account.delete", Risk: agentvault.RiskHigh,
				Summary: fmt.Sprintf("bench approval %d", i)}, func(ctx context.Context, cred agentvault.Credential) (struct{}, error) {
				started <- time.Now()
				return struct{}{}, nil
			})
			done <- err
		}()
		var call string
		select {
		case call = <-requested:
		case err := <-done:
			return res, fmt.Errorf("approval %d: the SDK call ended before it was pending: %v", i, err)
		case <-time.After(10 * time.Second):
			return res, fmt.Errorf("approval %d: no approval.requested event within 10s", i)
		}
		sent := time.Now()
		if err := t.do(ctx, "POST", "/v1/approvals/"+call+"/approve", login.Token, []byte(`{"reason":"bench"}`), http.StatusOK, nil); err != nil {
			return res, fmt.Errorf("approval %d: %w", i, err)
		}
		replied := time.Now()
		var start time.Time
		select {
		case start = <-started:
		case err := <-done:
			// The function may have run and returned before this select
			// looked: started is buffered, so it tells.
			select {
			case start = <-started:
				done <- err
			default:
				return res, fmt.Errorf("approval %d: the SDK call ended without running: %v", i, err)
			}
		case <-time.After(10 * time.Second):
			return res, fmt.Errorf("approval %d: the SDK did not resume within 10s", i)
		}
		if err := <-done; err != nil {
			return res, fmt.Errorf("approval %d: %w", i, err)
		}
		toStart = append(toStart, start.Sub(sent))
		roundTrip = append(roundTrip, replied.Sub(sent))
		d := start.Sub(replied)
		if d < 0 {
			res.negative++
			d = 0
		}
		afterReply = append(afterReply, d)
	}
	res.n = len(toStart)
	res.toStart, res.roundTrip, res.afterReply = summarize(toStart), summarize(roundTrip), summarize(afterReply)
	return res, nil
}

// watchRequests streams /v1/events and sends the call id of every
// approval.requested event.
func watchRequests(ctx context.Context, base, token string) (<-chan string, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", base+"/v1/events", nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		resp.Body.Close()
		return nil, fmt.Errorf("GET /v1/events: HTTP %d %s", resp.StatusCode, b)
	}
	out := make(chan string, 16)
	go func() {
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		event := ""
		for sc.Scan() {
			line := sc.Text()
			switch {
			case strings.HasPrefix(line, "event: "):
				event = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "data: ") && event == "approval.requested":
				var e struct {
					CallID string `json:"call_id"`
				}
				if json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &e) == nil && e.CallID != "" {
					select {
					case out <- e.CallID:
					case <-ctx.Done():
						return
					}
				}
			}
		}
	}()
	return out, nil
}

func printApprovals(w io.Writer, r approvalResult) {
	fmt.Fprintf(w, "approval wake-up, %d approvals (approve sent -> SDK function starts)\n", r.n)
	fmt.Fprintf(w, "  p50 %s  p99 %s  max %s   (target p99 < 50 ms; polling services wake every few seconds)\n",
		fmtMs(r.toStart.p50), fmtMs(r.toStart.p99), fmtMs(r.toStart.max))
	fmt.Fprintf(w, "  the approve request's round trip, commit included: p50 %s  p99 %s\n", fmtMs(r.roundTrip.p50), fmtMs(r.roundTrip.p99))
	fmt.Fprintf(w, "  after the approve answer arrived: p50 %s  p99 %s  (%d of %d started before the answer arrived)\n",
		fmtMs(r.afterReply.p50), fmtMs(r.afterReply.p99), r.negative, r.n)
}
