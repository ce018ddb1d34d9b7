package console

import (
	"errors"
	"net/http"

	"github.com/arxsec/arx/arxerr"
	"github.com/arxsec/arx/internal/api"
	"github.com/arxsec/arx/internal/sso"
)

// ssoCookie carries a sign-in through the identity provider, sealed
// (sso.Seal): its state, nonce and PKCE verifier. SameSite=Lax, so that it
// comes back with the provider's top-level redirect to the callback.
const ssoCookie = "arx_sso"

// ssoStart sends the browser to the identity provider. For `arx login
// --sso`, the CLI's loopback redirect, state, PKCE challenge and label come
// as cli_* parameters: the end of the sign-in goes back to the CLI.
func (c *Console) ssoStart(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	var cli *sso.CLI
	if q.Has("cli_redirect") {
		cli = &sso.CLI{Redirect: q.Get("cli_redirect"), State: q.Get("cli_state"), Challenge: q.Get("cli_challenge"), Label: q.Get("label")}
	}
	to, sealed, err := c.rt.SSOStart(r.Context(), safeNext(q.Get("next")), cli)
	if err != nil {
		return c.ssoFailed(w, r, err)
	}
	http.SetCookie(w, &http.Cookie{Name: ssoCookie, Value: sealed, Path: "/console/sso/", MaxAge: int(sso.FlowTTL.Seconds()),
		HttpOnly: true, Secure: c.secure(r), SameSite: http.SameSiteLaxMode})
	w.Header().Set("Cache-Control", "no-store")
	http.Redirect(w, r, to, http.StatusSeeOther)
	return nil
}

// ssoCallback takes the identity provider's answer: a console session for
// the person it names, or, for `arx login --sso`, the way back to the CLI.
func (c *Console) ssoCallback(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	ck, err := r.Cookie(ssoCookie)
	c.clearCookie(w, r, ssoCookie, "/console/sso/")
	sealed := ""
	if err == nil {
		sealed = ck.Value
	}
	res, err := c.rt.SSOFinish(r.Context(), sealed, q.Get("state"), q.Get("code"), q.Get("error"))
	if err != nil {
		return c.ssoFailed(w, r, err)
	}
	w.Header().Set("Cache-Control", "no-store")
	if res.CLIRedirect != "" {
		c.log.Info("sso: signed in for arx login", "user", res.User.Email, "client", api.ClientIP(r))
		http.Redirect(w, r, res.CLIRedirect, http.StatusSeeOther)
		return nil
	}
	if err := c.startSession(w, r, res.User, &res.IdP); err != nil {
		return err
	}
	http.Redirect(w, r, safeNext(res.Next), http.StatusSeeOther)
	return nil
}

// ssoFailed shows the sign-in page with what went wrong, in the words of
// the error's code: the provider's own text is never shown as it came.
func (c *Console) ssoFailed(w http.ResponseWriter, r *http.Request, err error) error {
	var ae *arxerr.Error
	if !errors.As(err, &ae) || ae.Code == arxerr.Internal {
		return err
	}
	msg := ae.Message + "."
	if ae.Hint != "" {
		msg += " " + ae.Hint + "."
	}
	d := loginData{Next: "/console/", CSRF: c.loginToken(w, r), Error: msg}
	return c.render(w, r, ae.Status, "login", "Sign in", c.withSSO(d))
}

// withSSO fills in what the sign-in page says about single sign-on.
func (c *Console) withSSO(d loginData) loginData {
	if p := c.rt.SSO(); p != nil {
		d.SSO = p.Name()
	}
	d.Passwords = c.rt.LocalPasswords()
	return d
}
