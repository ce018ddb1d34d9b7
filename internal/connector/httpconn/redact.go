package httpconn

import (
	"bytes"
	"io"
	"net/http"
	"slices"
)

// An upstream may echo what authenticated the request (a debug endpoint,
// an error page quoting the Authorization header, a misconfigured proxy).
// The agent must not get the secret that way: every answer is scanned, its
// headers and its body, and the secret (each form it is sent in) is
// replaced by as many '*' as it has bytes, so the answer keeps its length
// (Content-Length stays true) and its streaming (only a tail that could
// begin a secret is held back until the next read).

// redactor replaces the secrets in what passes through it.
type redactor struct {
	secrets [][]byte
	longest int
}

func newRedactor(secrets ...string) *redactor {
	r := &redactor{}
	for _, s := range secrets {
		if s == "" {
			continue
		}
		r.secrets = append(r.secrets, []byte(s))
		r.longest = max(r.longest, len(s))
	}
	// The longest first: a form that holds another is masked whole.
	slices.SortFunc(r.secrets, func(a, b []byte) int { return len(b) - len(a) })
	return r
}

// mask replaces every secret in b, in place.
func (r *redactor) mask(b []byte) bool {
	found := false
	for _, s := range r.secrets {
		for i := 0; ; {
			j := bytes.Index(b[i:], s)
			if j < 0 {
				break
			}
			found = true
			for k := range s {
				b[i+j+k] = '*'
			}
			i += j + len(s)
		}
	}
	return found
}

// held is how many bytes at the end of b could begin a secret: they wait
// for the next read.
func (r *redactor) held(b []byte) int {
	for n := min(len(b), r.longest-1); n > 0; n-- {
		tail := b[len(b)-n:]
		for _, s := range r.secrets {
			if bytes.HasPrefix(s, tail) {
				return n
			}
		}
	}
	return 0
}

// headers masks the secrets in every header value; it reports whether it
// found one.
func (r *redactor) headers(h http.Header) bool {
	found := false
	for _, vs := range h {
		for i, v := range vs {
			b := []byte(v)
			if r.mask(b) {
				vs[i] = string(b)
				found = true
			}
		}
	}
	return found
}

// reader masks the secrets in what it reads from src.
type redactingReader struct {
	r     *redactor
	src   io.Reader
	buf   []byte // read, not yet handed out
	ready int    // buf[:ready] is masked and may be handed out
	err   error
	Found bool
}

func (r *redactor) reader(src io.Reader) *redactingReader {
	return &redactingReader{r: r, src: src}
}

func (rr *redactingReader) Read(p []byte) (int, error) {
	for rr.ready == 0 {
		if rr.err != nil {
			if len(rr.buf) > 0 { // the held tail, at the end
				rr.ready = len(rr.buf)
				break
			}
			return 0, rr.err
		}
		if cap(rr.buf)-len(rr.buf) < 32<<10 {
			nb := make([]byte, len(rr.buf), len(rr.buf)+64<<10)
			copy(nb, rr.buf)
			rr.buf = nb
		}
		n, err := rr.src.Read(rr.buf[len(rr.buf):cap(rr.buf)])
		rr.buf = rr.buf[:len(rr.buf)+n]
		rr.err = err
		if rr.r.mask(rr.buf) {
			rr.Found = true
		}
		rr.ready = len(rr.buf)
		if err == nil {
			rr.ready -= rr.r.held(rr.buf)
		}
	}
	n := copy(p, rr.buf[:rr.ready])
	rr.ready -= n
	rr.buf = rr.buf[:copy(rr.buf, rr.buf[n:])]
	return n, nil
}
