package console

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/arxsec/arx/arxerr"
	"github.com/arxsec/arx/internal/api"
	"github.com/arxsec/arx/internal/inert"
	"github.com/arxsec/arx/internal/runtime"
	"github.com/arxsec/arx/internal/store"
	"github.com/arxsec/arx/record"
)

const minPassword = runtime.MinPasswordBytes

// pageTemplate is one page: the shared layout and partials plus the page's
// own "main".
type pageTemplate struct {
	t       *template.Template
	section string // the navigation entry it belongs to
	live    bool   // it refreshes itself on server-sent events
}

// pageInfo lists the pages: template file, navigation section, live.
var pageInfo = map[string]struct {
	section string
	live    bool
}{
	"login":     {"", false},
	"setup":     {"", false},
	"error":     {"", false},
	"dashboard": {"dashboard", true},
	"approvals": {"approvals", true},
	"approval":  {"approvals", true},
	"agents":    {"agents", false},
	"agent":     {"agents", false},
	"record":    {"agents", false},
	"review":    {"agents", false},
	"terminate": {"agents", false},
	"people":    {"people", false},
	"passkeys":  {"passkeys", false},
	"replay":    {"agents", false},
	"link":      {"passkeys", false},
}

func parseTemplates(static *staticFiles) map[string]*pageTemplate {
	funcs := templateFuncs(static)
	out := map[string]*pageTemplate{}
	for name, info := range pageInfo {
		t := template.New(name).Funcs(funcs)
		t = template.Must(t.ParseFS(files, "templates/layout.html", "templates/partials.html", "templates/"+name+".html"))
		out[name] = &pageTemplate{t: t, section: info.section, live: info.live}
	}
	return out
}

// page is what every template gets.
type page struct {
	Title   string
	Section string
	Live    bool
	User    *store.User // nil when not signed in
	CSRF    string
	Pending int // pending approvals, for the navigation
	Data    any
}

// render writes a page. It renders into a buffer first, so a template
// failure never leaves half a page.
func (c *Console) render(w http.ResponseWriter, r *http.Request, status int, name, title string, data any) error {
	pt, ok := c.pages[name]
	if !ok {
		return fmt.Errorf("console: no template %q", name)
	}
	p := page{Title: title, Section: pt.section, Live: pt.live, Data: data}
	if v := viewerOf(r); v != nil {
		p.User, p.CSRF = v.User, v.csrf
		if list, err := c.rt.Store().Approvals(r.Context(), store.ApprovalPending, 1000); err == nil {
			p.Pending = len(list)
		}
	}
	var buf bytes.Buffer
	if err := pt.t.ExecuteTemplate(&buf, "layout", p); err != nil {
		return fmt.Errorf("console: render %s: %w", name, err)
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, err := w.Write(buf.Bytes())
	return err
}

type errorData struct {
	Status  int
	Heading string
	Message string
	Hint    string
	Code    arxerr.Code
	SignIn  bool
}

func notFound(msg string) error { return arxerr.New(arxerr.NotFound, "%s", msg) }

// writeErrorPage answers with err: an arxerr.Error as it is (its message is
// meant for people), anything else as "internal error", logged.
func (c *Console) writeErrorPage(w http.ResponseWriter, r *http.Request, err error) {
	var ae *arxerr.Error
	if !errors.As(err, &ae) {
		c.log.Error("console request failed", "path", r.URL.Path, "err", err)
		ae = arxerr.New(arxerr.Internal, "something went wrong on the server; it has been logged")
	}
	if m := api.RedactTokens(ae.Message); m != ae.Message {
		cp := *ae
		cp.Message = m
		ae = &cp
	}
	status := ae.Status
	if status == 0 {
		status = arxerr.Lookup(ae.Code).Status
	}
	if strings.Contains(r.Header.Get("Accept"), "application/json") && !strings.Contains(r.Header.Get("Accept"), "text/html") {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(status)
		json.NewEncoder(w).Encode(arxerr.Body{Error: ae})
		return
	}
	d := errorData{Status: status, Code: ae.Code, Message: sentence(ae.Message), Hint: sentence(ae.Hint)}
	switch ae.Code {
	case arxerr.CSRFFailed:
		d.Heading = "This form was refused"
		d.Hint = "Nothing was changed. Reload the page and submit the form again."
	case arxerr.Unauthenticated:
		d.Heading = "You are not signed in"
		d.SignIn = true
		d.Hint = ""
	case arxerr.NotFound, arxerr.AgentNotFound, arxerr.ApprovalNotFound:
		d.Heading = "Not found"
		d.Hint = ""
	case arxerr.Internal:
		d.Heading = "Something went wrong"
	default:
		d.Heading = "The request was refused"
	}
	if rerr := c.render(w, r, status, "error", d.Heading, d); rerr != nil {
		c.log.Error("console error page", "err", rerr)
		http.Error(w, d.Heading, status)
	}
}

// sentence capitalises a runtime message for display.
func sentence(s string) string {
	s = strings.TrimSpace(s)
	if s == "" {
		return ""
	}
	// Capitalise a word, never an address, a name or a code.
	if first, _, _ := strings.Cut(s, " "); !strings.ContainsAny(first, "@./_:-\"") {
		s = strings.ToUpper(s[:1]) + s[1:]
	}
	if !strings.HasSuffix(s, ".") && !strings.HasSuffix(s, "?") && !strings.HasSuffix(s, ")") {
		s += "."
	}
	return s
}

func templateFuncs(static *staticFiles) template.FuncMap {
	return template.FuncMap{
		"asset":       static.url,
		"iso":         func(t time.Time) string { return t.UTC().Format(time.RFC3339) },
		"when":        when,
		"whenPrecise": func(t time.Time) string { return t.UTC().Format("2 Jan 2006, 15:04:05 UTC") },
		"isoPrecise":  func(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) },
		"left":        func(t time.Time) string { return timeLeft(time.Until(t)) },
		"ago":         func(t time.Time) string { return ago(time.Since(t)) },
		"dur":         duration,
		"short":       shortID,
		// Text an agent (or an upstream, or anyone but ARX) wrote: clip
		// for one line, inert for a quoted block. Neither lets it reorder
		// or hide what is shown (bidi overrides, zero-width characters,
		// controls are escaped visibly); html/template escapes the markup.
		"clip":     func(n int, s string) string { return truncateRunes(inert.Text(s), n, "…") },
		"keyid":    keyID,
		"argsText": argsText,
		"inert":    inert.Block,
		"person":   person,
		"actor":    actorLabel,
		"initials": initials,
		"join":     strings.Join,
		"statusLabel": func(s string) string {
			if l, ok := statusLabels[s]; ok {
				return l
			}
			return s
		},
		"statusClass": statusClass,
		"typeClass":   typeClass,
		"title": func(s string) string {
			if s == "" {
				return s
			}
			return strings.ToUpper(s[:1]) + s[1:]
		},
		"count64": count64,
		"plural64": func(n int64, one, many string) string {
			if n == 1 {
				return fmt.Sprintf("%d %s", n, one)
			}
			return fmt.Sprintf("%d %s", n, many)
		},
		"plural": func(v any, one, many string) string {
			var n int64
			switch x := v.(type) {
			case int:
				n = int64(x)
			case int64:
				n = x
			}
			if n == 1 {
				return fmt.Sprintf("%d %s", n, one)
			}
			return fmt.Sprintf("%d %s", n, many)
		},
	}
}

