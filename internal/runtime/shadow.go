package runtime

import (
	"cmp"
	"context"
	"errors"
	"slices"
	"time"

	"github.com/arxsec/arx/arxerr"
	"github.com/arxsec/arx/internal/store"
	"github.com/arxsec/arx/manifest"
	"github.com/arxsec/arx/record"
)

// Changing a hired agent's job description, and trying one in shadow.
//
// A job description is kept by its hash (store.PutManifest); entries say
// which one an agent is held to (agent.hired, then manifest.changed) and
// which one shadows it (manifest.shadowed, manifest.shadow_cleared), and
// the state folds them into the agent's ManifestHash and ShadowHash. Every
// call of an agent with a shadow is decided twice in its Update, with the
// same counts: by the enforced job description, which decides, and by the
// shadow, whose decision is compared with it as policy replay compares
// (replayChanges); where they differ, a shadow.differs entry is appended
// with the call's entries. Promoting the shadow is a manifest.changed
// entry: from that entry on, every call is decided by it.

// ApplyManifest holds an agent to a new job description from now on or,
// with shadow, evaluates it beside the agent's own on every call without
// enforcing it (replacing an earlier shadow). Only operators may.
func (r *Runtime) ApplyManifest(ctx context.Context, p *Principal, agentID string, yaml []byte, shadow bool) (*store.Agent, error) {
	if !p.IsAdmin() {
		return nil, arxerr.New(arxerr.Forbidden, "only an operator can change an agent's job description")
	}
	m, err := parseManifest(yaml)
	if err != nil {
		return nil, err
	}
	hash := manifest.Hash(yaml)
	r.manifests.Store(hash, m)
	now := r.now()
	var out *store.Agent
	err = r.store.Update(ctx, func(tx store.Tx) error {
		a, err := r.changeableAgent(tx, agentID)
		if err != nil {
			return err
		}
		if m.Agent.Name != a.Name {
			e := arxerr.New(arxerr.ManifestInvalid, "the job description is for agent %q; this agent is %q", m.Agent.Name, a.Name)
			e.Hint = "a job description keeps its agent's name; hire a new agent for another name"
			return e
		}
		switch {
		case hash == a.ManifestHash:
			return arxerr.New(arxerr.Conflict, "agent %s is held to this job description already", a.Name)
		case shadow && hash == a.ShadowHash:
			return arxerr.New(arxerr.Conflict, "this job description is agent %s's shadow already", a.Name)
		}
		if err := tx.PutManifest(hash, yaml); err != nil {
			return err
		}
		var e *record.Entry
		if shadow {
			e = record.ManifestShadowed(a.ID, p.Actor(), now, hash, a.ManifestHash)
		} else {
			e = record.ManifestChanged(a.ID, p.Actor(), now, manifestChange(m, hash, a.ManifestHash, false))
		}
		if err := tx.Append(e); err != nil {
			return err
		}
		out, err = tx.Agent(a.ID)
		return err
	})
	if err != nil {
		return nil, r.writeFailed("apply job description", err)
	}
	r.log.Info("job description applied", "agent", out.ID, "name", out.Name, "manifest", hash, "shadow", shadow, "actor", p.Actor())
	return out, nil
}

// PromoteShadow holds an agent to its shadow job description from now on;
// expect, when not "", is the hash of the shadow the caller reviewed, and
// another one is refused (someone applied another meanwhile).
func (r *Runtime) PromoteShadow(ctx context.Context, p *Principal, agentID, expect string) (*store.Agent, error) {
	return r.endShadow(ctx, p, agentID, true, "", expect)
}

// DiscardShadow drops an agent's shadow job description.
func (r *Runtime) DiscardShadow(ctx context.Context, p *Principal, agentID, reason string) (*store.Agent, error) {
	if problem := record.TextProblem(reason, 1024); problem != "" {
		return nil, arxerr.New(arxerr.BadRequest, "reason %s", problem)
	}
	return r.endShadow(ctx, p, agentID, false, reason, "")
}

