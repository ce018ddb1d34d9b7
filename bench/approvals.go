package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
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
budget:
  max_call_duration: 5m
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

// approvalPhase is crossApprovals (replicas.go) with the agent and the
// manager on the same server.
func approvalPhase(ctx context.Context, t *target, adminToken string, n int) (approvalResult, error) {
	return crossApprovals(ctx, t, t, adminToken, n)
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
