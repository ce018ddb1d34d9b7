// Package server assembles arx serve: data directory, keys, store, runtime
// and the HTTP server, with the timeouts and limits every server keeps. The
// CLI, the benchmark and end-to-end tests start the same thing through it.
package server

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/arxsec/arx/credential"
	"github.com/arxsec/arx/internal/api"
	"github.com/arxsec/arx/internal/chat"
	"github.com/arxsec/arx/internal/connector"
	"github.com/arxsec/arx/internal/console"
	"github.com/arxsec/arx/internal/publish"
	"github.com/arxsec/arx/internal/runtime"
	"github.com/arxsec/arx/internal/sso"
	"github.com/arxsec/arx/internal/store"
	"github.com/arxsec/arx/internal/tracing"
	"github.com/arxsec/arx/record"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Config configures a server. Flags and environment are read in cmd/arx
// and mapped here.
type Config struct {
	DataDir string
	// KeyDir, when set, holds the deployment's keys and, optionally, its
	// first admin token (InitKeys made them): they are read from there
	// and never made. Default: the data directory, where the first start
	// makes them.
	KeyDir string
	Listen string // host:port; port 0 picks a free one
	// Origin names the log and the deployment; used only when the log key
	// is created (first start). Default: "arx.local/<hostname>/<random>".
	Origin  string
	TLSCert string
	TLSKey  string
	Logger  *slog.Logger

	CheckpointInterval time.Duration
	ShutdownTimeout    time.Duration
	// SweepInterval is how often calls past their expiry are closed
	// (default runtime.DefaultSweepInterval).
	SweepInterval time.Duration
	// Now is the runtime's clock (default time.Now): a test moves it on to
	// expire a call at the moment it chooses.
	Now func() time.Time

	// PublicURL is where people reach this deployment (links in webhooks
	// and setup links); default: the listen URL.
	PublicURL string
	// Webhooks are told when approvals are requested and decided.
	Webhooks []runtime.Webhook
	// Slack, when its signing secret is set, takes Slack's interactions
	// (Approve and Deny buttons on the approval messages sent to Slack
	// webhooks); ChatSecret signs the generic chat webhook.
	Slack      SlackConfig
	ChatSecret []byte
	// SSO, when its issuer is set, signs people in through an OpenID
	// Connect identity provider; NoLocalPasswords then turns ARX's own
	// passwords off.
	SSO              SSOConfig
	NoLocalPasswords bool
	// SCIMToken, when set, takes the identity provider's SCIM requests at
	// /scim/v2/ with this bearer token.
	SCIMToken []byte
	// OTLPEndpoint, when set, exports a span per stage of each governed
	// call over OTLP/HTTP ("http://collector:4318").
	OTLPEndpoint string
	// UserTokenLifetime is how long a person's API token lives (0: the
	// runtime's default, 30 days).
	UserTokenLifetime time.Duration
	// Database picks the store: SQLite in DataDir by default (database.go).
	Database DatabaseConfig
	// Publish, when set, streams the log to a bucket and has witnesses
	// cosign its checkpoints; Store, LogKey, Logger and Registerer are
	// filled in here.
	Publish *publish.Config
	// Connectors are the systems of record configured on this server
	// (cmd/arx: --connectors FILE); the runtime closes them at shutdown.
	Connectors []connector.Connector
}

// Defaults.
const (
	DefaultListen          = "127.0.0.1:8080"
	DefaultDataDir         = "arx-data"
	DefaultShutdownTimeout = 10 * time.Second
)

// Server is a running arx serve.
type Server struct {
	Runtime *runtime.Runtime
	// AdminToken is set only on the first start of a data directory.
	AdminToken string
	LogKey     string // the log's public verifier key
	URL        string // scheme://host:port
	// Publisher uploads the log to the bucket (nil without Config.Publish).
	Publisher *publish.Publisher

	cfg      Config
	store    store.Store
	lease    lease // the publisher's lead (publisher.go)
	http     *http.Server
	listener net.Listener
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	serveErr chan error
}

