package console

import (
	"net/http"
	"net/url"

	"github.com/arxsec/arx/arxerr"
	"github.com/arxsec/arx/internal/store"
)

// The people page: admins see everyone with an account, and disable or
// enable them (the runtime records who did it). Adding people, resets and
// roles are `arx users` verbs: a setup link goes to the person, not
// through a page.

type personRow struct {
	store.User
	You bool
}

type peopleData struct {
	People  []personRow
	Done    string
	Refusal *refusal
}

func (c *Console) people(w http.ResponseWriter, r *http.Request) error {
	return c.renderPeople(w, r, http.StatusOK, "", nil)
}

// doneMessage confirms what a redirect after a change says was done, only
// when the person's state shows it: a crafted link cannot make the page
// claim a change that did not happen.
func doneMessage(q url.Values, people []personRow) string {
	for _, p := range people {
		if p.Email != q.Get("who") {
			continue
		}
		switch {
		case q.Get("done") == "disable" && p.DisabledAt != nil:
			return p.Email + " is disabled: their sessions, tokens and setup link have ended."
		case q.Get("done") == "enable" && p.DisabledAt == nil:
			return p.Email + " can sign in again."
		}
	}
	return ""
}

func (c *Console) renderPeople(w http.ResponseWriter, r *http.Request, status int, done string, ref *refusal) error {
	v := viewerOf(r)
	if !v.IsAdmin() {
		return arxerr.New(arxerr.Forbidden, "only an admin sees the people page")
	}
	users, err := c.rt.Store().Users(r.Context())
	if err != nil {
		return c.rt.ReadFailed("list users", err)
	}
	d := peopleData{Done: done, Refusal: ref}
	for _, u := range users {
		d.People = append(d.People, personRow{User: u, You: v.User != nil && v.User.ID == u.ID})
	}
	if d.Done == "" && d.Refusal == nil {
		d.Done = doneMessage(r.URL.Query(), d.People)
	}
	return c.render(w, r, status, "people", "People", d)
}

// setPerson disables or enables a person.
func (c *Console) setPerson(w http.ResponseWriter, r *http.Request) error {
	v := viewerOf(r)
	email := r.PathValue("email")
	var err error
	switch r.PathValue("verb") {
	case "disable":
		_, err = c.rt.DisableUser(r.Context(), v.Principal, email)
	case "enable":
		_, err = c.rt.EnableUser(r.Context(), v.Principal, email)
	default:
		return notFound("no such action")
	}
	if err != nil {
		ae, ok := shownRefusal(err)
		if !ok {
			return err
		}
		return c.renderPeople(w, r, errStatus(ae), "", &refusal{Heading: "Nothing was changed", Message: sentence(ae.Message), Code: ae.Code})
	}
	http.Redirect(w, r, "/console/people?done="+url.QueryEscape(r.PathValue("verb"))+"&who="+url.QueryEscape(email), http.StatusSeeOther)
	return nil
}
