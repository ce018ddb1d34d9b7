package runtime

import (
	"context"
	"errors"
	"sort"
	"strings"
	"time"

	"github.com/arxsec/arx/arxerr"
	"github.com/arxsec/arx/internal/store"
	"github.com/arxsec/arx/record"
)

// Review is an agent's performance review over a window: how it actually
// worked against its job description. Drift appears here as performance
// events, with their acknowledgements.
type Review struct {
	Agent     *store.Agent   `json:"-"`
	From      time.Time      `json:"from"`
	To        time.Time      `json:"to"`
	Calls     int            `json:"calls"`
	Outcomes  map[string]int `json:"outcomes"` // success, error, cancelled, refused, expired, revoked
	ByAction  []ActionStats  `json:"by_action"`
	PerDay    []DayStats     `json:"per_day"`
	Approvals map[string]int `json:"approvals"` // requested, granted, denied, expired, withdrawn, cancelled
	Drift     []DriftEvent   `json:"drift"`
	DriftBy   map[string]int `json:"drift_by_rule"`
	acks      map[int64]DriftAck
}

// ActionStats counts calls of one connector and action.
type ActionStats struct {
	Connector string `json:"connector"`
	Action    string `json:"action"`
	Calls     int    `json:"calls"`
	Failed    int    `json:"failed"`
	Refused   int    `json:"refused"`
}

// DayStats counts calls on one day (UTC).
type DayStats struct {
	Day   string `json:"day"`
	Calls int    `json:"calls"`
	Drift int    `json:"drift"`
}

// DriftEvent is one drift.detected entry.
type DriftEvent struct {
	Index     int64          `json:"index"`
	Time      time.Time      `json:"time"`
	Rule      string         `json:"rule"`
	Policy    string         `json:"policy"`
	Facts     map[string]any `json:"facts"`
	Call      string         `json:"call,omitempty"`
	Connector string         `json:"connector,omitempty"`
	Action    string         `json:"action,omitempty"`
	Ack       *DriftAck      `json:"acknowledged,omitempty"`
}

// DriftAck is a manager's note on a drift event.
type DriftAck struct {
	By   string    `json:"by"`
	Note string    `json:"note"`
	Time time.Time `json:"time"`
}

// MaxReviewDays bounds a review window.
const MaxReviewDays = 90

