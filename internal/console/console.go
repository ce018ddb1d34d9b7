// Package console serves the workforce console under /console: the pages
// where managers log in, see the agents on staff and their personnel
// records, and decide on high-risk calls as they arrive.
//
// Pages are rendered on the server from embedded templates; a small embedded
// script adds live updates (server-sent events), countdowns and local times,
// and every page works without it. The console holds no rules of its own:
// who may decide, what a session is, what the record says all come from the
// runtime. What it promises on top: every state-changing form carries the
// session's CSRF token and must come from this origin, pages are never
// framed or cached, no script runs inline (Content-Security-Policy), and no
// secret (a password, a token, a session cookie) is rendered or logged.
package console

import (
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"errors"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"path"
	"strings"
	"sync"
	"time"

	"github.com/arxsec/arx/arxerr"
	"github.com/arxsec/arx/internal/api"
	"github.com/arxsec/arx/internal/runtime"
)

// Config configures the console. Flags and environment are read in cmd/arx.
type Config struct {
	Runtime *runtime.Runtime
	// LogKey is the log's public note verifier key: record pages check the
	// latest checkpoint's signature with it. Empty: the signature is not
	// checked (the page says so).
	LogKey string
	Logger *slog.Logger
	// PublicURL is where people reach this deployment. Forms posted from its
	// origin are accepted besides the request's own (a TLS-terminating proxy
	// in front of arx serve).
	PublicURL string
	// PublishStatus, when set, reports how far the personnel record got
	// in the customer's bucket; the dashboard shows it. Nil: no bucket is
	// configured.
	PublishStatus func() PublishStatus
}

// PublishStatus is how far publishing the record to the bucket got.
type PublishStatus struct {
	Bucket         string     // where it is published, e.g. s3://BUCKET/PREFIX
	Size           int64      // entries in the bucket
	CheckpointSize int64      // entries the bucket's (cosigned) checkpoint commits to
	CheckpointTime time.Time  // when that checkpoint was published; zero: none yet
	LastError      string     // why the last round failed; "" when it succeeded
	Cosigned       []Cosigner // the witnesses whose cosignature is on that checkpoint
	Witnesses      int        // witnesses configured
}

// Cosigner is a witness that cosigned the checkpoint, and when.
type Cosigner struct {
	Name string
	Time time.Time
}

// Limits and timeouts.
const (
	// MaxFormBytes bounds every form body.
	MaxFormBytes = 16 << 10
	// PageTimeout bounds the store work of one page.
	PageTimeout = 10 * time.Second
	// VerifyTimeout bounds the verification of one agent's record.
	VerifyTimeout = 8 * time.Second
)

// Cookie names.
const (
	SessionCookie = "arx_session"
	// loginCookie carries the double-submitted CSRF token of the login and
	// setup forms, which are posted before there is a session.
	loginCookie = "arx_login"
)

//go:embed templates static
var files embed.FS

// Console is the console's handlers.
type Console struct {
	rt        *runtime.Runtime
	logKey    string
	log       *slog.Logger
	publicURL string // scheme://host, or "" when unset
	publish   func() PublishStatus
	pages     map[string]*pageTemplate
	static    *staticFiles

	shutdown     chan struct{} // closed by Shutdown: event streams end
	shutdownOnce sync.Once
}

// New returns the console. It panics if the embedded templates do not parse
// (a build defect the package's tests catch).
func New(cfg Config) *Console {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	c := &Console{rt: cfg.Runtime, logKey: cfg.LogKey, log: cfg.Logger, static: loadStatic(), shutdown: make(chan struct{}),
		publish: cfg.PublishStatus}
	if u, err := url.Parse(cfg.PublicURL); err == nil && u.Scheme != "" && u.Host != "" {
		c.publicURL = u.Scheme + "://" + u.Host
	}
	c.pages = parseTemplates(c.static)
	return c
}

