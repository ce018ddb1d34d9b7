package manifest

import (
	"fmt"

	"github.com/arxsec/arx/arxerr"
	"github.com/arxsec/arx/record"
)

// The shape of a call an agent asks for, before any manifest decides it:
// checked by the runtime (POST /v1/calls) and by the Go SDK's local-only
// mode with CheckAsk, and by the Python SDK's local-only mode to the same
// rules, which testdata/vectors/asks.json pins.

// MaxAskName bounds the connector and action names an agent may ask for. A
// manifest's connector names are shorter (63 bytes): a call that names a
// longer one is well formed, and refused as not declared.
const MaxAskName = 128

// MaxIdempotencyKey bounds an idempotency key.
const MaxIdempotencyKey = 128

// MaxSummary bounds a call's summary, in bytes; record.TextProblem says
// what else makes one unfit.
const MaxSummary = 512

// CheckAsk checks the connector, action, idempotency key and declared risk
// ("" means low) of a call an agent asks for, in that order, and returns
// the declared risk. Its errors are *arxerr.Error: arxerr.BadRequest for a
// name or key that is not well formed, arxerr.InvalidRisk for a risk that is
// not low, medium or high. Names and risks are quoted cut short: they are
// the agent's text.
func CheckAsk(connector, action, risk, key string) (Risk, error) {
	if !ValidName(connector, MaxAskName) {
		return 0, arxerr.New(arxerr.BadRequest, "connector %q is not a valid name", cut(connector, 64))
	}
	if !ValidName(action, MaxAskName) {
		return 0, arxerr.New(arxerr.BadRequest, "action %q is not a valid name", cut(action, 64))
	}
	if !ValidIdempotencyKey(key) {
		e := arxerr.New(arxerr.BadRequest, "idempotency_key must be 1 to %d printable ASCII characters", MaxIdempotencyKey)
		e.Hint = "send a fresh UUID per call, and the same one when retrying it"
		return 0, e
	}
	if risk == "" {
		return RiskLow, nil
	}
	r, err := ParseRisk(risk)
	if err != nil {
		return 0, arxerr.New(arxerr.InvalidRisk, "risk %q is not low, medium or high", cut(risk, 16))
	}
	return r, nil
}

// CheckSummary is the error of a call's summary that cannot be stored as it
// is (record.TextProblem at MaxSummary: too long, not UTF-8, a NUL), or
// nil. The runtime records the call as a refusal with it; local-only mode
// refuses the call.
func CheckSummary(s string) *arxerr.Error {
	problem := record.TextProblem(s, MaxSummary)
	if problem == "" {
		return nil
	}
	e := arxerr.New(arxerr.BadRequest, "summary %s", problem)
	e.Hint = fmt.Sprintf("send a summary of valid UTF-8, at most %d bytes, without NUL characters", MaxSummary)
	return e
}

// ValidIdempotencyKey reports whether s is an idempotency key: 1 to 128
// printable ASCII characters, no space (^[\x21-\x7e]{1,128}$), checked a
// byte at a time (it is checked on every governed call).
func ValidIdempotencyKey(s string) bool {
	if len(s) == 0 || len(s) > MaxIdempotencyKey {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// cut shortens s to n bytes, marking the cut.
func cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