// Review builds the performance review of an agent over the last days,
// from its personnel record.
func (r *Runtime) Review(ctx context.Context, p *Principal, agentID string, days int) (*Review, error) {
	if !p.IsAdmin() && !p.IsPerson() {
		return nil, arxerr.New(arxerr.Forbidden, "reviews are for people and operators")
	}
	if days < 1 || days > MaxReviewDays {
		return nil, arxerr.New(arxerr.BadRequest, "days must be from 1 to %d", MaxReviewDays)
	}
	a, err := r.store.Agent(ctx, agentID)
	if errors.Is(err, store.ErrNotFound) {
		return nil, arxerr.New(arxerr.AgentNotFound, "no agent %s", truncate(agentID, 64))
	}
	if err != nil {
		return nil, r.ReadFailed("review", err)
	}
	now := r.now().UTC()
	from := now.Add(-time.Duration(days) * 24 * time.Hour)
	rv := &Review{Agent: a, From: from, To: now, Outcomes: map[string]int{}, Approvals: map[string]int{},
		DriftBy: map[string]int{}, acks: map[int64]DriftAck{}}
	actions := map[[2]string]*ActionStats{}
	perDay := map[string]*DayStats{}
	for d := 0; d <= days; d++ {
		day := from.Add(time.Duration(d) * 24 * time.Hour).Format(time.DateOnly)
		perDay[day] = &DayStats{Day: day}
	}
	act := func(e *record.Entry) *ActionStats {
		k := [2]string{e.Connector, e.Action}
		s := actions[k]
		if s == nil {
			s = &ActionStats{Connector: e.Connector, Action: e.Action}
			actions[k] = s
		}
		return s
	}
	after := int64(-1)
	for {
		page, err := r.store.AgentEntries(ctx, a.ID, after, 1000)
		if err != nil {
			return nil, r.ReadFailed("review", err)
		}
		for _, se := range page {
			after = se.Index
			e, err := record.Parse(se.Data)
			if err != nil {
				return nil, r.internal("review: entry", err)
			}
			if e.Type == "drift.acknowledged" {
				if idx, ok := asInt(e.Data["index"]); ok {
					rv.acks[idx] = DriftAck{By: strings.TrimPrefix(e.Actor, "user:"), Note: str(e.Data["note"]), Time: e.Time}
				}
				continue
			}
			if e.Time.Before(from) {
				continue
			}
			day := perDay[e.Time.UTC().Format(time.DateOnly)]
			switch e.Type {
			case record.TypeCredentialIssued:
				if e.Data["approved_by"] == nil { // an approved call was counted when requested
					rv.Calls++
					act(e).Calls++
					if day != nil {
						day.Calls++
					}
				}
			case record.TypeCallRequested:
				rv.Calls++
				act(e).Calls++
				if day != nil {
					day.Calls++
				}
			case record.TypeCredentialRefused:
				rv.Calls++
				rv.Outcomes["refused"]++
				s := act(e)
				s.Calls++
				s.Refused++
				if day != nil {
					day.Calls++
				}
			case record.TypeCallCompleted:
				o := str(e.Data["outcome"])
				rv.Outcomes[o]++
				if o != "success" {
					act(e).Failed++
				}
			case record.TypeCallExpired:
				rv.Outcomes["expired"]++
			case "credential.revoked":
				if calls, ok := e.Data["calls"].([]any); ok {
					rv.Outcomes["revoked"] += len(calls)
				} else {
					rv.Outcomes["revoked"]++
				}
			case record.TypeApprovalRequested:
				rv.Approvals["requested"]++
			case record.TypeApprovalGranted:
				rv.Approvals["granted"]++
			case record.TypeApprovalDenied:
				rv.Approvals["denied"]++
			case record.TypeApprovalExpired:
				rv.Approvals["expired"]++
			case record.TypeApprovalWithdrawn:
				rv.Approvals["withdrawn"]++
			case "approval.cancelled":
				rv.Approvals["cancelled"]++
			case record.TypeDriftDetected:
				facts, _ := e.Data["facts"].(map[string]any)
				ev := DriftEvent{Index: e.Index, Time: e.Time, Rule: str(e.Data["rule"]), Policy: str(e.Data["policy"]),
					Facts: facts, Call: e.Call, Connector: e.Connector, Action: e.Action}
				rv.Drift = append(rv.Drift, ev)
				rv.DriftBy[ev.Rule]++
				if day != nil {
					day.Drift++
				}
			}
		}
		if len(page) < 1000 {
			break
		}
	}
	for i := range rv.Drift {
		if ack, ok := rv.acks[rv.Drift[i].Index]; ok {
			rv.Drift[i].Ack = &ack
		}
	}
	for _, s := range actions {
		rv.ByAction = append(rv.ByAction, *s)
	}
	sort.Slice(rv.ByAction, func(i, j int) bool {
		if rv.ByAction[i].Calls != rv.ByAction[j].Calls {
			return rv.ByAction[i].Calls > rv.ByAction[j].Calls
		}
		return rv.ByAction[i].Connector+rv.ByAction[i].Action < rv.ByAction[j].Connector+rv.ByAction[j].Action
	})
	for _, d := range perDay {
		rv.PerDay = append(rv.PerDay, *d)
	}
	sort.Slice(rv.PerDay, func(i, j int) bool { return rv.PerDay[i].Day < rv.PerDay[j].Day })
	// Newest drift first: that is what a manager looks at.
	sort.Slice(rv.Drift, func(i, j int) bool { return rv.Drift[i].Index > rv.Drift[j].Index })
	return rv, nil
}