// Open prepares everything and listens, but serves only after Start.
func Open(ctx context.Context, cfg Config) (*Server, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.DataDir == "" {
		cfg.DataDir = DefaultDataDir
	}
	if cfg.Listen == "" {
		cfg.Listen = DefaultListen
	}
	if cfg.ShutdownTimeout <= 0 {
		cfg.ShutdownTimeout = DefaultShutdownTimeout
	}
	if (cfg.TLSCert == "") != (cfg.TLSKey == "") {
		return nil, errors.New("TLS needs both a certificate and a key")
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data directory: %w", err)
	}
	if err := checkPermissions(cfg.DataDir); err != nil {
		return nil, err
	}
	if cfg.Origin == "" {
		host, _ := os.Hostname()
		host = strings.ToLower(strings.Map(func(r rune) rune {
			if r == '.' || r == '-' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' {
				return r
			}
			return -1
		}, host))
		if host == "" {
			host = "localhost"
		}
		var b [4]byte
		rand.Read(b[:])
		cfg.Origin = "arx.local/" + host + "/" + hex.EncodeToString(b[:])
	}
	var skey, vkey, givenAdmin string
	var ckey ed25519.PrivateKey
	var err error
	if cfg.KeyDir != "" {
		if skey, vkey, ckey, givenAdmin, err = readKeyDir(cfg.KeyDir); err != nil {
			return nil, err
		}
	} else {
		if skey, vkey, _, err = loadOrCreateLogKey(cfg.DataDir, cfg.Origin, true); err != nil {
			return nil, fmt.Errorf("log key: %w", err)
		}
		if ckey, err = loadOrCreateCredentialKey(cfg.DataDir, true); err != nil {
			return nil, fmt.Errorf("credential key: %w", err)
		}
	}
	if cfg.KeyDir != "" {
		if err := sameKeysAsDataDir(cfg.DataDir, cfg.KeyDir, vkey, ckey); err != nil {
			return nil, err
		}
	}
	signer, err := record.NewSigner(skey)
	if err != nil {
		return nil, fmt.Errorf("log key: %w", err)
	}
	issuer, err := credential.NewIssuer(signer.Name(), ckey)
	if err != nil {
		return nil, err
	}
	st, err := openStore(ctx, cfg, vkey, ckey) // database.go
	if err != nil {
		return nil, err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	registerStoreMetrics(reg, st)
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		st.Close()
		return nil, fmt.Errorf("listen on %s: %w", cfg.Listen, err)
	}
	scheme := "http"
	if cfg.TLSCert != "" {
		scheme = "https"
	}
	listenURL := scheme + "://" + ln.Addr().String()
	if cfg.PublicURL == "" {
		cfg.PublicURL = listenURL
	}
	cfg.PublicURL = strings.TrimSuffix(cfg.PublicURL, "/")
	idp, err := cfg.SSO.client(cfg.PublicURL, cfg.NoLocalPasswords)
	if err != nil {
		ln.Close()
		st.Close()
		return nil, err
	}
	tr, err := tracing.New(tracing.Config{Endpoint: cfg.OTLPEndpoint, Instance: signer.Name()})
	if err != nil {
		ln.Close()
		st.Close()
		return nil, err
	}
	rt, err := runtime.New(runtime.Config{Store: st, LogSigner: signer, Issuer: issuer, Logger: cfg.Logger, SSO: idp, NoLocalPasswords: cfg.NoLocalPasswords, SCIMToken: cfg.SCIMToken, Tracing: tr,
		Metrics: runtime.NewMetrics(reg), CheckpointInterval: cfg.CheckpointInterval, SweepInterval: cfg.SweepInterval, Now: cfg.Now,
		Webhooks: cfg.Webhooks, PublicURL: cfg.PublicURL, Connectors: cfg.Connectors, UserTokenLifetime: cfg.UserTokenLifetime,
		SlackButtons: len(cfg.Slack.SigningSecret) > 0, ChatVerifiers: chatVerifiers(cfg.Slack)})
	if err != nil {
		ln.Close()
		st.Close()
		return nil, err
	}
	s := &Server{Runtime: rt, LogKey: vkey, cfg: cfg, store: st, serveErr: make(chan error, 1)}
	if cfg.Publish != nil {
		pc := *cfg.Publish
		pc.Store, pc.LogKey, pc.Registerer = st, vkey, reg
		if pc.Logger == nil {
			pc.Logger = cfg.Logger
		}
		pc.Leading = s.lease.check
		if s.Publisher, err = publish.New(pc); err != nil {
			ln.Close()
			st.Close()
			return nil, err
		}
	}
	if err := rt.ApplyPasswordPolicy(ctx); err != nil {
		ln.Close()
		st.Close()
		return nil, fmt.Errorf("local passwords: %w", err)
	}
	if cfg.KeyDir != "" && givenAdmin == "" {
		// A token made here would be printed to a log and written to a
		// data directory that may not outlive the process.
		has, err := rt.HasAdminToken(ctx)
		if err == nil && !has {
			err = fmt.Errorf("%s has no %s, and this deployment has no admin token yet: add one with: arx keys admin-token %s", cfg.KeyDir, AdminTokenFile, cfg.KeyDir)
		}
		if err != nil {
			ln.Close()
			st.Close()
			return nil, fmt.Errorf("admin token: %w", err)
		}
	}
	token, created, err := rt.EnsureAdminToken(ctx, givenAdmin)
	if err != nil {
		ln.Close()
		st.Close()
		return nil, fmt.Errorf("admin token: %w", err)
	}
	if created && givenAdmin != "" {
		cfg.Logger.Info("first start: the admin token is the one in the key directory", "file", filepath.Join(cfg.KeyDir, AdminTokenFile))
	} else if !created && givenAdmin != "" {
		if p, err := rt.Authenticate(ctx, givenAdmin); err != nil || !p.IsAdmin() {
			cfg.Logger.Warn("the key directory's admin token is not one this deployment honours (made for another, or revoked): use a token it issued",
				"file", filepath.Join(cfg.KeyDir, AdminTokenFile))
		}
	} else if created {
		if err := writeFileAtomic(filepath.Join(cfg.DataDir, AdminTokenFile), []byte(token+"\n"), 0o600); err != nil {
			ln.Close()
			st.Close()
			return nil, err
		}
		s.AdminToken = token
	}
	ccfg := console.Config{Runtime: rt, LogKey: vkey, Logger: cfg.Logger, PublicURL: cfg.PublicURL}
	if p := s.Publisher; p != nil {
		ccfg.PublishStatus = func() console.PublishStatus {
			st := p.Status()
			ps := console.PublishStatus{Bucket: p.Bucket(), Size: st.Size, CheckpointSize: st.CheckpointSize,
				CheckpointTime: st.CheckpointTime, LastError: p.LastError(), Witnesses: st.Witnesses}
			for _, c := range st.Cosigned {
				ps.Cosigned = append(ps.Cosigned, console.Cosigner{Name: c.Witness, Time: c.Time})
			}
			return ps
		}
	}
	con := console.New(ccfg)
	var slack *api.SlackConfig
	if len(cfg.Slack.SigningSecret) > 0 {
		slack = &api.SlackConfig{SigningSecret: cfg.Slack.SigningSecret, Client: slackClient(cfg.Slack)}
	}
	handler := api.New(api.Config{Runtime: rt, LogKey: vkey, Logger: cfg.Logger, Registry: reg, PublicURL: cfg.PublicURL,
		Extra: con.Mount, Slack: slack, ChatSecret: cfg.ChatSecret})
	s.http = &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      runtime.MaxWait + 30*time.Second, // long polls answer within MaxWait
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelWarn),
	}
	s.http.RegisterOnShutdown(rt.Shutdown)
	s.http.RegisterOnShutdown(con.Shutdown) // console event streams end, so shutdown does not wait on them
	if cfg.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
		if err != nil {
			ln.Close()
			st.Close()
			return nil, fmt.Errorf("TLS: %w", err)
		}
		s.http.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		ln = tls.NewListener(ln, s.http.TLSConfig)
	}
	s.listener = ln
	s.URL = listenURL
	return s, nil
}

