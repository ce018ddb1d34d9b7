package manifest

import (
	"math/rand/v2"
	"strings"
	"testing"
)

// TestValidName holds ValidName to connectorNameRE and actionNameRE (the
// patterns the schema publishes) on a table and random strings.
func TestValidName(t *testing.T) {
	for _, c := range []struct {
		s    string
		want bool
	}{
		{"", false},
		{"salesforce", true},
		{"account.read", true},
		{"pg_main-2", true},
		{"0abc", true},
		{"_x", false},
		{".x", false},
		{"-x", false},
		{"Salesforce", false},
		{"a b", false},
		{"a\n", false},
		{"a/b", false},
		{"é", false},
		{"a\x00", false},
		{strings.Repeat("a", 128), true},
		{strings.Repeat("a", 129), false},
	} {
		if got := ValidName(c.s, 128); got != c.want {
			t.Errorf("ValidName(%q, 128) = %v, want %v", c.s, got, c.want)
		}
	}
	alphabet := []byte("az09AZ_.-/ ~\x00\x1f\x20\x21\x7e\x7f\x80\xff`{@[")
	r := rand.New(rand.NewPCG(1, 2))
	for range 20000 {
		b := make([]byte, r.IntN(131))
		for i := range b {
			b[i] = alphabet[r.IntN(len(alphabet))]
		}
		if r.IntN(2) == 0 && len(b) > 0 { // mostly valid ones too
			for i := range b {
				b[i] = "abz09_.-"[r.IntN(8)]
			}
		}
		s := string(b)
		if ValidName(s, 128) != actionNameRE.MatchString(s) {
			t.Fatalf("ValidName(%q, 128) = %v, actionNameRE says %v", s, ValidName(s, 128), actionNameRE.MatchString(s))
		}
		if ValidName(s, 63) != connectorNameRE.MatchString(s) {
			t.Fatalf("ValidName(%q, 63) = %v, connectorNameRE says %v", s, ValidName(s, 63), connectorNameRE.MatchString(s))
		}
	}
}
