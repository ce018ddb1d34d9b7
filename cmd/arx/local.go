package main

// Local records: what the SDKs write in local-only mode (and when ARX was
// unreachable), and the verbs that read them: manifest export (for the
// Python SDK), manifest check, record verify DIR and record import.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/arxsec/arx/internal/inert"
	"github.com/arxsec/arx/manifest"
	"github.com/arxsec/arx/record"
	"github.com/spf13/cobra"
)

// exitUsage is the exit status of a check that could not run (unreadable
// manifest or records), as opposed to one that found something (1).
const exitUsage = 2

// failRun prints err as every verb does and exits with exitUsage.
func failRun(cmd *cobra.Command, err error) error {
	printError(cmd.ErrOrStderr(), err)
	return exitError{code: exitUsage}
}

func manifestExportCmd() *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "export FILE",
		Short: "Print a job description as JSON, parsed and with its defaults (for the Python SDK's local-only mode)",
		Long: `Parse a job description strictly, as the server does, and print it as JSON
with the hash of the YAML it came from. The Python SDK's local-only mode reads
this instead of parsing YAML itself: it runs this command (arx on PATH, or
ARX_BIN), or reads manifests/job_description.json written with -o, which it
uses only while its manifest_hash matches the YAML.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			data, err := os.ReadFile(args[0])
			if err != nil {
				return err
			}
			ex, err := manifest.NewExport(data)
			if err != nil {
				var me *manifest.Error
				if errors.As(err, &me) {
					me.File = args[0]
					fmt.Fprint(cmd.ErrOrStderr(), me.Error()+"\n")
					return withHint(errors.New("the manifest is not valid"), "run `arx manifest lint "+args[0]+"`")
				}
				return err
			}
			b, err := json.MarshalIndent(ex, "", "  ")
			if err != nil {
				return err
			}
			b = append(b, '\n')
			if out == "" || out == "-" {
				_, err = cmd.OutOrStdout().Write(b)
				return err
			}
			return os.WriteFile(out, b, 0o644)
		},
	}
	cmd.Flags().StringVarP(&out, "output", "o", "", "write to this file instead of standard output")
	return cmd
}

// localFile is one local record file, read whole.
type localFile struct {
	Path    string
	Lines   [][]byte
	Partial bool // the last line has no newline: a writer was interrupted
}

// readLocalRecords reads path: one .jsonl file, or every .jsonl file in a
// directory, in name order.
func readLocalRecords(path string) ([]localFile, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	var paths []string
	if st.IsDir() {
		matches, err := filepath.Glob(filepath.Join(path, "*.jsonl"))
		if err != nil {
			return nil, err
		}
		if len(matches) == 0 {
			return nil, withHint(fmt.Errorf("no .jsonl record files in %s", path),
				"local-only mode (ARX_LOCAL_MODE=1) writes them to ARX_LOCAL_RECORD_DIR, default arx-records")
		}
		sort.Strings(matches)
		paths = matches
	} else {
		paths = []string{path}
	}
	var out []localFile
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			return nil, err
		}
		f := localFile{Path: p}
		if len(data) > 0 {
			f.Partial = data[len(data)-1] != '\n'
			f.Lines = bytes.Split(bytes.TrimSuffix(data, []byte("\n")), []byte("\n"))
		}
		out = append(out, f)
	}
	return out, nil
}

type localVerifyFile struct {
	File     string           `json:"file"`
	Entries  int64            `json:"entries"`
	Agents   int              `json:"agents"`
	OK       bool             `json:"ok"`
	Problems []record.Problem `json:"problems"`
	Count    int              `json:"problem_count"`
}

type localVerifyReport struct {
	OK      bool              `json:"ok"`
	Entries int64             `json:"entries"`
	Files   []localVerifyFile `json:"files"`
}

// verifyLocalFile checks a local record as the log verifier checks the
// server's: canonical entries, each at its line's index, each agent's
// chain unbroken. Local records have no checkpoint: nobody signed them.
func verifyLocalFile(f localFile) localVerifyFile {
	var v record.Verifier
	for _, line := range f.Lines {
		v.Add(line)
	}
	r := localVerifyFile{File: f.Path, Problems: v.Finish(nil), Entries: v.Size(), Agents: v.Agents(), Count: v.ProblemCount()}
	if f.Partial {
		r.Problems = append(r.Problems, record.Problem{Kind: "partial_line", Index: v.Size() - 1,
			Message: "the file ends without a newline: a writer was interrupted, and the last entry may be cut short"})
		r.Count++
	}
	if r.Problems == nil {
		r.Problems = []record.Problem{}
	}
	r.OK = r.Count == 0
	return r
}

func verifyLocalRecords(cmd *cobra.Command, path string, asJSON bool) error {
	files, err := readLocalRecords(path)
	if err != nil {
		return failRun(cmd, err)
	}
	rep := localVerifyReport{OK: true}
	for _, f := range files {
		fr := verifyLocalFile(f)
		rep.Files = append(rep.Files, fr)
		rep.Entries += fr.Entries
		rep.OK = rep.OK && fr.OK
	}
	out := cmd.OutOrStdout()
	if asJSON {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		enc.Encode(rep)
	} else {
		inert.Fprintf(out, "local records in %s (not signed: this checks their form and chains, not who wrote them)\n\n", path)
		for _, fr := range rep.Files {
			status := "OK"
			if !fr.OK {
				status = fmt.Sprintf("FAILED: %d problem(s)", fr.Count)
			}
			inert.Fprintf(out, "  %s: %d entries, %d agent(s): %s\n", fr.File, fr.Entries, fr.Agents, status)
			for _, p := range fr.Problems {
				inert.Fprintf(out, "      %s\n", p)
			}
		}
		if rep.OK {
			inert.Fprintf(out, "\nOK: %d entries in %d file(s) verified: canonical, numbered by line, each agent's chain unbroken\n", rep.Entries, len(rep.Files))
		} else {
			inert.Fprintf(out, "\nFAILED\n")
		}
	}
	if !rep.OK {
		return exitError{code: 1}
	}
	return nil
}

// Manifest check.

// Finding severities: errors fail the check; notes fail it only with --strict.
const (
	severityError = "error"
	severityNote  = "note"
)

type occurrence struct {
	File  string `json:"file"`
	Line  int    `json:"line"` // 1-based
	Time  string `json:"time"`
	Call  string `json:"call,omitempty"`
	Index int64  `json:"index"`
}

type checkFinding struct {
	Kind      string      `json:"kind"`
	Severity  string      `json:"severity"`
	Connector string      `json:"connector,omitempty"`
	Action    string      `json:"action,omitempty"`
	Count     int         `json:"count"`
	Message   string      `json:"message"`
	First     *occurrence `json:"first,omitempty"`
}

type checkReport struct {
	OK       bool           `json:"ok"`
	Manifest string         `json:"manifest"`
	Agent    string         `json:"agent"`
	Records  string         `json:"records"`
	Files    int            `json:"files"`
	Entries  int            `json:"entries"`
	Calls    int            `json:"calls"`
	Errors   int            `json:"errors"`
	Notes    int            `json:"notes"`
	Findings []checkFinding `json:"findings"`
}

// checkedCall is one call as the record tells it.
type checkedCall struct {
	id, connector, action string
	declared              string
	first                 occurrence
	requested             time.Time
	issued, ended         time.Time // credential issued; completed (or credential expiry when never completed)
	expires               time.Time
	durationMS            int64
	hasDuration, late     bool
	refused               string
	unreachable           bool
}

func (c *checkedCall) made() bool { return c.refused == "" && !c.unreachable }

func manifestCheckCmd() *cobra.Command {
	var asJSON, strict bool
	var records string
	cmd := &cobra.Command{
		Use:   "check MANIFEST --records DIR",
		Short: "Compare what an agent did (its local records) with what its job description declares",
		Long: `Read the records in DIR (the .jsonl files that local-only mode writes, or
one such file) and compare them with MANIFEST. Errors: connectors and actions
used but not declared, risk declared lower in code than in the manifest,
budget overruns (calls per day, concurrent calls, call duration, active
hours). Notes: connectors and actions declared but never used, risk declared
higher in code than in the manifest, calls not made because ARX was
unreachable, records of another agent. Each finding has its count and first
occurrence (FILE:LINE).

