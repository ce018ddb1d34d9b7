package store

import (
	"testing"
	"time"
)

func TestCountsUsage(t *testing.T) {
	day := time.Date(2026, 12, 4, 0, 0, 0, 0, time.UTC)
	var c Counts
	c.Add(day.Add(-time.Hour), true)
	c.Charge(day.Add(-time.Hour), 7_000_000, 100) // yesterday
	c.Charge(day.Add(time.Minute), 20_000, 0)
	c.Charge(day.Add(3*time.Hour), 1_500_000, 2_000)
	c.Charge(day.Add(3*time.Hour+time.Minute), 500_000, 0) // same quarter
	c.Charge(day.Add(4*time.Hour), 0, 0)                   // nothing
	if m, tk := c.Spent(day); m != 2_020_000 || tk != 2_000 {
		t.Errorf("Spent(day) = %d, %d; want 2020000, 2000", m, tk)
	}
	if m, tk := c.Spent(day.Add(-24 * time.Hour)); m != 9_020_000 || tk != 2_100 {
		t.Errorf("Spent(day before) = %d, %d", m, tk)
	}
	// A quarter a ring's length later takes the slot over.
	later := day.Add(time.Duration(len(UsageWindow{})) * 15 * time.Minute)
	c.Charge(later, 1, 1)
	if m, _ := c.Spent(day); m != 2_000_001 { // the first quarter of the day is gone
		t.Errorf("after the ring turned: Spent(day) = %d, want 2000001", m)
	}

	back, err := DecodeCounts(EncodeCounts(&c))
	if err != nil {
		t.Fatal(err)
	}
	if back.Minutes != c.Minutes || back.Quarters != c.Quarters || *back.Usage != *c.Usage {
		t.Errorf("round trip changed the counts:\n got %+v\nwant %+v", back.Usage, c.Usage)
	}
	// A copy (as an Update's layer makes) is not changed by a charge to
	// the original, nor the original by one to the copy.
	cp := c
	before := *c.Usage
	cp.Charge(day.Add(3*time.Hour), 1, 1)
	if *c.Usage != before {
		t.Error("a charge to a copy changed the original's usage")
	}
	mine := *cp.Usage
	c.Charge(day.Add(5*time.Hour), 3, 3)
	if *cp.Usage != mine {
		t.Error("a charge to the original changed the copy's usage")
	}
	var none Counts
	if m, tk := none.Spent(day); m != 0 || tk != 0 || EncodeCounts(&none)[len(EncodeCounts(&none))-1] != 0 {
		t.Errorf("no usage: Spent %d, %d; encoded %x", m, tk, EncodeCounts(&none))
	}
	// Counts stored before usage was counted (version 1) read as no usage.
	v1 := []byte{1, 0, 0}
	if old, err := DecodeCounts(v1); err != nil || *old != (Counts{}) {
		t.Errorf("version 1: %+v, %v", old, err)
	}
	for _, bad := range [][]byte{{2, 0, 0}, {2, 0, 0, 1, 2}, {3, 0, 0, 0}, {2, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}} {
		if _, err := DecodeCounts(bad); err == nil {
			t.Errorf("DecodeCounts(%x) succeeded", bad)
		}
	}
}
