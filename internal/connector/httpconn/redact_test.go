package httpconn

import (
	"bytes"
	"io"
	"net/http"
	"strings"
	"testing"
	"testing/iotest"
)

func TestRedactorMasks(t *testing.T) {
	r := newRedactor("s3cr3t-key", "Bearer s3cr3t-key")
	for _, tc := range []struct{ in, want string }{
		{"nothing here", "nothing here"},
		{"key=s3cr3t-key;", "key=**********;"},
		{"Authorization: Bearer s3cr3t-key", "Authorization: *****************"},
		{"s3cr3t-keys3cr3t-key", "********************"},
		{"s3cr3t-ke", "s3cr3t-ke"},
	} {
		b := []byte(tc.in)
		r.mask(b)
		if string(b) != tc.want {
			t.Errorf("mask(%q) = %q, want %q", tc.in, b, tc.want)
		}
	}
}

// TestRedactingReader: the secret is masked wherever reads split it, the
// length is kept, and bytes that cannot begin a secret are not held back.
func TestRedactingReader(t *testing.T) {
	secret := "s3cr3t-key"
	body := "head " + secret + " middle " + secret + secret + " tail s3cr3t-ke"
	want := strings.ReplaceAll(body[:len(body)-len(" tail s3cr3t-ke")], secret, strings.Repeat("*", len(secret))) + " tail s3cr3t-ke"
	for _, name := range []string{"whole", "one byte at a time", "halves"} {
		t.Run(name, func(t *testing.T) {
			var src io.Reader = strings.NewReader(body)
			switch name {
			case "one byte at a time":
				src = iotest.OneByteReader(src)
			case "halves":
				src = io.MultiReader(strings.NewReader(body[:9]), strings.NewReader(body[9:]))
			}
			rr := newRedactor(secret).reader(src)
			got, err := io.ReadAll(rr)
			if err != nil || string(got) != want || !rr.Found {
				t.Errorf("got %q, %v, found %v; want %q", got, err, rr.Found, want)
			}
		})
	}
	// A stream's event is handed out at once: nothing in it can begin the secret.
	pr, pw := io.Pipe()
	rr := newRedactor(secret).reader(pr)
	go pw.Write([]byte("data: first\n\n"))
	buf := make([]byte, 64)
	n, err := rr.Read(buf)
	if err != nil || string(buf[:n]) != "data: first\n\n" {
		t.Errorf("first read %q, %v", buf[:n], err)
	}
	pw.Close()
}

func TestRedactorHeaders(t *testing.T) {
	h := http.Header{"X-Debug": {"auth=Bearer s3cr3t-key"}, "X-Other": {"fine"}}
	if !newRedactor("s3cr3t-key").headers(h) || bytes.Contains([]byte(h.Get("X-Debug")), []byte("s3cr3t")) || h.Get("X-Other") != "fine" {
		t.Errorf("headers: %v", h)
	}
}
