package sso

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"golang.org/x/oauth2"
)

// LoginTimeout bounds how long `arx login --sso` waits for the browser.
const LoginTimeout = 5 * time.Minute

// Login is `arx login --sso`: it listens on a loopback port, shows the URL
// to open (show), waits for the browser to come back from the identity
// provider through the server with a code, and redeems the code with its
// PKCE verifier for a personal API token (RFC 8252 with RFC 7636).
type Login struct {
	Server string // the ARX server's base URL
	Label  string // the token's label
	Show   func(url string)
	// Call sends one JSON request to the ARX server (no token: these
	// endpoints need none) and decodes its answer into out.
	Call func(ctx context.Context, method, path string, body, out any) error
}

// Result is what a CLI sign-in gives: the token, and who it is for.
type Result struct {
	Token string
	Email string
	Role  string
}

// Run signs in; it ends when the browser came back, ctx ends or
// LoginTimeout passes.
func (l *Login) Run(ctx context.Context) (*Result, error) {
	ctx, cancel := context.WithTimeout(ctx, LoginTimeout)
	defer cancel()
	var info struct {
		Enabled bool   `json:"enabled"`
		Start   string `json:"start"`
	}
	if err := l.Call(ctx, "GET", "/v1/auth/sso", nil, &info); err != nil {
		return nil, err
	}
	if !info.Enabled || !strings.HasPrefix(info.Start, "/") {
		return nil, errors.New("this server has no identity provider: log in with --email and your password")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listen on a loopback port for the browser: %w", err)
	}
	defer ln.Close()
	verifier, state := oauth2.GenerateVerifier(), rand.Text()
	redirect := "http://" + ln.Addr().String() + "/callback"
	got := make(chan string, 1)
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second,
		MaxHeaderBytes: 16 << 10, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			q := r.URL.Query()
			if r.URL.Path != "/callback" || subtle.ConstantTimeCompare([]byte(q.Get("state")), []byte(state)) != 1 || q.Get("code") == "" {
				http.Error(w, "This is not the sign-in arx login started.", http.StatusBadRequest)
				return
			}
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			w.Header().Set("Cache-Control", "no-store")
			io.WriteString(w, `<!doctype html><html lang="en"><meta charset="utf-8"><title>ARX: signed in</title>`+
				`<body style="font-family:system-ui,sans-serif;max-width:32rem;margin:15vh auto;padding:0 1rem;line-height:1.5">`+
				`<h1 style="font-size:1.3rem">You are signed in to ARX</h1><p>You can close this tab and go back to the terminal.</p></body></html>`)
			select {
			case got <- q.Get("code"):
			default:
			}
		})}
	go srv.Serve(ln)
	defer srv.Close()
	q := url.Values{"cli_redirect": {redirect}, "cli_state": {state}, "cli_challenge": {Challenge(verifier)}, "label": {l.Label}}
	l.Show(strings.TrimSuffix(l.Server, "/") + info.Start + "?" + q.Encode())
	var code string
	select {
	case code = <-got:
	case <-ctx.Done():
		return nil, fmt.Errorf("no sign-in came back within %s", LoginTimeout)
	}
	var out struct {
		Token string `json:"token"`
		User  struct {
			Email string `json:"email"`
			Role  string `json:"role"`
		} `json:"user"`
	}
	if err := l.Call(ctx, "POST", "/v1/auth/sso/tokens", map[string]string{"code": code, "verifier": verifier}, &out); err != nil {
		return nil, err
	}
	return &Result{Token: out.Token, Email: out.User.Email, Role: out.User.Role}, nil
}
