package runtime

import (
	"strings"
	"testing"
)

func TestCanonicalJSON(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		same bool
		err  string
	}{
		{`{"b":1,"a":[1,2]}`, ` { "a" : [1, 2], "b" : 1 } `, true, ""},
		{`{"id":12345678901234568}`, `{"id":12345678901234567}`, false, ""},
		{`{"x":100}`, `{"x":100.00000000000000001}`, false, ""},
		{`{"x":1}`, `{"x":1.0}`, false, ""},
		{`{"amount":1}`, `{"amount":1000000,"amount":1}`, false, "twice"},
		{`{"a":{"k":1}}`, `{"a":{"k":1,"k":2}}`, false, "twice"},
		{`{"a":"x"}`, "{\"a\":\"\xff\"}", false, "UTF-8"},
		{`{"a":1}`, `{"a":1} {"b":2}`, false, "not JSON"},
		{`[{"k":1},{"k":1}]`, `[{"k":1},{"k":1}]`, true, ""}, // the same key in two objects is fine
	} {
		ca, err := canonicalJSON([]byte(tc.a))
		if err != nil {
			t.Fatalf("canonicalJSON(%s): %v", tc.a, err)
		}
		cb, err := canonicalJSON([]byte(tc.b))
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("canonicalJSON(%q) = %s, %v; want an error with %q", tc.b, cb, err, tc.err)
			}
			continue
		}
		if err != nil || (string(ca) == string(cb)) != tc.same {
			t.Errorf("%s vs %s: %s %s %v, want same %v", tc.a, tc.b, ca, cb, err, tc.same)
		}
	}
}
