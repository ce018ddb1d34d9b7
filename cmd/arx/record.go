package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"unicode/utf8"

	"github.com/arxsec/arx/internal/inert"
	"github.com/arxsec/arx/record"
	"github.com/arxsec/arx/record/passkeys"
	"github.com/spf13/cobra"
	"golang.org/x/term"
)

func recordCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "record", Short: "Show and verify personnel records"}
	cmd.AddCommand(recordShowCmd(), recordVerifyCmd(), recordImportCmd())
	return cmd
}

type recordPage struct {
	Entries []recordEntry `json:"entries"`
	Next    *int64        `json:"next"`
}

type recordEntry struct {
	Index    int64           `json:"index"`
	LeafHash string          `json:"leaf_hash"`
	Entry    json.RawMessage `json:"entry"`
}

// eachRecordEntry calls fn with each entry of an agent's record, oldest
// first, a page of a thousand at a time.
func (c *apiClient) eachRecordEntry(ctx context.Context, agentID string, fn func(recordEntry) error) error {
	after := int64(-1)
	for {
		var page recordPage
		if err := c.do(ctx, "GET", fmt.Sprintf("/v1/agents/%s/record?after=%d&limit=1000", agentID, after), nil, &page); err != nil {
			return err
		}
		for _, pe := range page.Entries {
			if err := fn(pe); err != nil {
				return err
			}
		}
		if page.Next == nil {
			return nil
		}
		after = *page.Next
	}
}

func recordShowCmd() *cobra.Command {
	var asJSON, wide bool
	cmd := &cobra.Command{
		Use:   "show AGENT",
		Short: "Show an agent's personnel record, oldest first",
		Args:  cobra.ExactArgs(1),
	}
	client := serverFlags(cmd)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one canonical entry per line (JSON Lines)")
	cmd.Flags().BoolVar(&wide, "wide", false, "print whole lines, however wide (on a terminal, lines are cut to its width)")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		c, err := client()
		if err != nil {
			return err
		}
		a, err := c.resolveAgent(cmd.Context(), args[0])
		if err != nil {
			return err
		}
		out := cmd.OutOrStdout()
		text := out // where the table goes: cut to the terminal's width, unless --wide
		if w := terminalWidth(out); w > 0 && !wide && !asJSON {
			cw := &clipWriter{w: out, width: w}
			defer cw.Flush()
			text = cw
		}
		tw := tabwriter.NewWriter(text, 0, 4, 2, ' ', 0)
		if !asJSON {
			inert.Fprintf(text, "Personnel record of %s (%s), owner %s, %s\n\n", a.Name, a.ID, a.Owner, a.Status)
			fmt.Fprintln(tw, "INDEX\tTIME\tTYPE\tCONNECTOR\tACTION\tRISK\tACTOR\tDETAILS")
		}
		err = c.eachRecordEntry(cmd.Context(), a.ID, func(pe recordEntry) error {
			if asJSON {
				fmt.Fprintf(out, "%s\n", pe.Entry) // JSON: exact
				return nil
			}
			e, err := record.Parse(pe.Entry)
			if err != nil {
				inert.Fprintf(tw, "%d\t\t(unreadable: %v)\n", pe.Index, err)
				return nil
			}
			inert.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", e.Index, e.Time.Local().Format("2006-01-02 15:04:05.000"),
				e.Type, dash(e.Connector), dash(e.Action), dash(e.Risk), e.Actor, details(e.Data))
			return nil
		})
		if err != nil {
			return err
		}
		if asJSON {
			return nil
		}
		return tw.Flush()
	}
	return cmd
}

// terminalWidth is the width to cut lines to: the terminal's when out is
// one, else $COLUMNS when set; 0 when lines are not cut (a pipe, a file).
func terminalWidth(out io.Writer) int {
	if f, ok := out.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		if w, _, err := term.GetSize(int(f.Fd())); err == nil && w > 20 {
			return w
		}
	}
	if n, err := strconv.Atoi(os.Getenv("COLUMNS")); err == nil && n > 20 {
		return n
	}
	return 0
}

// clipWriter cuts each line to width characters, marking a cut with "…".
type clipWriter struct {
	w     io.Writer
	width int
	line  []byte
}

