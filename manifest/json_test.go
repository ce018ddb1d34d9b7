package manifest

import (
	"encoding/json"
	"github.com/arxsec/arx/record"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestJSONRoundTrip(t *testing.T) {
	m := parseCanonical(t)
	m.Scope.Connectors[1].Actions[0].MaxDuration = 90 * time.Second
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	m.Budget.ActiveHours = &ActiveHours{Timezone: "Europe/Berlin", Location: berlin, Start: "07:00", End: "20:00",
		Days: []time.Weekday{time.Monday, time.Tuesday, time.Wednesday, time.Thursday, time.Friday}}
	m.Budget.Spend = &SpendLimit{PerDay: record.Money{Micros: 50_000_000, Currency: "USD"}, NotifyAt: 80}
	m.Budget.Tokens = &TokenLimit{PerDay: 2_000_000, NotifyAt: 90}
	m.Budget.OnBudget = OnBudgetRefuse
	m.Scope.Connectors[0].Actions[0].Cost = &record.Money{Micros: 20_000, Currency: "USD"}

	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	// Readable: durations, risks and days as people write them in the manifest.
	for _, want := range []string{
		`"api_version":"arx.dev/v1"`,
		`"risk":"high"`,
		`"max_duration":"1m30s"`,
		`"timeout":"15m"`,
		`"on_timeout":"deny"`,
		`"max_call_duration":"2m"`,
		`"calls_per_day":5000`,
		`"days":["mon","tue","wed","thu","fri"]`,
		`"timezone":"Europe/Berlin"`,
		`"revoke":["all"]`,
		`"on_drift":"record"`,
		`"spend":{"per_day":"50.00 USD","notify_at":80}`,
		`"tokens":{"per_day":2000000,"notify_at":90}`,
		`"on_budget":"refuse"`,
		`"cost":"0.02 USD"`,
	} {
		if !strings.Contains(string(b), want) {
			t.Errorf("JSON lacks %s:\n%s", want, b)
		}
	}
	if strings.Contains(string(b), `"Location"`) || strings.Contains(string(b), `"max_duration":""`) {
		t.Errorf("JSON has internal or empty fields:\n%s", b)
	}

	var back Manifest
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if back.Budget.ActiveHours.Location.String() != "Europe/Berlin" {
		t.Errorf("time zone not loaded back: %v", back.Budget.ActiveHours.Location)
	}
	back.Budget.ActiveHours.Location = m.Budget.ActiveHours.Location
	if !reflect.DeepEqual(&back, m) {
		t.Errorf("round trip changed the manifest:\n got %+v\nwant %+v", back, *m)
	}
}

func TestJSONRejectsBadValues(t *testing.T) {
	for _, tc := range []struct {
		name string
		into any
		json string
	}{
		{"risk", new(Action), `{"name":"a","risk":"extreme"}`},
		{"duration", new(Approval), `{"timeout":"soon"}`},
		{"day", new(ActiveHours), `{"timezone":"UTC","days":["monday"]}`},
		{"time zone", new(ActiveHours), `{"timezone":"Mars/Olympus"}`},
		{"budget duration", new(Budget), `{"max_call_duration":"1 hour"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := json.Unmarshal([]byte(tc.json), tc.into); err == nil {
				t.Errorf("Unmarshal(%s) succeeded", tc.json)
			}
		})
	}
}

func TestFormatDuration(t *testing.T) {
	for _, tc := range []struct {
		d    time.Duration
		want string
	}{
		{15 * time.Minute, "15m"},
		{2 * time.Hour, "2h"},
		{90 * time.Minute, "1h30m"},
		{90 * time.Second, "1m30s"},
		{30 * time.Second, "30s"},
		{1500 * time.Millisecond, "1.5s"},
		{168 * time.Hour, "168h"},
	} {
		if got := formatDuration(tc.d); got != tc.want {
			t.Errorf("formatDuration(%v) = %q, want %q", tc.d, got, tc.want)
		}
		if back, err := time.ParseDuration(formatDuration(tc.d)); err != nil || back != tc.d {
			t.Errorf("formatDuration(%v) does not parse back: %v, %v", tc.d, back, err)
		}
	}
}
