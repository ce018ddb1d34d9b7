package manifest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/arxsec/arx/record"
	"go.yaml.in/yaml/v3"
)

// maxProblems bounds the report for hopeless input; the rest are summarised.
const maxProblems = 100

// Bounds on the durations a manifest may set.
const (
	maxApprovalTimeout = 168 * time.Hour
	maxCallDuration    = 24 * time.Hour
)

var (
	agentNameRE     = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)
	connectorNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]{0,62}$`)
	actionNameRE    = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]{0,127}$`)
	digitsRE        = regexp.MustCompile(`^[-+]?[0-9_]+$`)
)

// The longest connector and action names a manifest may declare.
const (
	MaxConnectorName = 63
	MaxActionName    = 128
)

// ValidName reports whether s is a connector or action name of at most max
// bytes: connectorNameRE and actionNameRE (max MaxConnectorName and
// MaxActionName), checked a byte at a time. It is the one rule for these
// names wherever they are checked: the runtime (on every governed call: the
// regular expression took about 1% of the server's CPU there, CheckAsk), the
// Go SDK's local-only mode, the connectors file and arx mcp's upstreams.
func ValidName(s string, max int) bool {
	if len(s) == 0 || len(s) > max || s[0] == '_' || s[0] == '.' || s[0] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '_' && c != '.' && c != '-' {
			return false
		}
	}
	return true
}

// A fieldSet lists the fields of one mapping in the format. Name is the mapping's
// entry under $defs in the JSON Schema ("" for the document itself); a test checks
// that the schema lists the same fields.
type fieldSet struct {
	name     string
	known    []string
	required []string
}

var (
	rootFields = fieldSet{"",
		[]string{"apiVersion", "kind", "agent", "scope", "approval", "budget", "termination", "on_drift"},
		[]string{"apiVersion", "kind", "agent", "scope", "approval", "budget", "termination"}}
	agentFields = fieldSet{"agent",
		[]string{"name", "description", "owner"},
		[]string{"name", "owner"}}
	scopeFields = fieldSet{"scope",
		[]string{"connectors"},
		[]string{"connectors"}}
	connectorFields = fieldSet{"connector",
		[]string{"description", "actions"},
		[]string{"actions"}}
	actionFields = fieldSet{"action",
		[]string{"risk", "description", "max_duration", "when", "otherwise", "record_args", "cost"},
		[]string{"risk"}}
	approvalFields = fieldSet{"approval",
		[]string{"approvers", "delegates", "timeout", "on_timeout", "require_passkey", "quorum"},
		[]string{"approvers"}}
	budgetFields = fieldSet{"budget",
		[]string{"calls_per_day", "max_call_duration", "max_concurrent", "active_hours", "spend", "tokens", "on_budget"},
		[]string{"max_call_duration"}}
	spendFields = fieldSet{"spend",
		[]string{"per_day", "notify_at"},
		[]string{"per_day"}}
	tokensFields = fieldSet{"tokens",
		[]string{"per_day", "notify_at"},
		[]string{"per_day"}}
	activeHoursFields = fieldSet{"active_hours",
		[]string{"timezone", "days", "start", "end"},
		[]string{"timezone", "start", "end"}}
	terminationFields = fieldSet{"termination",
		[]string{"notify", "revoke"},
		[]string{"notify"}}

	allFieldSets = []fieldSet{rootFields, agentFields, scopeFields, connectorFields,
		actionFields, approvalFields, budgetFields, activeHoursFields, terminationFields, spendFields, tokensFields}
)

// ParseFile reads and parses the manifest at path. Problems name the file.
func ParseFile(path string) (*Manifest, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxSize+1))
	if err != nil {
		return nil, err
	}
	m, err := Parse(data)
	if e, ok := err.(*Error); ok {
		e.File = path
	}
	return m, err
}

// Parse parses and validates a manifest and applies the defaults. When the manifest
// is invalid the error is an *Error listing every problem found.
func Parse(data []byte) (*Manifest, error) {
	return parseWith(&parser{}, data)
}

// ParseHired parses the manifest of an agent hired earlier, as stored: it
// is Parse, except that what earlier versions of ARX did not require yet
// (requiredSince: approval and budget) may be missing, and gets its
// defaults, so an agent on staff keeps working after an upgrade. Hiring,
// linting and local mode use Parse.
func ParseHired(data []byte) (*Manifest, error) {
	return parseWith(&parser{hired: true}, data)
}

func parseWith(p *parser, data []byte) (*Manifest, error) {
	m := p.parse(data)
	if len(p.problems) > 0 {
		return nil, p.err()
	}
	return m, nil
}

// requiredSince are fields a job description must have that earlier
// versions of ARX let it leave out (their defaults applied). A manifest
// hired then is still read (ParseHired); a new one must declare them.
var requiredSince = map[string]string{
	"approval":                 "add an approval section naming who decides on risky calls, e.g. approval: {approvers: [manager@example.com]}",
	"budget":                   "add a budget section, e.g. budget: {max_call_duration: 2m, calls_per_day: 5000}: every job description declares its runtime budget",
	"budget.max_call_duration": "add max_call_duration (e.g. 2m): how long a call's credential lives, unless the action sets max_duration",
}