// when is an absolute time as the server writes it (the page script shows
// it in the reader's time zone).
func when(t time.Time) string { return t.UTC().Format("2 Jan 2006, 15:04 UTC") }

func timeLeft(d time.Duration) string {
	if d <= 0 {
		return "expired"
	}
	d = d.Truncate(time.Second)
	h, m, s := int(d.Hours()), int(d.Minutes())%60, int(d.Seconds())%60
	switch {
	case h > 0:
		return fmt.Sprintf("%dh %02dm left", h, m)
	case m > 0:
		return fmt.Sprintf("%dm %02ds left", m, s)
	}
	return fmt.Sprintf("%ds left", s)
}

func ago(d time.Duration) string {
	switch {
	case d < 10*time.Second:
		return "just now"
	case d < time.Minute:
		return fmt.Sprintf("%d s ago", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%d min ago", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%d h ago", int(d.Hours()))
	}
	return fmt.Sprintf("%d days ago", int(d.Hours()/24))
}

// duration writes a manifest duration the way people say it.
func duration(d time.Duration) string {
	switch {
	case d <= 0:
		return "—"
	case d%time.Hour == 0:
		return fmt.Sprintf("%d h", d/time.Hour)
	case d%time.Minute == 0:
		return fmt.Sprintf("%d min", d/time.Minute)
	case d%time.Second == 0:
		return fmt.Sprintf("%d s", d/time.Second)
	}
	return d.String()
}

// shortID is the tail of an id: call ids are UUIDv7, whose heads are
// timestamps that calls made together share.
func shortID(id string) string {
	id = strings.ReplaceAll(id, "-", "")
	if len(id) <= 8 {
		return id
	}
	return id[len(id)-8:]
}

// argsText is a call's arguments (canonical JSON) indented for reading,
// and made inert: the agent wrote them.
func argsText(s string) string {
	var b bytes.Buffer
	if err := json.Indent(&b, []byte(s), "", "  "); err != nil {
		return inert.Block(s)
	}
	return inert.Block(b.String())
}

