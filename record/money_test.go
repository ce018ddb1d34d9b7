package record

import "testing"

func TestParseMoney(t *testing.T) {
	for _, c := range []struct {
		in   string
		want Money
		text string
	}{
		{"50 USD", Money{50_000_000, "USD"}, "50.00 USD"},
		{"0.013 EUR", Money{13_000, "EUR"}, "0.013 EUR"},
		{"12.5 GBP", Money{12_500_000, "GBP"}, "12.50 GBP"},
		{"0.000001 USD", Money{1, "USD"}, "0.000001 USD"},
		{"0 JPY", Money{0, "JPY"}, "0.00 JPY"},
		{"1000000000 USD", Money{MaxMoney, "USD"}, "1000000000.00 USD"},
	} {
		got, err := ParseMoney(c.in)
		if err != nil || got != c.want {
			t.Errorf("ParseMoney(%q) = %+v, %v; want %+v", c.in, got, err, c.want)
			continue
		}
		if s := got.String(); s != c.text {
			t.Errorf("%+v.String() = %q, want %q", got, s, c.text)
		}
		if back, err := ParseMoney(got.String()); err != nil || back != got {
			t.Errorf("ParseMoney(String()) of %q = %+v, %v", c.in, back, err)
		}
	}
	for _, bad := range []string{"", "50", "USD", "50USD", "50 usd", "50 US", "50 USDX", "-5 USD", "+5 USD", "5. USD", ".5 USD",
		"0.0000001 USD", "1e3 USD", "5,00 EUR", "1000000000.01 USD", "99999999999999999999 USD", "5  USD", "5 U$D", " 5 USD"} {
		if m, err := ParseMoney(bad); err == nil {
			t.Errorf("ParseMoney(%q) = %+v, want an error", bad, m)
		}
	}
	if s := (Money{-1_500_000, "USD"}).String(); s != "-1.50 USD" {
		t.Errorf("negative: %q", s)
	}
}
