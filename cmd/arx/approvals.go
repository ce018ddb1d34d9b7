package main

import (
	"encoding/json"
	"fmt"
	"github.com/arxsec/arx/record"
	"io"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/arxsec/arx/internal/inert"
	"github.com/spf13/cobra"
)

type approvalJSON struct {
	CallID string `json:"call_id"`
	Status string `json:"status"`
	Agent  struct {
		ID   string `json:"id"`
		Name string `json:"name"`
	} `json:"agent"`
	Call struct {
		Connector    string          `json:"connector"`
		Action       string          `json:"action"`
		DeclaredRisk string          `json:"declared_risk"`
		Risk         string          `json:"risk"`
		Summary      string          `json:"summary"`
		Args         json.RawMessage `json:"args"`
		ArgsHash     string          `json:"args_hash"`
	} `json:"call"`
	Approvers   []string   `json:"approvers"`
	RequestedAt time.Time  `json:"requested_at"`
	ExpiresAt   time.Time  `json:"expires_at"`
	DecidedBy   string     `json:"decided_by"`
	DecidedAt   *time.Time `json:"decided_at"`
	Reason      string     `json:"reason"`
}

func approvalsCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "approvals", Short: "List and decide approvals of high-risk calls"}
	cmd.AddCommand(approvalsListCmd(), approvalsShowCmd(), approvalsDecideCmd(true), approvalsDecideCmd(false))
	return cmd
}

func approvalsListCmd() *cobra.Command {
	var status string
	var asJSON bool
	cmd := &cobra.Command{Use: "list", Short: "List approvals (pending by default)", Args: cobra.NoArgs}
	client := serverFlags(cmd)
	cmd.Flags().StringVar(&status, "status", "pending", "pending, granted, denied, expired, withdrawn, cancelled, or all")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		c, err := client()
		if err != nil {
			return err
		}
		q := url.Values{}
		if status != "all" {
			q.Set("status", status)
		}
		var out struct {
			Approvals []approvalJSON `json:"approvals"`
		}
		if err := c.do(cmd.Context(), "GET", "/v1/approvals?"+q.Encode(), nil, &out); err != nil {
			return err
		}
		if asJSON {
			return printJSON(cmd.OutOrStdout(), out)
		}
		tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "CALL\tAGENT\tCONNECTOR\tACTION\tRISK\tSTATUS\tTIME LEFT\tSUMMARY")
		now := time.Now()
		for _, a := range out.Approvals {
			left := "-"
			if a.Status == "pending" {
				left = a.ExpiresAt.Sub(now).Round(time.Second).String()
			}
			inert.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", a.CallID, a.Agent.Name, a.Call.Connector, a.Call.Action, a.Call.Risk, a.Status, left, a.Call.Summary)
		}
		return tw.Flush()
	}
	return cmd
}

func approvalsShowCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{Use: "show CALL", Short: "Show one approval", Args: cobra.ExactArgs(1)}
	client := serverFlags(cmd)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		c, err := client()
		if err != nil {
			return err
		}
		var a approvalJSON
		if err := c.do(cmd.Context(), "GET", "/v1/approvals/"+url.PathEscape(args[0]), nil, &a); err != nil {
			return err
		}
		if asJSON {
			return printJSON(cmd.OutOrStdout(), a)
		}
		printApproval(cmd, &a)
		return nil
	}
	return cmd
}

func printApproval(cmd *cobra.Command, a *approvalJSON) {
	w := cmd.OutOrStdout()
	inert.Fprintf(w, "call       %s\nagent      %s (%s)\naction     %s %s\nrisk       %s (declared %s)\nsummary    %s\napprovers  %v\nstatus     %s\n",
		a.CallID, a.Agent.Name, a.Agent.ID, a.Call.Connector, a.Call.Action, a.Call.Risk, a.Call.DeclaredRisk, a.Call.Summary, a.Approvers, a.Status)
	switch {
	case len(a.Call.Args) > 0:
		inert.Fprintf(w, "arguments  %s\n", a.Call.Args)
	case a.Call.ArgsHash != "":
		inert.Fprintf(w, "arguments  kept as their SHA-256 only: %s\n", a.Call.ArgsHash)
	}
	if a.Status == "pending" {
		inert.Fprintf(w, "expires    %s (in %s)\n", a.ExpiresAt.Local().Format(time.DateTime), time.Until(a.ExpiresAt).Round(time.Second))
	} else if a.DecidedAt != nil {
		inert.Fprintf(w, "decided    %s by %s\nreason     %s\n", a.DecidedAt.Local().Format(time.DateTime), a.DecidedBy, a.Reason)
	}
}