// keyID is a passkey's credential id (base64url) as people see it: its
// first characters, enough to tell keys apart.
func keyID(id string) string { return truncateRunes(id, 10, "…") }

func truncateRunes(s string, n int, tail string) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n]) + tail
}

// person is the email of a "user:" actor, or the actor itself.
func person(actor string) string {
	switch {
	case strings.HasPrefix(actor, "user:"):
		return strings.TrimPrefix(actor, "user:")
	case actor == "system":
		return "ARX (time-out)"
	}
	return actor
}

// actorLabel names who caused a record entry.
func actorLabel(actor, agentID string) string {
	switch {
	case actor == "agent:"+agentID:
		return "the agent"
	case strings.HasPrefix(actor, "agent:"):
		return "agent " + shortID(strings.TrimPrefix(actor, "agent:"))
	case strings.HasPrefix(actor, "user:"):
		return strings.TrimPrefix(actor, "user:")
	case strings.HasPrefix(actor, "admin"):
		return "operator"
	case actor == "system":
		return "ARX"
	case actor == "":
		return "—"
	}
	return actor
}

func initials(email string) string {
	name, _, _ := strings.Cut(email, "@")
	parts := strings.FieldsFunc(name, func(r rune) bool { return r == '.' || r == '_' || r == '-' || r == '+' })
	out := ""
	for _, p := range parts {
		out += strings.ToUpper(truncateRunes(p, 1, ""))
		if len([]rune(out)) == 2 {
			break
		}
	}
	if out == "" {
		out = "?"
	}
	return out
}

var statusLabels = map[string]string{
	// approvals
	store.ApprovalPending:   "Pending",
	store.ApprovalGranted:   "Approved",
	store.ApprovalDenied:    "Denied",
	store.ApprovalExpired:   "Expired",
	store.ApprovalWithdrawn: "Withdrawn",
	store.ApprovalCancelled: "Cancelled",
	// calls
	store.CallPending:   "Awaiting approval",
	store.CallApproved:  "In progress",
	store.CallCompleted: "Completed",
	store.CallFailed:    "Failed",
	store.CallRefused:   "Refused",
	store.CallRevoked:   "Revoked",
	// agents
	store.AgentActive:     "Active",
	store.AgentSuspended:  "Suspended",
	store.AgentTerminated: "Terminated",
}

// statusClass is the badge colour of a status; the badge always carries
// its text too.
func statusClass(s string) string {
	switch s {
	case store.ApprovalPending, store.CallPending, store.AgentSuspended:
		return "warn"
	case store.ApprovalGranted, store.CallCompleted, store.AgentActive:
		return "ok"
	case store.CallApproved:
		return "info"
	case store.ApprovalDenied, store.CallFailed, store.CallRefused, store.CallRevoked, store.AgentTerminated:
		return "bad"
	}
	return "muted"
}

// typeClass colours a record entry type.
func typeClass(t string) string {
	switch {
	case t == "credential.refused" || t == "approval.denied" || t == "agent.terminated" || t == "call.expired" || t == "approval.expired":
		return "bad"
	case t == "drift.detected":
		return "warn"
	case t == "approval.granted" || t == "credential.issued" || t == "agent.hired":
		return "ok"
	case strings.HasPrefix(t, "approval.") || t == "call.requested":
		return "info"
	}
	return "muted"
}

// dataPairs renders an entry's data as key/value lines.
type dataPair struct{ Key, Value string }

func dataPairs(m map[string]any) []dataPair {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([]dataPair, 0, len(keys))
	for _, k := range keys {
		if pk, ok := m[k].(map[string]any); ok && k == "passkey" {
			// A signed decision: the signature's bytes say nothing to a
			// reader; which key signed, and when, does.
			out = append(out, dataPair{Key: "passkey", Value: inert.Text("signed with " + keyID(record.Str(pk, "credential_id")) +
				" at " + record.Str(pk, "decided_at"))})
			continue
		}
		out = append(out, dataPair{Key: inert.Text(k), Value: truncateRunes(inert.Text(valueText(m[k])), 200, "…")})
	}
	return out
}

func valueText(v any) string {
	switch x := v.(type) {
	case nil:
		return "—"
	case string:
		if x == "" {
			return "—"
		}
		return x
	case []any:
		parts := make([]string, 0, len(x))
		for _, e := range x {
			parts = append(parts, valueText(e))
		}
		if len(parts) == 0 {
			return "—"
		}
		return strings.Join(parts, ", ")
	case json.Number:
		return x.String()
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}

// count64 writes a count with thousands separated: 2,000,000.
func count64(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, r := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(r)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}
