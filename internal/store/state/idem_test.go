package state

import (
	"reflect"
	"testing"
	"time"

	"github.com/google/uuid"
)

func TestPackCall(t *testing.T) {
	v7 := uuid.Must(uuid.NewV7()).String()
	for _, tc := range []struct {
		id  string
		odd bool
	}{
		{v7, false},
		{uuid.NewString(), false},
		{"0190f3c2-7a1b-7cde-8f00-0123456789ab", false},
		{"0190F3C2-7A1B-7CDE-8F00-0123456789AB", true}, // parses, but is not the canonical text
		{"{0190f3c2-7a1b-7cde-8f00-0123456789ab}", true},
		{"urn:uuid:0190f3c2-7a1b-7cde-8f00-0123456789ab", true},
		{"0190f3c27a1b7cde8f000123456789ab", true},
		{"call-1", true},
		{"", true},
	} {
		c := packCall(tc.id)
		if c.odd != tc.odd {
			t.Errorf("packCall(%q).odd = %v, want %v", tc.id, c.odd, tc.odd)
		}
		s := New(Config{})
		k := KeyOf("a1", tc.id)
		s.remember(k, tc.id, t0)
		if got, ok := s.callOf(k); !ok || got != tc.id {
			t.Errorf("remembered %q, read back %q, %v", tc.id, got, ok)
		}
	}
	if packCall("call-1") == packCall("call-2") {
		t.Error("two ids that are not UUIDs are held alike")
	}
}

// TestIdemForgetsWhatWasNotRememberedAgain: a key used again (another
// call, after the first was forgotten by a replica's fold, say) is not
// forgotten with its older use; ids that are not UUIDs go with their keys.
func TestIdemForgetsWhatWasNotRememberedAgain(t *testing.T) {
	s := New(Config{IdempotencyWindow: time.Hour, IdempotencyKeys: 2})
	k, other := KeyOf("a1", "k"), KeyOf("a1", "other")
	u := uuid.NewString()
	s.remember(k, u, t0)
	s.remember(k, "odd-1", t0.Add(time.Second))
	s.remember(other, "odd-2", t0.Add(2*time.Second))
	s.forget(t0.Add(3 * time.Second)) // the bound: the oldest use of k goes
	if id, ok := s.callOf(k); !ok || id != "odd-1" {
		t.Errorf("k after its older use was forgotten: %q, %v; want odd-1", id, ok)
	}
	s.remember(k, u, t0.Add(3*time.Second))
	s.forget(t0.Add(4 * time.Second)) // odd-1's use goes; k names u now
	if id, ok := s.callOf(k); !ok || id != u {
		t.Errorf("k used again: %q, %v; want %s", id, ok, u)
	}
	if _, ok := s.oddIDs[k]; ok {
		t.Error("the id k no longer names is still held")
	}
	s.forget(t0.Add(2 * time.Hour)) // the window
	if len(s.idem) != 0 || len(s.oddIDs) != 0 {
		t.Errorf("past the window: %d keys and %d ids held", len(s.idem), len(s.oddIDs))
	}
}

// TestIdemMemoryHoldsNoPointers: the collector has nothing to scan in a
// million keys (idem.go).
func TestIdemMemoryHoldsNoPointers(t *testing.T) {
	for _, v := range []any{map[IdemKey]idemCall{}, []idemSeen{}} {
		typ := reflect.TypeOf(v)
		if pointers(typ.Elem()) || typ.Kind() == reflect.Map && pointers(typ.Key()) {
			t.Errorf("%v holds pointers", typ)
		}
	}
}

func pointers(t reflect.Type) bool {
	switch t.Kind() {
	case reflect.Array:
		return pointers(t.Elem())
	case reflect.Struct:
		for i := range t.NumField() {
			if pointers(t.Field(i).Type) {
				return true
			}
		}
		return false
	case reflect.Bool, reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr,
		reflect.Float32, reflect.Float64, reflect.Complex64, reflect.Complex128:
		return false
	}
	return true
}