type parser struct {
	problems []Problem
	// hired reads a manifest hired earlier: fields in requiredSince may be
	// missing.
	hired bool

	// The first high-risk action, for checkHighRisk: its risk and its field path.
	firstHigh       *yaml.Node
	firstHighAction string
	// The actions' declared costs, for checkBudget.
	costs []declaredCost
}

type declaredCost struct {
	at    *yaml.Node
	field string
	cost  record.Money
}

func (p *parser) report(n *yaml.Node, field, msg, hint string) {
	pr := Problem{Field: field, Message: msg, Hint: hint}
	if n != nil {
		pr.Line, pr.Column = n.Line, n.Column
	}
	p.problems = append(p.problems, pr)
}

func (p *parser) err() *Error {
	sort.SliceStable(p.problems, func(i, j int) bool {
		a, b := p.problems[i], p.problems[j]
		if a.Line != b.Line {
			return a.Line < b.Line
		}
		return a.Column < b.Column
	})
	probs := p.problems
	if len(probs) > maxProblems {
		rest := len(probs) - maxProblems
		probs = append(probs[:maxProblems:maxProblems], Problem{
			Message: fmt.Sprintf("%d more problems not shown", rest),
			Hint:    "fix the problems above first",
		})
	}
	return &Error{Problems: probs}
}

func (p *parser) parse(data []byte) *Manifest {
	if len(data) > MaxSize {
		p.report(nil, "", "manifest too large",
			fmt.Sprintf("a manifest may be at most %d bytes", MaxSize))
		return nil
	}
	docs, ok := p.decode(data)
	if !ok {
		return nil
	}
	if len(docs) == 0 || docs[0].Kind != yaml.DocumentNode || len(docs[0].Content) == 0 ||
		isNull(docs[0].Content[0]) {
		p.report(nil, "", "manifest is empty",
			"start from reference-agents/sales-research/manifests/job_description.yaml")
		return nil
	}
	if len(docs) > 1 {
		p.report(docs[1], "", "more than one YAML document",
			"remove the --- separator and everything after it")
	}
	p.rejectAnchors(docs[0])
	return p.manifest(docs[0].Content[0])
}

// decode reads every YAML document in data into a node tree. Nodes keep aliases
// unexpanded, so an alias bomb costs nothing here; rejectAnchors refuses them later.
func (p *parser) decode(data []byte) (docs []*yaml.Node, ok bool) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var doc yaml.Node
		err := decodeSafely(dec, &doc)
		if errors.Is(err, io.EOF) {
			return docs, true
		}
		if err != nil {
			p.syntaxError(data, err)
			return nil, false
		}
		docs = append(docs, &doc)
	}
}

// decodeSafely turns a panic inside the YAML library into an error: bad input must
// never take the process down.
func decodeSafely(dec *yaml.Decoder, n *yaml.Node) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("yaml: %v", r)
		}
	}()
	return dec.Decode(n)
}

var yamlErrRE = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// yamlParserProblems are the messages of the YAML library's parser errors (as
// opposed to its scanner errors), whose line numbers need correcting.
var yamlParserProblems = []string{
	"did not find expected ',' or ']'",
	"did not find expected ',' or '}'",
	"did not find expected '-' indicator",
	"did not find expected <document start>",
	"did not find expected <stream-start>",
	"did not find expected key",
	"did not find expected node content",
	"found duplicate %TAG directive",
	"found duplicate %YAML directive",
	"found incompatible YAML document",
	"found undefined tag handle",
}

// invalidUTF8 returns the offset of the first byte of data that is not valid UTF-8.
func invalidUTF8(data []byte) int {
	for i := 0; i < len(data); {
		r, n := utf8.DecodeRune(data[i:])
		if r == utf8.RuneError && n <= 1 {
			return i
		}
		i += n
	}
	return len(data)
}

// syntaxError reports a YAML syntax error with its line, and, since tabs are the most
// common cause, every line indented with a tab.
func (p *parser) syntaxError(data []byte, err error) {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	line := 0
	if m := yamlErrRE.FindStringSubmatch(err.Error()); m != nil {
		line, _ = strconv.Atoi(m[1])
		msg = m[2]
	}
	if slices.Contains(yamlParserProblems, msg) {
		// The YAML library counts lines from 0 for parser (not scanner) errors, and
		// leaves the line out when it is the first.
		line++
	}
	if line == 0 && !utf8.Valid(data) {
		line = 1 + bytes.Count(data[:invalidUTF8(data)], []byte("\n"))
	}
	tabs := tabIndentedLines(data)
	for _, l := range tabs {
		p.problems = append(p.problems, Problem{Line: l, Column: 1,
			Message: "line is indented with a tab",
			Hint:    "YAML indentation must use spaces"})
	}
	if !slices.Contains(tabs, line) {
		hint := "check the indentation and quoting around this line"
		if strings.Contains(msg, "UTF-8") {
			hint = "save the file as UTF-8"
		}
		p.problems = append(p.problems, Problem{Line: line, Message: "invalid YAML: " + msg, Hint: hint})
	}
}

func tabIndentedLines(data []byte) []int {
	var lines []int
	for i, l := range bytes.Split(data, []byte("\n")) {
		indent := l[:len(l)-len(bytes.TrimLeft(l, " \t"))]
		if bytes.IndexByte(indent, '\t') >= 0 {
			lines = append(lines, i+1)
		}
	}
	return lines
}

