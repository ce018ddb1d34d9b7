package console

import (
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/arxsec/arx/arxerr"
	"github.com/arxsec/arx/internal/runtime"
	"github.com/arxsec/arx/internal/store"
)

// The replay page: a changed job description tried against what the agent
// actually did (runtime.ReplayAgent, the rule `arx manifest replay` runs),
// before an operator applies it.

type replayData struct {
	Agent    *store.Agent
	YAML     string
	Days     string // "7", "30", "90" or "all"
	Ranges   []string
	Report   *runtime.ReplayReport
	Lines    []string // the report's summary, a line per change
	Partial  bool     // the record was too long to read in time
	Problem  string   // why the job description was not replayed
	Replayed bool
	// CanApply: the viewer may apply the job description (an admin, the
	// agent not terminated), once it replayed.
	CanApply bool
}

func (c *Console) replayPage(w http.ResponseWriter, r *http.Request) error {
	a, err := c.agentByPath(r)
	if err != nil {
		return err
	}
	enforced, _, err := c.rt.ManifestText(a)
	if err != nil {
		return err
	}
	d := replayData{Agent: a, YAML: string(enforced), Days: "30", Ranges: []string{"7", "30", "90", "all"}}
	return c.render(w, r, http.StatusOK, "replay", "Try a job description on "+a.Name, d)
}

func (c *Console) replay(w http.ResponseWriter, r *http.Request) error {
	v := viewerOf(r)
	a, err := c.agentByPath(r)
	if err != nil {
		return err
	}
	d := replayData{Agent: a, YAML: r.PostForm.Get("manifest"), Days: r.PostForm.Get("days"), Ranges: []string{"7", "30", "90", "all"}}
	var since time.Time
	switch d.Days {
	case "all":
	case "7", "30", "90":
		n, _ := strconv.Atoi(d.Days)
		since = time.Now().AddDate(0, 0, -n)
	default:
		d.Days = "30"
		since = time.Now().AddDate(0, 0, -30)
	}
	rep, partial, err := c.rt.ReplayAgent(r.Context(), v.Principal, a.ID, []byte(d.YAML), since)
	var ae *arxerr.Error
	switch {
	case errors.As(err, &ae) && ae.Code == arxerr.ManifestInvalid:
		d.Problem = ae.Message
		return c.render(w, r, http.StatusUnprocessableEntity, "replay", "Try a job description on "+a.Name, d)
	case err != nil:
		return err
	}
	d.Report, d.Partial, d.Replayed, d.Lines = rep, partial, true, rep.Summary()
	d.CanApply = v.IsAdmin() && a.Status != store.AgentTerminated
	return c.render(w, r, http.StatusOK, "replay", "Try a job description on "+a.Name, d)
}

// applyManifest applies a job description from the replay page: in shadow
// (mode=shadow) or at once (mode=now).
func (c *Console) applyManifest(w http.ResponseWriter, r *http.Request) error {
	v := viewerOf(r)
	a, err := c.agentByPath(r)
	if err != nil {
		return err
	}
	yaml, shadow := r.PostForm.Get("manifest"), r.PostForm.Get("mode") == "shadow"
	if _, err := c.rt.ApplyManifest(r.Context(), v.Principal, a.ID, []byte(yaml), shadow); err != nil {
		ae, ok := shownRefusal(err)
		if !ok {
			return err
		}
		d := replayData{Agent: a, YAML: yaml, Days: "30", Ranges: []string{"7", "30", "90", "all"}, Problem: ae.Message}
		return c.render(w, r, errStatus(ae), "replay", "Try a job description on "+a.Name, d)
	}
	done := "applied"
	if shadow {
		done = "shadowed"
	}
	c.log.Info("console job description applied", "user", v.User.Email, "agent", a.ID, "shadow", shadow)
	http.Redirect(w, r, "/console/agents/"+url.PathEscape(a.ID)+"?done="+done, http.StatusSeeOther)
	return nil
}

// endShadow enforces (promote) or drops (discard) the agent's shadow.
func (c *Console) endShadow(promote bool) func(http.ResponseWriter, *http.Request) error {
	return func(w http.ResponseWriter, r *http.Request) error {
		v := viewerOf(r)
		a, err := c.agentByPath(r)
		if err != nil {
			return err
		}
		done := "promoted"
		if promote {
			_, err = c.rt.PromoteShadow(r.Context(), v.Principal, a.ID, r.PostForm.Get("manifest_hash"))
		} else {
			done = "discarded"
			_, err = c.rt.DiscardShadow(r.Context(), v.Principal, a.ID, r.PostForm.Get("reason"))
		}
		if err != nil {
			return err
		}
		c.log.Info("console shadow ended", "user", v.User.Email, "agent", a.ID, "promoted", promote)
		http.Redirect(w, r, "/console/agents/"+url.PathEscape(a.ID)+"?done="+done, http.StatusSeeOther)
		return nil
	}
}
