package console_test

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/arxsec/arx/agentvault"
	"github.com/arxsec/arx/arxerr"
	"github.com/arxsec/arx/internal/arxtest"
)

// driftAgent hires arxtest.Manifest (approver boss@example.com), makes a
// few calls and one undeclared action (drift, recorded), and returns the
// agent's id and token.
func driftAgent(t *testing.T, s *arxtest.Server) (id, token string) {
	t.Helper()
	id, token = s.Hire(arxtest.Manifest)
	c := sdk(t, s, token)
	for _, a := range []agentvault.Action{
		{Connector: "crm", Action: "account.read", Summary: "account 7"},
		{Connector: "db", Action: "query", Summary: "pipeline"},
		{Connector: "crm", Action: "account.purge", Summary: "purge account 9"},
	} {
		if _, err := agentvault.Do(t.Context(), c, a, func(context.Context, agentvault.Credential) (int, error) { return 1, nil }); err != nil {
			t.Fatalf("%s %s: %v", a.Connector, a.Action, err)
		}
	}
	return id, token
}

var ackAction = regexp.MustCompile(`action="(/console/agents/[^/"]+/drift/(\d+)/ack)"`)

func TestReviewShowsDriftAndAcknowledges(t *testing.T) {
	s := arxtest.Start(t)
	id, _ := driftAgent(t, s)
	addManager(t, s, "boss@example.com")
	addManager(t, s, "stranger@example.com")
	boss := newBrowser(t, s)
	boss.mustLogin("boss@example.com")

	p := boss.get("/console/agents/" + id + "/review?days=7")
	if p.Status != http.StatusOK {
		t.Fatalf("review: %d\n%s", p.Status, p.Body)
	}
	for _, want := range []string{"Performance review of test-agent", "Outside the job description", "account.purge",
		"Not in the job description", "account.read", "Calls per day", "<svg", "chart-mark", "Recorded", "Acknowledge",
		`aria-current="page">7 days`} {
		if !strings.Contains(p.Body, want) {
			t.Errorf("review page lacks %q", want)
		}
	}
	if strings.Contains(p.Body, "style=") {
		t.Error("the review page has a style attribute (the CSP forbids it)")
	}
	m := ackAction.FindStringSubmatch(p.Body)
	if m == nil {
		t.Fatalf("no acknowledge form:\n%s", p.Body)
	}
	ackPath, index := m[1], m[2]
	csrf := p.csrf(t)

	// The days are checked.
	for _, q := range []string{"0", "91", "x"} {
		if p := boss.get("/console/agents/" + id + "/review?days=" + q); p.Status != http.StatusBadRequest {
			t.Errorf("days=%s: %d", q, p.Status)
		}
	}
	if p := boss.get("/console/agents/" + id + "/review?days=90"); p.Status != http.StatusOK {
		t.Errorf("days=90: %d", p.Status)
	}
	if p := boss.get("/console/agents/nobody/review"); p.Status != http.StatusNotFound {
		t.Errorf("unknown agent: %d", p.Status)
	}

	// CSRF and origin are required.
	for _, tc := range []struct {
		name, origin string
		form         url.Values
	}{
		{"no token", s.URL, url.Values{"note": {"seen"}}},
		{"wrong token", s.URL, url.Values{"note": {"seen"}, "csrf": {flipLast(csrf)}}},
		{"another origin", "http://evil.example", url.Values{"note": {"seen"}, "csrf": {csrf}}},
	} {
		if p := boss.postFrom(tc.origin, ackPath, tc.form); p.Status != http.StatusForbidden || !strings.Contains(p.Body, "auth.csrf") {
			t.Errorf("%s: %d", tc.name, p.Status)
		}
	}
	// An empty note is refused on the page, and nothing is recorded.
	p = boss.post(ackPath, url.Values{"csrf": {csrf}, "note": {"  "}, "days": {"7"}})
	if p.Status != http.StatusBadRequest || !strings.Contains(p.Body, "Your note was not recorded") || !strings.Contains(p.Body, "A note of 1 to 1024 bytes of valid UTF-8, without NUL characters, is required") {
		t.Fatalf("empty note: %d\n%s", p.Status, p.Body)
	}
	// Someone not responsible for the agent is refused.
	stranger := newBrowser(t, s)
	stranger.mustLogin("stranger@example.com")
	sp := stranger.get("/console/agents/" + id + "/review")
	if sp.Status != http.StatusOK || ackAction.MatchString(sp.Body) || !strings.Contains(sp.Body, "Not acknowledged yet") {
		t.Fatalf("the stranger's review: %d", sp.Status)
	}
	sp = stranger.post(ackPath, url.Values{"csrf": {sp.csrf(t)}, "note": {"mine now"}})
	if sp.Status != http.StatusForbidden || !strings.Contains(sp.Body, "You cannot acknowledge") || !strings.Contains(sp.Body, "auth.forbidden") {
		t.Fatalf("the stranger's acknowledgement: %d\n%s", sp.Status, sp.Body)
	}
	// A wrong event is refused.
	if p := boss.post("/console/agents/"+id+"/drift/1/ack", url.Values{"csrf": {csrf}, "note": {"x"}}); p.Status != http.StatusNotFound ||
		!strings.Contains(p.Body, "is not a drift event") {
		t.Errorf("not a drift event: %d\n%s", p.Status, p.Body)
	}

	p = boss.post(ackPath, url.Values{"csrf": {csrf}, "note": {"Known: the purge job ships next week."}, "days": {"30"}})
	if p.Status != http.StatusSeeOther || p.Location() != "/console/agents/"+id+"/review?acked="+index+"&days=30#drift-"+index {
		t.Fatalf("acknowledge: %d %q\n%s", p.Status, p.Location(), p.Body)
	}
	p = boss.get("/console/agents/" + id + "/review?days=30&acked=" + index)
	for _, want := range []string{"Acknowledged", "Known: the purge job ships next week.", "boss@example.com", "Your note on this event is in the agent"} {
		if !strings.Contains(p.Body, want) {
			t.Errorf("after acknowledging, the page lacks %q", want)
		}
	}
	if ackAction.MatchString(p.Body) {
		t.Error("the acknowledged event still has a form")
	}
	// The agent page and the list link to the review.
	for _, path := range []string{"/console/agents/" + id, "/console/agents"} {
		if p := boss.get(path); !strings.Contains(p.Body, `href="/console/agents/`+id+`/review"`) {
			t.Errorf("%s does not link to the review", path)
		}
	}
}