// rejectAnchors reports every anchor and alias. They are refused outright: the format
// has no use for them and they would let a small file expand into a huge one.
func (p *parser) rejectAnchors(n *yaml.Node) {
	if n.Anchor != "" {
		p.report(n, "", fmt.Sprintf("YAML anchor &%s is not allowed", n.Anchor),
			"write the value out in full")
	}
	if n.Kind == yaml.AliasNode {
		p.report(n, "", fmt.Sprintf("YAML alias *%s is not allowed", n.Value),
			"write the value out in full")
		return
	}
	for _, c := range n.Content {
		p.rejectAnchors(c)
	}
}

func (p *parser) manifest(root *yaml.Node) *Manifest {
	m := &Manifest{
		Approval: Approval{
			Approvers: []string{},
			Delegates: []string{},
			Timeout:   DefaultApprovalTimeout,
			OnTimeout: DefaultOnTimeout,
		},
		Budget:      Budget{MaxCallDuration: DefaultMaxCallDuration},
		Termination: Termination{Notify: []string{}, Revoke: []string{RevokeAll}},
		OnDrift:     DefaultOnDrift,
	}
	f := p.object(root, root, "", rootFields)
	if f == nil {
		return nil
	}
	if e, ok := f["apiVersion"]; ok {
		if s, ok := p.str(e.val, "apiVersion"); ok && s != APIVersion {
			p.report(e.val, "apiVersion", fmt.Sprintf("unsupported apiVersion %q", s),
				"use apiVersion: "+APIVersion)
		}
		m.APIVersion = APIVersion
	}
	if e, ok := f["kind"]; ok {
		if s, ok := p.str(e.val, "kind"); ok && s != Kind {
			p.report(e.val, "kind", fmt.Sprintf("unsupported kind %q", s), "use kind: "+Kind)
		}
		m.Kind = Kind
	}
	if e, ok := f["agent"]; ok {
		m.Agent = p.agent(e)
	}
	if e, ok := f["scope"]; ok {
		m.Scope = p.scope(e)
	}
	if e, ok := f["approval"]; ok {
		p.approval(e, &m.Approval)
	}
	if e, ok := f["budget"]; ok {
		p.budget(e, &m.Budget)
	}
	if e, ok := f["termination"]; ok {
		p.termination(e, &m.Termination, m)
	}
	if e, ok := f["on_drift"]; ok {
		if s, ok := p.str(e.val, "on_drift"); ok {
			switch d := DriftPolicy(s); d {
			case DriftRecord, DriftRequireApproval, DriftRefuse:
				m.OnDrift = d
			default:
				p.report(e.val, "on_drift", fmt.Sprintf("unknown drift policy %q", s),
					"use record, require_approval or refuse")
			}
		}
	}
	p.checkHighRisk(m, f)
	p.checkBudget(m, f)
	return m
}

func (p *parser) agent(e entry) Agent {
	var a Agent
	f := p.object(e.val, e.key, "agent", agentFields)
	if v, ok := f["name"]; ok {
		if s, ok := p.str(v.val, "agent.name"); ok {
			if !agentNameRE.MatchString(s) {
				p.report(v.val, "agent.name", fmt.Sprintf("invalid agent name %q", s),
					"use 1 to 63 lowercase letters, digits and dashes, starting with a letter or digit")
			}
			a.Name = s
		}
	}
	if v, ok := f["description"]; ok {
		a.Description, _ = p.str(v.val, "agent.description")
	}
	if v, ok := f["owner"]; ok {
		a.Owner, _ = p.email(v.val, "agent.owner")
	}
	return a
}

func (p *parser) scope(e entry) Scope {
	s := Scope{Connectors: []Connector{}}
	f := p.object(e.val, e.key, "scope", scopeFields)
	ce, ok := f["connectors"]
	if !ok {
		return s
	}
	const field = "scope.connectors"
	entries, ok := p.entries(ce.val, field, func(k string) string { return keyed(field, k) })
	if !ok {
		return s
	}
	if len(entries) == 0 {
		p.report(ce.val, field, "no connectors are declared",
			"declare at least one connector and its actions")
	}
	for _, c := range entries {
		s.Connectors = append(s.Connectors, p.connector(c, keyed(field, c.key.Value)))
	}
	return s
}

func (p *parser) connector(e entry, field string) Connector {
	c := Connector{Name: e.key.Value, Actions: []Action{}}
	switch {
	case c.Name == RevokeAll:
		p.report(e.key, field, `connector name "all" is reserved`,
			"termination.revoke uses all to mean every connector; pick another name")
	case !connectorNameRE.MatchString(c.Name):
		p.report(e.key, field, fmt.Sprintf("invalid connector name %q", c.Name),
			"use 1 to 63 lowercase letters, digits, '_', '.' and '-', starting with a letter or digit")
	}
	f := p.object(e.val, e.key, field, connectorFields)
	if v, ok := f["description"]; ok {
		c.Description, _ = p.str(v.val, field+".description")
	}
	ae, ok := f["actions"]
	if !ok {
		return c
	}
	afield := field + ".actions"
	entries, ok := p.entries(ae.val, afield, func(k string) string { return keyed(afield, k) })
	if !ok {
		return c
	}
	if len(entries) == 0 {
		p.report(ae.val, afield, "no actions are declared",
			"declare at least one action with its risk, or remove the connector")
	}
	for _, a := range entries {
		c.Actions = append(c.Actions, p.action(a, keyed(afield, a.key.Value)))
	}
	return c
}