func approvalsDecideCmd(grant bool) *cobra.Command {
	verb, short := "approve", "Approve a pending call; the agent's waiting call resumes at once"
	if !grant {
		verb, short = "deny", "Deny a pending call; the agent's call fails with call.denied"
	}
	var reason string
	cmd := &cobra.Command{Use: verb + " CALL", Short: short, Args: cobra.ExactArgs(1)}
	client := serverFlags(cmd)
	cmd.Flags().StringVar(&reason, "reason", "", "why (required to deny); recorded in the agent's personnel record")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		c, err := client()
		if err != nil {
			return err
		}
		var a approvalJSON
		if err := c.do(cmd.Context(), "POST", "/v1/approvals/"+url.PathEscape(args[0])+"/"+verb, map[string]string{"reason": reason}, &a); err != nil {
			return err
		}
		printApproval(cmd, &a)
		return nil
	}
	return cmd
}

func terminateCmd() *cobra.Command {
	var reason, receiptFile string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "terminate AGENT --reason TEXT",
		Short: "Terminate an agent: its tokens, credentials and pending approvals end at once, everywhere",
		Args:  cobra.ExactArgs(1),
	}
	client := serverFlags(cmd)
	cmd.Flags().StringVar(&reason, "reason", "", "why (required); recorded in the agent's personnel record")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the server's answer, receipt included, as JSON")
	cmd.Flags().StringVar(&receiptFile, "receipt", "", "write the receipt, signed with the log key, to this file (check it with arx audit receipt FILE --log-key KEY)")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		c, err := client()
		if err != nil {
			return err
		}
		a, err := c.resolveAgent(cmd.Context(), args[0])
		if err != nil {
			return err
		}
		var raw json.RawMessage
		var out struct {
			Receipt *struct {
				Index       int64                `json:"index"`
				Confirmed   []record.ReceiptItem `json:"confirmed"`
				Unconfirmed []record.ReceiptItem `json:"unconfirmed"`
				Note        string               `json:"note"`
			} `json:"receipt"`
			Tokens      int `json:"revoked_tokens"`
			Credentials int `json:"revoked_credentials"`
			Approvals   int `json:"cancelled_approvals"`
			Notices     []struct {
				To  string   `json:"to"`
				Via []string `json:"via"`
			} `json:"notices"`
		}
		if err := c.do(cmd.Context(), "POST", "/v1/agents/"+a.ID+"/terminate", map[string]string{"reason": reason}, &raw); err != nil {
			return err
		}
		if err := json.Unmarshal(raw, &out); err != nil {
			return fmt.Errorf("the server's answer does not read: %w", err)
		}
		w := cmd.OutOrStdout()
		if receiptFile != "" && out.Receipt != nil && out.Receipt.Note != "" {
			if err := os.WriteFile(receiptFile, []byte(out.Receipt.Note), 0o644); err != nil {
				return err
			}
		}
		if asJSON {
			var v any
			json.Unmarshal(raw, &v)
			enc := json.NewEncoder(w)
			enc.SetIndent("", "  ")
			return enc.Encode(v)
		}
		inert.Fprintf(w, "terminated %s (%s): %d token(s), %d live credential(s) revoked, %d pending approval(s) cancelled\n",
			a.Name, a.ID, out.Tokens, out.Credentials, out.Approvals)
		// Who is told, and how: said plainly when nobody can be.
		for _, n := range out.Notices {
			if len(n.Via) == 0 {
				inert.Fprintf(w, "not told: %s (this server has no webhook to reach people: arx serve --webhook or --slack-webhook); recorded as undeliverable\n", n.To)
				continue
			}
			inert.Fprintf(w, "telling %s via %s (each delivery is recorded as termination.notified)\n", n.To, strings.Join(n.Via, " and "))
		}
		if len(out.Notices) == 0 {
			fmt.Fprintln(w, "nobody is told: the job description's termination.notify names no one")
		}
		if rc := out.Receipt; rc != nil {
			inert.Fprintf(w, "receipt (record entry %d, signed with the log key%s):\n", rc.Index, map[bool]string{true: ", saved to " + receiptFile, false: ""}[receiptFile != ""])
			printReceiptItems(w, rc.Confirmed, rc.Unconfirmed)
		}
		return nil
	}
	return cmd
}

// printReceiptItems prints a termination receipt's lines: what was
// confirmed, and when; what was not, and why.
func printReceiptItems(w io.Writer, confirmed, unconfirmed []record.ReceiptItem) {
	for _, it := range confirmed {
		inert.Fprintf(w, "  confirmed    %s\n", receiptLine(it))
	}
	for _, it := range unconfirmed {
		inert.Fprintf(w, "  unconfirmed  %s\n", receiptLine(it))
	}
}

func receiptLine(i record.ReceiptItem) string {
	s := strings.ReplaceAll(i.What, "_", " ")
	if i.Connector != "" {
		s += " on " + i.Connector
	}
	switch {
	case i.Detail != "":
		s += ": " + i.Detail
	case i.Why == "":
		s += fmt.Sprintf(": %d", i.Count)
	}
	if !i.At.IsZero() {
		s += " at " + i.At.Local().Format("15:04:05.000")
	}
	if i.Why != "" {
		s += " (" + i.Why + ")"
	}
	return s
}