func TestTerminate(t *testing.T) {
	s := arxtest.Start(t)
	id, token := s.Hire(testManifest)
	addManager(t, s, "boss@example.com")
	addManager(t, s, "stranger@example.com")
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	c := sdk(t, s, token)
	done := requestHighRisk(t, ctx, s, c, "delete account 19")
	call := pendingCall(t, s, "delete account 19")

	// A manager who is neither owner nor approver sees no button and is refused.
	stranger := newBrowser(t, s)
	stranger.mustLogin("stranger@example.com")
	sp := stranger.get("/console/agents/" + id)
	if strings.Contains(sp.Body, "/terminate") {
		t.Error("the stranger sees the terminate form")
	}
	for _, form := range []url.Values{
		{"csrf": {sp.csrf(t)}, "reason": {"cost"}},
		{"csrf": {sp.csrf(t)}, "reason": {"cost"}, "step": {"confirm"}, "confirm": {"sales-research"}},
	} {
		p := stranger.post("/console/agents/"+id+"/terminate", form)
		if p.Status != http.StatusForbidden || !strings.Contains(p.Body, "You cannot terminate this agent") || strings.Contains(p.Body, `name="confirm"`) {
			t.Fatalf("the stranger's termination: %d\n%s", p.Status, p.Body)
		}
	}

	boss := newBrowser(t, s)
	boss.mustLogin("boss@example.com")
	p := boss.get("/console/agents/" + id)
	if !strings.Contains(p.Body, `action="/console/agents/`+id+`/terminate"`) {
		t.Fatalf("no terminate form for the approver:\n%s", p.Body)
	}
	csrf := p.csrf(t)
	path := "/console/agents/" + id + "/terminate"
	confirm := url.Values{"csrf": {csrf}, "reason": {"replaced by v2"}, "step": {"confirm"}, "confirm": {"sales-research"}}

	// The first step says who is told, and that nobody is when the server
	// has no notification channel.
	if p := boss.post(path, url.Values{"csrf": {csrf}, "reason": {"replaced by v2"}}); p.Status != http.StatusOK ||
		!strings.Contains(p.Body, "dana@example.com is <strong>not</strong> told: this server has no notification channel") {
		t.Errorf("the confirmation does not say that nobody is told:\n%s", p.Body)
	}

	// CSRF and origin are required on both steps.
	for _, tc := range []struct {
		name, origin string
		form         url.Values
	}{
		{"no token", s.URL, url.Values{"reason": {"x"}, "step": {"confirm"}, "confirm": {"sales-research"}}},
		{"wrong token", s.URL, url.Values{"csrf": {flipLast(csrf)}, "reason": {"x"}, "step": {"confirm"}, "confirm": {"sales-research"}}},
		{"another origin", "http://evil.example", confirm},
		{"no origin", "", confirm},
	} {
		if p := boss.postFrom(tc.origin, path, tc.form); p.Status != http.StatusForbidden || !strings.Contains(p.Body, "auth.csrf") {
			t.Errorf("%s: %d", tc.name, p.Status)
		}
	}
	// The first step only asks for confirmation.
	p = boss.post(path, url.Values{"csrf": {csrf}, "reason": {"replaced by v2"}})
	if p.Status != http.StatusOK || !strings.Contains(p.Body, "Terminate sales-research?") || !strings.Contains(p.Body, `name="confirm"`) ||
		!strings.Contains(p.Body, "replaced by v2") || !strings.Contains(p.Body, "dana@example.com") {
		t.Fatalf("confirmation page: %d\n%s", p.Status, p.Body)
	}
	// A wrong name, or none, or no reason changes nothing.
	for _, form := range []url.Values{
		{"csrf": {csrf}, "reason": {"replaced by v2"}, "step": {"confirm"}, "confirm": {"sales"}},
		{"csrf": {csrf}, "reason": {"replaced by v2"}, "step": {"confirm"}, "confirm": {"Sales-Research"}},
		{"csrf": {csrf}, "reason": {"replaced by v2"}, "step": {"confirm"}},
		{"csrf": {csrf}, "reason": {" "}, "step": {"confirm"}, "confirm": {"sales-research"}},
	} {
		p := boss.post(path, form)
		if p.Status != http.StatusBadRequest || !strings.Contains(p.Body, "Nothing was changed") || !strings.Contains(p.Body, `name="confirm"`) {
			t.Fatalf("%v: %d\n%s", form, p.Status, p.Body)
		}
	}
	if p := boss.get("/console/agents/" + id); !strings.Contains(p.Body, "Active") || strings.Contains(p.Body, "Terminated") {
		t.Fatal("a refused confirmation terminated the agent")
	}
	if st := approvalStatus(t, s, call); st != "pending" {
		t.Fatalf("approval after refused confirmations: %s", st)
	}

	p = boss.post(path, confirm)
	if p.Status != http.StatusSeeOther || p.Location() != "/console/agents/"+id+"?done=terminated" {
		t.Fatalf("terminate: %d %q\n%s", p.Status, p.Location(), p.Body)
	}
	p = boss.get(p.Location())
	for _, want := range []string{"sales-research is terminated", "Terminated", "by boss@example.com", "replaced by v2",
		"1 token revoked", "0 credentials revoked", "1 approval request cancelled"} {
		if !strings.Contains(p.Body, want) {
			t.Errorf("the agent page after termination lacks %q", want)
		}
	}
	if strings.Contains(p.Body, `action="/console/agents/`+id+`/terminate"`) {
		t.Error("a terminated agent still has a terminate form")
	}
	if st := approvalStatus(t, s, call); st != "cancelled" {
		t.Errorf("the pending approval is %s", st)
	}
	if o := <-done; o.ran || o.err == nil {
		t.Errorf("the waiting call after termination: %+v", o)
	}
	// The agent's token is refused by the API.
	_, err := agentvault.Do(t.Context(), c, agentvault.Action{Connector: "crm", Action: "account.read"},
		func(context.Context, agentvault.Credential) (int, error) { return 1, nil })
	if err == nil {
		t.Fatal("the terminated agent's token still works")
	}
	if !agentvault.IsCode(err, arxerr.InvalidToken) {
		t.Errorf("the terminated agent's call: %v", err)
	}
	// Terminating again is refused clearly.
	if p := boss.post(path, confirm); p.Status != http.StatusConflict || !strings.Contains(p.Body, "The agent is already terminated") {
		t.Errorf("second termination: %d\n%s", p.Status, p.Body)
	}
	if p := stranger.get("/console/agents"); !strings.Contains(p.Body, "Terminated") {
		t.Error("the agents list does not show the termination")
	}
}