func (p *parser) action(e entry, field string) Action {
	a := Action{Name: e.key.Value}
	if !actionNameRE.MatchString(a.Name) {
		p.report(e.key, field, fmt.Sprintf("invalid action name %q", a.Name),
			"use 1 to 128 lowercase letters, digits, '_', '.' and '-', starting with a letter or digit")
	}
	f := p.object(e.val, e.key, field, actionFields)
	if v, ok := f["risk"]; ok {
		if s, ok := p.str(v.val, field+".risk"); ok {
			r, err := ParseRisk(s)
			if err != nil {
				p.report(v.val, field+".risk", fmt.Sprintf("unknown risk %q", s),
					"use low, medium or high")
			}
			if r == RiskHigh && p.firstHigh == nil {
				p.firstHigh, p.firstHighAction = v.val, field
			}
			a.Risk = r
		}
	}
	if v, ok := f["description"]; ok {
		a.Description, _ = p.str(v.val, field+".description")
	}
	if v, ok := f["max_duration"]; ok {
		a.MaxDuration, _ = p.duration(v.val, field+".max_duration", maxCallDuration)
	}
	if v, ok := f["when"]; ok {
		if s, ok := p.str(v.val, field+".when"); ok {
			prg, err := compileCondition(s)
			if err != nil {
				p.report(v.val, field+".when", "the condition does not compile: "+err.Error(),
					"write a CEL expression of type bool over args, e.g. 'args.amount <= 500 && args.currency == \"EUR\"'")
			} else {
				a.When = &Condition{Expr: s, Otherwise: OtherwiseRefuse, prg: prg}
			}
		}
	}
	if v, ok := f["otherwise"]; ok {
		if s, ok := p.str(v.val, field+".otherwise"); ok {
			switch {
			case s != OtherwiseRefuse && s != OtherwiseRequireApproval && s != OtherwiseDrift:
				p.report(v.val, field+".otherwise", fmt.Sprintf("otherwise %q is not refuse, require_approval or drift", s), "")
			case f["when"].val == nil:
				p.report(v.key, field+".otherwise", "otherwise is set but there is no condition", "add a when: condition, or remove otherwise")
			case a.When != nil:
				a.When.Otherwise = s
			}
		}
	}
	if v, ok := f["record_args"]; ok {
		if s, ok := p.str(v.val, field+".record_args"); ok {
			if s != "full" && s != "hash" {
				p.report(v.val, field+".record_args", fmt.Sprintf("record_args %q is not full or hash", s), "")
			} else {
				a.RecordArgs = s
			}
		}
	}
	if v, ok := f["cost"]; ok {
		if m, ok := p.money(v.val, field+".cost"); ok {
			a.Cost = &m
			p.costs = append(p.costs, declaredCost{v.val, field + ".cost", m})
		}
	}
	return a
}

// money reads an amount and its currency ("0.02 USD").
func (p *parser) money(n *yaml.Node, field string) (record.Money, bool) {
	s, ok := p.str(n, field)
	if !ok {
		return record.Money{}, false
	}
	m, err := record.ParseMoney(s)
	if err != nil {
		p.report(n, field, err.Error(), `write an amount and an ISO 4217 currency code, such as "0.02 USD"`)
		return record.Money{}, false
	}
	return m, true
}

// percent reads a share of a budget ("80%"), 1 to 100.
func (p *parser) percent(n *yaml.Node, field string) (int, bool) {
	s, ok := p.str(n, field)
	if !ok {
		return 0, false
	}
	v, err := strconv.Atoi(strings.TrimSuffix(s, "%"))
	if !strings.HasSuffix(s, "%") || err != nil || v < 1 || v > 100 || strings.HasPrefix(s, "+") {
		p.report(n, field, fmt.Sprintf("%q is not a percentage from 1%% to 100%%", s), `write it as "80%"`)
		return 0, false
	}
	return v, true
}

func (p *parser) approval(e entry, a *Approval) {
	f := p.object(e.val, e.key, "approval", approvalFields)
	seen := map[string]*yaml.Node{}
	if v, ok := f["approvers"]; ok {
		a.Approvers = p.emails(v.val, "approval.approvers", seen, "approval.approvers")
	}
	if v, ok := f["delegates"]; ok {
		a.Delegates = p.emails(v.val, "approval.delegates", seen, "approval.approvers or approval.delegates")
		if len(a.Delegates) > 0 && len(a.Approvers) == 0 {
			p.report(v.key, "approval.delegates", "delegates are named but no approvers",
				"name at least one approver in approval.approvers")
		}
	}
	if v, ok := f["timeout"]; ok {
		if d, ok := p.duration(v.val, "approval.timeout", maxApprovalTimeout); ok {
			a.Timeout = d
		}
	}
	if v, ok := f["on_timeout"]; ok {
		if s, ok := p.str(v.val, "approval.on_timeout"); ok && s != DefaultOnTimeout {
			p.report(v.val, "approval.on_timeout", fmt.Sprintf("on_timeout %q is not supported", s),
				"only deny is allowed: a timed-out approval never grants access")
		}
	}
	if v, ok := f["require_passkey"]; ok {
		a.RequirePasskey, _ = p.boolean(v.val, "approval.require_passkey")
	}
	if v, ok := f["quorum"]; ok {
		if n, ok := p.integer(v.val, "approval.quorum"); ok {
			switch people := len(a.Approvers) + len(a.Delegates); {
			case n < 1:
				p.report(v.val, "approval.quorum", fmt.Sprintf("quorum %d is less than 1", n), "")
			case n > people:
				p.report(v.val, "approval.quorum", fmt.Sprintf("quorum %d is more than the %d approvers and delegates named", n, people),
					"name more approvers, or ask fewer")
			default:
				a.Quorum = n
			}
		}
	}
}