// Mount registers the console's routes on mux (api.Config.Extra).
func (c *Console) Mount(mux *http.ServeMux) {
	mux.Handle("GET /console", http.RedirectHandler("/console/", http.StatusMovedPermanently))
	mux.Handle("GET /console/static/{version}/{file}", http.HandlerFunc(c.serveStatic))

	mux.Handle("GET /console/login", c.public(c.loginPage))
	mux.Handle("POST /console/login", c.public(c.login))
	mux.Handle("GET /console/setup", c.public(c.setupPage))
	mux.Handle("POST /console/setup", c.public(c.setup))
	mux.Handle("GET /console/sso/start", c.public(c.ssoStart))
	mux.Handle("GET /console/sso/callback", c.public(c.ssoCallback))
	mux.Handle("POST /console/logout", c.action(c.logout))

	mux.Handle("GET /console/{$}", c.page(c.dashboard))
	mux.Handle("GET /console/approvals", c.page(c.approvals))
	mux.Handle("GET /console/approvals/{call}", c.page(c.approval))
	mux.Handle("POST /console/approvals/{call}/decide", c.action(c.decide))
	mux.Handle("POST /console/approvals/{call}/challenge", c.action(c.decisionChallenge))
	mux.Handle("GET /console/passkeys", c.page(c.passkeysPage))
	mux.Handle("GET /console/link", c.page(c.linkPage))
	mux.Handle("POST /console/link", c.action(c.link))
	mux.Handle("POST /console/chat/unlink", c.action(c.unlink))
	mux.Handle("POST /console/passkeys/begin", c.action(c.beginPasskey))
	mux.Handle("POST /console/passkeys/finish", c.action(c.finishPasskey))
	mux.Handle("POST /console/passkeys/{id}/remove", c.action(c.removePasskey))
	mux.Handle("GET /console/agents", c.page(c.agents))
	mux.Handle("GET /console/agents/{id}", c.page(c.agent))
	mux.Handle("GET /console/agents/{id}/record", c.page(c.record))
	mux.Handle("GET /console/agents/{id}/review", c.page(c.review))
	mux.Handle("GET /console/agents/{id}/replay", c.page(c.replayPage))
	mux.Handle("POST /console/agents/{id}/replay", c.action(c.replay))
	mux.Handle("POST /console/agents/{id}/manifest", c.action(c.applyManifest))
	mux.Handle("POST /console/agents/{id}/shadow/promote", c.action(c.endShadow(true)))
	mux.Handle("POST /console/agents/{id}/shadow/discard", c.action(c.endShadow(false)))
	mux.Handle("POST /console/agents/{id}/drift/{index}/ack", c.action(c.ackDrift))
	mux.Handle("POST /console/agents/{id}/drift/ack", c.action(c.ackAllDrift))
	mux.Handle("POST /console/agents/{id}/terminate", c.action(c.terminate))
	mux.Handle("GET /console/people", c.page(c.people))
	mux.Handle("POST /console/people/{email}/{verb}", c.action(c.setPerson))
	mux.Handle("GET /console/events", c.stream())

	mux.Handle("/console/", c.public(func(w http.ResponseWriter, r *http.Request) error {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			return arxerr.New(arxerr.MethodNotAllowed, "%s is not allowed here", r.Method)
		}
		return notFound("there is no page at " + truncate(r.URL.Path, 96))
	}))
}

// Shutdown ends the open event streams, which would otherwise hold a
// graceful server shutdown until its deadline (register it with
// http.Server.RegisterOnShutdown). Browsers reconnect to another replica,
// or to this one when it is back.
func (c *Console) Shutdown() {
	c.shutdownOnce.Do(func() { close(c.shutdown) })
}

// contentSecurityPolicy allows only this origin's scripts, styles and
// images, no inline script or style, no framing, and forms only to itself.
const contentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; " +
	"connect-src 'self'; font-src 'self'; manifest-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// securityHeaders are sent with every console answer.
func securityHeaders(h http.Header) {
	h.Set("Content-Security-Policy", contentSecurityPolicy)
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "same-origin")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	h.Set("Cross-Origin-Resource-Policy", "same-origin")
	h.Set("Permissions-Policy", "camera=(), microphone=(), geolocation=(), payment=()")
}

// handlerFunc is a console handler; an error it returns is rendered as an
// error page (see writeErrorPage).
type handlerFunc func(w http.ResponseWriter, r *http.Request) error

// viewer is the person behind a request with a session.
type viewer struct {
	*runtime.Principal
	csrf       string
	cookie     string
	sessionEnd time.Time
}

// requestState is per request: set once the session is known, so that an
// error page rendered by wrap still shows who is signed in.
type requestState struct{ viewer *viewer }

type stateKey struct{}

func viewerOf(r *http.Request) *viewer {
	if st, _ := r.Context().Value(stateKey{}).(*requestState); st != nil {
		return st.viewer
	}
	return nil
}

func setViewer(r *http.Request, v *viewer) {
	if st, _ := r.Context().Value(stateKey{}).(*requestState); st != nil {
		st.viewer = v
	}
}