Exit status: 0 when there are no errors (and, with --strict, no notes),
1 when there are, 2 when the manifest or the records cannot be read.`,
		Args: cobra.ExactArgs(1),
	}
	cmd.Flags().StringVar(&records, "records", "", "the records: a directory of .jsonl files or one file (default: arx-records, or ARX_LOCAL_RECORD_DIR)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the report as JSON")
	cmd.Flags().BoolVar(&strict, "strict", false, "fail on notes too")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		m, err := manifest.ParseFile(args[0])
		if err != nil {
			var me *manifest.Error
			if errors.As(err, &me) {
				fmt.Fprint(cmd.ErrOrStderr(), me.Error()+"\n")
				err = withHint(errors.New("the manifest is not valid"), "run `arx manifest lint "+args[0]+"`")
			}
			return failRun(cmd, err)
		}
		if records == "" {
			records = envDefault("ARX_LOCAL_RECORD_DIR", "arx-records")
		}
		files, err := readLocalRecords(records)
		if err != nil {
			return failRun(cmd, err)
		}
		rep, err := checkRecords(m, files)
		if err != nil {
			return failRun(cmd, withHint(err, "check the records with `arx record verify "+records+"`"))
		}
		rep.Manifest, rep.Records = args[0], records
		failed := rep.Errors > 0 || (strict && rep.Notes > 0)
		rep.OK = !failed
		printCheck(cmd.OutOrStdout(), rep, asJSON)
		if failed {
			return exitError{code: 1}
		}
		return nil
	}
	return cmd
}

func printCheck(out io.Writer, rep *checkReport, asJSON bool) {
	if asJSON {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		enc.SetEscapeHTML(false)
		enc.Encode(rep)
		return
	}
	inert.Fprintf(out, "manifest  %s (agent %s)\nrecords   %s: %d file(s), %d entries, %d calls\n\n", rep.Manifest, rep.Agent, rep.Records, rep.Files, rep.Entries, rep.Calls)
	for _, f := range rep.Findings {
		what := f.Connector
		if f.Action != "" {
			what += " " + f.Action
		}
		if what != "" {
			what += ": "
		}
		inert.Fprintf(out, "%-5s  %s  %s%s\n", f.Severity, f.Kind, what, f.Message)
		if f.First != nil {
			inert.Fprintf(out, "       first at %s:%d, %s", f.First.File, f.First.Line, f.First.Time)
			if f.First.Call != "" {
				inert.Fprintf(out, ", call %s", f.First.Call)
			}
			inert.Fprintln(out)
		}
	}
	if len(rep.Findings) > 0 {
		inert.Fprintln(out)
	}
	switch {
	case rep.Errors == 0 && rep.Notes == 0:
		inert.Fprintln(out, "OK: the agent stayed within its job description")
	case rep.OK:
		inert.Fprintf(out, "OK: no errors, %d note(s)\n", rep.Notes)
	default:
		inert.Fprintf(out, "FINDINGS: %d error(s), %d note(s)\n", rep.Errors, rep.Notes)
	}
}

// checkRecords reads the calls out of the records and compares them with m.
func checkRecords(m *manifest.Manifest, files []localFile) (*checkReport, error) {
	rep := &checkReport{Agent: m.Agent.Name, Files: len(files), Findings: []checkFinding{}}
	calls := map[string]*checkedCall{}
	var order []*checkedCall
	otherAgents := map[string]*occurrence{}
	for _, f := range files {
		for i, line := range f.Lines {
			if f.Partial && i == len(f.Lines)-1 {
				break // a cut-short last line; record verify reports it
			}
			e, err := record.Parse(line)
			if err != nil {
				return nil, fmt.Errorf("%s:%d: %v", f.Path, i+1, err)
			}
			rep.Entries++
			occ := occurrence{File: f.Path, Line: i + 1, Index: e.Index, Time: e.Time.UTC().Format(record.TimeFormat), Call: e.Call}
			if e.Agent != "" && e.Agent != "local:"+m.Agent.Name && otherAgents[e.Agent] == nil && strings.HasPrefix(e.Agent, "local:") {
				o := occ
				otherAgents[e.Agent] = &o
			}
			key := e.Call
			if key == "" {
				if e.Type != "call.unreachable" {
					continue // not about a call (agent.hired, token.issued, ...)
				}
				key = fmt.Sprintf("%s#%d", f.Path, i)
			}
			c := calls[key]
			if c == nil {
				c = &checkedCall{id: e.Call, connector: e.Connector, action: e.Action, first: occ, requested: e.Time}
				calls[key] = c
				order = append(order, c)
			}
			if s, ok := e.Data["declared_risk"].(string); ok && c.declared == "" {
				c.declared = s
			}
			switch e.Type {
			case record.TypeCredentialRefused:
				c.refused, _ = e.Data["code"].(string)
				if c.refused == "" {
					c.refused = "refused"
				}
			case record.TypeCredentialIssued:
				c.issued = e.Time
				if s, ok := e.Data["expires_at"].(string); ok {
					c.expires, _ = time.Parse(record.TimeFormat, s)
				}
			case record.TypeCallCompleted:
				c.ended = e.Time
				if n, ok := e.Data["duration_ms"].(json.Number); ok {
					c.durationMS, _ = n.Int64()
					c.hasDuration = true
				}
				c.late = e.Data["late"] == true
			case "call.unreachable":
				c.unreachable = true
			}
		}
	}
	rep.Calls = len(order)

	add := func(f checkFinding) {
		rep.Findings = append(rep.Findings, f)
		if f.Severity == severityError {
			rep.Errors++
		} else {
			rep.Notes++
		}
	}
	// grouped collects findings of one kind by connector and action, in
	// order of first occurrence.
	type group struct {
		f       checkFinding
		maxSeen int64
	}
	var groups []*group
	byKey := map[string]*group{}
	note := func(kind, severity string, c *checkedCall, withAction bool, occ occurrence) *group {
		k := kind + "\x00" + c.connector
		if withAction {
			k += "\x00" + c.action
		}
		g := byKey[k]
		if g == nil {
			o := occ
			g = &group{f: checkFinding{Kind: kind, Severity: severity, Connector: c.connector, First: &o}}
			if withAction {
				g.f.Action = c.action
			}
			byKey[k] = g
			groups = append(groups, g)
		}
		g.f.Count++
		return g
	}

	used := map[string]bool{} // "connector" and "connector\x00action"
	for _, c := range order {
		used[c.connector] = true
		used[c.connector+"\x00"+c.action] = true
		if _, ok := m.Connector(c.connector); !ok {
			note("connector_not_declared", severityError, c, false, c.first)
			continue
		}
		act, ok := m.Action(c.connector, c.action)
		if !ok {
			note("action_not_declared", severityError, c, true, c.first)
			continue
		}
		if declared, err := manifest.ParseRisk(c.declared); err == nil {
			switch {
			case declared < act.Risk:
				note("risk_underdeclared", severityError, c, true, c.first).f.Message = fmt.Sprintf("the code declares %s, the manifest %s", declared, act.Risk)
			case declared > act.Risk:
				note("risk_overdeclared", severityNote, c, true, c.first).f.Message = fmt.Sprintf("the code declares %s, the manifest %s", declared, act.Risk)
			}
		}
		if c.made() && c.hasDuration {
			limit := m.CallTTL(c.connector, c.action)
			if time.Duration(c.durationMS)*time.Millisecond > limit || c.late {
				g := note("call_duration_exceeded", severityError, c, true, c.first)
				g.maxSeen = max(g.maxSeen, c.durationMS)
				g.f.Message = fmt.Sprintf("longest took %s, the limit is %s", time.Duration(g.maxSeen)*time.Millisecond, limit)
			}
		}
	}
	for _, g := range groups {
		switch g.f.Kind {
		case "connector_not_declared":
			g.f.Message = fmt.Sprintf("%d call(s) to a connector that is not on the manifest (refused by ARX)", g.f.Count)
		case "action_not_declared":
			g.f.Message = fmt.Sprintf("%d call(s) of an action that is not declared (drift)", g.f.Count)
		case "risk_underdeclared", "risk_overdeclared", "call_duration_exceeded":
			g.f.Message = fmt.Sprintf("%d call(s): %s", g.f.Count, g.f.Message)
		}
		add(g.f)
	}

	// Budget.
	var made []*checkedCall
	for _, c := range order {
		if c.made() {
			made = append(made, c)
		}
	}
	b := m.Budget
	if b.CallsPerDay > 0 {
		loc, zone := time.UTC, "UTC"
		if b.ActiveHours != nil && b.ActiveHours.Location != nil {
			loc, zone = b.ActiveHours.Location, b.ActiveHours.Timezone
		}
		perDay := map[string]int{}
		var days []string
		var first *occurrence
		maxDay, maxCount := "", 0
		for _, c := range made {
			day := c.requested.In(loc).Format("2006-01-02")
			if perDay[day] == 0 {
				days = append(days, day)
			}
			perDay[day]++
			if perDay[day] == b.CallsPerDay+1 && first == nil {
				o := c.first
				first = &o
			}
			if perDay[day] > maxCount {
				maxDay, maxCount = day, perDay[day]
			}
		}
		over := 0
		for _, d := range days {
			if perDay[d] > b.CallsPerDay {
				over++
			}
		}
		if over > 0 {
			add(checkFinding{Kind: "calls_per_day_exceeded", Severity: severityError, Count: over, First: first,
				Message: fmt.Sprintf("%d day(s) over the budget of %d calls a day (%s days); most: %d on %s", over, b.CallsPerDay, zone, maxCount, maxDay)})
		}
	}
	if b.MaxConcurrent > 0 {
		type event struct {
			t     time.Time
			delta int
			c     *checkedCall
		}
		var events []event
		for _, c := range made {
			if c.issued.IsZero() {
				continue
			}
			end := c.ended
			if end.IsZero() {
				end = c.expires
			}
			if end.IsZero() || end.Before(c.issued) {
				end = c.issued
			}
			events = append(events, event{c.issued, +1, c}, event{end, -1, c})
		}
		sort.SliceStable(events, func(i, j int) bool {
			if !events[i].t.Equal(events[j].t) {
				return events[i].t.Before(events[j].t)
			}
			return events[i].delta < events[j].delta // a call that ends frees its place first
		})
		n, peak, over := 0, 0, 0
		var first *occurrence
		for _, ev := range events {
			n += ev.delta
			if ev.delta > 0 && n > b.MaxConcurrent {
				over++
				if first == nil {
					o := ev.c.first
					first = &o
				}
			}
			peak = max(peak, n)
		}
		if over > 0 {
			add(checkFinding{Kind: "max_concurrent_exceeded", Severity: severityError, Count: over, First: first,
				Message: fmt.Sprintf("%d call(s) started with %d or more already running; at most %d ran at once", over, b.MaxConcurrent, peak)})
		}
	}
	if h := b.ActiveHours; h != nil {
		count := 0
		var first *occurrence
		for _, c := range made {
			if !h.Contains(c.requested) {
				count++
				if first == nil {
					o := c.first
					first = &o
				}
			}
		}
		if count > 0 {
			add(checkFinding{Kind: "outside_active_hours", Severity: severityError, Count: count, First: first,
				Message: fmt.Sprintf("%d call(s) outside active hours (%s-%s %s)", count, h.Start, h.End, h.Timezone)})
		}
	}

	// Notes.
	for _, conn := range m.Scope.Connectors {
		if !used[conn.Name] {
			add(checkFinding{Kind: "connector_unused", Severity: severityNote, Connector: conn.Name,
				Message: "declared, never used"})
			continue
		}
		for _, a := range conn.Actions {
			if !used[conn.Name+"\x00"+a.Name] {
				add(checkFinding{Kind: "action_unused", Severity: severityNote, Connector: conn.Name, Action: a.Name,
					Message: "declared, never used"})
			}
		}
	}
	unreachable := 0
	var firstUnreachable *occurrence
	for _, c := range order {
		if c.unreachable {
			unreachable++
			if firstUnreachable == nil {
				o := c.first
				firstUnreachable = &o
			}
		}
	}
	if unreachable > 0 {
		add(checkFinding{Kind: "unreachable", Severity: severityNote, Count: unreachable, First: firstUnreachable,
			Message: fmt.Sprintf("%d call(s) not made because ARX was unreachable; attach them to the record with `arx record import`", unreachable)})
	}
	agents := make([]string, 0, len(otherAgents))
	for a := range otherAgents {
		agents = append(agents, a)
	}
	sort.Strings(agents)
	for _, a := range agents {
		add(checkFinding{Kind: "other_agent", Severity: severityNote, Count: 1, First: otherAgents[a],
			Message: fmt.Sprintf("records of %s, but the manifest is of agent %s", a, m.Agent.Name)})
	}
	sort.SliceStable(rep.Findings, func(i, j int) bool {
		return rep.Findings[i].Severity == severityError && rep.Findings[j].Severity != severityError
	})
	return rep, nil
}

// Import.

// maxImportChunk bounds one import request's body (the API takes 256 KiB).
const maxImportChunk = 200 << 10

func recordImportCmd() *cobra.Command {
	var agent string
	cmd := &cobra.Command{
		Use:   "import FILE... --agent AGENT",
		Short: "Attach local records (local-only mode, or calls made while ARX was unreachable) to an agent's record",
		Long: `Verify each local record file, then append it to AGENT's record on the server:
