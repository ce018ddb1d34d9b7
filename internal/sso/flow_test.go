package sso

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestSealOpen(t *testing.T) {
	key := []byte("0123456789abcdef0123456789abcdef")
	now := time.Unix(1_800_000_000, 0)
	f := NewFlow("/console/approvals", &CLI{Redirect: "http://127.0.0.1:5000/cb", State: "st", Challenge: Challenge("v")}, now)
	sealed := Seal(key, "flow", f)

	var got Flow
	if err := Open(key, "flow", sealed, &got, now); err != nil {
		t.Fatal(err)
	}
	if got.State != f.State || got.Nonce != f.Nonce || got.Verifier != f.Verifier || got.Next != f.Next || *got.CLI != *f.CLI {
		t.Errorf("opened %+v, sealed %+v", got, f)
	}
	if err := Open(key, "flow", sealed, &got, now.Add(FlowTTL)); !errors.Is(err, ErrExpired) {
		t.Errorf("after FlowTTL: %v, want ErrExpired", err)
	}
	var c Code
	for name, bad := range map[string]func() error{
		"another purpose": func() error { return Open(key, "code", sealed, &c, now) },
		"another key":     func() error { return Open([]byte("another key of 32 bytes, really!"), "flow", sealed, &got, now) },
		"payload changed": func() error {
			p, s, _ := strings.Cut(sealed, ".")
			return Open(key, "flow", p[:len(p)-2]+"xx."+s, &got, now)
		},
		"signature cut": func() error { return Open(key, "flow", sealed[:len(sealed)-3], &got, now) },
		"no signature":  func() error { return Open(key, "flow", strings.Split(sealed, ".")[0], &got, now) },
		"empty":         func() error { return Open(key, "flow", "", &got, now) },
		"huge":          func() error { return Open(key, "flow", strings.Repeat("a", 9000)+".x", &got, now) },
	} {
		if err := bad(); err == nil {
			t.Errorf("%s: opened", name)
		}
	}
}

func TestVerifier(t *testing.T) {
	// RFC 7636 appendix B.
	if got := Challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"); got != "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM" {
		t.Errorf("Challenge = %s", got)
	}
	if !CheckVerifier("E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM", "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk") {
		t.Error("the RFC's verifier does not check")
	}
	if CheckVerifier("E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM", "another") {
		t.Error("another verifier checks")
	}
}

func TestCheckLoopback(t *testing.T) {
	for redirect, ok := range map[string]bool{
		"http://127.0.0.1:51234/callback": true,
		"http://[::1]:51234/callback":     true,
		"http://127.0.0.1/callback":       false, // no port
		"https://127.0.0.1:5000/cb":       false,
		"http://localhost:5000/cb":        false, // a name can resolve elsewhere
		"http://192.168.1.5:5000/cb":      false,
		"http://evil.example:5000/cb":     false,
		"http://127.0.0.1:5000/cb?x=1":    false,
		"http://u:p@127.0.0.1:5000/cb":    false,
		"javascript:alert(1)":             false,
		"":                                false,
	} {
		if err := CheckLoopback(redirect); (err == nil) != ok {
			t.Errorf("CheckLoopback(%q) = %v, want ok %v", redirect, err, ok)
		}
	}
}
