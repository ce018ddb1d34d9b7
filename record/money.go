package record

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Money is an amount in one currency, in millionths of its unit (so a
// budget adds exactly: no floating point). Its text form, in job
// descriptions, completion reports and the record, is "12.50 USD": a
// decimal amount with at most six decimals, a space, and an ISO 4217 code.
type Money struct {
	Micros   int64
	Currency string
}

// MaxMoney bounds an amount: a billion units of any currency.
const MaxMoney = 1_000_000_000 * 1_000_000

// ParseMoney reads the text form of an amount ("0.013 USD", "50 EUR"). The
// amount is not negative.
func ParseMoney(s string) (Money, error) {
	num, cur, ok := strings.Cut(s, " ")
	if !ok || len(cur) != 3 || strings.ToUpper(cur) != cur || strings.ContainsFunc(cur, func(r rune) bool { return r < 'A' || r > 'Z' }) {
		return Money{}, fmt.Errorf("%q is not an amount and a currency such as \"12.50 USD\"", clip(s))
	}
	whole, frac, dot := strings.Cut(num, ".")
	if whole == "" || (dot && (frac == "" || len(frac) > 6)) || strings.Trim(whole+frac, "0123456789") != "" {
		return Money{}, fmt.Errorf("%q is not an amount with at most six decimals, such as \"12.50 USD\"", clip(s))
	}
	w, err := strconv.ParseInt(whole, 10, 64)
	if err != nil || w > MaxMoney/1_000_000 {
		return Money{}, fmt.Errorf("%q is more than %d %s", clip(s), MaxMoney/1_000_000, cur)
	}
	f, _ := strconv.ParseInt((frac + "000000")[:6], 10, 64)
	m := w*1_000_000 + f
	if m > MaxMoney {
		return Money{}, fmt.Errorf("%q is more than %d %s", clip(s), MaxMoney/1_000_000, cur)
	}
	return Money{Micros: m, Currency: cur}, nil
}

func clip(s string) string {
	if len(s) > 40 {
		return s[:40] + "…"
	}
	return s
}

// String is the text form, with two decimals at least and six at most:
// "12.50 USD", "0.013 USD". A negative amount has a sign.
func (m Money) String() string {
	u := m.Micros
	sign := ""
	if u < 0 {
		if u == math.MinInt64 {
			u++
		}
		sign, u = "-", -u
	}
	frac := fmt.Sprintf("%06d", u%1_000_000)
	frac = strings.TrimRight(frac, "0")
	for len(frac) < 2 {
		frac += "0"
	}
	return sign + strconv.FormatInt(u/1_000_000, 10) + "." + frac + " " + m.Currency
}

// IsZero reports a zero value (no amount, no currency).
func (m Money) IsZero() bool { return m == Money{} }

// MarshalText writes the text form.
func (m Money) MarshalText() ([]byte, error) { return []byte(m.String()), nil }

// UnmarshalText reads the text form.
func (m *Money) UnmarshalText(b []byte) error {
	v, err := ParseMoney(string(b))
	if err != nil {
		return err
	}
	*m = v
	return nil
}