// checkHighRisk enforces that a high-risk action has someone to approve it.
func (p *parser) checkHighRisk(m *Manifest, f map[string]entry) {
	if p.firstHigh == nil || len(m.Approval.Approvers) > 0 {
		return
	}
	at, where := p.firstHigh, "approval"
	if e, ok := f["approval"]; ok {
		at, where = e.key, "approval.approvers"
		if a := findKey(e.val, "approvers"); a != nil {
			at = a.key
		}
	}
	p.report(at, where, p.firstHighAction+" is high risk but no approvers are named",
		"name at least one approver in approval.approvers, or lower the action's risk")
}

// findKey finds the entry of key in mapping n, if any.
func findKey(n *yaml.Node, key string) *entry {
	if n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return &entry{n.Content[i], n.Content[i+1]}
		}
	}
	return nil
}

func (p *parser) budget(e entry, b *Budget) {
	f := p.object(e.val, e.key, "budget", budgetFields)
	if v, ok := f["calls_per_day"]; ok {
		if n, ok := p.integer(v.val, "budget.calls_per_day"); ok {
			if n < 0 {
				p.report(v.val, "budget.calls_per_day", "must not be negative",
					"use a positive number, or remove calls_per_day for no limit")
			} else {
				b.CallsPerDay = n
			}
		}
	}
	if v, ok := f["max_concurrent"]; ok {
		if n, ok := p.integer(v.val, "budget.max_concurrent"); ok {
			if n < 1 {
				p.report(v.val, "budget.max_concurrent", "must be at least 1",
					"remove max_concurrent for no limit")
			} else {
				b.MaxConcurrent = n
			}
		}
	}
	if v, ok := f["max_call_duration"]; ok {
		if d, ok := p.duration(v.val, "budget.max_call_duration", maxCallDuration); ok {
			b.MaxCallDuration = d
		}
	}
	if v, ok := f["active_hours"]; ok {
		b.ActiveHours = p.activeHours(v)
	}
	if v, ok := f["spend"]; ok {
		l := &SpendLimit{NotifyAt: DefaultNotifyAt}
		g := p.object(v.val, v.key, "budget.spend", spendFields)
		if w, ok := g["per_day"]; ok {
			if m, ok := p.money(w.val, "budget.spend.per_day"); ok {
				if m.Micros == 0 {
					p.report(w.val, "budget.spend.per_day", "the daily spend is zero", "set a positive amount, or remove spend for no cap")
				}
				l.PerDay = m
			}
		}
		if w, ok := g["notify_at"]; ok {
			l.NotifyAt, _ = p.percent(w.val, "budget.spend.notify_at")
		}
		b.Spend = l
	}
	if v, ok := f["tokens"]; ok {
		l := &TokenLimit{NotifyAt: DefaultNotifyAt}
		g := p.object(v.val, v.key, "budget.tokens", tokensFields)
		if w, ok := g["per_day"]; ok {
			if n, ok := p.integer(w.val, "budget.tokens.per_day"); ok {
				switch {
				case n < 1:
					p.report(w.val, "budget.tokens.per_day", "must be at least 1", "remove tokens for no cap")
				case n > MaxTokensPerDay:
					p.report(w.val, "budget.tokens.per_day", fmt.Sprintf("must be at most %d", MaxTokensPerDay), "")
				}
				l.PerDay = int64(n)
			}
		}
		if w, ok := g["notify_at"]; ok {
			l.NotifyAt, _ = p.percent(w.val, "budget.tokens.notify_at")
		}
		b.Tokens = l
	}
	if v, ok := f["on_budget"]; ok {
		if s, ok := p.str(v.val, "budget.on_budget"); ok {
			switch {
			case s != OnBudgetRequireApproval && s != OnBudgetRefuse:
				p.report(v.val, "budget.on_budget", fmt.Sprintf("on_budget %q is not require_approval or refuse", s), "")
			case b.Spend == nil && b.Tokens == nil:
				p.report(v.key, "budget.on_budget", "on_budget is set but there is no spend or tokens cap",
					"add budget.spend or budget.tokens, or remove on_budget")
			default:
				b.OnBudget = s
			}
		}
	}
}