func (c *clipWriter) Write(p []byte) (int, error) {
	for _, b := range p {
		if b != '\n' {
			c.line = append(c.line, b)
			continue
		}
		if err := c.Flush(); err != nil {
			return 0, err
		}
		if _, err := c.w.Write([]byte{'\n'}); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

// Flush writes the line held, cut.
func (c *clipWriter) Flush() error {
	line := string(c.line)
	c.line = c.line[:0]
	if utf8.RuneCountInString(line) > c.width {
		line = strings.TrimRight(string([]rune(line)[:c.width-1]), " ") + "…"
	}
	_, err := io.WriteString(c.w, line)
	return err
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// details renders an entry's data as key=value pairs, short values only.
func details(d map[string]any) string {
	keys := make([]string, 0, len(d))
	for k, v := range d {
		if s, ok := v.(string); ok && s == "" {
			continue
		}
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		v := fmt.Sprint(d[k])
		if b, err := json.Marshal(d[k]); err == nil && !strings.HasPrefix(string(b), `"`) {
			v = string(b)
		}
		if r := []rune(v); len(r) > 60 {
			v = string(r[:57]) + "..."
		}
		parts = append(parts, k+"="+v)
	}
	return strings.Join(parts, " ")
}

type verifyReport struct {
	OK         bool             `json:"ok"`
	Origin     string           `json:"origin"`
	Size       int64            `json:"checkpoint_size"`
	Root       string           `json:"checkpoint_root"`
	Verified   int64            `json:"entries_verified"`
	Agents     int              `json:"agents"`
	Problems   []record.Problem `json:"problems"`
	KeySource  string           `json:"key_source"`
	ProblemCnt int              `json:"problem_count"`
	// Decisions counts approval decisions signed with a passkey (each
	// checked against the key the log registered) and not, per agent.
	Decisions []passkeys.Agent `json:"approval_decisions,omitempty"`
}

func recordVerifyCmd() *cobra.Command {
	var asJSON bool
	var logKey string
	cmd := &cobra.Command{
		Use:   "verify [DIR]",
		Short: "Verify the whole log: canonical entries, each agent's chain, the Merkle root and the checkpoint signature; or local records in DIR",
		Long: `Fetch the latest signed checkpoint and every entry it commits to, and check:
every entry is canonical and at its index, each agent's prev chain is
unbroken, the entries hash to the checkpoint's root, and the checkpoint is
signed by the log key. Exits 0 only when all holds.

Pass --log-key (the contents of DATA_DIR/log.pub, or a file holding it) to
check against a key you hold; without it the key is fetched from the server.

With DIR (a directory of .jsonl files, or one file), verify the local records
an SDK wrote in local-only mode instead, with no server: canonical entries,
each numbered by its line, each agent's chain unbroken.`,
		Args: cobra.MaximumNArgs(1),
	}
	client := serverFlags(cmd)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the report as JSON")
	cmd.Flags().StringVar(&logKey, "log-key", "", "the log's public key, or a file holding it")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if len(args) == 1 {
			return verifyLocalRecords(cmd, args[0], asJSON)
		}
		c, err := client()
		if err != nil {
			return err
		}
		rep := verifyReport{KeySource: "flag"}
		key := strings.TrimSpace(logKey)
		if b, err := os.ReadFile(key); key != "" && err == nil {
			key, rep.KeySource = strings.TrimSpace(string(b)), "file "+logKey
		}
		if key == "" {
			var b []byte
			if err := c.do(cmd.Context(), "GET", "/v1/log/key", nil, &b); err != nil {
				return err
			}
			key, rep.KeySource = strings.TrimSpace(string(b)), "server (pass --log-key to check against a key you hold)"
		}
		var signed []byte
		if err := c.do(cmd.Context(), "GET", "/v1/log/checkpoint", nil, &signed); err != nil {
			return err
		}
		cp, _, err := record.OpenCheckpoint(signed, key)
		if err != nil {
			rep.Problems = []record.Problem{{Kind: "bad_checkpoint", Index: -1, Message: err.Error()}}
			rep.ProblemCnt = 1
			return printVerify(cmd, rep, asJSON)
		}
		rep.Origin, rep.Size, rep.Root = cp.Origin, int64(cp.Size), base64.StdEncoding.EncodeToString(cp.Hash)
		var v record.Verifier
		var sigProblems []record.Problem
		sig := passkeys.Checker{Report: func(p record.Problem) { sigProblems = append(sigProblems, p) }}
		for start := int64(0); start < int64(cp.Size); {
			limit := min(int64(cp.Size)-start, 10000)
			var page struct {
				Entries []struct {
					Index int64  `json:"index"`
					Data  []byte `json:"data"`
				} `json:"entries"`
			}
			if err := c.do(cmd.Context(), "GET", fmt.Sprintf("/v1/log/entries?start=%d&limit=%d", start, limit), nil, &page); err != nil {
				return err
			}
			if len(page.Entries) == 0 {
				break
			}
			for _, e := range page.Entries {
				if v.Size() >= int64(cp.Size) {
					break
				}
				v.Add(e.Data)
				if _, _, typ := record.Peek(e.Data); passkeys.Wants([]byte(typ)) {
					if pe, err := record.Parse(e.Data); err == nil {
						sig.Add(e.Index, pe)
					}
				}
			}
			start = v.Size()
		}
		rep.Problems = v.Finish(cp)
		sig.Finish()
		rep.Verified, rep.Agents, rep.ProblemCnt = v.Size(), v.Agents(), v.ProblemCount()+len(sigProblems)
		rep.Problems = append(rep.Problems, sigProblems[:min(len(sigProblems), max(0, record.MaxProblems-len(rep.Problems)))]...)
		for _, a := range sig.Agents() {
			if a.Signed+a.Unsigned > 0 || a.RequirePasskey {
				rep.Decisions = append(rep.Decisions, a)
			}
		}
		rep.OK = rep.ProblemCnt == 0
		return printVerify(cmd, rep, asJSON)
	}
	return cmd
}

func printVerify(cmd *cobra.Command, rep verifyReport, asJSON bool) error {
	out := cmd.OutOrStdout()
	if rep.Problems == nil {
		rep.Problems = []record.Problem{}
	}
	if asJSON {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		enc.Encode(rep)
	} else {
		inert.Fprintf(out, "log        %s\ncheckpoint %d entries, root %s\nlog key    from %s\n", rep.Origin, rep.Size, rep.Root, rep.KeySource)
		if rep.Decisions != nil {
			printDecisions(out, rep.Decisions)
		}
		if rep.OK {
			inert.Fprintf(out, "\nOK: %d entries from %d agents verified: canonical, chained, and hashing to the signed root\n", rep.Verified, rep.Agents)
		} else {
			inert.Fprintf(out, "\nFAILED: %d problem(s)\n", rep.ProblemCnt)
			for _, p := range rep.Problems {
				inert.Fprintf(out, "  %s\n", p)
			}
		}
	}
	if !rep.OK {
		return exitError{code: 1}
	}
	return nil
}