func (r *Runtime) endShadow(ctx context.Context, p *Principal, agentID string, promote bool, reason, expect string) (*store.Agent, error) {
	if !p.IsAdmin() {
		return nil, arxerr.New(arxerr.Forbidden, "only an operator can change an agent's job description")
	}
	now := r.now()
	var out *store.Agent
	var hash string
	err := r.store.Update(ctx, func(tx store.Tx) error {
		a, err := r.changeableAgent(tx, agentID)
		if err != nil {
			return err
		}
		if a.ShadowHash == "" {
			e := arxerr.New(arxerr.ShadowNotFound, "agent %s has no shadow job description", a.Name)
			e.Hint = "apply one first: arx manifest apply --shadow FILE --agent " + a.Name
			return e
		}
		hash = a.ShadowHash
		if expect != "" && expect != hash {
			e := arxerr.New(arxerr.Conflict, "agent %s's shadow job description is now %s, not %s", a.Name, hash, truncate(expect, 80))
			e.Hint = "someone applied another one meanwhile: review it, then enforce it"
			return e
		}
		e := record.ManifestShadowCleared(a.ID, p.Actor(), now, hash, reason)
		if promote {
			m, err := r.manifestByHash(hash, nil)
			if err != nil {
				return err
			}
			e = record.ManifestChanged(a.ID, p.Actor(), now, manifestChange(m, hash, a.ManifestHash, true))
		}
		if err := tx.Append(e); err != nil {
			return err
		}
		out, err = tx.Agent(a.ID)
		return err
	})
	if err != nil {
		return nil, r.writeFailed("end shadow", err)
	}
	r.log.Info("shadow job description ended", "agent", out.ID, "name", out.Name, "manifest", hash, "promoted", promote, "actor", p.Actor())
	return out, nil
}

// changeableAgent reads an agent whose job description may change: one
// that exists and is not terminated.
func (r *Runtime) changeableAgent(tx store.Tx, id string) (*store.Agent, error) {
	a, err := tx.Agent(id)
	if errors.Is(err, store.ErrNotFound) {
		return nil, arxerr.New(arxerr.AgentNotFound, "no agent %s", truncate(id, 64))
	}
	if err != nil {
		return nil, err
	}
	if a.Status == store.AgentTerminated {
		return nil, arxerr.New(arxerr.AgentTerminated, "agent %s is terminated", a.Name)
	}
	return a, nil
}

func manifestChange(m *manifest.Manifest, hash, previous string, fromShadow bool) record.ManifestChange {
	connectors := make([]string, 0, len(m.Scope.Connectors))
	for _, c := range m.Scope.Connectors {
		connectors = append(connectors, c.Name)
	}
	return record.ManifestChange{ManifestHash: hash, PreviousHash: previous, Connectors: connectors,
		RequirePasskey: m.Approval.RequirePasskey, FromShadow: fromShadow}
}

// ManifestText is the text of the job description an agent is held to
// now, and of its shadow ("" without one).
func (r *Runtime) ManifestText(a *store.Agent) (enforced, shadow []byte, err error) {
	if enforced, err = r.manifestText(a.ManifestHash, a.Manifest); err != nil {
		return nil, nil, r.ReadFailed("job description", err)
	}
	if a.ShadowHash != "" {
		if shadow, err = r.manifestText(a.ShadowHash, nil); err != nil {
			return nil, nil, r.ReadFailed("shadow job description", err)
		}
	}
	return enforced, shadow, nil
}

// shadowRule compares a call's decision under the enforced job
// description with the shadow's: nil when they agree, else the
// shadow.differs entry (a pure decision; replayChanges names the changes).
func shadowRule(ref record.CallRef, now time.Time, hash string, enforced, shadow callDecision) *record.Entry {
	changes := replayChanges(enforced.Status, shadow.Status, driftRules(enforced.Drift), driftRules(shadow.Drift))
	if len(changes) == 0 {
		return nil
	}
	return record.ShadowDiffers(ref, now, hash, decisionName(enforced), decisionName(shadow), changes, driftRules(shadow.Drift))
}

func driftRules(ds []manifest.Drift) []string {
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = d.Rule
	}
	return out
}

func decisionName(d callDecision) string {
	if d.Refusal != nil {
		return outcomeName(d.Status, string(d.Refusal.Code))
	}
	return outcomeName(d.Status, "")
}

// ShadowReport is what an agent's shadow job description would have
// changed since it was applied.
type ShadowReport struct {
	Agent        string    `json:"agent"`
	ManifestHash string    `json:"manifest_hash"`
	Since        time.Time `json:"since"`
	Calls        int64     `json:"calls"`  // calls decided since
	Differ       int64     `json:"differ"` // of them, decided otherwise by the shadow
	// ByChange counts the differing calls by change (a call may count
	// under several): refused, held, no_longer_refused, ...
	ByChange map[string]int64 `json:"by_change"`
	// ByAction counts calls and changes per connector and action.
	ByAction []ReplayAction `json:"by_action"`
	// Examples are the latest differing calls, newest first.
	Examples []ShadowExample `json:"examples"`
	// Truncated: the record since is longer than ShadowScanMax entries;
	// the figures cover the first ShadowScanMax.
	Truncated bool `json:"truncated,omitempty"`
}

