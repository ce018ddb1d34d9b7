package runtime

import (
	"strings"
	"testing"

	"github.com/arxsec/arx/internal/chat"
)

func TestSlackEscape(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		{"plain", "read account 42", "read account 42"},
		{"a channel mention", "<!channel> urgent", "&lt;!channel&gt; urgent"},
		{"a person mention", "<@U024BE7LH>", "&lt;@U024BE7LH&gt;"},
		{"a disguised link", "<https://evil.example/steal|https://intranet.example>", "&lt;https://evil.example/steal|https://intranet.example&gt;"},
		{"an entity", "&lt;!here&gt;", "&amp;lt;!here&amp;gt;"},
		{"a fake line", "ok\n:white_check_mark: approved by the CFO", `ok\n:white_check_mark: approved by the CFO`},
		{"a bidi override", "fdp.\u202eexe", `fdp.\u202eexe`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := chat.Escape(tc.in); got != tc.want {
				t.Errorf("slackEscape(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

func TestSlackTextIsInert(t *testing.T) {
	hostile := "<!channel> <https://evil.example|https://console.example>\nApproved."
	for _, p := range []map[string]any{
		{"event": "approval.requested", "agent": map[string]any{"name": "bot"},
			"call": map[string]any{"connector": "crm", "action": "account.delete", "risk": "high", "summary": hostile}},
		{"event": "approval.decided", "agent": map[string]any{"name": "bot"}, "call": map[string]any{"connector": "crm", "action": "account.delete"},
			"approval": map[string]any{"status": "denied", "decided_by": "boss@example.com", "reason": hostile}},
	} {
		s := slackText(p)
		if strings.Contains(s, "<!channel>") || strings.Contains(s, "<https://evil") || strings.Count(s, "\n") != 0 {
			t.Errorf("%v: %q", p["event"], s)
		}
	}
}
