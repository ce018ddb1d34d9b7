package console

import (
	"testing"
	"time"

	"github.com/arxsec/arx/manifest"
)

func TestWords(t *testing.T) {
	for _, tc := range []struct{ got, want string }{
		{timeLeft(9*time.Minute + 58*time.Second + 300*time.Millisecond), "9m 58s left"},
		{timeLeft(2*time.Hour + 5*time.Minute), "2h 05m left"},
		{timeLeft(42 * time.Second), "42s left"},
		{timeLeft(0), "expired"},
		{ago(3 * time.Second), "just now"},
		{ago(5 * time.Minute), "5 min ago"},
		{duration(15 * time.Minute), "15 min"},
		{duration(30 * time.Second), "30 s"},
		{duration(2 * time.Hour), "2 h"},
		{duration(1500 * time.Millisecond), "1.5s"},
		{sentence("a denial needs a reason"), "A denial needs a reason."},
		{sentence("boss@example.com is not an approver of agent x"), "boss@example.com is not an approver of agent x."},
		{sentence("the request is already granted (by someone)"), "The request is already granted (by someone)"},
		{sentence(""), ""},
		{initials("dana.scully@example.com"), "DS"},
		{initials("boss@example.com"), "B"},
		{shortID("01a216a5-b7cb-79ee-9658-12712b4eacb6"), "2b4eacb6"},
		{person("user:dana@example.com"), "dana@example.com"},
		{person("system"), "ARX (time-out)"},
		{actorLabel("agent:abc", "abc"), "the agent"},
		{actorLabel("admin:tok", "abc"), "operator"},
		{valueText([]any{"crm", "warehouse"}), "crm, warehouse"},
		{valueText(map[string]any{"a": 1}), `{"a":1}`},
	} {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
}

func TestActiveHours(t *testing.T) {
	for _, tc := range []struct {
		h    *manifest.ActiveHours
		want string
	}{
		{nil, ""},
		{&manifest.ActiveHours{Timezone: "Europe/Berlin", Days: []time.Weekday{1, 2, 3, 4, 5}, Start: "07:00", End: "20:00"},
			"Mon–Fri, 07:00–20:00 (Europe/Berlin)"},
		{&manifest.ActiveHours{Timezone: "UTC", Days: []time.Weekday{6, 0}, Start: "22:00", End: "06:00"},
			"Sat, Sun, 22:00–06:00 (UTC)"},
		{&manifest.ActiveHours{Timezone: "UTC", Start: "08:00", End: "18:00"}, "every day, 08:00–18:00 (UTC)"},
	} {
		if got := activeHours(tc.h); got != tc.want {
			t.Errorf("activeHours(%+v) = %q, want %q", tc.h, got, tc.want)
		}
	}
}

// Every page template parses and every template function it names exists.
func TestTemplatesParse(t *testing.T) {
	pages := parseTemplates(loadStatic())
	for name := range pageInfo {
		if pages[name] == nil || pages[name].t.Lookup("main") == nil || pages[name].t.Lookup("layout") == nil {
			t.Errorf("page %s is incomplete", name)
		}
	}
}