// Start serves in the background.
func (s *Server) Start() {
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	s.wg.Add(2)
	go func() {
		defer s.wg.Done()
		s.Runtime.Run(ctx)
	}()
	if s.Publisher != nil {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.publish(ctx) // publisher.go
		}()
	}
	go func() {
		defer s.wg.Done()
		err := s.http.Serve(s.listener)
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		s.serveErr <- err
	}()
	s.cfg.Logger.Info("arx serving", "url", s.URL, "data", s.cfg.DataDir, "origin", s.Runtime.Origin())
}

// Err reports a serving failure (nil after a clean shutdown).
func (s *Server) Err() <-chan error { return s.serveErr }

// Close shuts down gracefully: stops accepting, lets requests finish within
// the shutdown timeout, stops background work, closes the store.
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
	defer cancel()
	err := s.http.Shutdown(ctx)
	if s.cancel != nil {
		s.cancel()
	} else {
		s.listener.Close()
	}
	s.wg.Wait()
	if terr := s.Runtime.Tracing().Shutdown(ctx); terr != nil {
		s.cfg.Logger.Warn("export the last spans", "err", terr)
	}
	// A last checkpoint covers what was appended since the previous one.
	if cerr := s.Runtime.Checkpoint(context.Background()); cerr != nil {
		s.cfg.Logger.Warn("final checkpoint", "err", cerr)
	}
	if s.Publisher != nil && s.lease.held() { // what that checkpoint covers goes to the bucket now, not at the next start
		pctx, pcancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
		if perr := s.Publisher.Flush(pctx); perr != nil {
			s.cfg.Logger.Warn("final publish", "err", perr)
		}
		pcancel()
	}
	if s.Publisher != nil {
		s.lease.release(s.cfg.Logger) // another replica publishes from now on
		s.Publisher.SetLeading(false)
	}
	return errors.Join(err, s.store.Close())
}

