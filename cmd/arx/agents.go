package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/arxsec/arx/internal/inert"
	"github.com/arxsec/arx/manifest"
	"github.com/spf13/cobra"
)

func hireCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "hire FILE",
		Short: "Hire an agent from its job description; prints its id and token as export lines",
		Long: `Hire an agent from its manifests/job_description.yaml. Prints exactly two lines,
so that eval "$(arx hire FILE)" sets ARX_AGENT_ID and ARX_TOKEN. The token is
shown once; ARX keeps only its hash.`,
		Args: cobra.ExactArgs(1),
	}
	client := serverFlags(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		data, err := os.ReadFile(args[0])
		if err != nil {
			return err
		}
		// Lint locally first: the same parser, with the file's name in the problems.
		if _, err := manifest.ParseFile(args[0]); err != nil {
			var me *manifest.Error
			if errors.As(err, &me) {
				fmt.Fprint(cmd.ErrOrStderr(), me.Error()+"\n")
				return withHint(errors.New("the manifest is not valid"), "run `arx manifest lint "+args[0]+"`")
			}
			return err
		}
		c, err := client()
		if err != nil {
			return err
		}
		var out struct {
			Agent agentJSON `json:"agent"`
			Token string    `json:"token"`
		}
		if err := c.do(cmd.Context(), "POST", "/v1/agents", map[string]string{"manifest": string(data)}, &out); err != nil {
			return err
		}
		inert.Fprintf(cmd.OutOrStdout(), "export ARX_AGENT_ID=%s\nexport ARX_TOKEN=%s\n", out.Agent.ID, out.Token)
		return nil
	}
	return cmd
}

func agentsCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "agents",
		Short: "List the agents on staff",
		Args:  cobra.NoArgs,
	}
	client := serverFlags(cmd)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.AddCommand(agentsReviewCmd(), agentsAckCmd())
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		c, err := client()
		if err != nil {
			return err
		}
		var list struct {
			Agents []agentJSON `json:"agents"`
		}
		if err := c.do(cmd.Context(), "GET", "/v1/agents", nil, &list); err != nil {
			return err
		}
		if asJSON {
			enc := json.NewEncoder(cmd.OutOrStdout())
			enc.SetIndent("", "  ")
			return enc.Encode(list)
		}
		tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
		inert.Fprintln(tw, "ID\tNAME\tOWNER\tSTATUS\tHIRED")
		for _, a := range list.Agents {
			inert.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", a.ID, a.Name, a.Owner, a.Status, a.CreatedAt.Local().Format(time.DateTime))
		}
		return tw.Flush()
	}
	return cmd
}

func runCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "run AGENT -- COMMAND [ARG...]",
		Short: "Start an agent process with a token of its own",
		Long: `Start COMMAND as the agent AGENT (an id, or a name), with ARX_AGENT_ID,
ARX_BASE_URL and a fresh token of its own in ARX_TOKEN. The token is revoked
when the process exits, and dies with the agent's termination.`,
		Args: cobra.MinimumNArgs(2),
	}
	client := serverFlags(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if cmd.ArgsLenAtDash() != 1 {
			return withHint(errors.New("name the agent, then the command after --"), "arx run AGENT -- COMMAND [ARG...]")
		}
		c, err := client()
		if err != nil {
			return err
		}
		a, err := c.resolveAgent(cmd.Context(), args[0])
		if err != nil {
			return err
		}
		var tok struct {
			TokenID string `json:"token_id"`
			Token   string `json:"token"`
		}
		if err := c.do(cmd.Context(), "POST", "/v1/agents/"+a.ID+"/tokens", map[string]string{"label": "arx run"}, &tok); err != nil {
			return err
		}
		defer func() {
			if err := c.do(cmd.Context(), "DELETE", "/v1/agents/"+a.ID+"/tokens/"+tok.TokenID, nil, nil); err != nil {
				inert.Fprintf(cmd.ErrOrStderr(), "arx: warning: could not revoke the run token %s: %v\n", tok.TokenID, err)
			}
		}()
		child := exec.CommandContext(cmd.Context(), args[1], args[2:]...)
		child.Stdin, child.Stdout, child.Stderr = cmd.InOrStdin(), cmd.OutOrStdout(), cmd.ErrOrStderr()
		child.Env = append(os.Environ(), "ARX_AGENT_ID="+a.ID, "ARX_BASE_URL="+c.server+"/v1", "ARX_TOKEN="+tok.Token)
		child.Env = withoutEnv(child.Env, "ARX_ADMIN_TOKEN") // the agent never sees the operator's token
		sigs := make(chan os.Signal, 1)
		signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
		defer signal.Stop(sigs)
		if err := child.Start(); err != nil {
			return err
		}
		go func() {
			for s := range sigs {
				child.Process.Signal(s)
			}
		}()
		err = child.Wait()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return exitError{code: ee.ExitCode()}
		}
		return err
	}
	return cmd
}

// withoutEnv drops a variable from an environment list (the last value of
// a name wins in exec, so all are removed).
func withoutEnv(env []string, name string) []string {
	out := env[:0:0]
	for _, kv := range env {
		if len(kv) > len(name) && kv[:len(name)+1] == name+"=" {
			continue
		}
		out = append(out, kv)
	}
	return out
}
