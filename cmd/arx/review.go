package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/arxsec/arx/internal/inert"
	"github.com/spf13/cobra"
)

type reviewJSON struct {
	From      time.Time      `json:"from"`
	To        time.Time      `json:"to"`
	Calls     int            `json:"calls"`
	Outcomes  map[string]int `json:"outcomes"`
	Approvals map[string]int `json:"approvals"`
	ByAction  []struct {
		Connector string `json:"connector"`
		Action    string `json:"action"`
		Calls     int    `json:"calls"`
		Failed    int    `json:"failed"`
		Refused   int    `json:"refused"`
	} `json:"by_action"`
	PerDay []struct {
		Day   string `json:"day"`
		Calls int    `json:"calls"`
		Drift int    `json:"drift"`
	} `json:"per_day"`
	Drift []struct {
		Index     int64          `json:"index"`
		Time      time.Time      `json:"time"`
		Rule      string         `json:"rule"`
		Policy    string         `json:"policy"`
		Facts     map[string]any `json:"facts"`
		Connector string         `json:"connector"`
		Action    string         `json:"action"`
		Ack       *struct {
			By   string `json:"by"`
			Note string `json:"note"`
		} `json:"acknowledged"`
	} `json:"drift"`
	DriftBy map[string]int `json:"drift_by_rule"`
}

func agentsReviewCmd() *cobra.Command {
	var days int
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "review AGENT",
		Short: "An agent's performance review: calls, outcomes, approvals and drift against its job description",
		Args:  cobra.ExactArgs(1),
	}
	client := serverFlags(cmd)
	cmd.Flags().IntVar(&days, "days", 7, "how many days back")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		c, err := client()
		if err != nil {
			return err
		}
		a, err := c.resolveAgent(cmd.Context(), args[0])
		if err != nil {
			return err
		}
		var out struct {
			Review json.RawMessage `json:"review"`
		}
		if err := c.do(cmd.Context(), "GET", fmt.Sprintf("/v1/agents/%s/review?days=%d", a.ID, days), nil, &out); err != nil {
			return err
		}
		if asJSON {
			_, err := fmt.Fprintf(cmd.OutOrStdout(), "%s\n", out.Review) // JSON: exact
			return err
		}
		var rv reviewJSON
		if err := json.Unmarshal(out.Review, &rv); err != nil {
			return err
		}
		printReview(cmd, a, &rv)
		return nil
	}
	return cmd
}

func printReview(cmd *cobra.Command, a *agentJSON, rv *reviewJSON) {
	w := cmd.OutOrStdout()
	inert.Fprintf(w, "Performance review of %s (%s), owner %s, %s\n%s to %s\n\n", a.Name, a.ID, a.Owner, a.Status,
		rv.From.Local().Format(time.DateOnly), rv.To.Local().Format(time.DateOnly))
	inert.Fprintf(w, "Calls      %d  (%s)\n", rv.Calls, counts(rv.Outcomes))
	inert.Fprintf(w, "Approvals  %s\n", dash(counts(rv.Approvals)))
	inert.Fprintf(w, "Drift      %d event(s)  %s\n\n", len(rv.Drift), counts(rv.DriftBy))
	maxCalls := 1
	for _, d := range rv.PerDay {
		maxCalls = max(maxCalls, d.Calls)
	}
	inert.Fprintln(w, "Calls per day")
	for _, d := range rv.PerDay {
		bar := strings.Repeat("█", (d.Calls*40+maxCalls-1)/maxCalls)
		drift := ""
		if d.Drift > 0 {
			drift = fmt.Sprintf("  %d drift", d.Drift)
		}
		inert.Fprintf(w, "  %s %-40s %d%s\n", d.Day, bar, d.Calls, drift)
	}
	if len(rv.ByAction) > 0 {
		fmt.Fprintln(w, "\nBy connector and action")
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "  CONNECTOR\tACTION\tCALLS\tFAILED\tREFUSED")
		for _, s := range rv.ByAction {
			inert.Fprintf(tw, "  %s\t%s\t%d\t%d\t%d\n", s.Connector, s.Action, s.Calls, s.Failed, s.Refused)
		}
		tw.Flush()
	}
	if len(rv.Drift) > 0 {
		fmt.Fprintln(w, "\nDrift (newest first; acknowledge with `arx agents ack AGENT INDEX --note ...`)")
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "  INDEX\tTIME\tRULE\tCALL\tFACTS\tACKNOWLEDGED")
		for _, d := range rv.Drift {
			ack := "-"
			if d.Ack != nil {
				ack = d.Ack.By + ": " + d.Ack.Note
			}
			inert.Fprintf(tw, "  %d\t%s\t%s\t%s %s\t%s\t%s\n", d.Index, d.Time.Local().Format("01-02 15:04"), d.Rule,
				dash(d.Connector), d.Action, details(d.Facts), ack)
		}
		tw.Flush()
	}
}

func counts(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
	}
	return strings.Join(parts, ", ")
}

func agentsAckCmd() *cobra.Command {
	var note string
	var all bool
	var days int
	cmd := &cobra.Command{
		Use:   "ack AGENT (INDEX | --all) --note TEXT",
		Short: "Acknowledge a drift event, or every unacknowledged one of the review window, with a note",
		Args:  cobra.RangeArgs(1, 2),
	}
	client := serverFlags(cmd)
	cmd.Flags().StringVar(&note, "note", "", "what was done about it (required)")
	cmd.Flags().BoolVar(&all, "all", false, "acknowledge every drift event of the last --days not acknowledged yet")
	cmd.Flags().IntVar(&days, "days", 7, "with --all: how many days back")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if all == (len(args) == 2) {
			return withHint(errors.New("name one drift event by its INDEX, or pass --all"), "take the INDEX column of `arx agents review AGENT`")
		}
		c, err := client()
		if err != nil {
			return err
		}
		a, err := c.resolveAgent(cmd.Context(), args[0])
		if err != nil {
			return err
		}
		if all {
			var out struct {
				Acknowledged int `json:"acknowledged"`
			}
			if err := c.do(cmd.Context(), "POST", "/v1/agents/"+a.ID+"/drift/ack", map[string]any{"note": note, "days": days}, &out); err != nil {
				return err
			}
			inert.Fprintf(cmd.OutOrStdout(), "acknowledged %d drift event%s of %s\n", out.Acknowledged, plural(out.Acknowledged), a.Name)
			return nil
		}
		if _, err := strconv.ParseInt(args[1], 10, 64); err != nil {
			return withHint(fmt.Errorf("index %q is not a number", args[1]), "take the INDEX column of `arx agents review AGENT`")
		}
		if err := c.do(cmd.Context(), "POST", "/v1/agents/"+a.ID+"/drift/"+args[1]+"/ack", map[string]string{"note": note}, nil); err != nil {
			return err
		}
		inert.Fprintf(cmd.OutOrStdout(), "acknowledged drift event %s of %s\n", args[1], a.Name)
		return nil
	}
	return cmd
}

// plural is "s" unless n is 1.
func plural[N int | int64](n N) string {
	if n == 1 {
		return ""
	}
	return "s"
}
