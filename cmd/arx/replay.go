package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/arxsec/arx/internal/inert"
	"github.com/arxsec/arx/internal/runtime"
	"github.com/arxsec/arx/manifest"
	"github.com/arxsec/arx/record"
	"github.com/spf13/cobra"
)

func manifestReplayCmd() *cobra.Command {
	var agent, since string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "replay FILE --agent NAME",
		Short: "Try a changed job description against what the agent actually did: which calls would be refused, held for approval, or drift",
		Long: `Read the agent's personnel record from the server and decide every call in
it again under FILE, by the rules the runtime applies (scope, risk, active
hours, budgets, on_drift), with the agent's counts and open calls as they
were at that moment. Print what would have gone otherwise: calls that would
be refused, would wait for an approver, would no longer, or would be drift
by another rule, counted per action, with the first examples.

Exits 0 when nothing would change, 1 when something would, 2 when the
replay could not be made.`,
		Args: cobra.ExactArgs(1),
	}
	client := serverFlags(cmd)
	cmd.Flags().StringVar(&agent, "agent", "", "the agent whose record to replay (name or id)")
	cmd.Flags().StringVar(&since, "since", "30d", "how far back: a number of days (30d), a duration (12h), a date (2026-11-01), or all")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the report as JSON")
	cmd.MarkFlagRequired("agent")
	cmd.RunE = func(cmd *cobra.Command, args []string) (err error) {
		defer func() {
			var ee exitError
			if err != nil && !errors.As(err, &ee) {
				err = errorCode{code: 2, err: err} // 1 says "something would change"
			}
		}()
		m, err := manifest.ParseFile(args[0])
		if err != nil {
			return err
		}
		data, err := os.ReadFile(args[0])
		if err != nil {
			return err
		}
		from, err := parseSince(since, time.Now())
		if err != nil {
			return withHint(err, "use 30d, 12h, 2026-11-01 or all")
		}
		c, err := client()
		if err != nil {
			return err
		}
		a, err := c.resolveAgent(cmd.Context(), agent)
		if err != nil {
			return err
		}
		r := &runtime.Replayer{M: m, Since: from}
		err = c.eachRecordEntry(cmd.Context(), a.ID, func(pe recordEntry) error {
			e, err := record.Parse(pe.Entry)
			if err != nil {
				return fmt.Errorf("entry %d of the record does not parse: %w", pe.Index, err)
			}
			r.Add(e)
			return nil
		})
		if err != nil {
			return err
		}
		rep := r.Report()
		out := cmd.OutOrStdout()
		if asJSON {
			enc := json.NewEncoder(out)
			enc.SetIndent("", "  ")
			enc.Encode(struct {
				Agent    string `json:"agent"`
				File     string `json:"file"`
				Manifest string `json:"manifest_hash"`
				*runtime.ReplayReport
			}{a.Name, args[0], manifest.Hash(data), rep})
		} else {
			printReplay(cmd, a.Name, args[0], since, rep)
		}
		if rep.Changed > 0 {
			return exitError{code: 1}
		}
		return nil
	}
	return cmd
}

func printReplay(cmd *cobra.Command, agent, file, since string, rep *runtime.ReplayReport) {
	out := cmd.OutOrStdout()
	window := "its whole record"
	if !rep.Since.IsZero() {
		window = "calls since " + rep.Since.Local().Format("2006-01-02 15:04") + " (" + since + ")"
	}
	inert.Fprintf(out, "Replaying %s against %s's record: %s\n", file, agent, window)
	inert.Fprintf(out, "  %d calls decided again", rep.Calls)
	if rep.NotReplay > 0 {
		inert.Fprintf(out, " (%d more were refused for reasons a job description does not decide, and left out)", rep.NotReplay)
	}
	inert.Fprintln(out)
	if rep.Changed == 0 {
		inert.Fprintf(out, "\nNothing would change: every call would be decided as it was.\n")
		return
	}
	inert.Fprintf(out, "\n%d of them would have gone otherwise:\n", rep.Changed)
	for _, line := range rep.Summary() {
		inert.Fprintf(out, "  %s\n", line)
	}
	inert.Fprintf(out, "\nFirst examples:\n")
	for _, x := range rep.Examples {
		drift := ""
		if len(x.Drift) > 0 {
			drift = "; drift: " + strings.Join(x.Drift, ", ")
		}
		inert.Fprintf(out, "  %s  call %s  %s %s: %s -> %s%s\n", x.Time.Local().Format("2006-01-02 15:04:05"), x.Call,
			x.Connector, x.Action, x.Was, x.Would, drift)
	}
}

// parseSince reads --since: Nd days, a Go duration, a date, or "all".
func parseSince(s string, now time.Time) (time.Time, error) {
	s = strings.TrimSpace(s)
	switch {
	case s == "all" || s == "":
		return time.Time{}, nil
	case strings.HasSuffix(s, "d"):
		n, err := strconv.Atoi(strings.TrimSuffix(s, "d"))
		if err != nil || n < 0 || n > 36500 {
			return time.Time{}, fmt.Errorf("--since %q is not a number of days", s)
		}
		return now.AddDate(0, 0, -n), nil
	}
	if d, err := time.ParseDuration(s); err == nil {
		if d < 0 {
			return time.Time{}, errors.New("--since must not be negative")
		}
		return now.Add(-d), nil
	}
	if t, err := time.ParseInLocation(time.DateOnly, s, time.Local); err == nil {
		return t, nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("--since %q is not a number of days, a duration, a date or all", s)
}
