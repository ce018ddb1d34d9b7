package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/arxsec/arx/internal/inert"
	"github.com/arxsec/arx/internal/sso"
	"github.com/spf13/cobra"
	"golang.org/x/term"
)

func usersCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "users", Short: "Manage the people who use the console: managers and admins"}
	cmd.AddCommand(usersAddCmd(), usersListCmd(), usersResetCmd(), usersSetCmd("disable", "Disable a person: their sessions, tokens and setup link end at once", ""),
		usersSetCmd("enable", "Let a disabled person log in again", ""), usersRoleCmd())
	return cmd
}

type setupAnswer struct {
	SetupToken string `json:"setup_token"`
	SetupURL   string `json:"setup_url"`
	ExpiresIn  string `json:"setup_expires_in"`
	Link       string `json:"link"`
}

// showLinkFlag is --show-link: the setup link to the caller, not the person.
func showLinkFlag(cmd *cobra.Command) *bool {
	return cmd.Flags().Bool("show-link", false, "print the setup link here instead of sending it to the person through the server's webhooks (recorded)")
}

// printLink says where a setup link went.
func printLink(w io.Writer, what string, out setupAnswer) {
	if out.SetupURL == "" {
		inert.Fprintf(w, "%s; the setup link was sent to them (valid %s, once)\n", what, out.ExpiresIn)
		return
	}
	inert.Fprintf(w, "%s. Send them this link to set a password (valid %s, once; the record notes it was shown to you):\n\n  %s\n",
		what, out.ExpiresIn, out.SetupURL)
}

// usersSetCmd is a verb that changes one person: disable, enable.
func usersSetCmd(verb, short, _ string) *cobra.Command {
	cmd := &cobra.Command{Use: verb + " EMAIL", Short: short, Args: cobra.ExactArgs(1)}
	client := serverFlags(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		c, err := client()
		if err != nil {
			return err
		}
		var out struct {
			User struct {
				Email string `json:"email"`
			} `json:"user"`
		}
		if err := c.do(cmd.Context(), "POST", "/v1/users/"+url.PathEscape(args[0])+"/"+verb, map[string]string{}, &out); err != nil {
			return err
		}
		inert.Fprintf(cmd.OutOrStdout(), "%sd %s\n", verb, out.User.Email)
		return nil
	}
	return cmd
}

func usersRoleCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "role EMAIL manager|admin", Short: "Change a person's role", Args: cobra.ExactArgs(2)}
	client := serverFlags(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		c, err := client()
		if err != nil {
			return err
		}
		var out struct {
			User struct {
				Email string `json:"email"`
				Role  string `json:"role"`
			} `json:"user"`
		}
		if err := c.do(cmd.Context(), "POST", "/v1/users/"+url.PathEscape(args[0])+"/role", map[string]string{"role": args[1]}, &out); err != nil {
			return err
		}
		inert.Fprintf(cmd.OutOrStdout(), "%s is now %s\n", out.User.Email, out.User.Role)
		return nil
	}
	return cmd
}

func usersAddCmd() *cobra.Command {
	var role string
	var pwStdin bool
	cmd := &cobra.Command{
		Use:   "add EMAIL",
		Short: "Add a person; a one-time setup link goes to them through the server's webhooks (--show-link prints it here, recorded)",
		Args:  cobra.ExactArgs(1),
	}
	client := serverFlags(cmd)
	cmd.Flags().StringVar(&role, "role", "manager", "manager or admin")
	cmd.Flags().BoolVar(&pwStdin, "password-stdin", false, "set the password now, read from standard input, instead of a setup link")
	show := showLinkFlag(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		c, err := client()
		if err != nil {
			return err
		}
		var out struct {
			setupAnswer
			User struct {
				Email string `json:"email"`
				Role  string `json:"role"`
			} `json:"user"`
		}
		if err := c.do(cmd.Context(), "POST", "/v1/users", map[string]any{"email": args[0], "role": role, "show_link": *show || pwStdin}, &out); err != nil {
			return err
		}
		if pwStdin {
			pw, err := readLine(cmd.InOrStdin())
			if err != nil {
				return err
			}
			if err := c.do(cmd.Context(), "POST", "/v1/auth/setup", map[string]string{"token": out.SetupToken, "password": pw}, nil); err != nil {
				return err
			}
			inert.Fprintf(cmd.OutOrStdout(), "added %s (%s) with the password given\n", out.User.Email, out.User.Role)
			return nil
		}
		printLink(cmd.OutOrStdout(), "added "+out.User.Email+" ("+out.User.Role+")", out.setupAnswer)
		return nil
	}
	return cmd
}

func usersResetCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "reset EMAIL",
		Short: "Issue a new one-time password link (the only valid one), end the person's sessions and tokens",
		Args:  cobra.ExactArgs(1),
	}
	client := serverFlags(cmd)
	show := showLinkFlag(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		c, err := client()
		if err != nil {
			return err
		}
		var out setupAnswer
		if err := c.do(cmd.Context(), "POST", "/v1/users/"+url.PathEscape(args[0])+"/reset", map[string]bool{"show_link": *show}, &out); err != nil {
			return err
		}
		printLink(cmd.OutOrStdout(), "reset "+args[0], out)
		return nil
	}
	return cmd
}

func usersListCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{Use: "list", Short: "List people", Args: cobra.NoArgs}
	client := serverFlags(cmd)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		c, err := client()
		if err != nil {
			return err
		}
		var out struct {
			Users []struct {
				Email    string     `json:"email"`
				Role     string     `json:"role"`
				Set      bool       `json:"password_set"`
				Created  time.Time  `json:"created_at"`
				Disabled *time.Time `json:"disabled_at"`
			} `json:"users"`
		}
		if err := c.do(cmd.Context(), "GET", "/v1/users", nil, &out); err != nil {
			return err
		}
		if asJSON {
			return printJSON(cmd.OutOrStdout(), out)
		}
		tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "EMAIL\tROLE\tPASSWORD\tADDED\tSTATUS")
		for _, u := range out.Users {
			pw := "set"
			if !u.Set {
				pw = "link pending"
			}
			status := "active"
			if u.Disabled != nil {
				status = "disabled " + u.Disabled.Local().Format(time.DateOnly)
			}
			inert.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", u.Email, u.Role, pw, u.Created.Local().Format(time.DateOnly), status)
		}
		return tw.Flush()
	}
	return cmd
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// readLine reads one line (a password from a pipe).
func readLine(r io.Reader) (string, error) {
	line, err := bufio.NewReader(r).ReadString('\n')
	if err != nil && !(errors.Is(err, io.EOF) && line != "") {
		return "", errors.New("no password on standard input")
	}
	return strings.TrimRight(line, "\r\n"), nil
}

// Stored CLI credentials: one token per server, in a file only its owner reads.

func credentialsPath() (string, error) {
	dir, err := os.UserConfigDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, "arx", "credentials.json"), nil
}

func loadStoredToken(server string) string {
	p, err := credentialsPath()
	if err != nil {
		return ""
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return ""
	}
	var m map[string]string
	if json.Unmarshal(b, &m) != nil {
		return ""
	}
	return m[server]
}

func storeToken(server, token string) (string, error) {
	p, err := credentialsPath()
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return "", err
	}
	m := map[string]string{}
	if b, err := os.ReadFile(p); err == nil {
		json.Unmarshal(b, &m)
	}
	m[server] = token
	b, _ := json.MarshalIndent(m, "", "  ")
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return "", err
	}
	return p, os.Rename(tmp, p)
}