// ShadowExample is one call the shadow would have decided otherwise.
type ShadowExample struct {
	Index     int64     `json:"index"`
	Call      string    `json:"call"`
	Time      time.Time `json:"time"`
	Connector string    `json:"connector"`
	Action    string    `json:"action"`
	Enforced  string    `json:"enforced"`
	Shadow    string    `json:"shadow"`
	Changes   []string  `json:"changes"`
	Drift     []string  `json:"drift,omitempty"`
}

// Summary is the report in one line per change, for people.
func (rep *ShadowReport) Summary() []string {
	return (&ReplayReport{ByChange: rep.ByChange, ByAction: rep.ByAction}).Summary()
}

// Bounds of a shadow report.
const (
	ShadowScanMax  = 200_000
	ShadowExamples = 20
)

// Shadow reports on an agent's shadow job description, from the entries
// of its record since it was applied (at most ShadowScanMax).
func (r *Runtime) Shadow(ctx context.Context, p *Principal, agentID string) (*ShadowReport, error) {
	if !p.IsAdmin() && !p.IsPerson() {
		return nil, arxerr.New(arxerr.Forbidden, "shadow reports are for people and operators")
	}
	a, err := r.store.Agent(ctx, agentID)
	if errors.Is(err, store.ErrNotFound) {
		return nil, arxerr.New(arxerr.AgentNotFound, "no agent %s", truncate(agentID, 64))
	}
	if err != nil {
		return nil, r.ReadFailed("shadow", err)
	}
	if a.ShadowHash == "" {
		e := arxerr.New(arxerr.ShadowNotFound, "agent %s has no shadow job description", a.Name)
		e.Hint = "apply one: arx manifest apply --shadow FILE --agent " + a.Name
		return nil, e
	}
	rep := &ShadowReport{Agent: a.ID, ManifestHash: a.ShadowHash, ByChange: map[string]int64{}}
	var latest []ShadowExample
	actions := map[[2]string]*ReplayAction{}
	action := func(e *record.Entry) *ReplayAction {
		k := [2]string{e.Connector, e.Action}
		if actions[k] == nil {
			actions[k] = &ReplayAction{Connector: e.Connector, Action: e.Action, Changes: map[string]int64{}}
		}
		return actions[k]
	}
	after, read := a.ShadowSince-1, 0
	for read < ShadowScanMax {
		page, err := r.store.AgentEntries(ctx, a.ID, after, min(1000, ShadowScanMax-read))
		if err != nil {
			return nil, r.ReadFailed("shadow", err)
		}
		for _, se := range page {
			after, read = se.Index, read+1
			e, err := record.Parse(se.Data)
			if err != nil {
				return nil, r.internal("shadow: entry", err)
			}
			switch {
			case e.Index == a.ShadowSince:
				rep.Since = e.Time
			case e.Type == record.TypeCredentialRefused || e.Type == record.TypeCallRequested ||
				e.Type == record.TypeCredentialIssued && record.Str(e.Data, "approved_by") == "":
				rep.Calls++
				action(e).Calls++
			case e.Type == record.TypeShadowDiffers && record.Str(e.Data, "manifest_hash") == a.ShadowHash:
				rep.Differ++
				changes := record.Strs(e.Data, "changes")
				for _, c := range changes {
					rep.ByChange[c]++
					action(e).Changes[c]++
				}
				latest = append(latest, ShadowExample{Index: e.Index, Call: e.Call, Time: e.Time, Connector: e.Connector, Action: e.Action,
					Enforced: record.Str(e.Data, "enforced"), Shadow: record.Str(e.Data, "shadow"), Changes: changes, Drift: record.Strs(e.Data, "drift")})
				if len(latest) > ShadowExamples {
					latest = latest[1:]
				}
			}
		}
		if len(page) < 1000 {
			break
		}
	}
	rep.Truncated = read >= ShadowScanMax
	rep.ByAction = make([]ReplayAction, 0, len(actions))
	for _, a := range actions {
		rep.ByAction = append(rep.ByAction, *a)
	}
	slices.SortFunc(rep.ByAction, func(x, y ReplayAction) int {
		if x.Calls != y.Calls {
			return cmp.Compare(y.Calls, x.Calls)
		}
		return cmp.Compare(x.Connector+"\x00"+x.Action, y.Connector+"\x00"+y.Action)
	})
	for i := len(latest) - 1; i >= 0; i-- {
		rep.Examples = append(rep.Examples, latest[i])
	}
	return rep, nil
}
