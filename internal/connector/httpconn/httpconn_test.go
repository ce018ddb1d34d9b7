package httpconn

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/arxsec/arx/internal/connector"
)

func spec(t *testing.T, upstream, auth string) connector.Spec {
	t.Helper()
	cfg, err := connector.Parse([]byte(fmt.Sprintf(`connectors:
  crm:
    kind: http
    upstream: %s/base
    secret: env:S
    %s
    timeout: 500ms
    max_response_bytes: 1000
    actions:
      read: {allow: ["GET /**"]}
`, upstream, auth)))
	if err != nil {
		t.Fatal(err)
	}
	return cfg.Connectors[0]
}

func TestAuthInjected(t *testing.T) {
	var got http.Header
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = r.Header.Clone()
		fmt.Fprint(w, r.URL.Path)
	}))
	defer up.Close()
	for _, tc := range []struct {
		auth, header, want string
	}{
		{"auth: bearer", "Authorization", "Bearer s3cret"},
		{"auth: basic\n    username: svc", "Authorization", "Basic c3ZjOnMzY3JldA=="},
		{"auth: header X-Api-Key", "X-Api-Key", "s3cret"},
	} {
		c, err := New(spec(t, up.URL, tc.auth), "s3cret", nil)
		if err != nil {
			t.Fatal(err)
		}
		in := httptest.NewRequest("GET", "/v1/gateway/crm/a/b", nil)
		in.Header.Set("Authorization", "Bearer agent-credential")
		in.Header.Set("X-Api-Key", "agent-chosen")
		w := httptest.NewRecorder()
		ex := c.Forward(w, in, "/a/b")
		if ex.Err != nil || w.Body.String() != "/base/a/b" {
			t.Fatalf("%s: %v %q", tc.auth, ex.Err, w.Body)
		}
		if got.Get(tc.header) != tc.want || strings.Contains(fmt.Sprint(got), "agent-credential") {
			t.Errorf("%s: upstream saw %v", tc.auth, got)
		}
		if s := fmt.Sprintf("%v %+v %#v", c, c, c); strings.Contains(s, "s3cret") || strings.Contains(s, "c3ZjOnMzY3JldA") {
			t.Errorf("formatting shows the secret: %s", s)
		}
	}
}

func TestAnswerLimitsAndBreaks(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/base/big":
			w.Header().Set("Content-Length", "5000")
			w.Write(make([]byte, 5000))
		case "/base/bigchunked":
			for range 10 {
				w.Write(make([]byte, 500))
				w.(http.Flusher).Flush()
			}
		case "/base/broken":
			w.Header().Set("Content-Length", "900")
			w.Write(make([]byte, 10))
			w.(http.Flusher).Flush()
			panic(http.ErrAbortHandler)
		case "/base/slow":
			time.Sleep(time.Second)
		}
	}))
	defer up.Close()
	c, err := New(spec(t, up.URL, "auth: bearer"), "s", nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		path  string
		want  error
		wrote bool
	}{
		{"/big", connector.ErrResponseTooLarge, false},
		{"/bigchunked", connector.ErrResponseTooLarge, true},
		{"/broken", connector.ErrUpstreamBroken, true},
		{"/slow", connector.ErrTimeout, false},
	} {
		w := httptest.NewRecorder()
		ex := c.Forward(w, httptest.NewRequest("GET", "/x", nil), tc.path)
		if !errors.Is(ex.Err, tc.want) || ex.Wrote != tc.wrote {
			t.Errorf("%s: %v wrote=%v, want %v wrote=%v", tc.path, ex.Err, ex.Wrote, tc.want, tc.wrote)
		}
	}
}
