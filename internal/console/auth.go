package console

import (
	"crypto/rand"
	"crypto/subtle"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/arxsec/arx/arxerr"
	"github.com/arxsec/arx/internal/api"
	"github.com/arxsec/arx/internal/runtime"
	"github.com/arxsec/arx/internal/store"
)

// session resolves the request's session cookie.
func (c *Console) session(r *http.Request) (*viewer, error) {
	ck, err := r.Cookie(SessionCookie)
	if err != nil || ck.Value == "" {
		return nil, arxerr.New(arxerr.Unauthenticated, "you are not signed in")
	}
	p, s, err := c.rt.Session(r.Context(), ck.Value)
	if err != nil {
		return nil, err
	}
	return &viewer{Principal: p, csrf: s.CSRF, cookie: ck.Value, sessionEnd: s.ExpiresAt}, nil
}

// secure says whether cookies get the Secure attribute: when the request
// came over TLS, or people reach the deployment over https.
func (c *Console) secure(r *http.Request) bool {
	return r.TLS != nil || strings.HasPrefix(c.publicURL, "https://")
}

func (c *Console) setSessionCookie(w http.ResponseWriter, r *http.Request, value string, expires time.Time) {
	http.SetCookie(w, &http.Cookie{Name: SessionCookie, Value: value, Path: "/", Expires: expires,
		MaxAge: int(time.Until(expires).Seconds()), HttpOnly: true, Secure: c.secure(r), SameSite: http.SameSiteLaxMode})
}

func (c *Console) clearCookie(w http.ResponseWriter, r *http.Request, name, path string) {
	http.SetCookie(w, &http.Cookie{Name: name, Value: "", Path: path, MaxAge: -1, HttpOnly: true, Secure: c.secure(r),
		SameSite: http.SameSiteLaxMode})
}

// sameOrigin says whether a form post came from a page of this console: its
// Origin (or, without one, its Referer) must be this server's origin or the
// configured public URL's.
func (c *Console) sameOrigin(r *http.Request) bool {
	src := r.Header.Get("Origin")
	if src == "" || src == "null" {
		ref, err := url.Parse(r.Header.Get("Referer"))
		if err != nil || ref.Scheme == "" || ref.Host == "" {
			return false
		}
		src = ref.Scheme + "://" + ref.Host
	}
	own := "http://" + r.Host
	if r.TLS != nil {
		own = "https://" + r.Host
	}
	return strings.EqualFold(src, own) || c.publicURL != "" && strings.EqualFold(src, c.publicURL)
}

func csrfRefused(msg string) error {
	e := arxerr.New(arxerr.CSRFFailed, "%s", msg)
	return e
}

// parseForm reads a posted form within MaxFormBytes.
func parseForm(r *http.Request) error {
	if err := r.ParseForm(); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return arxerr.New(arxerr.BodyTooLarge, "the form is larger than %d bytes", MaxFormBytes)
		}
		return arxerr.New(arxerr.BadRequest, "the form could not be read")
	}
	return nil
}

// checkForm refuses a post that did not come from this origin or does not
// carry want, the session's synchronizer token, compared in constant time.
func (c *Console) checkForm(r *http.Request, want string) error {
	if !c.sameOrigin(r) {
		return csrfRefused("the form was not sent from a page of this console")
	}
	if err := parseForm(r); err != nil {
		return err
	}
	got := r.PostForm.Get("csrf")
	if want == "" || subtle.ConstantTimeCompare([]byte(got), []byte(want)) != 1 {
		return csrfRefused("the form is missing its security token, or the token belongs to another session")
	}
	return nil
}

// loginToken returns the CSRF token of the login and setup forms, which are
// posted before there is a session: a random value both in a cookie and in
// the form (double submit), checked with the Origin.
func (c *Console) loginToken(w http.ResponseWriter, r *http.Request) string {
	if ck, err := r.Cookie(loginCookie); err == nil && len(ck.Value) == 26 {
		return ck.Value
	}
	tok := rand.Text()
	http.SetCookie(w, &http.Cookie{Name: loginCookie, Value: tok, Path: "/console/", MaxAge: 3600, HttpOnly: true,
		Secure: c.secure(r), SameSite: http.SameSiteStrictMode})
	return tok
}

func (c *Console) checkLoginForm(r *http.Request) error {
	ck, err := r.Cookie(loginCookie)
	if err != nil {
		return csrfRefused("the sign-in form has expired or cookies are blocked")
	}
	return c.checkForm(r, ck.Value)
}

// safeNext keeps a post-login redirect inside the console.
func safeNext(next string) string {
	u, err := url.Parse(next)
	if err != nil || next == "" || u.Scheme != "" || u.Host != "" || u.User != nil ||
		!strings.HasPrefix(u.Path, "/console/") || strings.HasPrefix(next, "//") || strings.ContainsAny(next, "\\\r\n") ||
		strings.HasPrefix(u.Path, "/console/login") || strings.HasPrefix(u.Path, "/console/setup") {
		return "/console/"
	}
	return u.RequestURI()
}

type loginData struct {
	Email  string
	Next   string
	CSRF   string
	Error  string
	Notice string
	// SSO names the identity provider on its button ("" without one);
	// Passwords says whether the password form is shown.
	SSO       string
	Passwords bool
}

