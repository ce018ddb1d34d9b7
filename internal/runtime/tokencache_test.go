package runtime_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"

	"github.com/arxsec/arx/arxerr"
	"github.com/arxsec/arx/internal/arxtest"
	"github.com/arxsec/arx/internal/runtime"
)

// TestRememberedPrincipalCheckedInUpdate holds a principal from memory
// across a revocation or a termination that commits between the
// authentication and the Update, which over HTTP only a race (or another
// replica) gives: the Update itself must refuse it, nothing written. With
// the checks inside the Update removed, these calls would succeed.
func TestRememberedPrincipalCheckedInUpdate(t *testing.T) {
	ctx := context.Background()
	ip, hired, err := arxtest.OpenInProcess(ctx, filepath.Join(t.TempDir(), "data"), "t", 2)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ip.Close() })
	rt := ip.Runtime
	admin, err := rt.Authenticate(ctx, ip.AdminToken)
	if err != nil {
		t.Fatal(err)
	}
	req := func(key string) runtime.CallRequest {
		return runtime.CallRequest{Connector: "salesforce", Action: "account.read", Risk: "low", IdempotencyKey: key}
	}
	code := func(err error) arxerr.Code {
		var e *arxerr.Error
		if errors.As(err, &e) {
			return e.Code
		}
		return ""
	}
	size := func() int64 {
		n, err := rt.Store().TreeSize(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}

	// A token revoked between the authentication and the Update.
	a := hired[0]
	tokenID, token, err := rt.IssueToken(ctx, admin, a.ID, "second")
	if err != nil {
		t.Fatal(err)
	}
	p, err := rt.AuthenticateAgent(ctx, token, "")
	if err != nil {
		t.Fatal(err)
	}
	open, err := rt.RequestCall(ctx, p, req("open"))
	if err != nil {
		t.Fatal(err)
	}
	if p, err = rt.AuthenticateAgent(ctx, token, ""); err != nil { // from memory now
		t.Fatal(err)
	}
	if err := rt.RevokeToken(ctx, admin, a.ID, tokenID); err != nil {
		t.Fatal(err)
	}
	before := size()
	if _, err := rt.RequestCall(ctx, p, req("after")); code(err) != arxerr.InvalidToken {
		t.Errorf("a call with a principal remembered before its token's revocation: %v, want %s", err, arxerr.InvalidToken)
	}
	if _, err := rt.CompleteCall(ctx, p, open.Call.ID, runtime.Outcome{Outcome: "success"}); code(err) != arxerr.InvalidToken {
		t.Errorf("completing with a principal remembered before its token's revocation: %v, want %s", err, arxerr.InvalidToken)
	}
	if n := size(); n != before {
		t.Errorf("the refused requests appended %d entries", n-before)
	}
	if p, err := rt.AuthenticateAgent(ctx, a.Token, ""); err != nil {
		t.Fatal(err)
	} else if _, err := rt.RequestCall(ctx, p, req("other-token")); err != nil {
		t.Errorf("the agent's other token: %v", err)
	}

	// An agent terminated between the authentication and the Update.
	b := hired[1]
	for range 2 { // the second from memory
		if p, err = rt.AuthenticateAgent(ctx, b.Token, ""); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := rt.Terminate(ctx, admin, b.ID, "done"); err != nil {
		t.Fatal(err)
	}
	before = size()
	if _, err := rt.RequestCall(ctx, p, req("terminated")); code(err) != arxerr.AgentTerminated && code(err) != arxerr.InvalidToken {
		t.Errorf("a call with a principal remembered before its agent's termination: %v, want %s", err, arxerr.AgentTerminated)
	}
	if n := size(); n != before {
		t.Errorf("the refused call appended %d entries", n-before)
	}
}