// checkBudget: declared costs are in the spend cap's currency, and a cap
// that holds calls for approval has someone to approve them.
func (p *parser) checkBudget(m *Manifest, f map[string]entry) {
	b := &m.Budget
	if b.Spend != nil && b.Spend.PerDay.Currency != "" {
		for _, c := range p.costs {
			if c.cost.Currency != b.Spend.PerDay.Currency {
				p.report(c.at, c.field, fmt.Sprintf("the cost is in %s but budget.spend.per_day is in %s", c.cost.Currency, b.Spend.PerDay.Currency),
					"write every cost in the spend cap's currency")
			}
		}
	}
	if (b.Spend != nil || b.Tokens != nil) && b.OnBudgetPolicy() == OnBudgetRequireApproval && len(m.Approval.Approvers) == 0 {
		at, where := f["budget"].key, "budget"
		if e := findKey(f["budget"].val, "on_budget"); e != nil {
			at, where = e.val, "budget.on_budget"
		}
		p.report(at, where, "calls at the budget's cap wait for an approver, but no approvers are named",
			"name an approver in approval.approvers, or set budget.on_budget: refuse")
	}
}

func (p *parser) activeHours(e entry) *ActiveHours {
	const field = "budget.active_hours"
	h := &ActiveHours{Days: slices.Clone(allDays)}
	f := p.object(e.val, e.key, field, activeHoursFields)
	if f == nil {
		return h
	}
	if v, ok := f["timezone"]; ok {
		if s, ok := p.str(v.val, field+".timezone"); ok {
			loc, err := loadLocation(s)
			if err != nil {
				p.report(v.val, field+".timezone", fmt.Sprintf("unknown time zone %q", s),
					"use an IANA time zone name such as Europe/Berlin or UTC")
			}
			h.Timezone, h.Location = s, loc
		}
	}
	if v, ok := f["days"]; ok {
		h.Days = p.days(v.val, field+".days")
	}
	clock := func(name string) (s string, minutes int, ok bool) {
		v, ok := f[name]
		if !ok {
			return "", 0, false
		}
		if s, ok = p.str(v.val, field+"."+name); !ok {
			return "", 0, false
		}
		if minutes, ok = parseClock(s); !ok {
			p.report(v.val, field+"."+name, fmt.Sprintf("invalid time of day %q", s),
				`use HH:MM on a 24-hour clock, such as "08:00"`)
		}
		return s, minutes, ok
	}
	var start, end int
	var okStart, okEnd bool
	h.Start, start, okStart = clock("start")
	h.End, end, okEnd = clock("end")
	if okStart && okEnd && start == end {
		p.report(f["end"].val, field+".end", "end is the same as start",
			"remove active_hours to allow any time of day")
	}
	return h
}

func (p *parser) days(n *yaml.Node, field string) []time.Weekday {
	items, ok := p.seq(n, field)
	if !ok {
		return nil
	}
	if len(items) == 0 {
		p.report(n, field, "no days are listed", "list days such as [mon, tue], or remove days for every day")
	}
	var days []time.Weekday
	seen := map[time.Weekday]bool{}
	for i, it := range items {
		f := indexed(field, i)
		s, ok := p.str(it, f)
		if !ok {
			continue
		}
		d, ok := parseDay(s)
		switch {
		case !ok:
			p.report(it, f, fmt.Sprintf("unknown day %q", s), "use mon, tue, wed, thu, fri, sat or sun")
		case seen[d]:
			p.report(it, f, fmt.Sprintf("day %q is listed twice", s), "remove the duplicate")
		default:
			seen[d] = true
			days = append(days, d)
		}
	}
	return days
}

func (p *parser) termination(e entry, t *Termination, m *Manifest) {
	f := p.object(e.val, e.key, "termination", terminationFields)
	if v, ok := f["notify"]; ok {
		t.Notify = p.notify(v.val, "termination.notify")
	}
	v, ok := f["revoke"]
	if !ok {
		return
	}
	const field = "termination.revoke"
	if v.val.Kind == yaml.ScalarNode && v.val.ShortTag() == "!!str" {
		if v.val.Value != RevokeAll {
			p.report(v.val, field, fmt.Sprintf("invalid revoke %q", v.val.Value),
				"use all, or a list of connector names declared in scope.connectors")
		}
		return
	}
	if v.val.Kind != yaml.SequenceNode {
		p.wrongType(v.val, field, "all or a list of connector names")
		return
	}
	items := v.val.Content
	if len(items) == 0 {
		p.report(v.val, field, "no connectors are listed", "use all, or list the connectors to revoke")
		return
	}
	var revoke []string
	seen := map[string]bool{}
	for i, it := range items {
		fi := indexed(field, i)
		s, ok := p.str(it, fi)
		if !ok {
			continue
		}
		switch _, declared := m.Connector(s); {
		case s == RevokeAll:
			if len(items) > 1 {
				p.report(it, fi, "all cannot be combined with connector names", "use revoke: all alone")
			}
		case seen[s]:
			p.report(it, fi, fmt.Sprintf("connector %q is listed twice", s), "remove the duplicate")
			continue
		case !declared:
			p.report(it, fi, fmt.Sprintf("connector %q is not declared in scope.connectors", s),
				"declare it in scope.connectors or remove it from revoke")
		}
		seen[s] = true
		revoke = append(revoke, s)
	}
	t.Revoke = revoke
}

