package audit

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/arxsec/arx/internal/passkeytest"
	"github.com/arxsec/arx/internal/publish"
	"github.com/arxsec/arx/record"
	"github.com/arxsec/arx/record/passkeys"
)

// signedLog is a log in which a passkey-signed approval decides a call
// whose request shows summary.
func signedLog(t *testing.T, summary string) (memBucket, string, [][]byte) {
	t.Helper()
	skey, vkey, _ := record.GenerateKey("arx.test/signed")
	signer, _ := record.NewSigner(skey)
	m := memBucket{}
	w := publish.NewLogWriter(t.Context(), m)
	at := time.Date(2026, 12, 4, 9, 0, 0, 0, time.UTC)
	key := passkeytest.New("arx.example.com")
	ref := record.CallRef{Agent: "a1", Call: "c1", Connector: "crm", Action: "account.delete", Risk: "high"}
	d := record.Decision{Call: "c1", Agent: "a1", Connector: "crm", Action: "account.delete", Risk: "high", Summary: summary,
		By: "boss@example.com", Verdict: record.DecisionApprove, At: at}
	entries := []*record.Entry{
		record.AgentHired("a1", "admin:root", at, record.Hire{Name: "sales", RequirePasskey: true}),
		record.PasskeyRegistered("user:boss@example.com", at, key.Passkey("boss@example.com")),
		record.CallRequested(ref, "agent:a1", at, record.Ask{DeclaredRisk: "high", Summary: summary}),
		record.ApprovalSigned(ref, "user:boss@example.com", at, record.DecisionApprove, "boss@example.com", "", key.Sign(d)),
	}
	heads := map[string]string{}
	var es [][]byte
	for i, e := range entries {
		e.Index, e.Prev = int64(i), heads[e.Agent]
		b, err := e.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		heads[e.Agent] = record.HashString(record.LeafHash(b))
		w.Add(b)
		es = append(es, b)
	}
	size, root, err := w.Finish()
	if err != nil {
		t.Fatal(err)
	}
	cp, _ := record.SignCheckpoint(signer, size, root)
	m[record.CheckpointPath] = cp
	return m, vkey, es
}

// changing serves a bucket whose entry bundle changes after it was read
// once: a bucket that shows the auditor one thing, then another.
type changing struct {
	memBucket
	reads   atomic.Int32
	path    string
	changed []byte
}

func (c *changing) Get(ctx context.Context, p string) ([]byte, error) {
	if p == c.path && c.reads.Add(1) > 1 {
		return c.changed, nil
	}
	return c.memBucket.Get(ctx, p)
}

// TestSignedDecisionFromTheBucket: what a signed decision was signed over
// is read from the bucket when the decision comes (the call.requested
// entry again); a bucket that serves that entry changed the second time
// is caught, not believed.
func TestSignedDecisionFromTheBucket(t *testing.T) {
	m, key, es := signedLog(t, "delete account 0017")
	rep, err := Verify(t.Context(), m, Options{LogKey: key})
	if err != nil || !rep.OK || len(rep.Decisions) != 1 || rep.Decisions[0].Signed != 1 {
		t.Fatalf("signed log: %v %+v", err, rep)
	}
	path := record.BundlePath(0, len(es))
	other, _, _ := signedLog(t, "delete account 0099")
	src := &changing{memBucket: m, path: path, changed: other[path]}
	rep, err = Verify(t.Context(), src, Options{LogKey: key})
	if err != nil {
		t.Fatal(err)
	}
	if rep.OK || len(rep.Problems) != 1 || rep.Problems[0].Kind != passkeys.KindSignatureInvalid ||
		!strings.Contains(rep.Problems[0].Message, "not the entry checked before") {
		t.Fatalf("a bundle changed between reads: %+v", rep.Problems)
	}
}