one record.imported entry per local entry, holding the local entry and its
hash. The server records that you imported this text; what the local entries
say stays the SDK's word. Importing a file again adds only what is new; a
file that changed after its import is refused.`,
		Args: cobra.MinimumNArgs(1),
	}
	client := serverFlags(cmd)
	cmd.Flags().StringVar(&agent, "agent", "", "the agent (id, or name) whose record gets the entries")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if agent == "" {
			return withHint(errors.New("no agent given"), "pass --agent AGENT (see `arx agents`)")
		}
		c, err := client()
		if err != nil {
			return err
		}
		var files []localFile
		for _, p := range args {
			fs, err := readLocalRecords(p)
			if err != nil {
				return err
			}
			files = append(files, fs...)
		}
		for _, f := range files {
			if fr := verifyLocalFile(f); !fr.OK {
				return withHint(fmt.Errorf("%s does not verify (%d problem(s), first: %s)", f.Path, fr.Count, fr.Problems[0]),
					"see `arx record verify "+f.Path+"`; nothing was imported")
			}
		}
		a, err := c.resolveAgent(cmd.Context(), agent)
		if err != nil {
			return err
		}
		out := cmd.OutOrStdout()
		for _, f := range files {
			if len(f.Lines) == 0 {
				inert.Fprintf(out, "%s: empty, nothing to import\n", f.Path)
				continue
			}
			chain := record.HashString(record.LeafHash(f.Lines[0]))
			imported, skipped := 0, 0
			first, last := int64(-1), int64(-1)
			for start := 0; start < len(f.Lines); {
				end, size := start, 0
				for end < len(f.Lines) && end-start < 5000 {
					n := jsonStringLen(f.Lines[end]) + 1
					if end > start && size+n > maxImportChunk {
						break
					}
					size += n
					end++
				}
				entries := make([]string, 0, end-start)
				for _, l := range f.Lines[start:end] {
					entries = append(entries, string(l))
				}
				var res struct {
					Imported   int   `json:"imported"`
					Skipped    int   `json:"skipped"`
					FirstIndex int64 `json:"first_index"`
					LastIndex  int64 `json:"last_index"`
				}
				body := map[string]any{"source": filepath.Base(f.Path), "chain": chain, "entries": entries}
				if err := c.do(cmd.Context(), "POST", "/v1/agents/"+a.ID+"/record/import", body, &res); err != nil {
					if imported > 0 {
						inert.Fprintf(out, "%s: %d entries imported before the error; run the import again to go on\n", f.Path, imported)
					}
					return err
				}
				imported += res.Imported
				skipped += res.Skipped
				if res.FirstIndex >= 0 {
					if first < 0 {
						first = res.FirstIndex
					}
					last = res.LastIndex
				}
				start = end
			}
			inert.Fprintf(out, "%s: %d entries imported into the record of %s (%s)", f.Path, imported, a.Name, a.ID)
			if first >= 0 {
				inert.Fprintf(out, " at log indexes %d..%d", first, last)
			}
			if skipped > 0 {
				inert.Fprintf(out, "; %d imported before", skipped)
			}
			inert.Fprintln(out)
		}
		return nil
	}
	return cmd
}

// jsonStringLen is the length of s encoded as a JSON string.
func jsonStringLen(s []byte) int {
	b, _ := json.Marshal(string(s))
	return len(b)
}
