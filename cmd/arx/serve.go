package main

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/arxsec/arx/internal/chat"
	"github.com/arxsec/arx/internal/gcfloor"
	"github.com/arxsec/arx/internal/inert"
	"github.com/arxsec/arx/internal/runtime"
	"github.com/arxsec/arx/internal/server"
	"github.com/arxsec/arx/internal/store/postgres"
	"github.com/arxsec/arx/internal/store/sqlite"
	"github.com/spf13/cobra"
)

func serveCmd() *cobra.Command {
	var cfg server.Config
	var logFormat, logLevel string
	var webhooks, slackHooks []string
	var slackSecretFile, slackBotTokenFile, chatSecretFile, oidcSecretFile, scimTokenFile string
	var localPasswords bool
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the ARX runtime: agent API, credentials, the record",
		Long: `Run the ARX runtime on embedded defaults: a SQLite database, the log key and
the credential signing key in the data directory (created on first start).
On first start an admin token is printed once and written to DIR/admin.token.

With --database postgres://... several replicas share one PostgreSQL database:
each needs the first replica's log.key, log.pub and credential.key in its
data directory; the first replica's admin.token serves them all.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			log, err := newLogger(cmd.ErrOrStderr(), logFormat, logLevel)
			if err != nil {
				return err
			}
			cfg.Logger = log
			// From the environment (not flag defaults, which --help shows):
			// a webhook's URL is its credential.
			if !cmd.Flags().Changed("webhook") {
				webhooks = strings.Fields(os.Getenv("ARX_WEBHOOKS"))
			}
			if !cmd.Flags().Changed("slack-webhook") {
				slackHooks = strings.Fields(os.Getenv("ARX_SLACK_WEBHOOKS"))
			}
			if !cmd.Flags().Changed("database") { // its password too
				cfg.Database.URL = os.Getenv("ARX_DATABASE")
			}
			for _, u := range webhooks {
				cfg.Webhooks = append(cfg.Webhooks, runtime.Webhook{URL: u, Format: "json"})
			}
			for _, u := range slackHooks {
				cfg.Webhooks = append(cfg.Webhooks, runtime.Webhook{URL: u, Format: "slack"})
			}
			for i, w := range cfg.Webhooks {
				if u, err := url.Parse(w.URL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
					// Not echoed: a webhook's URL is its credential.
					return withHint(fmt.Errorf("webhook %d (--webhook or --slack-webhook) is not an http(s) URL", i+1), "pass --webhook https://HOST/PATH")
				}
			}
			for _, sf := range []struct {
				flag, file string
				to         *[]byte
			}{{"--slack-signing-secret-file", slackSecretFile, &cfg.Slack.SigningSecret}, {"--chat-signing-secret-file", chatSecretFile, &cfg.ChatSecret}} {
				if sf.file == "" {
					continue
				}
				b, err := server.ReadSecretFile(sf.file)
				if err != nil {
					return withHint(fmt.Errorf("%s: %w", sf.flag, err), "name a file that holds the secret, readable by this user only (chmod 600)")
				}
				*sf.to = b
			}
			if oidcSecretFile != "" {
				b, err := server.ReadSecretFile(oidcSecretFile)
				if err != nil {
					return withHint(fmt.Errorf("--oidc-client-secret-file: %w", err), "name a file that holds the OIDC client's secret, readable by this user only (chmod 600)")
				}
				cfg.SSO.ClientSecret = b
			}
			if cfg.SSO.Issuer != "" && (cfg.SSO.ClientID == "" || oidcSecretFile == "") {
				return withHint(errors.New("--oidc-issuer needs --oidc-client-id and --oidc-client-secret-file"),
					"register ARX as a web application with the identity provider; its redirect URI is PUBLIC_URL/console/sso/callback")
			}
			cfg.NoLocalPasswords = !localPasswords
			if scimTokenFile != "" {
				b, err := server.ReadSecretFile(scimTokenFile)
				if err == nil && len(b) < 32 {
					err = fmt.Errorf("the token has %d bytes; use at least 32 random ones", len(b))
				}
				if err != nil {
					return withHint(fmt.Errorf("--scim-token-file: %w", err), "put a long random token in a file readable by this user only: openssl rand -base64 32 > scim.token; chmod 600 scim.token")
				}
				cfg.SCIMToken = b
			}
			if slackBotTokenFile != "" {
				b, err := server.ReadSecretFile(slackBotTokenFile)
				if err != nil {
					return withHint(fmt.Errorf("--slack-bot-token-file: %w", err), "name a file that holds the bot token (xoxb-...), readable by this user only (chmod 600)")
				}
				cfg.Slack.BotToken = string(b)
			}
			for name, d := range map[string]time.Duration{"--db-busy-timeout": cfg.Database.BusyTimeout, "--user-token-lifetime": cfg.UserTokenLifetime,
				"--db-read-timeout": cfg.Database.ReadTimeout, "--db-write-timeout": cfg.Database.WriteTimeout} {
				if d <= 0 {
					return withHint(fmt.Errorf("%s must be positive, not %s", name, d), "give a duration such as 5s")
				}
			}
			defer collectorFloor()()
			s, err := server.Open(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			if s.AdminToken != "" {
				inert.Fprintf(cmd.ErrOrStderr(), "\nFirst start: this is the admin token. It is shown once, and kept in %s (mode 0600).\n\n  export ARX_ADMIN_TOKEN=%s\n\n",
					filepath.Join(cfg.DataDir, server.AdminTokenFile), s.AdminToken)
			}
			s.Start()
			stop := make(chan os.Signal, 1)
			signal.Notify(stop, os.Interrupt, syscall.SIGTERM)
			defer signal.Stop(stop)
			select {
			case sig := <-stop:
				log.Info("shutting down", "signal", sig.String())
			case err := <-s.Err():
				if err != nil {
					s.Close()
					return err
				}
			}
			return s.Close()
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Listen, "listen", envDefault("ARX_LISTEN", server.DefaultListen), "address to listen on (env ARX_LISTEN)")
	f.StringVar(&cfg.DataDir, "data", envDefault("ARX_DATA_DIR", server.DefaultDataDir), "data directory (env ARX_DATA_DIR)")
	f.StringVar(&cfg.KeyDir, "key-dir", envDefault("ARX_KEY_DIR", ""), "read the deployment's keys and first admin token from this directory, made once by arx keys init (a Kubernetes secret, systemd credentials; env ARX_KEY_DIR); default: the data directory, where the first start makes them")
	f.StringVar(&cfg.Origin, "origin", envDefault("ARX_ORIGIN", ""), "log origin naming this deployment, used when the log key is first created (env ARX_ORIGIN)")
	f.StringVar(&cfg.TLSCert, "tls-cert", envDefault("ARX_TLS_CERT", ""), "TLS certificate file (env ARX_TLS_CERT)")
	f.StringVar(&cfg.TLSKey, "tls-key", envDefault("ARX_TLS_KEY", ""), "TLS private key file (env ARX_TLS_KEY)")
	f.DurationVar(&cfg.UserTokenLifetime, "user-token-lifetime", runtime.DefaultUserTokenLifetime, "how long a person's API token (arx login) lives")
	f.StringVar(&cfg.PublicURL, "public-url", envDefault("ARX_PUBLIC_URL", ""), "URL people use to reach this server, for links (env ARX_PUBLIC_URL; default: the listen address)")
	f.StringArrayVar(&webhooks, "webhook", nil, "URL told (generic JSON) when approvals are requested and decided; repeatable (env ARX_WEBHOOKS, space-separated, which keeps the URLs out of ps)")
	f.StringArrayVar(&slackHooks, "slack-webhook", nil, "Slack incoming-webhook URL told when approvals are requested and decided; repeatable (env ARX_SLACK_WEBHOOKS, space-separated)")
	f.StringVar(&slackSecretFile, "slack-signing-secret-file", "", "file holding the Slack app's signing secret: approval messages get Approve and Deny buttons, taken at /v1/slack/interactions")
	f.StringVar(&slackBotTokenFile, "slack-bot-token-file", "", "file holding the Slack app's bot token (xoxb-..., scopes users:read, users:read.email): checks whose a Slack account is before it is linked, and asks for a denial's reason in a modal")
	f.StringVar(&cfg.SSO.Issuer, "oidc-issuer", envDefault("ARX_OIDC_ISSUER", ""), "OpenID Connect identity provider's issuer URL: people sign in through it (env ARX_OIDC_ISSUER); needs --public-url, whose /console/sso/callback is the redirect URI to register")
	f.StringVar(&cfg.SSO.ClientID, "oidc-client-id", envDefault("ARX_OIDC_CLIENT_ID", ""), "ARX's client id at the identity provider (env ARX_OIDC_CLIENT_ID)")
	f.StringVar(&oidcSecretFile, "oidc-client-secret-file", "", "file holding ARX's client secret at the identity provider (mode 0600)")
	f.StringVar(&cfg.SSO.Name, "oidc-name", "", "how the console's sign-in button names the identity provider (\"Okta\"); default: single sign-on")
	f.StringVar(&cfg.SSO.GroupsClaim, "oidc-groups-claim", "groups", "the ID token claim that lists a person's groups")
	f.StringArrayVar(&cfg.SSO.AdminGroups, "oidc-admin-group", nil, "a group whose members sign in as admins; repeatable. With any group named, groups decide roles at every sign-in and add people ARX does not know")
	f.StringArrayVar(&cfg.SSO.ManagerGroups, "oidc-manager-group", nil, "a group whose members sign in as managers; repeatable")
	f.StringVar(&cfg.OTLPEndpoint, "otlp-endpoint", envDefault("ARX_OTLP_ENDPOINT", ""), "export a span for each stage of every governed call over OTLP/HTTP to this collector (http://collector:4318; env ARX_OTLP_ENDPOINT); off by default")
	f.StringVar(&scimTokenFile, "scim-token-file", "", "file holding the bearer token of the identity provider's SCIM client (mode 0600): people and groups are provisioned at /scim/v2/, and a deprovisioned person's access ends at once")
	f.BoolVar(&localPasswords, "local-passwords", true, "let people sign in with ARX passwords; --local-passwords=false (with --oidc-issuer) makes the identity provider the only way in, and ends password sessions and people's API tokens at start")
	f.StringVar(&cfg.Slack.API, "slack-api-url", chat.DefaultSlackAPI, "Slack's Web API (GovSlack, or a stand-in)")
	f.StringArrayVar(&cfg.Slack.Teams, "slack-team", nil, "a Slack workspace (team id, T...) whose clicks count; repeatable; none: any the signing secret signs for")
	f.StringVar(&cfg.Slack.Hooks, "slack-hooks-url", chat.DefaultSlackHooks, "the prefix of the response URLs Slack's interactions may name; ARX posts to no other")
	f.StringVar(&chatSecretFile, "chat-signing-secret-file", "", "file holding the secret that signs decisions from other chat tools at /v1/chat/interactions")
	f.StringVar(&logFormat, "log-format", envDefault("ARX_LOG_FORMAT", "text"), "log format: text or json (env ARX_LOG_FORMAT)")
	f.StringVar(&logLevel, "log-level", envDefault("ARX_LOG_LEVEL", "info"), "log level: debug, info, warn, error (env ARX_LOG_LEVEL)")
	publishFlags(cmd, &cfg) // --bucket, --witness, ...: see audit.go
	// --connectors FILE: see connectors.go
	connectorFlags(cmd, &cfg)
	f.StringVar(&cfg.Database.URL, "database", "", "PostgreSQL URL (postgres://USER:PASS@HOST:PORT/DB) that several replicas share (env ARX_DATABASE, which keeps the password out of ps; default: SQLite in the data directory)")
	f.Int32Var(&cfg.Database.MaxConns, "db-max-conns", postgres.DefaultMaxConns, "PostgreSQL: most pooled connections (one more per replica listens for wake-ups)")
	f.Int32Var(&cfg.Database.MinConns, "db-min-conns", 0, "PostgreSQL: pooled connections kept open when idle")
	f.DurationVar(&cfg.Database.MaxConnLifetime, "db-max-conn-lifetime", time.Hour, "PostgreSQL: a pooled connection is replaced after this long")
	f.DurationVar(&cfg.Database.MaxConnIdleTime, "db-max-conn-idle-time", 30*time.Minute, "PostgreSQL: an idle pooled connection is closed after this long")
	f.DurationVar(&cfg.Database.BusyTimeout, "db-busy-timeout", sqlite.DefaultBusyTimeout, "SQLite: how long a write waits for a lock another process holds on the database (a backup, a sqlite3 shell) before the call is refused")
	f.DurationVar(&cfg.Database.ReadTimeout, "db-read-timeout", postgres.DefaultReadTimeout, "PostgreSQL: longest wait for one read; a replica cut off from its database refuses within it")
	f.DurationVar(&cfg.Database.WriteTimeout, "db-write-timeout", postgres.DefaultBatchTimeout, "PostgreSQL: longest wait for one batch of writes to commit, the log lock included")
	return cmd
}

// collectorFloor gives the garbage collector its headroom (package
// gcfloor) for a server's life, unless GOGC is set: then the operator's
// setting stands.
func collectorFloor() (stop func()) {
	if _, set := os.LookupEnv("GOGC"); set {
		return func() {}
	}
	return gcfloor.Start(gcfloor.DefaultHeadroom)
}