func str(v any) string {
	s, _ := v.(string)
	return s
}

func asInt(v any) (int64, bool) {
	switch n := v.(type) {
	case int64:
		return n, true
	case int:
		return int64(n), true
	case float64:
		return int64(n), true
	case interface{ Int64() (int64, error) }:
		i, err := n.Int64()
		return i, err == nil
	}
	return 0, false
}

// AcknowledgeDrift records a note on a drift event of the agent.
func (r *Runtime) AcknowledgeDrift(ctx context.Context, p *Principal, agentID string, index int64, note string) error {
	note = strings.TrimSpace(note)
	if problem := record.TextProblem(note, 1024); note == "" || problem != "" {
		return arxerr.New(arxerr.BadRequest, "a note of 1 to 1024 bytes of valid UTF-8, without NUL characters, is required")
	}
	// Entries never change, so the one acknowledged is checked outside the transaction.
	es, err := r.store.Entries(ctx, index, 1)
	if err != nil {
		return r.internal("acknowledge drift", err)
	}
	if len(es) != 1 || es[0].Index != index || es[0].Agent != agentID || es[0].Type != record.TypeDriftDetected {
		return arxerr.New(arxerr.NotFound, "entry %d is not a drift event of agent %s", index, truncate(agentID, 64))
	}
	err = r.store.Update(ctx, func(tx store.Tx) error {
		a, err := tx.Agent(agentID)
		if errors.Is(err, store.ErrNotFound) {
			return arxerr.New(arxerr.AgentNotFound, "no agent %s", truncate(agentID, 64))
		}
		if err != nil {
			return err
		}
		if !r.CanTerminate(p, a) {
			return arxerr.New(arxerr.Forbidden, "only an operator, the agent's owner or its approvers can acknowledge its drift")
		}
		return tx.Append(record.DriftAcknowledged(a.ID, p.Actor(), r.now(), index, note))
	})
	if err != nil {
		return r.writeFailed("acknowledge drift", err)
	}
	return nil
}

// MaxBulkAcks bounds the drift events one bulk acknowledgement covers.
const MaxBulkAcks = 1000

// AcknowledgeAllDrift acknowledges, with one note, every drift event of
// the agent in its review window of days that is not acknowledged yet (at
// most MaxBulkAcks, oldest first), in one transaction: one entry per event,
// as if acknowledged one by one. It returns how many it acknowledged.
func (r *Runtime) AcknowledgeAllDrift(ctx context.Context, p *Principal, agentID string, days int, note string) (int, error) {
	note = strings.TrimSpace(note)
	if problem := record.TextProblem(note, 1024); note == "" || problem != "" {
		return 0, arxerr.New(arxerr.BadRequest, "a note of 1 to 1024 bytes of valid UTF-8, without NUL characters, is required")
	}
	rev, err := r.Review(ctx, p, agentID, days)
	if err != nil {
		return 0, err
	}
	var open []int64
	for i := len(rev.Drift) - 1; i >= 0 && len(open) < MaxBulkAcks; i-- { // the review lists newest first
		if rev.Drift[i].Ack == nil {
			open = append(open, rev.Drift[i].Index)
		}
	}
	if len(open) == 0 {
		return 0, nil
	}
	err = r.store.Update(ctx, func(tx store.Tx) error {
		a, err := tx.Agent(agentID)
		if err != nil {
			return err
		}
		if !r.CanTerminate(p, a) {
			return arxerr.New(arxerr.Forbidden, "only an operator, the agent's owner or its approvers can acknowledge its drift")
		}
		now := r.now()
		for _, index := range open {
			if err := tx.Append(record.DriftAcknowledged(a.ID, p.Actor(), now, index, note)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return 0, r.writeFailed("acknowledge drift", err)
	}
	return len(open), nil
}
