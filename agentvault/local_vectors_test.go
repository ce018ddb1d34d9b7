package agentvault

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/arxsec/arx/arxerr"
	"github.com/arxsec/arx/internal/inert"
	"github.com/arxsec/arx/manifest"
	"github.com/arxsec/arx/record"
)

// The shared test vectors in testdata/vectors pin what the Go code and the
// Python SDK (sdks/agentvault-py/tests/test_vectors.py) must agree on: the
// canonical bytes and leaf hash of record entries, and the decisions a
// manifest makes. These tests check the Go side and, with -update, rewrite
// the expected values from it.

var updateVectors = flag.Bool("update", false, "rewrite the expected values in testdata/vectors")

var vectorsDir = filepath.Join("..", "testdata", "vectors")

type canonicalVectors struct {
	About   string `json:"about"`
	Entries []struct {
		Name      string         `json:"name"`
		Entry     map[string]any `json:"entry"`
		Canonical string         `json:"canonical"`
		LeafHash  string         `json:"leaf_hash"`
	} `json:"entries"`
	Rejected []struct {
		Name string `json:"name"`
		JSON string `json:"json"`
	} `json:"rejected"`
}

func readVector(t *testing.T, name string, v any) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(vectorsDir, name))
	if err != nil {
		t.Fatal(err)
	}
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	if err := d.Decode(v); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
}

