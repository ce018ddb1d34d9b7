package console

import (
	"errors"
	"net/http"
	"time"

	"github.com/arxsec/arx/arxerr"
	"github.com/arxsec/arx/internal/api"
	"github.com/arxsec/arx/internal/runtime"
	"github.com/arxsec/arx/internal/store"
	"github.com/arxsec/arx/record"
)

// Passkeys: a person registers passkeys on their Passkeys page and signs
// decisions with one on a request's page. The browser side is in
// console.js (WebAuthn needs a script); the ceremonies' steps are form
// posts with the session's CSRF token, answered in JSON.

type passkeyRow struct {
	ID       string // record.EncodeID of the credential id
	Name     string
	Created  time.Time
	LastUsed *time.Time
	Synced   bool // backup eligible: a synced passkey, not bound to one device
}

type passkeysData struct {
	Keys        []passkeyRow
	Chats       []store.ChatLink // the person's chat accounts
	Linked      bool
	Unlinked    bool
	Unavailable string // why passkeys cannot be used here; "" when they can
	Added       bool
	Removed     bool
}

func passkeyRows(keys []store.Passkey) []passkeyRow {
	out := make([]passkeyRow, len(keys))
	for i, k := range keys {
		out[i] = passkeyRow{ID: record.EncodeID(k.ID), Name: k.Name, Created: k.CreatedAt, LastUsed: k.LastUsedAt, Synced: k.Flags&0x08 != 0}
	}
	return out
}

func (c *Console) passkeysPage(w http.ResponseWriter, r *http.Request) error {
	v := viewerOf(r)
	keys, err := c.rt.Passkeys(r.Context(), v.Principal)
	if err != nil {
		return err
	}
	chats, err := c.rt.ChatLinks(r.Context(), v.Principal)
	if err != nil {
		return err
	}
	done := r.URL.Query().Get("done")
	d := passkeysData{Keys: passkeyRows(keys), Chats: chats, Added: done == "added", Removed: done == "removed", Linked: done == "linked", Unlinked: done == "unlinked"}
	if err := c.rt.PasskeysAvailable(); err != nil {
		var ae *arxerr.Error
		if errors.As(err, &ae) {
			d.Unavailable = sentence(ae.Message) + " " + sentence(ae.Hint)
		}
	}
	return c.render(w, r, http.StatusOK, "passkeys", "Your passkeys", d)
}

// writeJSONError answers a ceremony step's refusal as the API does; an
// internal or storage error gets the error page (logged).
func writeJSONError(w http.ResponseWriter, err error) error {
	var ae *arxerr.Error
	if !errors.As(err, &ae) || ae.Code == arxerr.Internal || ae.Code == arxerr.RecordUnavailable {
		return err
	}
	api.WriteError(w, ae)
	return nil
}

func (c *Console) beginPasskey(w http.ResponseWriter, r *http.Request) error {
	v := viewerOf(r)
	creation, err := c.rt.BeginPasskey(r.Context(), v.Principal, r.PostForm.Get("name"))
	if err != nil {
		return writeJSONError(w, err)
	}
	api.WriteJSON(w, http.StatusOK, creation)
	return nil
}

func (c *Console) finishPasskey(w http.ResponseWriter, r *http.Request) error {
	v := viewerOf(r)
	k, err := c.rt.FinishPasskey(r.Context(), v.Principal, []byte(r.PostForm.Get("credential")))
	if err != nil {
		return writeJSONError(w, err)
	}
	c.log.Info("console passkey added", "user", v.User.Email, "passkey", record.EncodeID(k.ID))
	api.WriteJSON(w, http.StatusOK, map[string]string{"id": record.EncodeID(k.ID), "name": k.Name})
	return nil
}

func (c *Console) removePasskey(w http.ResponseWriter, r *http.Request) error {
	v := viewerOf(r)
	if err := c.rt.RemovePasskey(r.Context(), v.Principal, r.PathValue("id")); err != nil {
		return err
	}
	http.Redirect(w, r, "/console/passkeys?done=removed", http.StatusSeeOther)
	return nil
}

// decisionChallenge hands the browser what the person's passkey signs to
// decide a request: the decision's digest as the challenge, and its time.
func (c *Console) decisionChallenge(w http.ResponseWriter, r *http.Request) error {
	v := viewerOf(r)
	decision := r.PostForm.Get("decision")
	if decision != "approve" && decision != "deny" {
		return writeJSONError(w, arxerr.New(arxerr.BadRequest, "choose approve or deny"))
	}
	ch, err := c.rt.BeginDecision(r.Context(), v.Principal, r.PathValue("call"), decision == "approve", r.PostForm.Get("reason"))
	if err != nil {
		return writeJSONError(w, err)
	}
	api.WriteJSON(w, http.StatusOK, ch)
	return nil
}

// signedDecision reads the signature fields a decision form carries when
// the person signed it with a passkey; nil when it carries none.
func signedDecision(r *http.Request) (*runtime.SignedDecision, error) {
	assertion := r.PostForm.Get("assertion")
	if assertion == "" {
		return nil, nil
	}
	at, err := time.Parse(record.TimeFormat, r.PostForm.Get("decided_at"))
	if err != nil {
		return nil, arxerr.New(arxerr.PasskeyInvalid, "the signed decision has no time")
	}
	return &runtime.SignedDecision{At: at, Assertion: []byte(assertion)}, nil
}
