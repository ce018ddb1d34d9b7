package manifest

import (
	"errors"
	"time"
)

// ActiveHours is the daily window in which the agent may act.
//
// The window runs from Start (inclusive) to End (exclusive), both "HH:MM" on the wall
// clock of Location. When End is before Start the window runs overnight, and the part
// after midnight belongs to the day the window started on: with days [fri] and
// 22:00–06:00, Saturday 03:00 is inside and Friday 03:00 is not.
type ActiveHours struct {
	Timezone string         `json:"timezone"` // IANA name, such as Europe/Berlin
	Location *time.Location `json:"-"`        // loaded from Timezone
	Days     []time.Weekday `json:"days"`     // never empty after Parse
	Start    string         `json:"start"`    // "HH:MM"
	End      string         `json:"end"`      // "HH:MM"
}

// Contains reports whether t falls inside the window. A window that does not make
// sense (bad times, unknown time zone, Start equal to End) contains nothing. An empty
// Days means every day.
func (h *ActiveHours) Contains(t time.Time) bool {
	if h == nil {
		return false
	}
	start, ok1 := parseClock(h.Start)
	end, ok2 := parseClock(h.End)
	if !ok1 || !ok2 || start == end {
		return false
	}
	loc := h.Location
	if loc == nil {
		var err error
		if loc, err = loadLocation(h.Timezone); err != nil {
			return false
		}
	}
	t = t.In(loc)
	now := t.Hour()*60 + t.Minute()
	day := t.Weekday()
	switch {
	case start < end:
		return start <= now && now < end && h.onDay(day)
	case now >= start: // overnight window, evening part
		return h.onDay(day)
	case now < end: // overnight window, morning part: started the day before
		return h.onDay((day + 6) % 7)
	}
	return false
}

func (h *ActiveHours) onDay(d time.Weekday) bool {
	if len(h.Days) == 0 {
		return true
	}
	for _, x := range h.Days {
		if x == d {
			return true
		}
	}
	return false
}

// parseClock parses strict "HH:MM" (24-hour) into minutes after midnight.
func parseClock(s string) (int, bool) {
	if len(s) != 5 || s[2] != ':' {
		return 0, false
	}
	for _, i := range []int{0, 1, 3, 4} {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
	}
	hh := int(s[0]-'0')*10 + int(s[1]-'0')
	mm := int(s[3]-'0')*10 + int(s[4]-'0')
	if hh > 23 || mm > 59 {
		return 0, false
	}
	return hh*60 + mm, true
}

// dayNames are the manifest's names of the weekdays, indexed by time.Weekday.
var dayNames = [7]string{"sun", "mon", "tue", "wed", "thu", "fri", "sat"}

// allDays is the default of active_hours.days, Monday first as people write it.
var allDays = []time.Weekday{
	time.Monday, time.Tuesday, time.Wednesday, time.Thursday, time.Friday,
	time.Saturday, time.Sunday,
}

func parseDay(s string) (time.Weekday, bool) {
	for i, n := range dayNames {
		if n == s {
			return time.Weekday(i), true
		}
	}
	return 0, false
}

// loadLocation loads an IANA time zone, refusing the names time.LoadLocation gives a
// meaning of its own: "" (UTC) and "Local" (whatever the host is set to).
func loadLocation(name string) (*time.Location, error) {
	if name == "" || name == "Local" {
		return nil, errNotIANA
	}
	return time.LoadLocation(name)
}

var errNotIANA = errors.New("not an IANA time zone name")
