package agentvault

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/arxsec/arx/arxerr"
)

var readAccount = Action{Connector: "salesforce", Action: "account.read", Risk: RiskLow, Summary: "account 0017"}

var closeDeal = Action{Connector: "salesforce", Action: "deal.close", Risk: RiskHigh}

func TestDoSuccess(t *testing.T) {
	ps := newProtocolServer(t)
	c := ps.client(t)
	var got Credential
	res, err := Do(t.Context(), c, readAccount, func(ctx context.Context, cred Credential) (string, error) {
		got = cred
		if dl, ok := ctx.Deadline(); !ok || !dl.Equal(cred.ExpiresAt) {
			t.Errorf("fn context deadline %v, want the credential's expiry %v", dl, cred.ExpiresAt)
		}
		return "Acme", nil
	})
	if err != nil || res != "Acme" {
		t.Fatalf("Do() = %q, %v", res, err)
	}
	call := ps.lastCall()
	if got.Token != call.token || got.Type != "Bearer" || got.CallID != call.ID || got.AgentID != "agent-1" ||
		got.Connector != "salesforce" || got.Action != "account.read" || got.Risk != RiskLow || got.ExpiresAt.IsZero() {
		t.Errorf("credential %+v does not describe call %s", got, call.ID)
	}
	if call.Summary != "account 0017" {
		t.Errorf("summary %q not sent", call.Summary)
	}
	if cs := ps.completionsOf(call.ID); len(cs) != 1 || cs[0].Outcome != "success" || cs[0].Error != "" {
		t.Errorf("completions %+v, want one success", cs)
	}
}

func TestSetAuthHeader(t *testing.T) {
	r, _ := http.NewRequest("GET", "https://crm.example/accounts/1", nil)
	Credential{Token: "eyJ.x.y", Type: "Bearer"}.SetAuthHeader(r)
	if got := r.Header.Get("Authorization"); got != "Bearer eyJ.x.y" {
		t.Errorf("Authorization %q", got)
	}
}

var uuidV4 = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

func TestDoReusesIdempotencyKeyAcrossRetries(t *testing.T) {
	for _, tc := range []struct {
		name   string
		faults []string
	}{
		{"record unavailable, then answer lost", []string{"unavailable", "drop"}},
		{"proxy 502", []string{"html502", "html502"}},
		{"slow answer", []string{"slow"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ps := newProtocolServer(t)
			ps.postFaults = tc.faults
			c := ps.client(t)
			c.attemptTimeout = 200 * time.Millisecond // for "slow"
			if _, err := Do(t.Context(), c, readAccount, okFn); err != nil {
				t.Fatal(err)
			}
			ps.mu.Lock()
			defer ps.mu.Unlock()
			if len(ps.calls) != 1 || len(ps.posts) != 1 {
				t.Fatalf("%d calls from %d keys, want 1 call from 1 key", len(ps.calls), len(ps.posts))
			}
			for key, n := range ps.posts {
				if n != len(tc.faults)+1 {
					t.Errorf("key sent %d times, want %d", n, len(tc.faults)+1)
				}
				if !uuidV4.MatchString(key) {
					t.Errorf("generated key %q is not a UUIDv4", key)
				}
			}
		})
	}
}

