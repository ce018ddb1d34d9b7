// Package arxtest starts a real ARX server for tests: the same assembly as
// arx serve (SQLite in a temporary data directory, real HTTP on loopback),
// with helpers to hire agents and make raw API requests.
package arxtest

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/arxsec/arx/internal/server"
	"github.com/arxsec/arx/internal/store/segment"
)

// Server is a running ARX server.
type Server struct {
	*server.Server
	DataDir    string
	AdminToken string
	t          testing.TB
}

// Start starts a server in a temporary data directory; it stops when the
// test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	return StartIn(t, t.TempDir())
}

// StartIn starts a server on dir (which may hold an earlier server's data).
func StartIn(t testing.TB, dir string) *Server {
	t.Helper()
	return StartWith(t, dir, nil)
}

// StartWith starts a server on dir after configure has adjusted its
// configuration (nil: the defaults).
func StartWith(t testing.TB, dir string, configure func(*server.Config)) *Server {
	t.Helper()
	var logger *slog.Logger
	if os.Getenv("ARX_TEST_LOG") != "" {
		logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	// The shutdown timeout outlasts the server's 5 s header timeout: a
	// connection a client dialled but never used (http.Transport dials
	// ahead) counts as active until that timeout closes it.
	cfg := server.Config{DataDir: dir, Listen: "127.0.0.1:0", Logger: logger,
		CheckpointInterval: 50 * time.Millisecond, ShutdownTimeout: 10 * time.Second}
	if configure != nil {
		configure(&cfg)
	}
	s, err := server.Open(context.Background(), cfg)
	if err != nil {
		t.Fatalf("arxtest: start server: %v", err)
	}
	s.Start()
	admin := s.AdminToken
	if admin == "" {
		b, err := os.ReadFile(dir + "/" + server.AdminTokenFile)
		if err != nil {
			t.Fatal(err)
		}
		admin = strings.TrimSpace(string(b))
	}
	ts := &Server{Server: s, DataDir: dir, AdminToken: admin, t: t}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("arxtest: close server: %v", err)
		}
	})
	return ts
}

// BaseURL is what agents use as ARX_BASE_URL.
func (s *Server) BaseURL() string { return s.URL + "/v1" }

// Response is a raw API answer.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
}

// JSON decodes the body into v, failing the test on error.
func (r *Response) JSON(t testing.TB, v any) {
	t.Helper()
	if err := json.Unmarshal(r.Body, v); err != nil {
		t.Fatalf("arxtest: decode %s: %v", r.Body, err)
	}
}

// ErrorCode is the code of an error answer, "" otherwise.
func (r *Response) ErrorCode() string {
	var b struct {
		Error struct {
			Code string `json:"code"`
		} `json:"error"`
	}
	json.Unmarshal(r.Body, &b)
	return b.Error.Code
}

// Do sends a request with a bearer token (empty: none). body may be nil, a
// string or []byte (sent as is), or a value (sent as JSON).
func (s *Server) Do(method, path, token string, body any) *Response {
	s.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		data, err := json.Marshal(b)
		if err != nil {
			s.t.Fatal(err)
		}
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequest(method, s.URL+path, rd)
	if err != nil {
		s.t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatalf("arxtest: %s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		s.t.Fatal(err)
	}
	return &Response{Status: resp.StatusCode, Header: resp.Header, Body: data}
}

// Hire hires an agent from manifest text and returns its id and token.
func (s *Server) Hire(manifest string) (id, token string) {
	s.t.Helper()
	r := s.Do("POST", "/v1/agents", s.AdminToken, map[string]string{"manifest": manifest})
	if r.Status != http.StatusCreated {
		s.t.Fatalf("arxtest: hire: %d %s", r.Status, r.Body)
	}
	var out struct {
		Agent struct {
			ID string `json:"id"`
		} `json:"agent"`
		Token string `json:"token"`
	}
	r.JSON(s.t, &out)
	return out.Agent.ID, out.Token
}

// AddPerson creates a person with a password and returns their API token.
func (s *Server) AddPerson(email, role, password string) string {
	s.t.Helper()
	r := s.Do("POST", "/v1/users", s.AdminToken, map[string]any{"email": email, "role": role, "show_link": true})
	if r.Status != http.StatusCreated {
		s.t.Fatalf("arxtest: add user: %d %s", r.Status, r.Body)
	}
	var u struct {
		SetupToken string `json:"setup_token"`
	}
	r.JSON(s.t, &u)
	if r := s.Do("POST", "/v1/auth/setup", "", map[string]string{"token": u.SetupToken, "password": password}); r.Status != http.StatusOK {
		s.t.Fatalf("arxtest: set password: %d %s", r.Status, r.Body)
	}
	r = s.Do("POST", "/v1/auth/tokens", "", map[string]string{"email": email, "password": password})
	if r.Status != http.StatusCreated {
		s.t.Fatalf("arxtest: login: %d %s", r.Status, r.Body)
	}
	var tok struct {
		Token string `json:"token"`
	}
	r.JSON(s.t, &tok)
	return tok.Token
}

// Manifest is a small valid manifest for tests: connector "crm" with
// account.read (low), account.export (medium), account.delete (high), and
// connector "db" with query (low).
const Manifest = `apiVersion: arx.dev/v1
kind: JobDescription
agent:
  name: test-agent
  owner: owner@example.com
scope:
  connectors:
    crm:
      actions:
        account.read: {risk: low}
        account.export: {risk: medium}
        account.delete: {risk: high}
    db:
      actions:
        query: {risk: low, max_duration: 1s}
approval:
  approvers: [boss@example.com]
  timeout: 10m
budget:
  max_call_duration: 1m
termination:
  notify: [owner@example.com]
`

// EditEntry changes an entry of the server's log at rest, behind its back,
// as an intruder with the disk would: old is replaced by new (of the same
// length) in the entry's bytes, in place.
func (s *Server) EditEntry(index int64, old, new string) {
	s.t.Helper()
	if len(old) != len(new) {
		s.t.Fatalf("arxtest: EditEntry replaces %q with %q of another length", old, new)
	}
	path, off, n, err := segment.Locate(filepath.Join(s.DataDir, "log"), index)
	if err != nil {
		s.t.Fatalf("arxtest: locate entry %d: %v", index, err)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		s.t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, n)
	if _, err := f.ReadAt(b, off); err != nil {
		s.t.Fatal(err)
	}
	i := bytes.Index(b, []byte(old))
	if i < 0 {
		s.t.Fatalf("arxtest: entry %d does not hold %q: %s", index, old, b)
	}
	if _, err := f.WriteAt([]byte(new), off+int64(i)); err != nil {
		s.t.Fatal(err)
	}
}
