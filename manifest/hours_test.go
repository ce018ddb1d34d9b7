package manifest

import (
	"strings"
	"testing"
	"time"
)

func TestActiveHoursContains(t *testing.T) {
	weekdays := []time.Weekday{time.Monday, time.Tuesday, time.Wednesday, time.Thursday, time.Friday}
	office := &ActiveHours{Timezone: "Europe/Berlin", Days: weekdays, Start: "07:00", End: "20:00"}
	night := &ActiveHours{Timezone: "Europe/Berlin", Days: []time.Weekday{time.Friday}, Start: "22:00", End: "06:00"}
	everyNight := &ActiveHours{Timezone: "UTC", Start: "22:00", End: "06:00"}
	tokyo := &ActiveHours{Timezone: "Asia/Tokyo", Days: []time.Weekday{time.Monday}, Start: "09:00", End: "17:00"}

	berlin := mustLoad(t, "Europe/Berlin")
	at := func(loc *time.Location, s string) time.Time {
		t.Helper()
		tm, err := time.ParseInLocation("2006-01-02 15:04", s, loc)
		if err != nil {
			t.Fatal(err)
		}
		return tm
	}

	// 2026-01-05 is a Monday (CET, UTC+1); 2026-07-06 is a Monday (CEST, UTC+2);
	// 2026-01-09 is a Friday.
	for _, tc := range []struct {
		name string
		h    *ActiveHours
		t    time.Time
		want bool
	}{
		{"before opening", office, at(berlin, "2026-01-05 06:59"), false},
		{"at opening", office, at(berlin, "2026-01-05 07:00"), true},
		{"last minute", office, at(berlin, "2026-01-05 19:59"), true},
		{"at closing", office, at(berlin, "2026-01-05 20:00"), false},
		{"saturday", office, at(berlin, "2026-01-10 10:00"), false},
		{"UTC input in winter", office, at(time.UTC, "2026-01-05 06:30"), true},
		{"UTC input before opening in summer", office, at(time.UTC, "2026-07-06 04:30"), false},
		{"UTC input after opening in summer", office, at(time.UTC, "2026-07-06 05:30"), true},
		{"UTC input, Berlin already Tuesday", office, at(time.UTC, "2026-01-05 23:30"), false},
		{"overnight, evening of listed day", night, at(berlin, "2026-01-09 23:00"), true},
		{"overnight, morning after listed day", night, at(berlin, "2026-01-10 03:00"), true},
		{"overnight, morning of listed day", night, at(berlin, "2026-01-09 03:00"), false},
		{"overnight, evening after listed day", night, at(berlin, "2026-01-10 22:30"), false},
		{"overnight, closing", night, at(berlin, "2026-01-10 06:00"), false},
		{"every night, before end", everyNight, at(time.UTC, "2026-03-03 05:59"), true},
		{"every night, at end", everyNight, at(time.UTC, "2026-03-03 06:00"), false},
		{"every night, before start", everyNight, at(time.UTC, "2026-03-03 21:59"), false},
		{"every night, at start", everyNight, at(time.UTC, "2026-03-03 22:00"), true},
		{"every night, Berlin input", everyNight, at(berlin, "2026-03-03 23:30"), true},
		{"tokyo monday morning seen from UTC sunday", tokyo, at(time.UTC, "2026-01-04 23:30"), false},
		{"tokyo monday 09:30 seen from UTC", tokyo, at(time.UTC, "2026-01-05 00:30"), true},
		{"start equals end", &ActiveHours{Timezone: "UTC", Start: "08:00", End: "08:00"}, at(time.UTC, "2026-01-05 08:00"), false},
		{"bad time", &ActiveHours{Timezone: "UTC", Start: "8:00", End: "17:00"}, at(time.UTC, "2026-01-05 09:00"), false},
		{"unknown zone", &ActiveHours{Timezone: "Mars/Olympus", Start: "00:00", End: "23:59"}, at(time.UTC, "2026-01-05 09:00"), false},
		{"nil", nil, at(time.UTC, "2026-01-05 09:00"), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.h.Contains(tc.t); got != tc.want {
				t.Errorf("Contains(%s) = %v, want %v", tc.t.Format(time.RFC3339), got, tc.want)
			}
		})
	}
}

func TestActiveHoursFromManifest(t *testing.T) {
	// The reference manifest keeps active_hours as a comment: switched on
	// as written there.
	data := strings.Replace(string(readCanonical(t)), "  #   active_hours:", "  active_hours:", 1)
	m, err := Parse([]byte(data))
	if err != nil {
		t.Fatal(err)
	}
	h := m.Budget.ActiveHours
	berlin := mustLoad(t, "Europe/Berlin")
	if !h.Contains(time.Date(2026, 1, 7, 12, 0, 0, 0, berlin)) { // Wednesday noon
		t.Error("canonical window does not contain Wednesday noon")
	}
	if h.Contains(time.Date(2026, 1, 11, 12, 0, 0, 0, berlin)) { // Sunday noon
		t.Error("canonical window contains Sunday noon")
	}
}

func mustLoad(t *testing.T, name string) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation(name)
	if err != nil {
		t.Fatal(err)
	}
	return loc
}
