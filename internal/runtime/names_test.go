package runtime

import (
	"math/rand/v2"
	"regexp"
	"strings"
	"testing"
)

// keyPattern is what validKey checks, as a regular expression: the
// reference the byte loop is held to. (Connector and action names are
// manifest.ValidName's, tested beside the manifest's patterns.)
var keyPattern = regexp.MustCompile(`^[\x21-\x7e]{1,128}$`)

func TestValidKey(t *testing.T) {
	for _, c := range []struct {
		s   string
		key bool
	}{
		{"", false},
		{"salesforce", true},
		{"_x", true},
		{"Salesforce", true},
		{"a b", false},
		{"a\n", false},
		{"a/b", true},
		{"é", false},
		{"a\x00", false},
		{"~", true},
		{"\x7f", false},
		{strings.Repeat("a", 128), true},
		{strings.Repeat("a", 129), false},
	} {
		if got := validKey(c.s); got != c.key {
			t.Errorf("validKey(%q) = %v, want %v", c.s, got, c.key)
		}
	}
	alphabet := []byte("az09AZ_.-/ ~\x00\x1f\x20\x21\x7e\x7f\x80\xff`{@[")
	r := rand.New(rand.NewPCG(1, 2))
	for range 20000 {
		b := make([]byte, r.IntN(131))
		for i := range b {
			b[i] = alphabet[r.IntN(len(alphabet))]
		}
		s := string(b)
		if validKey(s) != keyPattern.MatchString(s) {
			t.Fatalf("validKey(%q) = %v, the pattern says %v", s, validKey(s), keyPattern.MatchString(s))
		}
	}
}
