package passkeys_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/arxsec/arx/internal/passkeytest"
	"github.com/arxsec/arx/record"
	"github.com/arxsec/arx/record/passkeys"
)

var at = time.Date(2026, 12, 4, 9, 30, 0, 123456000, time.UTC)

func decision() record.Decision {
	return record.Decision{Call: "c1", Agent: "a1", Connector: "crm", Action: "account.delete", Risk: "high",
		Summary: "delete account 0017", By: "boss@example.com", Verdict: record.DecisionApprove, Reason: "duplicate", At: at}
}

func TestVerify(t *testing.T) {
	auth := passkeytest.New("arx.example.com")
	key := auth.Passkey("boss@example.com")
	other := passkeytest.New("arx.example.com")
	tests := []struct {
		name  string
		sign  func() *record.Signature
		check func(*record.Decision)
		want  string // "" verifies
	}{
		{"signed as shown", func() *record.Signature { return auth.Sign(decision()) }, nil, ""},
		{"unsigned", func() *record.Signature { return nil }, nil, "not signed"},
		{"another summary shown", func() *record.Signature { return auth.Sign(decision()) }, func(d *record.Decision) { d.Summary = "delete account 0018" }, "another decision"},
		{"another action", func() *record.Signature { return auth.Sign(decision()) }, func(d *record.Decision) { d.Action = "account.read" }, "another decision"},
		{"another risk", func() *record.Signature { return auth.Sign(decision()) }, func(d *record.Decision) { d.Risk = "low" }, "another decision"},
		{"deny recorded as approve", func() *record.Signature {
			d := decision()
			d.Verdict = record.DecisionDeny
			return auth.Sign(d)
		}, nil, "another decision"},
		{"another reason", func() *record.Signature { return auth.Sign(decision()) }, func(d *record.Decision) { d.Reason = "" }, "another decision"},
		{"another time", func() *record.Signature { return auth.Sign(decision()) }, func(d *record.Decision) { d.At = at.Add(time.Second) }, "another time"},
		{"another credential", func() *record.Signature { return other.Sign(decision()) }, nil, "another credential"},
		{"key of another", func() *record.Signature {
			s := other.Sign(decision())
			s.CredentialID = auth.ID
			return s
		}, nil, "not the key's"},
		{"altered signature", func() *record.Signature {
			s := auth.Sign(decision())
			s.Signature[len(s.Signature)-1] ^= 1
			return s
		}, nil, "not the key's"},
		{"another relying party", func() *record.Signature {
			a := *auth
			a.RPID = "evil.example"
			return a.Sign(decision())
		}, nil, "another relying party"},
		{"nobody present", func() *record.Signature {
			a := *auth
			a.Flags = 0
			return a.Sign(decision())
		}, nil, "present"},
		{"registration ceremony", func() *record.Signature {
			s := auth.Sign(decision())
			s.ClientData = []byte(strings.Replace(string(s.ClientData), "webauthn.get", "webauthn.create", 1))
			return s
		}, nil, "ceremony"},
		{"client data not JSON", func() *record.Signature {
			s := auth.Sign(decision())
			s.ClientData = []byte("{")
			return s
		}, nil, "not JSON"},
		{"short authenticator data", func() *record.Signature {
			s := auth.Sign(decision())
			s.AuthenticatorData = s.AuthenticatorData[:20]
			return s
		}, nil, "does not parse"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := tt.sign()
			d := decision()
			if tt.check != nil {
				tt.check(&d)
			}
			err := passkeys.Verify(key, d, s)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				return
			}
			if err == nil || !errors.Is(err, passkeys.ErrSignature) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Verify = %v, want an ErrSignature saying %q", err, tt.want)
			}
		})
	}
}

// log builds entries in order, with indexes.
type log struct {
	entries []*record.Entry
}

func (l *log) add(e *record.Entry) int64 {
	e.Index = int64(len(l.entries))
	l.entries = append(l.entries, e)
	return e.Index
}

func (l *log) check() (*passkeys.Checker, []record.Problem) {
	var problems []record.Problem
	c := &passkeys.Checker{Report: func(p record.Problem) { problems = append(problems, p) }}
	for _, e := range l.entries {
		if passkeys.Wants([]byte(e.Type)) {
			b, err := e.Marshal()
			if err != nil {
				panic(err)
			}
			parsed, err := record.Parse(b) // as the auditor reads it
			if err != nil {
				panic(err)
			}
			c.Add(e.Index, parsed)
		}
	}
	c.Finish()
	return c, problems
}