func loginCmd() *cobra.Command {
	var server, email string
	var pwStdin, useSSO bool
	cmd := &cobra.Command{
		Use:   "login",
		Short: "Log in as a person and store an API token for the CLI",
		Long: `Log in with your email and password and store an API token for this server in
your user config directory (mode 0600). Later verbs use it when neither
--token nor ARX_ADMIN_TOKEN is given.

With --sso, sign in through the server's identity provider instead: open the
URL it prints in a browser on this machine; the browser comes back to a
loopback port this command listens on (five minutes at most).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if server == "" {
				server = envDefault("ARX_SERVER", DefaultServer)
			}
			server = strings.TrimSuffix(server, "/")
			host, _ := os.Hostname()
			if useSSO {
				c := &apiClient{server: server, http: &http.Client{Timeout: 30 * time.Second}}
				l := &sso.Login{Server: server, Label: "arx login --sso on " + host, Call: c.do, Show: func(u string) {
					inert.Fprintf(cmd.ErrOrStderr(), "Open this address in a browser on this machine to sign in:\n\n  %s\n\nWaiting for the browser...\n", u)
				}}
				res, err := l.Run(cmd.Context())
				if err != nil {
					return err
				}
				p, err := storeToken(server, res.Token)
				if err != nil {
					return err
				}
				inert.Fprintf(cmd.OutOrStdout(), "logged in to %s as %s (%s) through single sign-on; token stored in %s\n", server, res.Email, res.Role, p)
				return nil
			}
			if email == "" {
				return withHint(errors.New("no email"), "pass --email you@example.com")
			}
			var pw string
			var err error
			if f, ok := cmd.InOrStdin().(*os.File); ok && !pwStdin && term.IsTerminal(int(f.Fd())) {
				inert.Fprintf(cmd.ErrOrStderr(), "Password for %s: ", email)
				b, rerr := term.ReadPassword(int(f.Fd()))
				inert.Fprintln(cmd.ErrOrStderr())
				pw, err = string(b), rerr
			} else {
				pw, err = readLine(cmd.InOrStdin())
			}
			if err != nil {
				return err
			}
			c := &apiClient{server: server, http: &http.Client{Timeout: 30 * time.Second}}
			var out struct {
				Token string `json:"token"`
			}
			if err := c.do(cmd.Context(), "POST", "/v1/auth/tokens", map[string]string{"email": email, "password": pw, "label": "arx login on " + host}, &out); err != nil {
				return err
			}
			p, err := storeToken(server, out.Token)
			if err != nil {
				return err
			}
			inert.Fprintf(cmd.OutOrStdout(), "logged in to %s as %s; token stored in %s\n", server, email, p)
			return nil
		},
	}
	cmd.Flags().StringVar(&server, "server", "", "ARX server URL (env ARX_SERVER, default "+DefaultServer+")")
	cmd.Flags().StringVar(&email, "email", "", "your email")
	cmd.Flags().BoolVar(&pwStdin, "password-stdin", false, "read the password from standard input")
	cmd.Flags().BoolVar(&useSSO, "sso", false, "sign in through the server's identity provider, in a browser")
	return cmd
}

func tokensCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "tokens", Short: "List your personal API tokens (arx login); `arx tokens revoke ID` revokes one"}
	client := serverFlags(cmd)
	var asJSON bool
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.Args = cobra.NoArgs
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		c, err := client()
		if err != nil {
			return err
		}
		var out struct {
			Tokens []struct {
				ID        string     `json:"id"`
				Label     string     `json:"label"`
				CreatedAt time.Time  `json:"created_at"`
				ExpiresAt time.Time  `json:"expires_at"`
				RevokedAt *time.Time `json:"revoked_at"`
			} `json:"tokens"`
		}
		if err := c.do(cmd.Context(), "GET", "/v1/auth/tokens", nil, &out); err != nil {
			return err
		}
		if asJSON {
			return printJSON(cmd.OutOrStdout(), out)
		}
		tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tLABEL\tCREATED\tSTATUS")
		for _, t := range out.Tokens {
			status := "expires " + t.ExpiresAt.Local().Format(time.DateOnly)
			switch {
			case t.RevokedAt != nil:
				status = "revoked " + t.RevokedAt.Local().Format(time.DateOnly)
			case time.Now().After(t.ExpiresAt):
				status = "expired"
			}
			inert.Fprintf(tw, "%s\t%s\t%s\t%s\n", t.ID, t.Label, t.CreatedAt.Local().Format(time.DateOnly), status)
		}
		return tw.Flush()
	}
	revoke := &cobra.Command{Use: "revoke ID", Short: "Revoke one of your personal API tokens", Args: cobra.ExactArgs(1)}
	rclient := serverFlags(revoke)
	revoke.RunE = func(cmd *cobra.Command, args []string) error {
		c, err := rclient()
		if err != nil {
			return err
		}
		if err := c.do(cmd.Context(), "DELETE", "/v1/auth/tokens/"+url.PathEscape(args[0]), nil, nil); err != nil {
			return err
		}
		inert.Fprintf(cmd.OutOrStdout(), "revoked %s\n", args[0])
		return nil
	}
	cmd.AddCommand(revoke)
	return cmd
}