// TestAcknowledgeAllOnThePage: with several open events, the review page
// offers one note for all; posting it acknowledges each, and the page says
// so only once nothing is open.
func TestAcknowledgeAllOnThePage(t *testing.T) {
	s := arxtest.Start(t)
	id, token := s.Hire(arxtest.Manifest)
	c := sdk(t, s, token)
	for i := range 3 {
		a := agentvault.Action{Connector: "crm", Action: "account.purge", Summary: fmt.Sprint("purge account ", i)}
		if _, err := agentvault.Do(t.Context(), c, a, func(context.Context, agentvault.Credential) (int, error) { return 1, nil }); err != nil {
			t.Fatal(err)
		}
	}
	addManager(t, s, "boss@example.com")
	boss := newBrowser(t, s)
	boss.mustLogin("boss@example.com")
	path := "/console/agents/" + id + "/review?days=7"
	p := boss.get(path)
	if !strings.Contains(p.Body, "Acknowledge all 3") || !strings.Contains(p.Body, `action="/console/agents/`+id+`/drift/ack"`) {
		t.Fatalf("no bulk form for 3 open events:\n%s", p.Body)
	}
	if p := boss.get(path + "&ackedall=3"); strings.Contains(p.Body, "Your note is on all") {
		t.Error("a crafted link makes the page claim a bulk acknowledgement")
	}
	r := boss.post("/console/agents/"+id+"/drift/ack", url.Values{"csrf": {p.csrf(t)}, "note": {"known: purge job being added"}, "days": {"7"}})
	if r.Status != http.StatusSeeOther {
		t.Fatalf("bulk ack: %d\n%s", r.Status, r.Body)
	}
	p = boss.get(r.Location())
	if !strings.Contains(p.Body, "Your note is on all 3 events") || strings.Contains(p.Body, "Acknowledge all") || strings.Count(p.Body, "known: purge job being added") != 3 {
		t.Fatalf("after the bulk ack:\n%s", p.Body)
	}
}

