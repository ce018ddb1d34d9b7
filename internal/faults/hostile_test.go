package faults

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/arxsec/arx/internal/arxtest"
	"github.com/arxsec/arx/internal/runtime"
	"github.com/arxsec/arx/internal/server"
)

// TestTokenGuessingIsRateLimited: unknown tokens from one address are
// refused, then answered request.rate_limited for a while; valid tokens
// from that address (an agent's, the operator's terminating it) are
// never refused by the throttle.
func TestTokenGuessingIsRateLimited(t *testing.T) {
	s := arxtest.Start(t)
	id, token := s.Hire(arxtest.Manifest)
	body := map[string]string{"connector": "crm", "action": "account.read", "idempotency_key": "k"}
	var codes []string
	for i := 0; i < 2*runtime.BadTokensPerIP; i++ {
		r := s.Do("POST", "/v1/calls", "arxa_guess"+strings.Repeat("x", i%7), body)
		codes = append(codes, r.ErrorCode())
	}
	if codes[0] != "auth.invalid_token" || codes[len(codes)-1] != "request.rate_limited" {
		t.Fatalf("codes: first %s, last %s", codes[0], codes[len(codes)-1])
	}
	if r := s.Do("POST", "/v1/calls", token, body); r.Status != http.StatusCreated {
		t.Fatalf("the throttle refused a valid agent token: %d %s", r.Status, r.Body)
	}
	if r := s.Do("POST", "/v1/calls", "arxa_guess", body); r.ErrorCode() != "request.rate_limited" {
		t.Fatalf("guessing goes on unthrottled: %d %s", r.Status, r.Body)
	}
	if r := s.Do("POST", "/v1/agents/"+id+"/terminate", s.AdminToken, map[string]string{"reason": "locked out?"}); r.Status != http.StatusOK {
		t.Fatalf("the throttle refused the operator's termination: %d %s", r.Status, r.Body)
	}
	// The terminated agent's token is refused for what it is, not throttled.
	if r := s.Do("POST", "/v1/calls", token, body); r.ErrorCode() != "agent.terminated" && r.ErrorCode() != "auth.invalid_token" {
		t.Fatalf("the terminated agent's token: %d %s", r.Status, r.Body)
	}
}

// TestDeeplyNestedBody: a body nested deeper than any real request is
// refused cleanly, and the server keeps serving.
func TestDeeplyNestedBody(t *testing.T) {
	s := arxtest.Start(t)
	_, token := s.Hire(arxtest.Manifest)
	for _, body := range []string{
		strings.Repeat("[", 30000) + strings.Repeat("]", 30000),
		`{"summary":` + strings.Repeat(`{"a":`, 20000) + `1` + strings.Repeat("}", 20000) + `}`,
	} {
		r := s.Do("POST", "/v1/calls", token, body)
		if r.Status != 400 && r.Status != 413 {
			t.Fatalf("nested body: %d %s", r.Status, truncate(r.Body))
		}
	}
	if r := s.Do("GET", "/healthz", "", nil); r.Status != 200 {
		t.Fatal("server unhealthy after nested bodies")
	}
}

func truncate(b []byte) string {
	if len(b) > 200 {
		return string(b[:200])
	}
	return string(b)
}

// TestSlowClientTimesOut: a client that sends its headers too slowly is cut
// off by the server's header timeout, so slow clients cannot hold
// connections forever.
func TestSlowClientTimesOut(t *testing.T) {
	s := arxtest.Start(t)
	conn, err := net.Dial("tcp", strings.TrimPrefix(s.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, "POST /v1/calls HTTP/1.1\r\nHost: arx\r\n"); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestTimeout && resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("slow client got %d", resp.StatusCode)
		}
	}
	if d := time.Since(start); d > 15*time.Second {
		t.Fatalf("the server held a slow client for %v", d)
	}
}

// TestRevokeOnlyInTheOwnersName: an operator's revocation names an agent
// and a token; a token of another agent, or of a person, is not revoked in
// that agent's name (404, nothing recorded), and keeps working.
func TestRevokeOnlyInTheOwnersName(t *testing.T) {
	s := arxtest.Start(t)
	a, _ := s.Hire(arxtest.Manifest)
	b, bToken := s.Hire(strings.Replace(arxtest.Manifest, "name: test-agent", "name: other-agent", 1))
	tokenOf := func(agent string) string {
		r := s.Do("GET", "/v1/agents/"+agent+"/record?limit=10", s.AdminToken, nil)
		var page struct {
			Entries []struct {
				Entry struct {
					Type string         `json:"type"`
					Data map[string]any `json:"data"`
				} `json:"entry"`
			} `json:"entries"`
		}
		r.JSON(t, &page)
		for _, e := range page.Entries {
			if e.Entry.Type == "agent.hired" {
				return e.Entry.Data["token_id"].(string)
			}
		}
		t.Fatalf("no agent.hired entry for %s", agent)
		return ""
	}
	entries := func(agent string) int {
		r := s.Do("GET", "/v1/agents/"+agent+"/record?limit=100", s.AdminToken, nil)
		var page struct {
			Entries []json.RawMessage `json:"entries"`
		}
		r.JSON(t, &page)
		return len(page.Entries)
	}
	bTok := tokenOf(b)
	before := entries(a)
	if r := s.Do("DELETE", "/v1/agents/"+a+"/tokens/"+bTok, s.AdminToken, nil); r.Status != http.StatusNotFound {
		t.Fatalf("revoking b's token in a's name: %d %s, want 404", r.Status, r.Body)
	}
	if n := entries(a); n != before {
		t.Errorf("a's record grew by %d entries", n-before)
	}
	body := map[string]string{"connector": "crm", "action": "account.read", "idempotency_key": "still-works"}
	if r := s.Do("POST", "/v1/calls", bToken, body); r.Status != http.StatusCreated {
		t.Fatalf("b's token after the refused revocation: %d %s", r.Status, r.Body)
	}
	// In its owner's name it is revoked, and recorded there.
	if r := s.Do("DELETE", "/v1/agents/"+b+"/tokens/"+bTok, s.AdminToken, nil); r.Status >= 300 {
		t.Fatalf("revoking b's token in b's name: %d %s", r.Status, r.Body)
	}
	if r := s.Do("POST", "/v1/calls", bToken, body); r.Status != http.StatusUnauthorized {
		t.Fatalf("b's revoked token: %d %s", r.Status, r.Body)
	}
}