// SlackConfig configures Slack's interactions.
type SlackConfig struct {
	SigningSecret []byte   // the app's signing secret; nil: no interactions
	BotToken      string   // for the reason modal (views.open); "": denials go to the console
	API, Hooks    string   // Slack's Web API and response URLs (chat.DefaultSlackAPI, chat.DefaultSlackHooks)
	Teams         []string // the Slack workspaces (team ids) whose clicks count; none: any
}

func slackClient(c SlackConfig) *chat.Client {
	return &chat.Client{API: c.API, Hooks: c.Hooks, BotToken: c.BotToken, Teams: c.Teams}
}

// chatVerifiers check a Slack account's email with Slack before it is
// linked, when the server takes Slack's interactions.
func chatVerifiers(c SlackConfig) map[string]func(ctx context.Context, subject, email string) error {
	if len(c.SigningSecret) == 0 || c.BotToken == "" {
		return nil
	}
	return map[string]func(ctx context.Context, subject, email string) error{"slack": slackClient(c).VerifyEmail}
}

// SSOConfig is the deployment's OpenID Connect identity provider.
type SSOConfig struct {
	Issuer        string
	ClientID      string
	ClientSecret  []byte
	Name          string   // the sign-in button's name for it
	GroupsClaim   string   // the claim that lists a person's groups
	AdminGroups   []string // groups whose members are admins
	ManagerGroups []string // groups whose members are managers
}

// client makes the identity provider's client (nil without an issuer);
// people come back to publicURL's /console/sso/callback.
func (c SSOConfig) client(publicURL string, noPasswords bool) (*sso.Client, error) {
	if c.Issuer == "" {
		if noPasswords {
			return nil, errors.New("local passwords can be turned off only with an identity provider (--oidc-issuer)")
		}
		return nil, nil
	}
	return sso.New(sso.Config{Issuer: c.Issuer, ClientID: c.ClientID, ClientSecret: string(c.ClientSecret), Name: c.Name,
		RedirectURL: publicURL + "/console/sso/callback",
		Roles:       sso.Roles{Claim: c.GroupsClaim, Admin: c.AdminGroups, Manager: c.ManagerGroups}})
}
