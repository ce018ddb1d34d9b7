package manifest

import (
	"fmt"
	"strconv"
)

// Risk is the declared risk of an action. The zero value is not a valid risk.
type Risk int

// The risks, in increasing order. A high-risk call needs a named approver's approval.
const (
	RiskLow Risk = iota + 1
	RiskMedium
	RiskHigh
)

// ParseRisk parses "low", "medium" or "high".
func ParseRisk(s string) (Risk, error) {
	switch s {
	case "low":
		return RiskLow, nil
	case "medium":
		return RiskMedium, nil
	case "high":
		return RiskHigh, nil
	}
	return 0, fmt.Errorf("unknown risk %q (use low, medium or high)", s)
}

// String returns "low", "medium" or "high", or "Risk(n)" for an invalid value.
func (r Risk) String() string {
	switch r {
	case RiskLow:
		return "low"
	case RiskMedium:
		return "medium"
	case RiskHigh:
		return "high"
	}
	return "Risk(" + strconv.Itoa(int(r)) + ")"
}

// MarshalText renders the risk as "low", "medium" or "high".
func (r Risk) MarshalText() ([]byte, error) {
	if r < RiskLow || r > RiskHigh {
		return nil, fmt.Errorf("invalid risk %d", int(r))
	}
	return []byte(r.String()), nil
}

// UnmarshalText parses the risk as ParseRisk does.
func (r *Risk) UnmarshalText(b []byte) error {
	v, err := ParseRisk(string(b))
	if err != nil {
		return err
	}
	*r = v
	return nil
}
