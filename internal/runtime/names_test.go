package runtime

import (
	"math/rand/v2"
	"regexp"
	"strings"
	"testing"
)

// The patterns validName and validKey check, as regular expressions: the
// reference the byte loops are held to.
var (
	namePattern = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]{0,127}$`)
	keyPattern  = regexp.MustCompile(`^[\x21-\x7e]{1,128}$`)
)

func TestValidNameAndKey(t *testing.T) {
	for _, c := range []struct {
		s         string
		name, key bool
	}{
		{"", false, false},
		{"salesforce", true, true},
		{"account.read", true, true},
		{"pg_main-2", true, true},
		{"0abc", true, true},
		{"_x", false, true},
		{".x", false, true},
		{"-x", false, true},
		{"Salesforce", false, true},
		{"a b", false, false},
		{"a\n", false, false},
		{"a/b", false, true},
		{"é", false, false},
		{"a\x00", false, false},
		{"~", false, true},
		{"\x7f", false, false},
		{strings.Repeat("a", 128), true, true},
		{strings.Repeat("a", 129), false, false},
	} {
		if got := validName(c.s); got != c.name {
			t.Errorf("validName(%q) = %v, want %v", c.s, got, c.name)
		}
		if got := validKey(c.s); got != c.key {
			t.Errorf("validKey(%q) = %v, want %v", c.s, got, c.key)
		}
	}
	// Random strings over the bytes around each class's edges, held to the
	// regular expressions.
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
		if validName(s) != namePattern.MatchString(s) {
			t.Fatalf("validName(%q) = %v, the pattern says %v", s, validName(s), namePattern.MatchString(s))
		}
		if validKey(s) != keyPattern.MatchString(s) {
			t.Fatalf("validKey(%q) = %v, the pattern says %v", s, validKey(s), keyPattern.MatchString(s))
		}
	}
}