// TestReviewPagesDriftByKind: many performance events are grouped by kind
// (a filter per rule, with counts) and shown a page at a time, newest
// first; an acknowledgement keeps the manager on the kind and page they
// were reading.
func TestReviewPagesDriftByKind(t *testing.T) {
	s := arxtest.Start(t)
	id, token := s.Hire(arxtest.Manifest)
	c := sdk(t, s, token)
	// 25 undeclared actions and 2 risks declared lower in code than in the
	// manifest: two kinds of events.
	for i := range 27 {
		a := agentvault.Action{Connector: "crm", Action: "account.purge", Summary: fmt.Sprintf("purge %d", i)}
		if i >= 25 {
			a = agentvault.Action{Connector: "crm", Action: "account.export", Risk: agentvault.RiskLow, Summary: fmt.Sprintf("export %d", i)}
		}
		if _, err := agentvault.Do(t.Context(), c, a, func(context.Context, agentvault.Credential) (int, error) { return 1, nil }); err != nil {
			t.Fatal(err)
		}
	}
	addManager(t, s, "boss@example.com")
	boss := newBrowser(t, s)
	boss.mustLogin("boss@example.com")

	base := "/console/agents/" + id + "/review"
	p := boss.get(base + "?days=7")
	for _, want := range []string{`aria-label="Performance events by kind"`, `aria-current="true">All <span class="count">27</span>`,
		`Outside the job description <span class="count">25</span>`, "Events 1–20 of 27, newest first", "Page 1 of 2",
		`href="` + base + `?days=7&amp;page=2#drift-h" rel="next"`} {
		if !strings.Contains(p.Body, want) {
			t.Errorf("first page lacks %q", want)
		}
	}
	if n := len(ackAction.FindAllString(p.Body, -1)); n != 20 {
		t.Errorf("first page shows %d events to acknowledge, want 20", n)
	}
	p = boss.get(base + "?days=7&page=2")
	if !strings.Contains(p.Body, "Events 21–27 of 27") || !strings.Contains(p.Body, `rel="prev"`) || strings.Contains(p.Body, `rel="next"`) {
		t.Errorf("second page:\n%s", p.Body)
	}
	// One kind: the under-declared risks only.
	p = boss.get(base + "?days=7&rule=risk_underdeclared")
	if !strings.Contains(p.Body, "events 1–2 of 2") || len(ackAction.FindAllString(p.Body, -1)) != 2 {
		t.Errorf("filtered by kind:\n%s", p.Body)
	}
	// Acknowledging an event on page 2 comes back to page 2.
	p = boss.get(base + "?days=7&page=2")
	m := ackAction.FindStringSubmatch(p.Body)
	if m == nil {
		t.Fatal("no acknowledge form on page 2")
	}
	p2 := boss.post(m[1], url.Values{"csrf": {p.csrf(t)}, "note": {"seen"}, "days": {"7"}, "page": {"2"}})
	if p2.Status != http.StatusSeeOther || !strings.Contains(p2.Location(), "page=2") {
		t.Errorf("acknowledge on page 2: %d %q", p2.Status, p2.Location())
	}
}