func (c *Console) loginPage(w http.ResponseWriter, r *http.Request) error {
	next := safeNext(r.URL.Query().Get("next"))
	if viewerOf(r) != nil {
		http.Redirect(w, r, next, http.StatusSeeOther)
		return nil
	}
	d := c.withSSO(loginData{Next: next, CSRF: c.loginToken(w, r)})
	switch {
	case r.URL.Query().Has("out"):
		d.Notice = "You are signed out."
	case r.URL.Query().Has("next"):
		d.Notice = "Sign in to continue."
	}
	return c.render(w, r, http.StatusOK, "login", "Sign in", d)
}

func (c *Console) login(w http.ResponseWriter, r *http.Request) error {
	if err := c.checkLoginForm(r); err != nil {
		return err
	}
	email := strings.TrimSpace(r.PostForm.Get("email"))
	next := safeNext(r.PostForm.Get("next"))
	u, err := c.rt.CheckLogin(r.Context(), email, r.PostForm.Get("password"), api.ClientIP(r))
	if err != nil {
		var ae *arxerr.Error
		if errors.As(err, &ae) && ae.Code == arxerr.SSORequired {
			return c.ssoFailed(w, r, err)
		}
		if !errors.As(err, &ae) || ae.Code != arxerr.RateLimited && ae.Code != arxerr.LoginFailed {
			return err
		}
		c.log.Info("console sign-in refused", "client", api.ClientIP(r), "code", ae.Code)
		d := c.withSSO(loginData{Email: truncate(email, 254), Next: next, CSRF: c.loginToken(w, r)})
		status := http.StatusUnauthorized
		if ae.Code == arxerr.RateLimited {
			status = http.StatusTooManyRequests
			d.Error = "Too many sign-in attempts. Wait a few minutes, then try again."
		} else {
			// The same words whether or not the email has an account.
			d.Error = "Wrong email or password."
		}
		return c.render(w, r, status, "login", "Sign in", d)
	}
	if err := c.startSession(w, r, u, nil); err != nil {
		return err
	}
	http.Redirect(w, r, next, http.StatusSeeOther)
	return nil
}

// startSession logs u in: a new session (never one the browser brought), its
// cookie, and the end of any previous session of this browser. idp names
// who the identity provider said signed in (nil: a password).
func (c *Console) startSession(w http.ResponseWriter, r *http.Request, u *store.User, idp *runtime.IdP) error {
	if old := viewerOf(r); old != nil {
		c.rt.EndSession(r.Context(), old.cookie)
	}
	cookie, s, err := c.rt.NewSession(r.Context(), u, idp)
	if err != nil {
		return err
	}
	c.setSessionCookie(w, r, cookie, s.ExpiresAt)
	c.clearCookie(w, r, loginCookie, "/console/")
	c.log.Info("console sign-in", "user", u.Email, "client", api.ClientIP(r))
	return nil
}

func (c *Console) logout(w http.ResponseWriter, r *http.Request) error {
	v := viewerOf(r)
	if err := c.rt.EndSession(r.Context(), v.cookie); err != nil {
		return err
	}
	c.clearCookie(w, r, SessionCookie, "/")
	c.log.Info("console sign-out", "user", v.User.Email)
	http.Redirect(w, r, "/console/login?out=1", http.StatusSeeOther)
	return nil
}

type setupData struct {
	Token string
	CSRF  string
	Error string
	Min   int
}

func (c *Console) setupPage(w http.ResponseWriter, r *http.Request) error {
	d := setupData{Token: r.URL.Query().Get("token"), CSRF: c.loginToken(w, r), Min: minPassword}
	status := http.StatusOK
	if d.Token == "" {
		d.Error = "This page needs the link an admin sent you. Ask them for a new one."
		status = http.StatusBadRequest
	}
	return c.render(w, r, status, "setup", "Set your password", d)
}

func (c *Console) setup(w http.ResponseWriter, r *http.Request) error {
	if err := c.checkLoginForm(r); err != nil {
		return err
	}
	d := setupData{Token: r.PostForm.Get("token"), CSRF: c.loginToken(w, r), Min: minPassword}
	pw := r.PostForm.Get("password")
	if pw != r.PostForm.Get("confirm") {
		d.Error = "The two passwords are not the same."
		return c.render(w, r, http.StatusBadRequest, "setup", "Set your password", d)
	}
	u, err := c.rt.SetPassword(r.Context(), d.Token, pw)
	if err != nil {
		var ae *arxerr.Error
		if !errors.As(err, &ae) {
			return err
		}
		switch ae.Code {
		case arxerr.SSORequired:
			return c.ssoFailed(w, r, err)
		case arxerr.WeakPassword:
			d.Error = "Choose a longer password: " + ae.Message + "."
		case arxerr.SetupInvalid:
			d.Error = "This link is unknown, already used or expired. Ask an admin for a new one."
		default:
			return err
		}
		return c.render(w, r, ae.Status, "setup", "Set your password", d)
	}
	if err := c.startSession(w, r, u, nil); err != nil {
		return err
	}
	http.Redirect(w, r, "/console/?welcome=1", http.StatusSeeOther)
	return nil
}