func writeVector(t *testing.T, name string, v any) {
	t.Helper()
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(vectorsDir, name), buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// entryFromVector builds a record.Entry from the vector's fields.
func entryFromVector(t *testing.T, m map[string]any) *record.Entry {
	t.Helper()
	str := func(k string) string {
		s, ok := m[k].(string)
		if !ok {
			t.Fatalf("vector field %q is not a string: %#v", k, m[k])
		}
		return s
	}
	idx, err := m["index"].(json.Number).Int64()
	if err != nil {
		t.Fatal(err)
	}
	tm, err := time.Parse(record.TimeFormat, str("time"))
	if err != nil {
		t.Fatal(err)
	}
	data, _ := m["data"].(map[string]any)
	return &record.Entry{Index: idx, Time: tm, Agent: str("agent"), Prev: str("prev"), Type: str("type"), Call: str("call"),
		Connector: str("connector"), Action: str("action"), Risk: str("risk"), Actor: str("actor"), Data: data}
}

func TestVectorsCanonical(t *testing.T) {
	var v canonicalVectors
	readVector(t, "canonical.json", &v)
	if len(v.Entries) < 8 || len(v.Rejected) < 10 {
		t.Fatalf("too few vectors: %d entries, %d rejected", len(v.Entries), len(v.Rejected))
	}
	for i := range v.Entries {
		vec := &v.Entries[i]
		t.Run(vec.Name, func(t *testing.T) {
			e := entryFromVector(t, vec.Entry)
			got, err := e.Marshal()
			if err != nil {
				t.Fatalf("marshal: %v", err)
			}
			leaf := record.HashString(record.LeafHash(got))
			if *updateVectors {
				vec.Canonical, vec.LeafHash = string(got), leaf
				return
			}
			if string(got) != vec.Canonical {
				t.Errorf("canonical bytes\n got %s\nwant %s", got, vec.Canonical)
			}
			if leaf != vec.LeafHash {
				t.Errorf("leaf hash %s, want %s", leaf, vec.LeafHash)
			}
			// The stored text parses back to itself.
			back, err := record.Parse([]byte(vec.Canonical))
			if err != nil {
				t.Fatalf("parse of the canonical text: %v", err)
			}
			if again, _ := back.Marshal(); string(again) != vec.Canonical {
				t.Errorf("parse and marshal changed the entry:\n%s", again)
			}
		})
	}
	for _, vec := range v.Rejected {
		t.Run("rejected/"+vec.Name, func(t *testing.T) {
			if _, err := record.Parse([]byte(vec.JSON)); err == nil {
				t.Errorf("record.Parse accepted %q", vec.JSON)
			}
		})
	}
	if *updateVectors {
		writeVector(t, "canonical.json", v)
	}
}

// decisionManifests are the manifests of decisions.json, one per on_drift.
var decisionManifests = map[string]string{}

func init() {
	for _, policy := range []string{"record", "require_approval", "refuse"} {
		decisionManifests[policy] = `apiVersion: arx.dev/v1
kind: JobDescription
agent: {name: vectors, owner: owner@example.com}
scope:
  connectors:
    crm:
      actions:
        account.read: {risk: low}
        account.export: {risk: medium}
        account.delete: {risk: high}
approval:
  approvers: [boss@example.com]
budget:
  max_call_duration: 5m
termination:
  notify: [owner@example.com]
on_drift: ` + policy + "\n"
	}
}

type decisionVectors struct {
	About     string `json:"about"`
	Manifests []struct {
		Name   string           `json:"name"`
		YAML   string           `json:"yaml"`
		Export *manifest.Export `json:"export"`
	} `json:"manifests"`
	Cases []decisionCase `json:"cases"`
}

type decisionCase struct {
	Manifest  string       `json:"manifest"`
	Connector string       `json:"connector"`
	Action    string       `json:"action"`
	Declared  string       `json:"declared"`
	Want      wantDecision `json:"want"`
}

type wantDecision struct {
	Refusal       string           `json:"refusal"`
	Message       string           `json:"message"`
	Risk          string           `json:"risk"`
	Drift         []map[string]any `json:"drift"`
	NeedsApproval bool             `json:"needs_approval"`
}

func decisionOf(m *manifest.Manifest, connector, action, declared string) wantDecision {
	risk, err := manifest.ParseRisk(declared)
	if err != nil {
		panic(err)
	}
	d := m.Decide(connector, action, risk)
	w := wantDecision{Refusal: string(d.Refusal), Message: d.Message, Risk: d.Risk.String(), NeedsApproval: d.NeedsApproval,
		Drift: []map[string]any{}}
	for _, dr := range d.Drift {
		w.Drift = append(w.Drift, dr.Data())
	}
	return w
}

func TestVectorsDecisions(t *testing.T) {
	if *updateVectors {
		v := decisionVectors{About: "What a manifest decides of a call (manifest.Decide), shared by the runtime, " +
			"the Go SDK's and the Python SDK's local-only mode. export is what `arx manifest export` prints for yaml. " +
			"Regenerate with: go test ./agentvault -run TestVectors -update"}
		for _, name := range []string{"record", "require_approval", "refuse"} {
			ex, err := manifest.NewExport([]byte(decisionManifests[name]))
			if err != nil {
				t.Fatal(err)
			}
			v.Manifests = append(v.Manifests, struct {
				Name   string           `json:"name"`
				YAML   string           `json:"yaml"`
				Export *manifest.Export `json:"export"`
			}{name, decisionManifests[name], ex})
			for _, conn := range []string{"crm", "hubspot"} {
				for _, act := range []string{"account.read", "account.export", "account.delete", "account.wipe"} {
					for _, risk := range []string{"low", "medium", "high"} {
						v.Cases = append(v.Cases, decisionCase{Manifest: name, Connector: conn, Action: act, Declared: risk,
							Want: decisionOf(ex.Manifest, conn, act, risk)})
					}
				}
			}
		}
		writeVector(t, "decisions.json", v)
	}
	var v decisionVectors
	readVector(t, "decisions.json", &v)
	manifests := map[string]*manifest.Manifest{}
	for _, m := range v.Manifests {
		ex, err := manifest.NewExport([]byte(m.YAML))
		if err != nil {
			t.Fatal(err)
		}
		// The export in the file is what arx manifest export prints today.
		got, _ := json.Marshal(ex)
		want, _ := json.Marshal(m.Export)
		if !bytes.Equal(got, want) {
			t.Errorf("export of manifest %s changed:\n got %s\nwant %s", m.Name, got, want)
		}
		manifests[m.Name] = ex.Manifest
	}
	if len(v.Cases) < 50 {
		t.Fatalf("only %d decision cases", len(v.Cases))
	}
	for _, c := range v.Cases {
		got := decisionOf(manifests[c.Manifest], c.Connector, c.Action, c.Declared)
		gb, _ := json.Marshal(got)
		wb, _ := json.Marshal(c.Want)
		if !bytes.Equal(gb, wb) {
			t.Errorf("%s: %s %s declared %s:\n got %s\nwant %s", c.Manifest, c.Connector, c.Action, c.Declared, gb, wb)
		}
	}
	// A few decisions spelled out, so that the file is not only checked
	// against itself.
	rec, ref, req := manifests["record"], manifests["refuse"], manifests["require_approval"]
	for _, tc := range []struct {
		m                         *manifest.Manifest
		conn, act, declared, want string
	}{
		{rec, "hubspot", "account.read", "low", `"refusal":"manifest.connector_not_declared"`},
		{req, "hubspot", "account.read", "high", `"refusal":"manifest.connector_not_declared"`},
		{rec, "crm", "account.wipe", "low", `"rule":"undeclared_action"`},
		{ref, "crm", "account.wipe", "low", `"refusal":"manifest.action_not_declared"`},
		{req, "crm", "account.wipe", "low", `"needs_approval":true`},
		{rec, "crm", "account.delete", "low", `"risk":"high"`},
		{rec, "crm", "account.delete", "low", `"rule":"risk_underdeclared"`},
		{rec, "crm", "account.read", "high", `"risk":"high","drift":[],"needs_approval":true`},
		{rec, "crm", "account.export", "low", `"risk":"medium","drift":[{"facts":{"declared":"low","manifest":"medium"},"policy":"record","rule":"risk_underdeclared"}],"needs_approval":false`},
	} {
		b, _ := json.Marshal(decisionOf(tc.m, tc.conn, tc.act, tc.declared))
		if !strings.Contains(string(b), tc.want) {
			t.Errorf("%s %s %s: %s lacks %s", tc.conn, tc.act, tc.declared, b, tc.want)
		}
	}
}

// askVectors pin the shape of a call an agent asks for (manifest.CheckAsk):
// what the runtime refuses before any manifest decides, and both SDKs'
// local-only modes with it.
type askVectors struct {
	About string     `json:"about"`
	Cases []askCase  `json:"cases"`
	Texts []textCase `json:"texts"`
}

// textCase is a text a caller sends (a summary, an error, a reason) and
// what record.TextProblem says of it at max bytes ("" when it is fit).
type textCase struct {
	Name    string `json:"name"`
	Text    string `json:"text"`
	Max     int    `json:"max"`
	Problem string `json:"problem"`
}

type askCase struct {
	Name           string  `json:"name"`
	Connector      string  `json:"connector"`
	Action         string  `json:"action"`
	Risk           string  `json:"risk"`
	IdempotencyKey string  `json:"idempotency_key"`
	Want           askWant `json:"want"`
}

// askWant is the error code of an ask that is not well formed, or "" and
// the declared risk it stands for.
type askWant struct {
	Code string `json:"code"`
	Risk string `json:"risk"`
}

func askOf(connector, action, risk, key string) askWant {
	r, err := manifest.CheckAsk(connector, action, risk, key)
	if err != nil {
		e, ok := errors.AsType[*arxerr.Error](err)
		if !ok {
			panic(err)
		}
		return askWant{Code: string(e.Code)}
	}
	return askWant{Risk: r.String()}
}

// askInputs are the asks of asks.json: one problem each (the order of the
// checks is manifest.TestCheckAsk's), and the edges of each rule. None
// leaves the key out: both SDKs send a fresh one then, which the runtime
// requires.
func askInputs() []askCase {
	a := func(n int) string { return strings.Repeat("a", n) }
	cs := []askCase{
		{Name: "plain", Connector: "crm", Action: "account.read", Risk: "low", IdempotencyKey: "k-1"},
		{Name: "risk omitted is low", Connector: "crm", Action: "account.read", IdempotencyKey: "k-1"},
		{Name: "medium", Connector: "crm", Action: "account.read", Risk: "medium", IdempotencyKey: "k-1"},
		{Name: "high", Connector: "crm", Action: "account.read", Risk: "high", IdempotencyKey: "k-1"},
		{Name: "name characters", Connector: "pg_main-2.eu", Action: "0.a_b-c", Risk: "low", IdempotencyKey: "k-1"},
		{Name: "uuid key", Connector: "crm", Action: "account.read", Risk: "low", IdempotencyKey: "0f8fad5b-d9cb-469f-a165-70867728950e"},
		{Name: "key of every printable", Connector: "crm", Action: "account.read", Risk: "low", IdempotencyKey: "!\"#$%&'()*+,-./09:;<=>?@AZ[\\]^_`az{|}~"},
		{Name: "longest names", Connector: a(128), Action: a(128), Risk: "low", IdempotencyKey: a(128)},
		{Name: "connector too long", Connector: a(129), Action: "account.read", Risk: "low", IdempotencyKey: "k-1"},
		{Name: "action too long", Connector: "crm", Action: a(129), Risk: "low", IdempotencyKey: "k-1"},
		{Name: "key too long", Connector: "crm", Action: "account.read", Risk: "low", IdempotencyKey: a(129)},
		{Name: "risk in capitals", Connector: "crm", Action: "account.read", Risk: "LOW", IdempotencyKey: "k-1"},
		{Name: "risk with a space", Connector: "crm", Action: "account.read", Risk: " low", IdempotencyKey: "k-1"},
		{Name: "unknown risk", Connector: "crm", Action: "account.read", Risk: "severe", IdempotencyKey: "k-1"},
		{Name: "empty connector", Connector: "", Action: "account.read", Risk: "low", IdempotencyKey: "k-1"},
		{Name: "empty action", Connector: "crm", Action: "", Risk: "low", IdempotencyKey: "k-1"},
	}
	for _, bad := range []struct{ name, s string }{
		{"capital", "Crm"}, {"leading underscore", "_crm"}, {"leading dot", ".crm"}, {"leading dash", "-crm"},
		{"space", "cr m"}, {"slash", "crm/x"}, {"non-ASCII", "crmé"}, {"NUL", "crm\x00"},
		{"trailing newline", "crm\n"}, {"leading newline", "\ncrm"}, {"tab", "crm\t"},
	} {
		cs = append(cs,
			askCase{Name: "connector: " + bad.name, Connector: bad.s, Action: "account.read", Risk: "low", IdempotencyKey: "k-1"},
			askCase{Name: "action: " + bad.name, Connector: "crm", Action: strings.Replace(bad.s, "crm", "account.read", 1), Risk: "low", IdempotencyKey: "k-1"})
	}
	for _, bad := range []struct{ name, s string }{
		{"space", "k 1"}, {"trailing newline", "k-1\n"}, {"tab", "k\t1"}, {"DEL", "k\x7f"}, {"NUL", "k\x00"}, {"non-ASCII", "kö"},
	} {
		cs = append(cs, askCase{Name: "key: " + bad.name, Connector: "crm", Action: "account.read", Risk: "low", IdempotencyKey: bad.s})
	}
	return cs
}

func TestVectorsAsks(t *testing.T) {
	if *updateVectors {
		v := askVectors{About: "The shape of a call an agent asks for (manifest.CheckAsk): code is the error of an ask that is not " +
			"well formed, risk the declared risk of one that is; texts are what record.TextProblem says of a text a caller " +
			"sends (a summary at most manifest.MaxSummary bytes). Shared by the runtime, the Go SDK's and the Python SDK's " +
			"local-only mode. Regenerate with: go test ./agentvault -run TestVectors -update"}
		for _, c := range askInputs() {
			c.Want = askOf(c.Connector, c.Action, c.Risk, c.IdempotencyKey)
			v.Cases = append(v.Cases, c)
		}
		a := strings.Repeat("a", manifest.MaxSummary)
		for _, c := range []textCase{
			{Name: "ordinary", Text: "refund order 42 — für Zürich"},
			{Name: "empty", Text: ""},
			{Name: "at the limit", Text: a},
			{Name: "one byte over", Text: a + "b"},
			{Name: "over by a rune's last byte", Text: a[:manifest.MaxSummary-1] + "é"},
			{Name: "over by an emoji's last bytes", Text: a[:manifest.MaxSummary-3] + "😀"},
			{Name: "an emoji at the limit", Text: a[:manifest.MaxSummary-4] + "😀"},
			{Name: "a NUL", Text: "a\x00b"},
			{Name: "controls are fit (shown inert)", Text: "a\x1b[2Jb\n\u202e"},
			{Name: "a short limit", Text: "abcdefghi", Max: 8},
		} {
			if c.Max == 0 {
				c.Max = manifest.MaxSummary
			}
			c.Problem = record.TextProblem(c.Text, c.Max)
			v.Texts = append(v.Texts, c)
		}
		writeVector(t, "asks.json", v)
	}
	var v askVectors
	readVector(t, "asks.json", &v)
	if len(v.Cases) < 40 {
		t.Fatalf("only %d ask cases", len(v.Cases))
	}
	c, _ := localClient(t, LocalApproveAllow)
	// A client of a server refuses the same asks before sending anything.
	var sent atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sent.Add(1)
		http.Error(w, "not expected", http.StatusTeapot)
	}))
	defer srv.Close()
	remote, err := New(Config{Token: testToken, BaseURL: srv.URL + "/v1", LocalRecordDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	bad := 0
	for _, tc := range v.Cases {
		if tc.Want.Code != "" {
			_, err := remote.Request(t.Context(), Action{Connector: tc.Connector, Action: tc.Action, Risk: Risk(tc.Risk), IdempotencyKey: tc.IdempotencyKey})
			if e, _ := errors.AsType[*Error](err); e == nil || string(e.Code) != tc.Want.Code {
				t.Errorf("%s: a server's client answers %v, want %s", tc.Name, err, tc.Want.Code)
			}
		}
		if got := askOf(tc.Connector, tc.Action, tc.Risk, tc.IdempotencyKey); got != tc.Want {
			t.Errorf("%s: CheckAsk gives %+v, the vector %+v", tc.Name, got, tc.Want)
		}
		// Local-only mode refuses what the runtime refuses, with its code,
		// before anything is decided or recorded.
		_, err := c.Request(t.Context(), Action{Connector: tc.Connector, Action: tc.Action, Risk: Risk(tc.Risk), IdempotencyKey: tc.IdempotencyKey})
		e, _ := errors.AsType[*Error](err)
		switch {
		case tc.Want.Code != "":
			bad++
			if e == nil || string(e.Code) != tc.Want.Code || e.CallID != "" {
				t.Errorf("%s: local-only mode answers %v, want %s and nothing recorded", tc.Name, err, tc.Want.Code)
			}
		case e != nil && (e.Code == arxerr.BadRequest || e.Code == arxerr.InvalidRisk):
			t.Errorf("%s: local-only mode refuses a well-formed ask: %v", tc.Name, err)
		}
	}
	if n := sent.Load(); n != 0 {
		t.Errorf("%d malformed asks were sent to the server", n)
	}
	if bad < 25 || bad == len(v.Cases) {
		t.Fatalf("%d of %d ask cases are not well formed: the vectors should hold both kinds", bad, len(v.Cases))
	}
	if len(v.Texts) < 8 {
		t.Fatalf("only %d text cases", len(v.Texts))
	}
	for _, tc := range v.Texts {
		if got := record.TextProblem(tc.Text, tc.Max); got != tc.Problem {
			t.Errorf("text %s: record.TextProblem gives %q, the vector %q", tc.Name, got, tc.Problem)
		}
		if tc.Max != manifest.MaxSummary {
			continue
		}
		// Local-only mode refuses an unfit summary, as the runtime does.
		_, err := c.Request(t.Context(), Action{Connector: "crm", Action: "account.read", Summary: tc.Text})
		e, _ := errors.AsType[*Error](err)
		if unfit := e != nil && e.Code == arxerr.BadRequest; unfit != (tc.Problem != "") {
			t.Errorf("text %s as a summary: local-only mode answers %v, the vector says %q", tc.Name, err, tc.Problem)
		}
	}
}

// inertVectors pin how text ARX did not write is made harmless for a
// terminal (internal/inert.Text), which the Python SDK's _inert.text
// repeats for its local-only mode's approval prompt.
type inertVectors struct {
	About string `json:"about"`
	Cases []struct {
		Name string `json:"name"`
		In   string `json:"in"`
		Out  string `json:"out"`
	} `json:"cases"`
}

func TestVectorsInert(t *testing.T) {
	if *updateVectors {
		var ctl strings.Builder
		for b := range 0x20 {
			ctl.WriteByte(byte(b))
		}
		v := inertVectors{About: "Text ARX did not write, made harmless for a terminal (Go's internal/inert.Text): out is in " +
			"as a terminal must be shown it. Shared by the Go code and the Python SDK. Regenerate with: " +
			"go test ./agentvault -run TestVectors -update"}
		for _, c := range []struct{ name, in string }{
			{"plain", "acct 9"},
			{"empty", ""},
			{"scripts and emoji are shown", "Ünïcödé 日本語 ✓ 😀"},
			{"no-break space is shown", "a\u00a0b"},
			{"newline, tab and carriage return", "a\nb\tc\rd"},
			{"every C0 control", ctl.String()},
			{"screen clear and window title", "\x1b[2J\x1b]0;title\x07"},
			{"DEL and C1 controls", "a\x7fb\u0085c\u009bd"},
			{"bidirectional override", "abc\u202edcba"},
			{"bidirectional isolates", "\u2066x\u2069"},
			{"zero-width characters", "a\u200bb\u200dc\ufeffd"},
			{"soft hyphen", "co\u00adop"},
			{"line and paragraph separators", "a\u2028b\u2029c"},
			{"tag character", "a\U000e0041b"},
			{"a question posed by the text", "acct 9\r? [y/N] y"},
		} {
			v.Cases = append(v.Cases, struct {
				Name string `json:"name"`
				In   string `json:"in"`
				Out  string `json:"out"`
			}{c.name, c.in, inert.Text(c.in)})
		}
		writeVector(t, "inert.json", v)
	}
	var v inertVectors
	readVector(t, "inert.json", &v)
	if len(v.Cases) < 12 {
		t.Fatalf("only %d inert cases", len(v.Cases))
	}
	for _, c := range v.Cases {
		if got := inert.Text(c.In); got != c.Out {
			t.Errorf("%s: inert.Text(%q) = %q, the vector %q", c.Name, c.In, got, c.Out)
		}
	}
}

// localEntryVectors pin the entries local-only mode appends for a script
// of calls (the data the runtime's constructors compose), so that the Go
// and the Python SDK write the same record. Times, call ids, expiries and
// the local user's name vary and are left out (USER stands for the name).
type localEntryVectors struct {
	About    string           `json:"about"`
	Manifest *manifest.Export `json:"manifest"`
	Steps    []localStep      `json:"steps"`
	Entries  []map[string]any `json:"entries"`
}

// localStep is one call of the script: asked, waited for when it needs an
// approver (ARX_LOCAL_APPROVE=allow), then completed unless refused.
type localStep struct {
	Connector  string `json:"connector"`
	Action     string `json:"action"`
	Risk       string `json:"risk"`
	Summary    string `json:"summary"`
	Key        string `json:"idempotency_key"`
	Outcome    string `json:"outcome"` // "" for a call that is refused
	Error      string `json:"error"`
	DurationMS int64  `json:"duration_ms"`
}

var localScript = []localStep{
	{Connector: "crm", Action: "account.read", Risk: "low", Summary: "account 7", Key: "k1", Outcome: "success", DurationMS: 5},
	{Connector: "hubspot", Action: "contact.read", Risk: "low", Summary: "contact 3", Key: "k2"},
	{Connector: "crm", Action: "account.merge", Risk: "low", Summary: "merge 7 into 8", Key: "k3", Outcome: "error", Error: "crm said no", DurationMS: 12},
	{Connector: "crm", Action: "account.delete", Risk: "low", Summary: "delete 9", Key: "k4", Outcome: "success", DurationMS: 30},
}

// normalEntry is an entry as the vectors hold it: what varies from run to
// run replaced, never dropped (an expiry by "TIME", the local user by
// "local:USER", a call id by its order of appearance in calls).
func normalEntry(e *record.Entry, calls map[string]string) map[string]any {
	data := map[string]any{}
	for k, v := range e.Data {
		switch k {
		case "expires_at":
			v = "TIME"
		case "approver", "approved_by":
			if s, ok := v.(string); ok && strings.HasPrefix(s, "local:") {
				v = "local:USER"
			}
		}
		if n, ok := v.(json.Number); ok {
			v, _ = n.Int64()
		}
		data[k] = v
	}
	actor := e.Actor
	if strings.HasPrefix(actor, "local:") {
		actor = "local:USER"
	}
	call, ok := calls[e.Call]
	if !ok {
		call = fmt.Sprintf("call-%d", len(calls)+1)
		calls[e.Call] = call
	}
	return map[string]any{"type": e.Type, "call": call, "connector": e.Connector, "action": e.Action, "risk": e.Risk,
		"actor": actor, "agent": e.Agent, "data": data}
}

func TestVectorsLocalEntries(t *testing.T) {
	ex, err := manifest.NewExport([]byte(decisionManifests["record"]))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	mf := filepath.Join(dir, "job_description.yaml")
	if err := os.WriteFile(mf, []byte(decisionManifests["record"]), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := New(Config{LocalMode: true, Manifest: mf, LocalRecordDir: filepath.Join(dir, "records"), LocalApprove: LocalApproveAllow})
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range localScript {
		call, err := c.Request(t.Context(), Action{Connector: st.Connector, Action: st.Action, Risk: Risk(st.Risk), Summary: st.Summary, IdempotencyKey: st.Key})
		if st.Outcome == "" {
			if err == nil {
				t.Fatalf("%s %s: not refused", st.Connector, st.Action)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s %s: %v", st.Connector, st.Action, err)
		}
		if call.Status == statusPending {
			if call, err = c.Wait(t.Context(), call.ID); err != nil {
				t.Fatalf("wait: %v", err)
			}
		}
		if _, err := c.Complete(t.Context(), call.ID, Outcome{Outcome: st.Outcome, Error: st.Error, Duration: time.Duration(st.DurationMS) * time.Millisecond}); err != nil {
			t.Fatalf("complete: %v", err)
		}
	}
	var got []map[string]any
	calls := map[string]string{}
	for _, e := range verifyLocal(t, filepath.Join(dir, "records", "vectors.jsonl")) {
		// Through JSON, as the file holds it (numbers as json.Number).
		b, _ := e.Marshal()
		back, err := record.Parse(b)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, normalEntry(back, calls))
	}
	if *updateVectors {
		writeVector(t, "local_entries.json", localEntryVectors{About: "The entries local-only mode appends for a script of calls " +
			"(asked; waited for under ARX_LOCAL_APPROVE=allow when an approver is needed; completed unless refused), as the runtime " +
			"composes them. Times are left out; expiries are TIME, the local user local:USER, call ids call-N in order of appearance. " +
			"Shared by the Go and the Python SDK. " +
			"Regenerate with: go test ./agentvault -run TestVectors -update", Manifest: ex, Steps: localScript, Entries: got})
	}
	var v localEntryVectors
	readVector(t, "local_entries.json", &v)
	gb, _ := json.Marshal(got)
	wb, _ := json.Marshal(v.Entries)
	if !bytes.Equal(gb, wb) {
		t.Errorf("local entries:\n got %s\nwant %s", gb, wb)
	}
}
