package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/arxsec/arx/internal/connector"
	"github.com/arxsec/arx/internal/connector/connectors"
	"github.com/arxsec/arx/internal/inert"
	"github.com/arxsec/arx/internal/server"
	"github.com/spf13/cobra"
)

// connectorFlags adds --connectors FILE to serve: the systems of record,
// with their secrets resolved from the environment or files at start.
func connectorFlags(cmd *cobra.Command, cfg *server.Config) {
	var file string
	cmd.Flags().StringVar(&file, "connectors", envDefault("ARX_CONNECTORS", ""), "connectors.yaml: the systems of record agents reach through ARX (env ARX_CONNECTORS)")
	run := cmd.RunE
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if file == "" {
			return run(cmd, args)
		}
		cs, err := loadConnectors(file)
		if err != nil {
			return err
		}
		cfg.Connectors = cs
		return run(cmd, args)
	}
}

// loadConnectors parses a connectors file and opens its connectors.
func loadConnectors(file string) ([]connector.Connector, error) {
	cfg, err := parseConnectorsFile(file)
	if err != nil {
		return nil, err
	}
	cs, err := connectors.Open(cfg, resolveSecret)
	if err != nil {
		return nil, withHint(err, "export the variable, or make the file readable by arx; then start again")
	}
	return cs, nil
}

func parseConnectorsFile(file string) (*connector.Config, error) {
	b, err := readLimited(file, connector.MaxConfigSize)
	if err != nil {
		return nil, err
	}
	cfg, err := connector.Parse(b)
	var ce *connector.Error
	if errors.As(err, &ce) {
		ce.File = file
		return nil, withHint(ce, "run `arx connectors lint "+file+"`; the format is in the README, section Connectors")
	}
	return cfg, err
}

func readLimited(file string, limit int64) ([]byte, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s: larger than %d bytes", file, limit)
	}
	return b, nil
}

// resolveSecret reads a secret by its reference. Errors say where it was
// looked for, never what was found.
func resolveSecret(ref connector.SecretRef) (string, error) {
	switch ref.Source {
	case "env":
		v, ok := os.LookupEnv(ref.Name)
		if !ok || strings.TrimSpace(v) == "" {
			return "", fmt.Errorf("environment variable %s is not set", ref.Name)
		}
		return strings.TrimSpace(v), nil
	case "file":
		if err := server.CheckPrivate(ref.Name); err != nil {
			var pe *os.PathError
			if errors.As(err, &pe) {
				return "", fmt.Errorf("cannot read %s: %v", ref.Name, pe.Err)
			}
			return "", err // names the file and the fix, never the value
		}
		b, err := readLimited(ref.Name, 64<<10)
		if err != nil {
			var pe *os.PathError
			if errors.As(err, &pe) {
				return "", fmt.Errorf("cannot read %s: %v", ref.Name, pe.Err)
			}
			return "", fmt.Errorf("cannot read %s", ref.Name)
		}
		v := strings.TrimSpace(string(b))
		if v == "" {
			return "", fmt.Errorf("%s is empty", ref.Name)
		}
		return v, nil
	}
	return "", fmt.Errorf("unknown secret source %q", ref.Source)
}

func connectorsCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "connectors", Short: "The systems of record agents reach through ARX (connectors.yaml)"}
	cmd.AddCommand(connectorsListCmd(), connectorsLintCmd())
	return cmd
}

func connectorsListCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the connectors of the server, with what each action allows (never a secret)",
		Args:  cobra.NoArgs,
	}
	client := serverFlags(cmd)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		c, err := client()
		if err != nil {
			return err
		}
		var out struct {
			Connectors []connector.Info `json:"connectors"`
		}
		if err := c.do(cmd.Context(), "GET", "/v1/connectors", nil, &out); err != nil {
			return err
		}
		if asJSON {
			return printJSON(cmd.OutOrStdout(), out)
		}
		printConnectors(cmd.OutOrStdout(), out.Connectors)
		return nil
	}
	return cmd
}

func printConnectors(w io.Writer, cs []connector.Info) {
	if len(cs) == 0 {
		inert.Fprintln(w, "no connectors configured (start arx serve with --connectors FILE)")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tKIND\tUPSTREAM\tSECRET\tAUTH\tTIMEOUT")
	for _, c := range cs {
		auth := c.Auth
		if auth == "" {
			auth = "-"
		}
		inert.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", c.Name, c.Kind, c.Upstream, c.Secret, auth, c.Timeout)
	}
	tw.Flush()
	for _, c := range cs {
		inert.Fprintf(w, "\n%s:\n", c.Name)
		for _, a := range c.Actions {
			what := append(append([]string{}, a.Allow...), a.Grants...)
			inert.Fprintf(w, "  %-24s %s\n", a.Name, strings.Join(what, "; "))
		}
	}
}

func connectorsLintCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "lint FILE",
		Short: "Check a connectors file; exits 0 when valid, else 1 with FILE:LINE: lines",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := parseConnectorsFile(args[0])
			var ce *connector.Error
			if errors.As(err, &ce) {
				inert.Fprintln(cmd.OutOrStdout(), ce.Error())
				return exitError{code: 1}
			}
			if err != nil {
				return err
			}
			infos := make([]connector.Info, 0, len(cfg.Connectors))
			for i := range cfg.Connectors {
				infos = append(infos, cfg.Connectors[i].Info())
			}
			inert.Fprintf(cmd.OutOrStdout(), "%s: valid\n\n", args[0])
			printConnectors(cmd.OutOrStdout(), infos)
			return nil
		},
	}
}
