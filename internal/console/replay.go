package console

import (
	"errors"
	"net/http"
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
}

func (c *Console) replayPage(w http.ResponseWriter, r *http.Request) error {
	a, err := c.agentByPath(r)
	if err != nil {
		return err
	}
	d := replayData{Agent: a, YAML: string(a.Manifest), Days: "30", Ranges: []string{"7", "30", "90", "all"}}
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
	return c.render(w, r, http.StatusOK, "replay", "Try a job description on "+a.Name, d)
}