// TestLoosePermissionsRefused: a data directory others may read, or a
// secret in it that others may read, stops the server at start, naming the
// file and the fix; with the modes fixed it starts.
func TestLoosePermissionsRefused(t *testing.T) {
	dir := t.TempDir()
	s := arxtest.StartIn(t, dir) // creates the keys and the admin token
	s.Close()
	open := func() error {
		srv, err := server.Open(t.Context(), server.Config{DataDir: dir, Listen: "127.0.0.1:0"})
		if err == nil {
			srv.Close()
		}
		return err
	}
	for _, tc := range []struct {
		path string
		mode os.FileMode
		fix  string
	}{
		{dir, 0o755, "chmod 700"},
		{filepath.Join(dir, server.LogKeyFile), 0o644, "chmod 600"},
		{filepath.Join(dir, server.CredentialKeyFile), 0o640, "chmod 600"},
		{filepath.Join(dir, server.AdminTokenFile), 0o604, "chmod 600"},
	} {
		t.Run(filepath.Base(tc.path), func(t *testing.T) {
			fi, err := os.Stat(tc.path)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(tc.path, tc.mode); err != nil {
				t.Fatal(err)
			}
			err = open()
			if err == nil || !strings.Contains(err.Error(), tc.path) || !strings.Contains(err.Error(), tc.fix) {
				t.Errorf("start with %s at %04o: %v; want a refusal naming it and %q", tc.path, tc.mode, err, tc.fix)
			}
			if err := os.Chmod(tc.path, fi.Mode().Perm()); err != nil {
				t.Fatal(err)
			}
		})
	}
	if err := open(); err != nil {
		t.Fatalf("start with the modes fixed: %v", err)
	}
	// A new, empty directory made with loose modes is closed, not refused.
	fresh := filepath.Join(t.TempDir(), "new")
	if err := os.Mkdir(fresh, 0o755); err != nil {
		t.Fatal(err)
	}
	arxtest.StartIn(t, fresh).Close()
	if fi, err := os.Stat(fresh); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("a new data directory: %v, %v; want mode 0700", fi.Mode(), err)
	}
}

// TestStrangerCannotLockAPersonOut: a stranger's wrong passwords for an
// approver's account, from the stranger's address, get the stranger
// refused; the approver, from an address of their own, still logs in
// (slowed down a little while the account is under attack), and guesses
// from many addresses at once take turns.
func TestStrangerCannotLockAPersonOut(t *testing.T) {
	s := arxtest.Start(t)
	const pw = "correct horse battery staple"
	s.AddPerson("boss@example.com", "manager", pw)
	from := func(ip string) *http.Client {
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}
		return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DialContext: d.DialContext}}
	}
	login := func(c *http.Client, password string) (int, string, time.Duration) {
		b, _ := json.Marshal(map[string]string{"email": "boss@example.com", "password": password})
		start := time.Now()
		resp, err := c.Post(s.URL+"/v1/auth/tokens", "application/json", bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var e struct {
			Error struct{ Code string } `json:"error"`
		}
		json.NewDecoder(resp.Body).Decode(&e)
		return resp.StatusCode, e.Error.Code, time.Since(start)
	}
	stranger := from("127.0.0.1")
	var codes []string
	for range runtime.LoginFailuresPerEmail + 1 {
		_, code, _ := login(stranger, "wrong password!")
		codes = append(codes, code)
	}
	if codes[0] != "auth.login_failed" || codes[len(codes)-1] != "request.rate_limited" {
		t.Fatalf("the stranger's attempts: %v", codes)
	}
	if _, code, _ := login(stranger, pw); code != "request.rate_limited" {
		t.Errorf("the stranger's address, even with the right password: %s, want request.rate_limited", code)
	}
	status, code, took := login(from("127.0.0.2"), pw)
	if status != http.StatusCreated {
		t.Fatalf("the approver, from their own address, is locked out: %d %s", status, code)
	}
	if took < runtime.LoginSlowdown || took > runtime.LoginSlowdownMax+5*time.Second {
		t.Errorf("the approver's login took %v: want it slowed (>= %v), never refused", took, runtime.LoginSlowdown)
	}
	// Guesses from several addresses at once take turns, each slowed.
	start := time.Now()
	var wg sync.WaitGroup
	for i := range 3 {
		wg.Go(func() { login(from(fmt.Sprintf("127.0.1.%d", i+1)), "wrong password!") })
	}
	wg.Wait()
	if took := time.Since(start); took < 3*runtime.LoginSlowdown {
		t.Errorf("3 guesses from 3 addresses took %v together: they do not take turns", took)
	}
}
