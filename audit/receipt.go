package audit

import (
	"errors"
	"fmt"
	"strings"

	"github.com/arxsec/arx/record"
	"golang.org/x/mod/sumdb/note"
)

// KindReceiptMismatch: a termination.receipt that does not follow its
// agent's agent.terminated, or confirms other counts than it recorded.
const KindReceiptMismatch = "receipt_mismatch"

// ReceiptNoteTitle is the first line of a termination receipt's signed
// note (what `arx terminate --receipt FILE` saves).
const ReceiptNoteTitle = "arx termination receipt"

// VerifyReceipt checks a termination receipt as `arx terminate --receipt`
// saved it: a note signed with the log key (logKey, as log.pub holds it)
// whose body is the termination.receipt entry, byte for byte as the log
// holds it (find it at its index in the bucket to see it is in the log).
func VerifyReceipt(signed []byte, logKey string) (*record.Entry, error) {
	v, err := note.NewVerifier(strings.TrimSpace(logKey))
	if err != nil {
		return nil, fmt.Errorf("audit: the log key: %w", err)
	}
	n, err := note.Open(signed, note.VerifierList(v))
	if err != nil {
		return nil, fmt.Errorf("audit: the receipt is not signed by the log key: %w", err)
	}
	title, body, ok := strings.Cut(n.Text, "\n")
	if !ok || title != ReceiptNoteTitle {
		return nil, errors.New("audit: the signed note is not a termination receipt")
	}
	e, err := record.Parse([]byte(strings.TrimSuffix(body, "\n")))
	if err != nil {
		return nil, fmt.Errorf("audit: the receipt's entry: %w", err)
	}
	if e.Type != record.TypeTerminationReceipt {
		return nil, fmt.Errorf("audit: the receipt's entry is a %s", e.Type)
	}
	return e, nil
}

// terminations checks receipts against the terminations they follow, in
// log order; memory: one termination per agent.
type terminations struct {
	last map[string]*record.Entry // agent → its agent.terminated
	n    int64                    // receipts checked
}

func (t *terminations) add(pos int64, e *record.Entry, report func(kind string, index int64, format string, args ...any)) {
	if t.last == nil {
		t.last = map[string]*record.Entry{}
	}
	switch e.Type {
	case record.TypeAgentTerminated:
		t.last[e.Agent] = e
	case record.TypeTerminationReceipt:
		t.n++
		term := t.last[e.Agent]
		if term == nil {
			report(KindReceiptMismatch, pos, "a termination receipt of agent %s, which no agent.terminated before it ended", e.Agent)
			return
		}
		if !record.Time(e.Data, "terminated_at").Equal(term.Time) {
			report(KindReceiptMismatch, pos, "the receipt is of a termination at %s, the agent's was at %s (entry %d)",
				record.Str(e.Data, "terminated_at"), record.FormatTime(term.Time), term.Index)
		}
		want := map[string]int64{"tokens_revoked": record.Int(term.Data, "revoked_tokens"),
			"credentials_revoked": record.Int(term.Data, "revoked_credentials"), "approvals_cancelled": record.Int(term.Data, "cancelled_approvals")}
		for _, it := range record.ReceiptItemsOf(e, "confirmed") {
			if w, ok := want[it.What]; ok && int64(it.Count) != w {
				report(KindReceiptMismatch, pos, "the receipt confirms %d %s, the termination (entry %d) recorded %d",
					it.Count, strings.ReplaceAll(it.What, "_", " "), term.Index, w)
			}
		}
	}
}