func TestChecker(t *testing.T) {
	const boss, deputy = "boss@example.com", "deputy@example.com"
	bossKey, deputyKey := passkeytest.New("arx.example.com"), passkeytest.New("arx.example.com")
	ref := func(call string) record.CallRef {
		return record.CallRef{Agent: "a1", Call: call, Connector: "crm", Action: "account.delete", Risk: "high"}
	}
	ask := func(l *log, call, summary string) {
		l.add(record.CallRequested(ref(call), "agent:a1", at, record.Ask{DeclaredRisk: "high", Summary: summary}))
	}
	signed := func(l *log, call, summary string, a *passkeytest.Authenticator, by, verdict, reason string) int64 {
		d := record.Decision{Call: call, Agent: "a1", Connector: "crm", Action: "account.delete", Risk: "high", Summary: summary,
			By: by, Verdict: verdict, Reason: reason, At: at}
		return l.add(record.ApprovalSigned(ref(call), "user:"+by, at, verdict, by, reason, a.Sign(d)))
	}
	hire := func(l *log, require bool) {
		l.add(record.AgentHired("a1", "admin:root", at, record.Hire{Name: "sales", RequirePasskey: require}))
	}
	register := func(l *log, who string, a *passkeytest.Authenticator) int64 {
		return l.add(record.PasskeyRegistered("user:"+who, at, a.Passkey(who)))
	}

	tests := []struct {
		name  string
		build func(l *log) (wantIndex int64)
		want  string // problem kind; "" none
	}{
		{"signed with a registered key", func(l *log) int64 {
			hire(l, true)
			register(l, boss, bossKey)
			ask(l, "c1", "delete 0017")
			signed(l, "c1", "delete 0017", bossKey, boss, record.DecisionApprove, "")
			ask(l, "c2", "delete 0018")
			signed(l, "c2", "delete 0018", bossKey, boss, record.DecisionDeny, "not that one")
			return -1
		}, ""},
		{"unsigned where the manifest requires a passkey", func(l *log) int64 {
			hire(l, true)
			ask(l, "c1", "delete 0017")
			return l.add(record.ApprovalGranted(ref("c1"), "user:"+boss, at, boss, ""))
		}, passkeys.KindUnsigned},
		{"unsigned where the manifest does not require one", func(l *log) int64 {
			hire(l, false)
			ask(l, "c1", "delete 0017")
			l.add(record.ApprovalGranted(ref("c1"), "user:"+boss, at, boss, ""))
			return -1
		}, ""},
		{"unsigned after a job description that requires a passkey was applied", func(l *log) int64 {
			hire(l, false)
			ask(l, "c1", "delete 0017")
			l.add(record.ApprovalGranted(ref("c1"), "user:"+boss, at, boss, "")) // before: fine
			l.add(record.ManifestChanged("a1", "admin:root", at, record.ManifestChange{ManifestHash: "sha256:2", RequirePasskey: true}))
			ask(l, "c2", "delete 0018")
			return l.add(record.ApprovalGranted(ref("c2"), "user:"+boss, at, boss, ""))
		}, passkeys.KindUnsigned},
		{"unsigned after a job description that no longer requires one was applied", func(l *log) int64 {
			hire(l, true)
			l.add(record.ManifestChanged("a1", "admin:root", at, record.ManifestChange{ManifestHash: "sha256:2", FromShadow: true}))
			ask(l, "c1", "delete 0017")
			l.add(record.ApprovalGranted(ref("c1"), "user:"+boss, at, boss, ""))
			return -1
		}, ""},
		{"signed over another summary than shown", func(l *log) int64 {
			hire(l, true)
			register(l, boss, bossKey)
			ask(l, "c1", "delete 0017")
			return signed(l, "c1", "delete 0018", bossKey, boss, record.DecisionApprove, "")
		}, passkeys.KindSignatureInvalid},
		{"signed over other arguments than shown", func(l *log) int64 {
			hire(l, true)
			register(l, boss, bossKey)
			l.add(record.CallRequested(ref("c1"), "agent:a1", at, record.Ask{DeclaredRisk: "high", Summary: "refund", Args: `{"amount":9000}`}))
			d := record.Decision{Call: "c1", Agent: "a1", Connector: "crm", Action: "account.delete", Risk: "high", Summary: "refund",
				Args: `{"amount":90}`, By: boss, Verdict: record.DecisionApprove, At: at}
			return l.add(record.ApprovalSigned(ref("c1"), "user:"+boss, at, record.DecisionApprove, boss, "", bossKey.Sign(d)))
		}, passkeys.KindSignatureInvalid},
		{"signed over the arguments shown", func(l *log) int64 {
			hire(l, true)
			register(l, boss, bossKey)
			l.add(record.CallRequested(ref("c1"), "agent:a1", at, record.Ask{DeclaredRisk: "high", Summary: "refund", Args: `{"amount":9000}`}))
			d := record.Decision{Call: "c1", Agent: "a1", Connector: "crm", Action: "account.delete", Risk: "high", Summary: "refund",
				Args: `{"amount":9000}`, By: boss, Verdict: record.DecisionApprove, At: at}
			l.add(record.ApprovalSigned(ref("c1"), "user:"+boss, at, record.DecisionApprove, boss, "", bossKey.Sign(d)))
			return -1
		}, ""},
		{"two signed grants of a quorum of two", func(l *log) int64 {
			hire(l, true)
			register(l, boss, bossKey)
			register(l, deputy, deputyKey)
			ask(l, "c1", "delete 0017")
			for i, who := range []struct {
				a     *passkeytest.Authenticator
				email string
			}{{bossKey, boss}, {deputyKey, deputy}} {
				d := record.Decision{Call: "c1", Agent: "a1", Connector: "crm", Action: "account.delete", Risk: "high", Summary: "delete 0017",
					By: who.email, Verdict: record.DecisionApprove, At: at}
				e := record.ApprovalSigned(ref("c1"), "user:"+who.email, at, record.DecisionApprove, who.email, "", who.a.Sign(d))
				e.Data["grants"], e.Data["quorum"] = i+1, 2
				l.add(e)
			}
			return -1
		}, ""},
		{"a deny signed, recorded as a grant", func(l *log) int64 {
			hire(l, true)
			register(l, boss, bossKey)
			ask(l, "c1", "delete 0017")
			d := record.Decision{Call: "c1", Agent: "a1", Connector: "crm", Action: "account.delete", Risk: "high", Summary: "delete 0017",
				By: boss, Verdict: record.DecisionDeny, Reason: "no", At: at}
			return l.add(record.ApprovalSigned(ref("c1"), "user:"+boss, at, record.DecisionApprove, boss, "no", bossKey.Sign(d)))
		}, passkeys.KindSignatureInvalid},
		{"key never registered", func(l *log) int64 {
			hire(l, true)
			ask(l, "c1", "delete 0017")
			return signed(l, "c1", "delete 0017", bossKey, boss, record.DecisionApprove, "")
		}, passkeys.KindKeyUnknown},
		{"key of another person", func(l *log) int64 {
			hire(l, true)
			register(l, deputy, deputyKey)
			ask(l, "c1", "delete 0017")
			return signed(l, "c1", "delete 0017", deputyKey, boss, record.DecisionApprove, "")
		}, passkeys.KindKeyUnknown},
		{"key removed before use", func(l *log) int64 {
			hire(l, true)
			register(l, boss, bossKey)
			l.add(record.PasskeyRemoved("user:"+boss, at, boss, bossKey.ID, "lost"))
			ask(l, "c1", "delete 0017")
			return signed(l, "c1", "delete 0017", bossKey, boss, record.DecisionApprove, "")
		}, passkeys.KindKeyUnknown},
		{"key registered after use", func(l *log) int64 {
			hire(l, true)
			ask(l, "c1", "delete 0017")
			i := signed(l, "c1", "delete 0017", bossKey, boss, record.DecisionApprove, "")
			register(l, boss, bossKey)
			return i
		}, passkeys.KindKeyRegisteredAfterUse},
		{"decision about a call never shown", func(l *log) int64 {
			hire(l, true)
			register(l, boss, bossKey)
			return signed(l, "c9", "delete 0017", bossKey, boss, record.DecisionApprove, "")
		}, passkeys.KindSignatureInvalid},
		{"signature that does not decode", func(l *log) int64 {
			hire(l, true)
			ask(l, "c1", "delete 0017")
			e := record.ApprovalGranted(ref("c1"), "user:"+boss, at, boss, "")
			e.Data["passkey"] = map[string]any{"credential_id": "!!"}
			return l.add(e)
		}, passkeys.KindSignatureInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var l log
			idx := tt.build(&l)
			_, problems := l.check()
			if tt.want == "" {
				if len(problems) != 0 {
					t.Fatalf("problems: %v", problems)
				}
				return
			}
			if len(problems) != 1 || problems[0].Kind != tt.want || problems[0].Index != idx || problems[0].Agent != "a1" {
				t.Fatalf("problems = %+v, want one %s at %d about a1", problems, tt.want, idx)
			}
		})
	}
}

