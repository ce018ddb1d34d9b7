package runtime

import (
	"context"
	"fmt"
	"slices"
	"sync/atomic"
	"time"

	"github.com/arxsec/arx/audit"
	"github.com/arxsec/arx/internal/store"
	"github.com/arxsec/arx/record"
	"golang.org/x/mod/sumdb/note"
)

// A containment receipt: after a termination commits, what it ended is
// listed item by item, each with the time it was confirmed: the tokens,
// credentials and approvals ended in the termination's transaction, the
// gateway requests cut in this process, each database role the outbox
// dropped (waited for up to ReceiptWait), the agent's processes `arx run`
// stopped meanwhile; and what could not be confirmed, with why. It is
// written as a termination.receipt entry, and handed back signed with the
// log key (a signed note), so the one who terminated holds proof at once,
// before any checkpoint.

// ReceiptWait bounds how long a termination waits for its database roles
// to be dropped before it answers.
const ReceiptWait = 3 * time.Second

// Receipt is a termination's receipt.
type Receipt struct {
	Agent       string               `json:"agent"`
	Terminated  time.Time            `json:"terminated_at"`
	Confirmed   []record.ReceiptItem `json:"confirmed"`
	Unconfirmed []record.ReceiptItem `json:"unconfirmed"`
	Index       int64                `json:"index"` // of its termination.receipt entry; -1 when it could not be written
	// Note is the receipt's entry data, canonical JSON, in a note signed
	// with the log key: `arx audit` tools verify it with log.pub.
	Note string `json:"note,omitempty"`
}

func (r *Runtime) receipt(ctx context.Context, p *Principal, res *TerminationResult, cut, watchers int, logSize int64) *Receipt {
	at := *res.Agent.TerminatedAt
	confirmed := []record.ReceiptItem{
		{What: "tokens_revoked", Count: res.RevokedTokens, At: at},
		{What: "credentials_revoked", Count: res.RevokedCredentials, At: at},
		{What: "approvals_cancelled", Count: res.CancelledApprovals, At: at},
		{What: "gateway_requests_cut", Count: cut, At: r.now()},
		// Told, not confirmed ended: each watcher (an arx mcp gateway
		// ends every session of the agent on hearing) was woken by the
		// termination on this replica; other replicas wake theirs.
		{What: "status_watchers_told", Count: watchers, At: at,
			Detail: "status long polls of the agent on this replica (arx mcp gateways end the agent's MCP sessions on hearing)"},
	}
	var unconfirmed []record.ReceiptItem
	// Database roles: the outbox drops them (kicked by afterTerminate) and
	// records connector.role_dropped; wait for those entries, a while.
	waiting := map[string]store.Call{}
	for _, c := range res.drops {
		waiting[c.ID] = c
	}
	var stopped []record.ReceiptItem
	after := logSize - 1
	deadline := time.Now().Add(ReceiptWait)
	for {
		page, err := r.store.AgentEntries(ctx, res.Agent.ID, after, 1000)
		if err != nil {
			break
		}
		for _, se := range page {
			after = se.Index
			if se.Type != TypeRoleDropped && se.Type != record.TypeProcessStopped {
				continue
			}
			e, err := record.Parse(se.Data)
			if err != nil {
				continue
			}
			switch e.Type {
			case TypeRoleDropped:
				if _, ok := waiting[e.Call]; ok {
					delete(waiting, e.Call)
					confirmed = append(confirmed, record.ReceiptItem{What: "database_role_dropped", Connector: e.Connector,
						Detail: record.Str(e.Data, "role"), At: e.Time})
				}
			case record.TypeProcessStopped:
				stopped = append(stopped, record.ReceiptItem{What: "process_stopped", Detail: fmt.Sprintf("pid %d, %s",
					record.Int(e.Data, "pid"), record.Str(e.Data, "signal")), At: e.Time})
			}
		}
		if len(waiting) == 0 || time.Now().After(deadline) || ctx.Err() != nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	confirmed = append(confirmed, stopped...)
	ids := make([]string, 0, len(waiting))
	for id := range waiting {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		c := waiting[id]
		unconfirmed = append(unconfirmed, record.ReceiptItem{What: "database_role_dropped", Connector: c.Connector,
			Detail: "the role of call " + c.ID, Why: fmt.Sprintf("not confirmed within %s: the outbox keeps trying, and records connector.role_dropped", ReceiptWait)})
	}
	if unconfirmed == nil {
		unconfirmed = []record.ReceiptItem{}
	}
	rc := &Receipt{Agent: res.Agent.ID, Terminated: at, Confirmed: confirmed, Unconfirmed: unconfirmed, Index: -1}
	e := record.TerminationReceipt(res.Agent.ID, p.Actor(), r.now(), at, confirmed, unconfirmed)
	if err := r.store.Update(ctx, func(tx store.Tx) error { return tx.Append(e) }); err != nil {
		r.log.Error("termination receipt not recorded", "agent", res.Agent.ID, "err", err)
	} else {
		rc.Index = e.Index
	}
	body, err := e.Marshal()
	if err == nil {
		if signed, err := note.Sign(&note.Note{Text: audit.ReceiptNoteTitle + "\n" + string(body) + "\n"}, r.signer); err == nil {
			rc.Note = string(signed)
		}
	}
	return rc
}

// Watch counts a status long poll of an agent until done is called.
func (r *Runtime) Watch(agentID string) (done func()) {
	v, _ := r.watchers.LoadOrStore(agentID, new(atomic.Int64))
	n := v.(*atomic.Int64)
	n.Add(1)
	return func() { n.Add(-1) }
}

func (r *Runtime) watching(agentID string) int {
	if v, ok := r.watchers.Load(agentID); ok {
		return int(v.(*atomic.Int64).Load())
	}
	return 0
}
