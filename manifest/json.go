package manifest

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// The JSON rendering, for the API, writes durations as Go duration strings ("15m",
// "2m30s") and days as their manifest names ("mon"), so that it reads like the
// manifest it came from. Each type reads back what it writes.

// formatDuration is time.Duration.String without the trailing zero units: "15m", not "15m0s".
func formatDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}

// parseJSONDuration reads a duration written by formatDuration; "" is zero.
func parseJSONDuration(field, s string) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%s: invalid duration %q", field, s)
	}
	return d, nil
}

func jsonDuration(d time.Duration) string {
	if d == 0 {
		return ""
	}
	return formatDuration(d)
}

// MarshalJSON writes max_duration as a duration string, left out when zero.
func (a Action) MarshalJSON() ([]byte, error) {
	type plain Action
	return json.Marshal(struct {
		plain
		MaxDuration string `json:"max_duration,omitempty"`
	}{plain(a), jsonDuration(a.MaxDuration)})
}

// UnmarshalJSON reads what MarshalJSON writes.
func (a *Action) UnmarshalJSON(b []byte) error {
	type plain Action
	var v struct {
		*plain
		MaxDuration string `json:"max_duration"`
	}
	v.plain = (*plain)(a)
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	d, err := parseJSONDuration("max_duration", v.MaxDuration)
	a.MaxDuration = d
	return err
}

// MarshalJSON writes timeout as a duration string.
func (a Approval) MarshalJSON() ([]byte, error) {
	type plain Approval
	return json.Marshal(struct {
		plain
		Timeout string `json:"timeout"`
	}{plain(a), formatDuration(a.Timeout)})
}

// UnmarshalJSON reads what MarshalJSON writes.
func (a *Approval) UnmarshalJSON(b []byte) error {
	type plain Approval
	var v struct {
		*plain
		Timeout string `json:"timeout"`
	}
	v.plain = (*plain)(a)
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	d, err := parseJSONDuration("timeout", v.Timeout)
	a.Timeout = d
	return err
}

// MarshalJSON writes max_call_duration as a duration string.
func (b Budget) MarshalJSON() ([]byte, error) {
	type plain Budget
	return json.Marshal(struct {
		plain
		MaxCallDuration string `json:"max_call_duration"`
	}{plain(b), formatDuration(b.MaxCallDuration)})
}

// UnmarshalJSON reads what MarshalJSON writes.
func (b *Budget) UnmarshalJSON(data []byte) error {
	type plain Budget
	var v struct {
		*plain
		MaxCallDuration string `json:"max_call_duration"`
	}
	v.plain = (*plain)(b)
	if err := json.Unmarshal(data, &v); err != nil {
		return err
	}
	d, err := parseJSONDuration("max_call_duration", v.MaxCallDuration)
	b.MaxCallDuration = d
	return err
}

// MarshalJSON writes days by name ("mon").
func (h ActiveHours) MarshalJSON() ([]byte, error) {
	type plain ActiveHours
	days := make([]string, 0, len(h.Days))
	for _, d := range h.Days {
		if d < time.Sunday || d > time.Saturday {
			return nil, fmt.Errorf("invalid weekday %d", int(d))
		}
		days = append(days, dayNames[d])
	}
	return json.Marshal(struct {
		plain
		Days []string `json:"days"`
	}{plain(h), days})
}

// UnmarshalJSON reads what MarshalJSON writes and loads the time zone.
func (h *ActiveHours) UnmarshalJSON(b []byte) error {
	type plain ActiveHours
	var v struct {
		*plain
		Days []string `json:"days"`
	}
	v.plain = (*plain)(h)
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	h.Days = nil
	for _, s := range v.Days {
		d, ok := parseDay(s)
		if !ok {
			return fmt.Errorf("days: unknown day %q", s)
		}
		h.Days = append(h.Days, d)
	}
	loc, err := loadLocation(h.Timezone)
	if err != nil {
		return fmt.Errorf("timezone: unknown time zone %q", h.Timezone)
	}
	h.Location = loc
	return nil
}
