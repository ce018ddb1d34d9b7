package audit

import (
	"fmt"
	"testing"
	"time"

	"github.com/arxsec/arx/record"
)

func TestTerminationReceipts(t *testing.T) {
	at := time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)
	term := record.AgentTerminated("a", "admin:root", at, record.Termination{Reason: "x", RevokedTokens: 1, RevokedCredentials: 2})
	term.Index = 7
	items := func(creds int) []record.ReceiptItem {
		return []record.ReceiptItem{{What: "tokens_revoked", Count: 1, At: at}, {What: "credentials_revoked", Count: creds, At: at},
			{What: "approvals_cancelled", Count: 0, At: at}}
	}
	parse := func(e *record.Entry) *record.Entry {
		b, err := e.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		p, err := record.Parse(b)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, tc := range []struct {
		name    string
		entries []*record.Entry
		want    int
	}{
		{"matches", []*record.Entry{term, record.TerminationReceipt("a", "admin:root", at, at, items(2), nil)}, 0},
		{"other counts", []*record.Entry{term, record.TerminationReceipt("a", "admin:root", at, at, items(5), nil)}, 1},
		{"another termination", []*record.Entry{term, record.TerminationReceipt("a", "admin:root", at, at.Add(time.Hour), items(2), nil)}, 1},
		{"no termination", []*record.Entry{record.TerminationReceipt("b", "admin:root", at, at, items(2), nil)}, 1},
	} {
		var got []string
		var ts terminations
		for i, e := range tc.entries {
			ts.add(int64(i), parse(e), func(kind string, index int64, format string, args ...any) {
				got = append(got, kind+": "+fmt.Sprintf(format, args...))
			})
		}
		if len(got) != tc.want {
			t.Errorf("%s: %v", tc.name, got)
		}
	}
}