func (p *parser) notify(n *yaml.Node, field string) []string {
	out := []string{}
	items, ok := p.seq(n, field)
	if !ok {
		return out
	}
	seen := map[string]bool{}
	for i, it := range items {
		fi := indexed(field, i)
		s, ok := p.str(it, fi)
		if !ok {
			continue
		}
		key := s // URLs compare exactly, email addresses without regard to case
		if strings.Contains(s, "://") {
			if msg, hint := checkWebhook(s); msg != "" {
				p.report(it, fi, msg, hint)
				continue
			}
		} else if validEmail(s) {
			key = strings.ToLower(s)
		} else {
			p.report(it, fi, fmt.Sprintf("%q is not an email address or https URL", s),
				"write a plain address such as dana@example.com, or an https:// webhook URL")
			continue
		}
		if seen[key] {
			p.report(it, fi, fmt.Sprintf("%q is listed twice", s), "remove the duplicate")
			continue
		}
		seen[key] = true
		out = append(out, s)
	}
	return out
}

// checkWebhook returns a message and hint when s is not an acceptable webhook URL.
func checkWebhook(s string) (msg, hint string) {
	u, err := url.Parse(s)
	switch {
	case err != nil || u.Host == "":
		return "invalid webhook URL", "write it as https://host/path"
	case u.Scheme != "https":
		return fmt.Sprintf("webhook URL scheme %q is not allowed", u.Scheme), "use an https:// URL"
	case u.User != nil:
		// Invariant: secrets never appear in records, and manifests are recorded.
		return "webhook URL must not contain a user name or password",
			"configure webhook credentials on the server, not in the manifest"
	}
	return "", ""
}

// emails reads a list of unique email addresses. seen is shared between lists that
// must not overlap; where names those lists for the message.
func (p *parser) emails(n *yaml.Node, field string, seen map[string]*yaml.Node, where string) []string {
	out := []string{}
	items, ok := p.seq(n, field)
	if !ok {
		return out
	}
	for i, it := range items {
		fi := indexed(field, i)
		s, ok := p.email(it, fi)
		if !ok {
			continue
		}
		k := strings.ToLower(s)
		if prev, dup := seen[k]; dup {
			p.report(it, fi, fmt.Sprintf("%q is already listed in %s (line %d)", s, where, prev.Line),
				"remove the duplicate")
			continue
		}
		seen[k] = it
		out = append(out, s)
	}
	return out
}

func (p *parser) email(n *yaml.Node, field string) (string, bool) {
	s, ok := p.str(n, field)
	if !ok {
		return "", false
	}
	if !validEmail(s) {
		p.report(n, field, fmt.Sprintf("%q is not an email address", s),
			"write a plain address such as dana@example.com")
		return "", false
	}
	return s, true
}

// validEmail accepts plain ASCII addresses, local@domain.tld, without display names
// or comments: the forms people write in a config file, and nothing that could be
// mistaken for something else.
func validEmail(s string) bool {
	if len(s) > 254 {
		return false
	}
	local, domain, ok := strings.Cut(s, "@")
	if !ok || local == "" || len(local) > 64 || strings.Contains(domain, "@") {
		return false
	}
	if local[0] == '.' || local[len(local)-1] == '.' || strings.Contains(local, "..") {
		return false
	}
	for _, r := range local {
		if !isAlnum(r) && !strings.ContainsRune("!#$%&'*+-/=?^_`{|}~.", r) {
			return false
		}
	}
	labels := strings.Split(domain, ".")
	if len(labels) < 2 {
		return false
	}
	for _, l := range labels {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for _, r := range l {
			if !isAlnum(r) && r != '-' {
				return false
			}
		}
	}
	tld := labels[len(labels)-1]
	return strings.ContainsFunc(tld, func(r rune) bool { return !('0' <= r && r <= '9') })
}

func isAlnum(r rune) bool {
	return 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9'
}

// entry is one key and its value in a mapping.
type entry struct{ key, val *yaml.Node }

// entries checks that n is a mapping with plain, unique keys and returns its entries
// in file order. path names the field of a key, for messages.
func (p *parser) entries(n *yaml.Node, field string, path func(string) string) ([]entry, bool) {
	if n.Kind != yaml.MappingNode {
		p.wrongType(n, field, "a mapping")
		return nil, false
	}
	var out []entry
	seen := map[string]*yaml.Node{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			if k.Kind != yaml.AliasNode {
				p.report(k, field, "mapping keys must be plain text", "")
			}
			continue
		}
		if prev, dup := seen[k.Value]; dup {
			p.report(k, path(k.Value), fmt.Sprintf("duplicate key %q (first on line %d)", k.Value, prev.Line),
				"each key may appear only once: merge the two or remove one")
			continue
		}
		seen[k.Value] = k
		out = append(out, entry{k, v})
	}
	return out, true
}

