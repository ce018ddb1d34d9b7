package record

import (
	"testing"
	"time"
)

func TestPeek(t *testing.T) {
	now := time.Date(2026, 12, 3, 9, 0, 0, 0, time.UTC)
	tricky := CallRef{Agent: "a\"1", Call: "c,\"call\":\"x", Connector: "crm", Action: "read", Risk: "low"}
	for _, e := range []*Entry{
		CredentialIssued(CallRef{Agent: "a1", Call: "c1", Connector: "crm", Action: "read", Risk: "low"}, "agent:a1", now,
			Ask{Summary: `,"type":"forged","agent":"x"`}, now, ""),
		TokenIssued("", "system", now, "t", "admin", `,"type":"x"`),
		DriftDetected(tricky, `,"agent":"y"`, now, map[string]any{"type": "nested", "x": map[string]any{"type": "deeper"}}),
	} {
		b, err := e.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		agent, call, typ := Peek(b)
		if agent != e.Agent || call != e.Call || typ != e.Type {
			t.Errorf("Peek(%s) = %q %q %q, want %q %q %q", b, agent, call, typ, e.Agent, e.Call, e.Type)
		}
	}
	if a, c, ty := Peek([]byte("not json")); a != "" || c != "" || ty != "" {
		t.Errorf("Peek of garbage = %q %q %q", a, c, ty)
	}
}

func TestPeekCall(t *testing.T) {
	e := &Entry{Index: 3, Agent: "a1", Type: TypeCallCompleted, Call: "c-42", Data: map[string]any{"summary": `,"call":"not-this"`}}
	b, err := e.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if got := PeekCall(b); string(got) != "c-42" {
		t.Errorf("PeekCall = %q", got)
	}
	for _, bad := range []string{`{}`, `{"index":1,"call":"unterminated`, `{"x":1,"call":"a\"b"}`} {
		if got := PeekCall([]byte(bad)); got != nil {
			t.Errorf("PeekCall(%s) = %q", bad, got)
		}
	}
}
