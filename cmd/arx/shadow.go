package main

import (
	"strings"

	"github.com/arxsec/arx/internal/inert"
	"github.com/arxsec/arx/internal/runtime"
	"github.com/spf13/cobra"
)

// Changing a hired agent's job description, and trying one in shadow.

func manifestApplyCmd() *cobra.Command {
	var agent string
	var shadow bool
	cmd := &cobra.Command{
		Use:   "apply FILE --agent NAME [--shadow]",
		Short: "Hold a hired agent to a changed job description, or (--shadow) evaluate it beside the enforced one on every call",
		Long: `Apply FILE to a hired agent, which keeps its id, token and record.

With --shadow nothing enforced changes: every call of the agent is decided
by its job description as before, and also by FILE; where FILE would have
decided otherwise (refused, held for approval, no longer, other drift), a
shadow.differs entry goes into the record. See them with
` + "`arx manifest shadow --agent NAME`" + `, then ` + "`arx manifest promote --agent NAME`" + `
to enforce FILE, or ` + "`arx manifest discard --agent NAME`" + `.

Without --shadow, FILE is enforced from now on (a manifest.changed entry).
Try it first: ` + "`arx manifest replay FILE --agent NAME`" + ` over the record, or
--shadow on live calls.`,
		Args: cobra.ExactArgs(1),
	}
	client := serverFlags(cmd)
	cmd.Flags().StringVar(&agent, "agent", "", "the agent (name or id)")
	cmd.Flags().BoolVar(&shadow, "shadow", false, "evaluate FILE beside the enforced job description without enforcing it")
	cmd.MarkFlagRequired("agent")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		data, err := readManifest(cmd, args[0])
		if err != nil {
			return err
		}
		c, err := client()
		if err != nil {
			return err
		}
		a, err := c.resolveAgent(cmd.Context(), agent)
		if err != nil {
			return err
		}
		var out agentJSON
		if err := c.do(cmd.Context(), "POST", "/v1/agents/"+a.ID+"/manifest", map[string]any{"manifest": string(data), "shadow": shadow}, &out); err != nil {
			return err
		}
		w := cmd.OutOrStdout()
		if shadow {
			inert.Fprintf(w, "%s: %s is evaluated in shadow beside %s on every call; nothing enforced changed.\n", out.Name, short(out.ShadowHash), short(out.ManifestHash))
			inert.Fprintf(w, "See what it would change: arx manifest shadow --agent %s\n", out.Name)
			return nil
		}
		inert.Fprintf(w, "%s is held to %s (%s) from now on.\n", out.Name, args[0], short(out.ManifestHash))
		return nil
	}
	return cmd
}

func short(hash string) string {
	if len(hash) > len("sha256:")+12 {
		return hash[:len("sha256:")+12]
	}
	return hash
}

func manifestShadowCmd() *cobra.Command {
	var agent string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "shadow --agent NAME",
		Short: "Show what the agent's shadow job description would have changed on its calls since it was applied",
		Long: `Count the agent's calls since its shadow job description was applied, and
those the shadow would have decided otherwise, by change, with the latest
examples. Exits 0 when nothing differed, 1 when something did.`,
		Args: cobra.NoArgs,
	}
	client := serverFlags(cmd)
	cmd.Flags().StringVar(&agent, "agent", "", "the agent (name or id)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the report as JSON")
	cmd.MarkFlagRequired("agent")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		c, err := client()
		if err != nil {
			return err
		}
		a, err := c.resolveAgent(cmd.Context(), agent)
		if err != nil {
			return err
		}
		var rep runtime.ShadowReport
		if err := c.do(cmd.Context(), "GET", "/v1/agents/"+a.ID+"/shadow", nil, &rep); err != nil {
			return err
		}
		w := cmd.OutOrStdout()
		if asJSON {
			printJSON(w, rep)
		} else {
			inert.Fprintf(w, "Shadow %s of %s, since %s\n", rep.ManifestHash, a.Name, rep.Since.Local().Format("2006-01-02 15:04"))
			inert.Fprintf(w, "  %d calls decided; the shadow would have decided %d of them otherwise\n", rep.Calls, rep.Differ)
			if rep.Truncated {
				inert.Fprintf(w, "  (counted over the first %d entries since)\n", runtime.ShadowScanMax)
			}
			for _, line := range rep.Summary() {
				inert.Fprintf(w, "  %s\n", line)
			}
			if len(rep.Examples) > 0 {
				inert.Fprintf(w, "\nLatest:\n")
			}
			for _, e := range rep.Examples {
				line := "  " + e.Time.Local().Format("2006-01-02 15:04:05") + "  " + e.Connector + " " + e.Action + ": " + e.Enforced + ", would be " + e.Shadow
				if len(e.Drift) > 0 {
					line += " (drift: " + strings.Join(e.Drift, ", ") + ")"
				}
				inert.Fprintf(w, "%s\n", line)
			}
		}
		if rep.Differ > 0 {
			return exitError{code: 1}
		}
		return nil
	}
	return cmd
}

func manifestPromoteCmd() *cobra.Command {
	var hash string
	cmd := shadowEndCmd("promote --agent NAME [--hash SHA256]", "Enforce the agent's shadow job description from now on", "promote",
		func() any { return map[string]string{"manifest_hash": hash} },
		func(out agentJSON) string {
			return out.Name + " is held to " + short(out.ManifestHash) + " from now on.\n"
		})
	cmd.Flags().StringVar(&hash, "hash", "", "the shadow you reviewed (its sha256:..., as `arx manifest shadow` prints it): refused if another was applied since")
	return cmd
}

func manifestDiscardCmd() *cobra.Command {
	var reason string
	cmd := shadowEndCmd("discard --agent NAME [--reason TEXT]", "Drop the agent's shadow job description; nothing enforced changes", "discard",
		func() any { return map[string]string{"reason": reason} },
		func(out agentJSON) string {
			return out.Name + " has no shadow job description; it is held to " + short(out.ManifestHash) + " as before.\n"
		})
	cmd.Flags().StringVar(&reason, "reason", "", "why, for the record")
	return cmd
}

// shadowEndCmd is promote or discard: POST .../shadow/VERB with body().
func shadowEndCmd(use, summary, verb string, body func() any, done func(agentJSON) string) *cobra.Command {
	var agent string
	cmd := &cobra.Command{Use: use, Short: summary, Args: cobra.NoArgs}
	client := serverFlags(cmd)
	cmd.Flags().StringVar(&agent, "agent", "", "the agent (name or id)")
	cmd.MarkFlagRequired("agent")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		c, err := client()
		if err != nil {
			return err
		}
		a, err := c.resolveAgent(cmd.Context(), agent)
		if err != nil {
			return err
		}
		var out agentJSON
		if err := c.do(cmd.Context(), "POST", "/v1/agents/"+a.ID+"/shadow/"+verb, body(), &out); err != nil {
			return err
		}
		inert.Fprintf(cmd.OutOrStdout(), "%s", done(out))
		return nil
	}
	return cmd
}