// public serves a page that needs no session (it still sees one if there is).
func (c *Console) public(fn handlerFunc) http.Handler {
	return c.wrap(func(w http.ResponseWriter, r *http.Request) error {
		if v, err := c.session(r); err == nil {
			setViewer(r, v)
		}
		return fn(w, r)
	})
}

// page serves a page for a logged-in person; anyone else is sent to the
// login page and back.
func (c *Console) page(fn handlerFunc) http.Handler {
	return c.wrap(func(w http.ResponseWriter, r *http.Request) error {
		v, err := c.session(r)
		if err != nil {
			if ae := (*arxerr.Error)(nil); errors.As(err, &ae) && ae.Code == arxerr.Internal {
				return err
			}
			http.Redirect(w, r, "/console/login?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
			return nil
		}
		setViewer(r, v)
		return fn(w, r)
	})
}

// action serves a state-changing form post: a session, a request from
// this origin and the session's CSRF token are all required, or nothing is
// done.
func (c *Console) action(fn handlerFunc) http.Handler {
	return c.wrap(func(w http.ResponseWriter, r *http.Request) error {
		v, err := c.session(r)
		if err != nil {
			return err
		}
		setViewer(r, v)
		if err := c.checkForm(r, v.csrf); err != nil {
			return err
		}
		return fn(w, r)
	})
}

// stream serves the console's server-sent events to a logged-in person;
// the stream ends when the session does.
func (c *Console) stream() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		securityHeaders(w.Header())
		v, err := c.session(r)
		if err != nil {
			c.writeErrorPage(w, r, err)
			return
		}
		ctx, cancel := context.WithDeadline(r.Context(), v.sessionEnd)
		defer cancel()
		go c.watchStream(ctx, cancel, v.cookie)
		api.ServeEvents(w, r.WithContext(ctx), c.rt.Events())
	})
}

// watchStream ends an event stream when the server shuts down, and soon
// after its session ends (logout, password reset).
func (c *Console) watchStream(ctx context.Context, cancel context.CancelFunc, cookie string) {
	t := time.NewTicker(30 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.shutdown:
			cancel()
			return
		case <-t.C:
			if _, _, err := c.rt.Session(ctx, cookie); err != nil {
				cancel()
				return
			}
		}
	}
}

// wrap sets the security headers, bounds the request, recovers panics and
// renders errors.
func (c *Console) wrap(fn handlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		securityHeaders(w.Header())
		w.Header().Set("Cache-Control", "no-store")
		r.Body = http.MaxBytesReader(w, r.Body, MaxFormBytes)
		ctx, cancel := context.WithTimeout(r.Context(), PageTimeout)
		defer cancel()
		r = r.WithContext(context.WithValue(ctx, stateKey{}, &requestState{}))
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				c.log.Error("console handler panic", "path", r.URL.Path, "panic", v)
				c.writeErrorPage(w, r, errors.New("panic"))
			}
		}()
		if err := fn(w, r); err != nil {
			c.writeErrorPage(w, r, err)
		}
	})
}

// staticFiles are the embedded assets, addressed by a version that changes
// with their content so that they can be cached for a year.
type staticFiles struct {
	version string
	fsys    fs.FS
}

func loadStatic() *staticFiles {
	sub, err := fs.Sub(files, "static")
	if err != nil {
		panic(err)
	}
	h := sha256.New()
	fs.WalkDir(sub, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(sub, p)
		if err != nil {
			return err
		}
		h.Write([]byte(p))
		h.Write(b)
		return nil
	})
	return &staticFiles{version: hex.EncodeToString(h.Sum(nil))[:12], fsys: sub}
}

// url is the address of an asset.
func (s *staticFiles) url(name string) string {
	return "/console/static/" + s.version + "/" + name
}

var staticTypes = map[string]string{
	".css": "text/css; charset=utf-8",
	".js":  "text/javascript; charset=utf-8",
	".svg": "image/svg+xml",
	".png": "image/png",
}

func (c *Console) serveStatic(w http.ResponseWriter, r *http.Request) {
	securityHeaders(w.Header())
	name := r.PathValue("file")
	ctype, ok := staticTypes[path.Ext(name)]
	b, err := fs.ReadFile(c.static.fsys, name)
	if !ok || err != nil || strings.Contains(name, "/") {
		http.Error(w, "not found", http.StatusNotFound)
		return
	}
	w.Header().Set("Content-Type", ctype)
	if r.PathValue("version") == c.static.version {
		w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
	} else {
		// A page rendered by another version of arx: serve what there is,
		// but do not let it stick.
		w.Header().Set("Cache-Control", "no-cache")
	}
	w.Write(b)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