// object reads a mapping with the fields of fs, reporting unknown and missing fields.
// at is where a missing field is reported: the key of the mapping. It returns nil if
// n is not a mapping.
func (p *parser) object(n, at *yaml.Node, field string, fs fieldSet) map[string]entry {
	entries, ok := p.entries(n, field, func(k string) string { return join(field, k) })
	if !ok {
		return nil
	}
	out := make(map[string]entry, len(entries))
	for _, e := range entries {
		k := e.key.Value
		if !slices.Contains(fs.known, k) {
			p.report(e.key, join(field, k), fmt.Sprintf("unknown field %q", k), unknownHint(k, fs.known))
			continue
		}
		out[k] = e
	}
	for _, r := range fs.required {
		if _, ok := out[r]; ok {
			continue
		}
		hint, since := requiredSince[join(field, r)]
		switch {
		case since && p.hired:
		case since:
			p.report(at, join(field, r), "required field is missing", hint)
		default:
			p.report(at, join(field, r), "required field is missing", "add "+r)
		}
	}
	return out
}

func unknownHint(k string, known []string) string {
	best, bestDist := "", 3
	for _, c := range known {
		if d := editDistance(strings.ToLower(k), strings.ToLower(c)); d < bestDist {
			best, bestDist = c, d
		}
	}
	if best != "" {
		return fmt.Sprintf("did you mean %s?", best)
	}
	return "known fields here: " + strings.Join(known, ", ")
}

// editDistance is the Levenshtein distance, for "did you mean" hints on short names.
func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return 64
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

func (p *parser) seq(n *yaml.Node, field string) ([]*yaml.Node, bool) {
	if n.Kind != yaml.SequenceNode {
		p.wrongType(n, field, "a list")
		return nil, false
	}
	return n.Content, true
}

func (p *parser) str(n *yaml.Node, field string) (string, bool) {
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!str" {
		p.wrongType(n, field, "a string")
		return "", false
	}
	return n.Value, true
}

func (p *parser) boolean(n *yaml.Node, field string) (bool, bool) {
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!bool" {
		p.wrongType(n, field, "true or false")
		return false, false
	}
	var v bool
	if err := n.Decode(&v); err != nil {
		p.wrongType(n, field, "true or false")
		return false, false
	}
	return v, true
}

func (p *parser) integer(n *yaml.Node, field string) (int, bool) {
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!float" && digitsRE.MatchString(n.Value) {
		// The YAML library resolves integers too large for int64 as floats.
		p.report(n, field, fmt.Sprintf("number %s is out of range", n.Value), "")
		return 0, false
	}
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!int" {
		p.wrongType(n, field, "a whole number")
		return 0, false
	}
	var v int
	if err := n.Decode(&v); err != nil {
		p.report(n, field, fmt.Sprintf("number %s is out of range", n.Value), "")
		return 0, false
	}
	return v, true
}

func (p *parser) duration(n *yaml.Node, field string, limit time.Duration) (time.Duration, bool) {
	const hint = "use a Go duration such as 30s, 15m or 2h"
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!str" {
		p.wrongType(n, field, "a duration")
		return 0, false
	}
	d, err := time.ParseDuration(n.Value)
	switch {
	case err != nil:
		p.report(n, field, fmt.Sprintf("invalid duration %q", n.Value), hint)
	case d <= 0:
		p.report(n, field, "duration must be greater than zero", hint)
	case d > limit:
		p.report(n, field, fmt.Sprintf("duration %s is longer than the limit of %s", n.Value, formatDuration(limit)),
			fmt.Sprintf("use at most %s", formatDuration(limit)))
	default:
		return d, true
	}
	return 0, false
}

func (p *parser) wrongType(n *yaml.Node, field, want string) {
	if n.Kind == yaml.AliasNode {
		return // reported by rejectAnchors
	}
	got := describe(n)
	hint := ""
	switch {
	case isNull(n):
		hint = "write a value after the colon"
		switch want {
		case "a list":
			hint = "write a list such as [a, b], or [] for none"
		case "a mapping":
			hint = "add its fields on the lines below, indented"
		}
	case want == "a string" && n.Kind == yaml.ScalarNode:
		hint = fmt.Sprintf("put the value in quotes: %q", n.Value)
	case want == "a duration" && n.Kind == yaml.ScalarNode:
		hint = "use a Go duration with a unit, such as 30s, 15m or 2h"
	case want == "a whole number" && n.ShortTag() == "!!str" && n.Style&(yaml.DoubleQuotedStyle|yaml.SingleQuotedStyle) != 0:
		hint = "remove the quotes"
	case want == "a list" && n.Kind == yaml.ScalarNode:
		hint = fmt.Sprintf("write it as a list: [%s]", n.Value)
	}
	p.report(n, field, fmt.Sprintf("expected %s, got %s", want, got), hint)
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		switch t := n.ShortTag(); t {
		case "!!str":
			return "a string"
		case "!!int":
			return "a whole number"
		case "!!float":
			return "a number"
		case "!!bool":
			return "a boolean"
		case "!!null":
			return "nothing"
		case "!!timestamp":
			return "a timestamp"
		default:
			return "a value tagged " + t
		}
	}
	return "an unexpected value"
}

func join(parent, name string) string {
	if parent == "" {
		return name
	}
	return parent + "." + name
}

// keyed names an entry of a mapping whose keys are names, in a way that stays
// unambiguous when names contain dots: scope.connectors["salesforce"].
func keyed(parent, key string) string {
	return parent + "[" + strconv.Quote(key) + "]"
}

func indexed(parent string, i int) string {
	return parent + "[" + strconv.Itoa(i) + "]"
}
