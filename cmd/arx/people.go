package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/arxsec/arx/internal/inert"
	"github.com/spf13/cobra"
	"golang.org/x/term"
)

func usersCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "users", Short: "Manage the people who use the console: managers and admins"}
	cmd.AddCommand(usersAddCmd(), usersListCmd(), usersResetCmd())
	return cmd
}

type setupAnswer struct {
	SetupToken string `json:"setup_token"`
	SetupURL   string `json:"setup_url"`
	ExpiresIn  string `json:"setup_expires_in"`
}

func usersAddCmd() *cobra.Command {
	var role string
	var pwStdin bool
	cmd := &cobra.Command{
		Use:   "add EMAIL",
		Short: "Add a person; prints a one-time link to set the password",
		Args:  cobra.ExactArgs(1),
	}
	client := serverFlags(cmd)
	cmd.Flags().StringVar(&role, "role", "manager", "manager or admin")
	cmd.Flags().BoolVar(&pwStdin, "password-stdin", false, "set the password now, read from standard input, instead of printing a link")
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
		if err := c.do(cmd.Context(), "POST", "/v1/users", map[string]string{"email": args[0], "role": role}, &out); err != nil {
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
		inert.Fprintf(cmd.OutOrStdout(), "added %s (%s). Send them this link to set a password (valid %s, once):\n\n  %s\n",
			out.User.Email, out.User.Role, out.ExpiresIn, out.SetupURL)
		return nil
	}
	return cmd
}

func usersResetCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "reset EMAIL",
		Short: "Issue a new one-time password link and end the person's sessions",
		Args:  cobra.ExactArgs(1),
	}
	client := serverFlags(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		c, err := client()
		if err != nil {
			return err
		}
		var out setupAnswer
		if err := c.do(cmd.Context(), "POST", "/v1/users/"+url.PathEscape(args[0])+"/reset", map[string]string{}, &out); err != nil {
			return err
		}
		inert.Fprintf(cmd.OutOrStdout(), "link to set a new password (valid %s, once):\n\n  %s\n", out.ExpiresIn, out.SetupURL)
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
		inert.Fprintln(tw, "EMAIL\tROLE\tPASSWORD\tADDED")
		for _, u := range out.Users {
			pw := "set"
			if !u.Set {
				pw = "link pending"
			}
			inert.Fprintf(tw, "%s\t%s\t%s\t%s\n", u.Email, u.Role, pw, u.Created.Local().Format(time.DateOnly))
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
	var pwStdin bool
	cmd := &cobra.Command{
		Use:   "login",
		Short: "Log in as a person and store an API token for the CLI",
		Long: `Log in with your email and password and store an API token for this server in
your user config directory (mode 0600). Later verbs use it when neither
--token nor ARX_ADMIN_TOKEN is given.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if server == "" {
				server = envDefault("ARX_SERVER", DefaultServer)
			}
			server = strings.TrimSuffix(server, "/")
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
			host, _ := os.Hostname()
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
	return cmd
}
