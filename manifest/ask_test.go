package manifest

import (
	"errors"
	"math/rand/v2"
	"regexp"
	"strings"
	"testing"

	"github.com/arxsec/arx/arxerr"
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
	for _, s := range randomStrings("abz09_.-") {
		if ValidName(s, MaxActionName) != actionNameRE.MatchString(s) {
			t.Fatalf("ValidName(%q, 128) = %v, actionNameRE says %v", s, ValidName(s, 128), actionNameRE.MatchString(s))
		}
		if ValidName(s, MaxConnectorName) != connectorNameRE.MatchString(s) {
			t.Fatalf("ValidName(%q, 63) = %v, connectorNameRE says %v", s, ValidName(s, 63), connectorNameRE.MatchString(s))
		}
	}
}

// keyPattern is what ValidIdempotencyKey checks, as a regular expression:
// the reference the byte loop is held to.
var keyPattern = regexp.MustCompile(`^[\x21-\x7e]{1,128}$`)

func TestValidIdempotencyKey(t *testing.T) {
	for _, c := range []struct {
		s    string
		want bool
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
		if got := ValidIdempotencyKey(c.s); got != c.want {
			t.Errorf("ValidIdempotencyKey(%q) = %v, want %v", c.s, got, c.want)
		}
	}
	for _, s := range randomStrings("") {
		if ValidIdempotencyKey(s) != keyPattern.MatchString(s) {
			t.Fatalf("ValidIdempotencyKey(%q) = %v, the pattern says %v", s, ValidIdempotencyKey(s), keyPattern.MatchString(s))
		}
	}
}

// TestCheckAsk pins the order of the checks and the codes; the shared
// vectors (testdata/vectors/asks.json, checked in package agentvault and by
// the Python SDK) hold every implementation to them.
func TestCheckAsk(t *testing.T) {
	long := strings.Repeat("a", 200)
	for _, c := range []struct {
		connector, action, risk, key string
		want                         Risk
		code                         arxerr.Code
		msg                          string
	}{
		{"crm", "account.read", "", "k1", RiskLow, "", ""},
		{"crm", "account.read", "high", "k1", RiskHigh, "", ""},
		{"crm", "account.read", "medium", "k1", RiskMedium, "", ""},
		{"Crm", "account.read", "low", "k1", 0, arxerr.BadRequest, `connector "Crm" is not a valid name`},
		{long, "account.read", "low", "k1", 0, arxerr.BadRequest, `connector "` + long[:64] + `..." is not a valid name`},
		{"crm", "account read", "low", "k1", 0, arxerr.BadRequest, `action "account read" is not a valid name`},
		{"crm", "account.read", "low", "", 0, arxerr.BadRequest, "idempotency_key must be 1 to 128 printable ASCII characters"},
		{"crm", "account.read", "severe", "k1", 0, arxerr.InvalidRisk, `risk "severe" is not low, medium or high`},
		// The first problem is the one named.
		{"", "", "severe", "", 0, arxerr.BadRequest, `connector "" is not a valid name`},
		{"crm", "account.read", "severe", "a b", 0, arxerr.BadRequest, "idempotency_key must be 1 to 128 printable ASCII characters"},
	} {
		got, err := CheckAsk(c.connector, c.action, c.risk, c.key)
		if c.code == "" {
			if err != nil || got != c.want {
				t.Errorf("CheckAsk(%q, %q, %q, %q) = %v, %v; want %v", c.connector, c.action, c.risk, c.key, got, err, c.want)
			}
			continue
		}
		var e *arxerr.Error
		if !errors.As(err, &e) || e.Code != c.code || e.Message != c.msg {
			t.Errorf("CheckAsk(%q, %q, %q, %q) = %v; want %s: %s", c.connector, c.action, c.risk, c.key, err, c.code, c.msg)
		}
	}
}

// randomStrings are 20,000 strings of 0 to 130 bytes, each of letters,
// digits, punctuation, controls and bytes that are not UTF-8 or, when valid
// is not empty and a coin says so, of valid's bytes only (so that the
// pattern's matches are tried too).
func randomStrings(valid string) []string {
	alphabet := []byte("az09AZ_.-/ ~\x00\x1f\x20\x21\x7e\x7f\x80\xff`{@[")
	r := rand.New(rand.NewPCG(1, 2))
	out := make([]string, 20000)
	for k := range out {
		b := make([]byte, r.IntN(131))
		for i := range b {
			b[i] = alphabet[r.IntN(len(alphabet))]
		}
		if valid != "" && r.IntN(2) == 0 && len(b) > 0 {
			for i := range b {
				b[i] = valid[r.IntN(len(valid))]
			}
		}
		out[k] = string(b)
	}
	return out
}
