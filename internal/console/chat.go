package console

import (
	"net/http"

	"github.com/arxsec/arx/internal/runtime"
)

// Linking a chat account (Slack, or a tool on the generic signed webhook)
// to the person signed in: the chat tool gave its account a link with a
// code; the person opens it here, sees which account it is, and confirms.

type linkData struct {
	Code    string
	Account runtime.ChatAccount
	Problem string
}

func (c *Console) linkPage(w http.ResponseWriter, r *http.Request) error {
	code := r.URL.Query().Get("code")
	d := linkData{Code: code}
	a, err := c.rt.ChatLinkAccount(r.Context(), code)
	if err != nil {
		ae, ok := shownRefusal(err)
		if !ok {
			return err
		}
		d.Problem = sentence(ae.Message) + " " + sentence(ae.Hint)
		return c.render(w, r, errStatus(ae), "link", "Link a chat account", d)
	}
	d.Account = a
	return c.render(w, r, http.StatusOK, "link", "Link a chat account", d)
}

func (c *Console) link(w http.ResponseWriter, r *http.Request) error {
	v := viewerOf(r)
	l, err := c.rt.LinkChat(r.Context(), v.Principal, r.PostForm.Get("code"))
	if err != nil {
		ae, ok := shownRefusal(err)
		if !ok {
			return err
		}
		return c.render(w, r, errStatus(ae), "link", "Link a chat account", linkData{Problem: sentence(ae.Message) + " " + sentence(ae.Hint)})
	}
	c.log.Info("console chat link", "user", v.User.Email, "provider", l.Provider, "subject", l.Subject)
	http.Redirect(w, r, "/console/passkeys?done=linked", http.StatusSeeOther)
	return nil
}

func (c *Console) unlink(w http.ResponseWriter, r *http.Request) error {
	v := viewerOf(r)
	if err := c.rt.UnlinkChat(r.Context(), v.Principal, r.PostForm.Get("provider"), r.PostForm.Get("subject")); err != nil {
		return err
	}
	http.Redirect(w, r, "/console/passkeys?done=unlinked", http.StatusSeeOther)
	return nil
}