func TestDoKeys(t *testing.T) {
	ps := newProtocolServer(t)
	c := ps.client(t)
	a := readAccount
	a.IdempotencyKey = "my-key-1"
	for range 2 {
		if _, err := Do(t.Context(), c, readAccount, okFn); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := Do(t.Context(), c, a, okFn); err != nil {
		t.Fatal(err)
	}
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if len(ps.posts) != 3 || ps.posts["my-key-1"] != 1 {
		t.Errorf("keys %v: want a new key per Do and the caller's key as given", ps.posts)
	}
}

func TestRequestGivesUp(t *testing.T) {
	ps := newProtocolServer(t)
	ps.postFaults = []string{"unavailable", "unavailable", "unavailable", "unavailable", "unavailable", "unavailable"}
	c := ps.client(t)
	_, err := c.Request(t.Context(), readAccount)
	if !IsCode(err, arxerr.RecordUnavailable) {
		t.Fatalf("Request() error = %v, want record.unavailable after the retries", err)
	}
	ps.mu.Lock()
	defer ps.mu.Unlock()
	for _, n := range ps.posts {
		if n != c.retry.attempts {
			t.Errorf("%d tries, want %d", n, c.retry.attempts)
		}
	}
}

func TestDoWaitsForApproval(t *testing.T) {
	ps := newProtocolServer(t)
	ps.needsApproval["deal.close"] = true
	c := ps.client(t) // long polls of 30s: only an immediate answer passes
	approvedAt := make(chan time.Time, 1)
	go func() {
		if ps.waitPolling(t) {
			time.Sleep(50 * time.Millisecond)
			approvedAt <- time.Now()
			ps.approve(ps.lastCall().ID)
		}
	}()
	var ranAt time.Time
	_, err := Do(bounded(t), c, closeDeal, func(ctx context.Context, cred Credential) (int, error) {
		ranAt = time.Now()
		if cred.Token == "" || cred.Risk != RiskHigh {
			t.Errorf("credential %v", cred)
		}
		return 1, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if d := ranAt.Sub(<-approvedAt); d > time.Second {
		t.Errorf("fn ran %s after the approval, want at once", d)
	}
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if ps.gets != 1 {
		t.Errorf("%d GETs, want 1 long poll", ps.gets)
	}
}

func TestWaitSurvivesDroppedConnections(t *testing.T) {
	ps := newProtocolServer(t)
	ps.needsApproval["deal.close"] = true
	ps.getFaults = []string{"drop", "html502", "unavailable", "drop"}
	c := ps.client(t)
	go func() {
		if ps.waitPolling(t) {
			ps.approve(ps.lastCall().ID)
		}
	}()
	if _, err := Do(bounded(t), c, closeDeal, okFn); err != nil {
		t.Fatal(err)
	}
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if ps.gets != 5 {
		t.Errorf("%d GETs, want 4 failed and 1 long poll", ps.gets)
	}
}

func TestWaitDoesNotSpin(t *testing.T) {
	ps := newProtocolServer(t)
	ps.needsApproval["deal.close"] = true
	ps.ignoreWait = true
	c := ps.client(t)
	c.waitRetry = backoff{base: 20 * time.Millisecond, max: 50 * time.Millisecond}
	call, err := c.Request(t.Context(), closeDeal)
	if err != nil {
		t.Fatal(err)
	}
	time.AfterFunc(300*time.Millisecond, func() { ps.approve(call.ID) })
	if _, err := c.Wait(t.Context(), call.ID); err != nil {
		t.Fatal(err)
	}
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if ps.gets > 20 {
		t.Errorf("%d GETs in 300ms against a server that does not long-poll", ps.gets)
	}
}

func TestDoDenied(t *testing.T) {
	ps := newProtocolServer(t)
	ps.needsApproval["deal.close"] = true
	c := ps.client(t)
	go func() {
		if ps.waitPolling(t) {
			ps.deny(ps.lastCall().ID)
		}
	}()
	ran := false
	_, err := Do(bounded(t), c, closeDeal, func(context.Context, Credential) (int, error) { ran = true; return 0, nil })
	id := ps.lastCall().ID
	var e *Error
	if !errors.As(err, &e) || e.Code != arxerr.CallDenied || e.CallID != id {
		t.Fatalf("Do() error = %#v, want call.denied for %s", err, id)
	}
	if ran {
		t.Error("fn ran for a denied call")
	}
	if cs := ps.completionsOf(id); len(cs) != 0 {
		t.Errorf("denied call completed: %+v", cs)
	}
	ps.noSecret(t, "error", err.Error())
}

func TestDoCancelWhileWaiting(t *testing.T) {
	ps := newProtocolServer(t)
	ps.needsApproval["deal.close"] = true
	c := ps.client(t)
	ctx, cancel := context.WithCancel(bounded(t))
	go func() {
		ps.waitPolling(t)
		cancel()
	}()
	ran := false
	_, err := Do(ctx, c, closeDeal, func(context.Context, Credential) (int, error) { ran = true; return 0, nil })
	if !errors.Is(err, context.Canceled) || ran {
		t.Fatalf("Do() = %v (fn ran: %t), want context.Canceled", err, ran)
	}
	call := ps.lastCall()
	if cs := ps.completionsOf(call.ID); len(cs) != 1 || cs[0].Outcome != "cancelled" {
		t.Fatalf("completions %+v, want the pending call withdrawn as cancelled", cs)
	}
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if call.Status != "failed" {
		t.Errorf("call status %q after withdrawal", call.Status)
	}
}

func TestDoCancelWhileRunning(t *testing.T) {
	ps := newProtocolServer(t)
	c := ps.client(t)
	ctx, cancel := context.WithCancel(t.Context())
	_, err := Do(ctx, c, readAccount, func(ctx context.Context, _ Credential) (int, error) {
		cancel()
		<-ctx.Done()
		return 0, ctx.Err()
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Do() = %v", err)
	}
	if cs := ps.completionsOf(ps.lastCall().ID); len(cs) != 1 || cs[0].Outcome != "cancelled" {
		t.Errorf("completions %+v, want cancelled", cs)
	}
}

func TestDoCredentialExpiry(t *testing.T) {
	ps := newProtocolServer(t)
	ps.ttl = 100 * time.Millisecond
	c := ps.client(t)
	_, err := Do(t.Context(), c, readAccount, func(ctx context.Context, _ Credential) (int, error) {
		<-ctx.Done()
		return 0, ctx.Err()
	})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Do() = %v, want the fn context to end with the credential", err)
	}
	if cs := ps.completionsOf(ps.lastCall().ID); len(cs) != 1 || cs[0].Outcome != "error" {
		t.Errorf("completions %+v, want error", cs)
	}
}

func TestDoFnError(t *testing.T) {
	ps := newProtocolServer(t)
	c := ps.client(t)
	errCRM := errors.New("crm said no")
	_, err := Do(t.Context(), c, readAccount, func(_ context.Context, cred Credential) (int, error) {
		// A careless error that quotes the credential and the agent token, and is long.
		// It holds a NUL and bytes that are not UTF-8, which the server refuses.
		return 0, fmt.Errorf("%w: sent %s and %s;\x00\xff %s", errCRM, cred.Token, testToken, strings.Repeat("é", 2000))
	})
	if !errors.Is(err, errCRM) {
		t.Fatalf("Do() = %v, want fn's error", err)
	}
	cs := ps.completionsOf(ps.lastCall().ID)
	if len(cs) != 1 || cs[0].Outcome != "error" {
		t.Fatalf("completions %+v, want error", cs)
	}
	msg := cs[0].Error
	if !strings.HasPrefix(msg, "crm said no: sent REDACTED and REDACTED;"+`\x00`+"\uFFFD é") || len(msg) > 1024 || !utf8.ValidString(msg) || strings.ContainsRune(msg, 0) {
		t.Errorf("completion error (%d bytes) %.80q..., want fn's message redacted and cut to 1 KiB", len(msg), msg)
	}
	ps.noSecret(t, "completion error", msg)
}

func TestDoPanic(t *testing.T) {
	ps := newProtocolServer(t)
	c := ps.client(t)
	defer func() {
		if r := recover(); r != "boom" {
			t.Fatalf("recovered %v, want the original panic value", r)
		}
		if cs := ps.completionsOf(ps.lastCall().ID); len(cs) != 1 || cs[0].Outcome != "error" || cs[0].Error != "panic: boom" {
			t.Errorf("completions %+v, want error \"panic: boom\"", cs)
		}
	}()
	_, _ = Do(t.Context(), c, readAccount, func(context.Context, Credential) (int, error) { panic("boom") })
	t.Fatal("Do returned after a panic")
}

func TestDoGoexit(t *testing.T) {
	ps := newProtocolServer(t)
	c := ps.client(t)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = Do(t.Context(), c, readAccount, func(context.Context, Credential) (int, error) { runtime.Goexit(); return 0, nil })
	}()
	<-done
	if cs := ps.completionsOf(ps.lastCall().ID); len(cs) != 1 || cs[0].Outcome != "error" {
		t.Errorf("completions %+v, want error", cs)
	}
}

func TestDoRefusal(t *testing.T) {
	ps := newProtocolServer(t)
	ps.undeclared["hubspot"] = true
	c := ps.client(t)
	ran := false
	_, err := Do(t.Context(), c, Action{Connector: "hubspot", Action: "contact.read"}, func(context.Context, Credential) (int, error) {
		ran = true
		return 0, nil
	})
	if ran {
		t.Error("fn ran for a refused call")
	}
	if !IsCode(err, arxerr.ConnectorNotDeclared) || !errors.Is(err, &Error{Code: arxerr.ConnectorNotDeclared}) {
		t.Fatalf("Do() = %v, want manifest.connector_not_declared", err)
	}
	if errors.Is(err, &Error{Code: arxerr.ActionNotDeclared}) {
		t.Error("errors.Is matches another code")
	}
	e, _ := errors.AsType[*Error](err)
	if e.CallID != ps.lastCall().ID || e.Status != http.StatusForbidden || e.Hint == "" {
		t.Errorf("refusal %#v, want call id %s, status 403 and a hint", e, ps.lastCall().ID)
	}
	if want := "arx: manifest.connector_not_declared: connector \"hubspot\" is not on the manifest"; !strings.HasPrefix(e.Error(), want) {
		t.Errorf("Error() = %q, want prefix %q", e.Error(), want)
	}
}

func TestRequestChecksAction(t *testing.T) {
	ps := newProtocolServer(t)
	c := ps.client(t)
	for _, a := range []Action{{Action: "x"}, {Connector: "x"}, {Connector: "x", Action: "y", Risk: "extreme"}} {
		if _, err := c.Request(t.Context(), a); !IsCode(err, arxerr.BadRequest) && !IsCode(err, arxerr.InvalidRisk) {
			t.Errorf("Request(%+v) = %v", a, err)
		}
	}
}

func TestErrorBodies(t *testing.T) {
	const big = 2 << 20
	for _, tc := range []struct {
		name   string
		status int
		ctype  string
		body   string
		code   arxerr.Code
	}{
		{"proxy HTML 502", 502, "text/html", "<html><title>502 Bad Gateway</title></html>", arxerr.Internal},
		{"garbage 400", 400, "application/json", "{{{{", arxerr.Internal},
		{"empty 500", 500, "", "", arxerr.Internal},
		{"error without code", 418, "application/json", `{"error":{"message":"teapot"}}`, arxerr.Internal},
		{"wrong types", 403, "application/json", `{"error":{"code":5,"message":[]}}`, arxerr.Internal},
		{"oversized", 400, "application/json", `{"error":{"code":"request.invalid","message":"` + strings.Repeat("a", big) + `"}}`, arxerr.Internal},
		{"garbage 201", 201, "application/json", "\x00\xff not json", arxerr.Internal},
		{"201 without id", 201, "application/json", `{"status":"approved"}`, arxerr.Internal},
		{"201 bad time", 201, "application/json", `{"id":"c1","status":"approved","created_at":"yesterday"}`, arxerr.Internal},
		{"redirect", 302, "text/html", "moved", arxerr.Internal},
		{"token echoed", 401, "application/json", `{"error":{"code":"auth.invalid_token","message":"bad token ` + testToken + `"}}`, arxerr.InvalidToken},
		{"unknown code kept", 403, "application/json", `{"error":{"code":"future.code","message":"later"}}`, "future.code"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ps := newProtocolServer(t)
			ps.intercept = func(w http.ResponseWriter, r *http.Request) bool {
				if tc.ctype != "" {
					w.Header().Set("Content-Type", tc.ctype)
				}
				if tc.status == 302 {
					w.Header().Set("Location", "https://elsewhere.example/v1/calls")
				}
				w.WriteHeader(tc.status)
				_, _ = w.Write([]byte(tc.body))
				return true
			}
			c := ps.client(t)
			ran := false
			_, err := Do(t.Context(), c, readAccount, func(context.Context, Credential) (int, error) { ran = true; return 0, nil })
			e, ok := errors.AsType[*Error](err)
			if !ok || e.Code != tc.code || e.Status != tc.status {
				t.Fatalf("Do() error = %#v, want *Error %s with status %d", err, tc.code, tc.status)
			}
			if ran {
				t.Error("fn ran")
			}
			if tc.code == arxerr.Internal && !strings.Contains(e.Message, fmt.Sprint(tc.status)) {
				t.Errorf("message %q does not name HTTP %d", e.Message, tc.status)
			}
			ps.noSecret(t, "error", err.Error())
			if strings.Contains(err.Error(), "<html>") || strings.Contains(err.Error(), "aaaa") {
				t.Errorf("error quotes the body: %q", err)
			}
		})
	}
}

func TestNoSecretInTransportErrors(t *testing.T) {
	ps := newProtocolServer(t)
	c := ps.client(t)
	ps.Close()
	_, err := Do(t.Context(), c, readAccount, okFn)
	if err == nil {
		t.Fatal("Do against a closed server succeeded")
	}
	ps.noSecret(t, "error", err.Error())
}

func TestDoJoinsCompletionFailure(t *testing.T) {
	ps := newProtocolServer(t)
	ps.completeFaults = []string{"html502", "html502", "html502", "html502", "html502"}
	c := ps.client(t)
	res, err := Do(t.Context(), c, readAccount, func(context.Context, Credential) (string, error) { return "Acme", nil })
	if res != "Acme" {
		t.Errorf("result %q, want fn's result despite the failed completion", res)
	}
	if !IsCode(err, arxerr.Internal) || !strings.Contains(err.Error(), "completing call") {
		t.Fatalf("Do() error = %v, want the completion failure", err)
	}

	// fn's own error stays visible next to it.
	ps.completeFaults = []string{"unavailable", "unavailable", "unavailable", "unavailable", "unavailable"}
	errCRM := errors.New("crm down")
	_, err = Do(t.Context(), c, readAccount, func(context.Context, Credential) (string, error) { return "", errCRM })
	if !errors.Is(err, errCRM) || !IsCode(err, arxerr.RecordUnavailable) {
		t.Fatalf("Do() error = %v, want fn's error joined with the completion's", err)
	}
}

func TestDoConcurrent(t *testing.T) {
	ps := newProtocolServer(t)
	ps.needsApproval["deal.close"] = true
	ps.autoApprove = 20 * time.Millisecond
	c := ps.client(t)
	const n = 200
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			a := readAccount
			if i%4 == 0 {
				a = closeDeal
			}
			got, err := Do(t.Context(), c, a, func(_ context.Context, cred Credential) (string, error) {
				return cred.CallID, nil
			})
			if err == nil && got == "" {
				err = errors.New("empty result")
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if len(ps.calls) != n || len(ps.posts) != n || len(ps.completions) != n {
		t.Errorf("%d calls, %d keys, %d completions; want %d each", len(ps.calls), len(ps.posts), len(ps.completions), n)
	}
}

// bounded is the test's context, ended after 20s so that a lost approval
// fails the test instead of hanging it.
func bounded(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func okFn(context.Context, Credential) (struct{}, error) { return struct{}{}, nil }