func TestCheckerCounts(t *testing.T) {
	var l log
	a := passkeytest.New("arx.example.com")
	l.add(record.AgentHired("a1", "admin:root", at, record.Hire{Name: "sales", RequirePasskey: true}))
	l.add(record.PasskeyRegistered("user:boss@example.com", at, a.Passkey("boss@example.com")))
	ref := record.CallRef{Agent: "a1", Call: "c1", Connector: "crm", Action: "x", Risk: "high"}
	l.add(record.CallRequested(ref, "agent:a1", at, record.Ask{Summary: "s"}))
	d := record.Decision{Call: "c1", Agent: "a1", Connector: "crm", Action: "x", Risk: "high", Summary: "s", By: "boss@example.com", Verdict: record.DecisionApprove, At: at}
	l.add(record.ApprovalSigned(ref, "user:boss@example.com", at, record.DecisionApprove, "boss@example.com", "", a.Sign(d)))
	ref.Call = "c2"
	l.add(record.CallRequested(ref, "agent:a1", at, record.Ask{Summary: "s"}))
	l.add(record.ApprovalDenied(ref, "user:boss@example.com", at, "boss@example.com", "no"))
	c, problems := l.check()
	if len(problems) != 1 {
		t.Fatalf("problems: %v", problems)
	}
	got := c.Agents()
	if len(got) != 1 || got[0] != (passkeys.Agent{ID: "a1", Name: "sales", RequirePasskey: true, Signed: 1, Unsigned: 1}) {
		t.Fatalf("Agents = %+v", got)
	}
}
