package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/arxsec/arx/arxerr"
	"github.com/arxsec/arx/internal/agentrun"
	"github.com/arxsec/arx/internal/inert"
	"github.com/arxsec/arx/manifest"
	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"
)

func hireCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "hire FILE",
		Short: "Hire an agent from its job description; prints its id, token and ARX's URL as export lines",
		Long: `Hire an agent from its manifests/job_description.yaml. Prints three export
lines, so that eval "$(arx hire FILE)" sets ARX_AGENT_ID, ARX_TOKEN and
ARX_BASE_URL (the API of the server that hired it). The token is shown once;
ARX keeps only its hash.

A name already on staff is refused (agent.name_taken); --replace terminates
the agent on staff and hires the new one in one step, both or neither.`,
		Args: cobra.ExactArgs(1),
	}
	client := serverFlags(cmd)
	replace := cmd.Flags().Bool("replace", false, "terminate the agent on staff with the same name, in the same step")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		data, err := readManifest(cmd, args[0])
		if err != nil {
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
		if err := c.do(cmd.Context(), "POST", "/v1/agents", map[string]any{"manifest": string(data), "replace": *replace}, &out); err != nil {
			return err
		}
		inert.Fprintf(cmd.OutOrStdout(), "export ARX_AGENT_ID=%s\nexport ARX_TOKEN=%s\nexport ARX_BASE_URL=%s\n", out.Agent.ID, out.Token, c.server+"/v1")
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
		fmt.Fprintln(tw, "ID\tNAME\tOWNER\tSTATUS\tHIRED")
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
ARX_BASE_URL and a fresh token of its own in ARX_TOKEN. The process gets only
PATH, HOME, the locale (LANG, LANGUAGE, LC_*), TZ and TERM from this shell, and
what --env names: never ARX_ADMIN_TOKEN, connector secrets or cloud keys. It
runs in a process group of its own; when the agent is terminated, the group
gets SIGTERM, then SIGKILL after --grace, and the record says so. The token is
revoked when the process exits.`,
		Args: cobra.MinimumNArgs(2),
	}
	client := serverFlags(cmd)
	extra := cmd.Flags().StringArray("env", nil, "pass this variable of the current environment to the agent too (repeatable)")
	grace := cmd.Flags().Duration("grace", 10*time.Second, "time the agent's processes have after SIGTERM on termination, before SIGKILL")
	dataDir := cmd.Flags().String("data", "./arx-data", "arx serve's data directory, to warn when the agent could read it")
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
		path, err := exec.LookPath(args[1])
		if err != nil {
			return err
		}
		// The agent runs as this user: it can read what this user can.
		secrets := []string{filepath.Join(*dataDir, "admin.token"), filepath.Join(*dataDir, "log.key"), filepath.Join(*dataDir, "credential.key")}
		if p, err := credentialsPath(); err == nil {
			secrets = append(secrets, p)
		}
		for _, p := range agentrun.Readable(secrets...) {
			inert.Fprintf(cmd.ErrOrStderr(), "arx: warning: the agent runs as your user and can read %s; run it as a user of its own\n", p)
		}
		var tok struct {
			TokenID string `json:"token_id"`
			Token   string `json:"token"`
		}
		if err := c.do(cmd.Context(), "POST", "/v1/agents/"+a.ID+"/tokens", map[string]string{"label": "arx run"}, &tok); err != nil {
			return err
		}
		env, err := agentrun.Env(os.Environ(), *extra, map[string]string{"ARX_AGENT_ID": a.ID, "ARX_BASE_URL": c.server + "/v1", "ARX_TOKEN": tok.Token})
		if err == nil {
			var res agentrun.Result
			res, err = agentrun.Run(cmd.Context(), agentrun.Config{Path: path, Args: args[2:], Env: env,
				Stdin: cmd.InOrStdin(), Stdout: cmd.OutOrStdout(), Stderr: cmd.ErrOrStderr(), Grace: *grace,
				Terminated: func(ctx context.Context) (bool, error) {
					var cur agentJSON
					if err := c.do(ctx, "GET", "/v1/agents/"+a.ID, nil, &cur); err != nil {
						return false, err
					}
					return cur.Status == "terminated", nil
				},
				Warn: func(format string, args ...any) {
					inert.Fprintf(cmd.ErrOrStderr(), "arx: warning: "+format+"\n", args...)
				}})
			if err == nil && res.Stopped {
				inert.Fprintf(cmd.ErrOrStderr(), "arx: agent %s was terminated: its processes were stopped (%s, %s)\n", a.Name,
					unix.SignalName(res.Signal), res.Took.Round(time.Millisecond))
				stop := map[string]any{"pid": res.Pid, "signal": unix.SignalName(res.Signal), "took_ms": res.Took.Milliseconds(), "token_id": tok.TokenID}
				if rerr := c.do(context.WithoutCancel(cmd.Context()), "POST", "/v1/agents/"+a.ID+"/process-stopped", stop, nil); rerr != nil {
					inert.Fprintf(cmd.ErrOrStderr(), "arx: warning: could not record that the processes were stopped: %v\n", rerr)
				}
				err = exitError{code: 1}
			} else if err == nil && res.Exit != 0 {
				err = exitError{code: res.Exit}
			}
		}
		if rerr := c.do(context.WithoutCancel(cmd.Context()), "DELETE", "/v1/agents/"+a.ID+"/tokens/"+tok.TokenID, nil, nil); rerr != nil {
			var ae *arxerr.Error
			if !errors.As(rerr, &ae) || ae.Code != arxerr.AgentTerminated {
				inert.Fprintf(cmd.ErrOrStderr(), "arx: warning: could not revoke the run token %s: %v\n", tok.TokenID, rerr)
			}
		}
		return err
	}
	return cmd
}

// readManifest reads a job description file and lints it locally first
// (the server's parser, with the file's name in the problems).
func readManifest(cmd *cobra.Command, path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if _, err := manifest.ParseFile(path); err != nil {
		var me *manifest.Error
		if errors.As(err, &me) {
			fmt.Fprint(cmd.ErrOrStderr(), me.Error()+"\n")
			return nil, withHint(errors.New("the manifest is not valid"), "run `arx manifest lint "+path+"`")
		}
		return nil, err
	}
	return data, nil
}
