//go:build linux

package faults

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
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

// TestPeopleChangesAreRecordedAndHeld: adding a person, a reset, a role
// change and a disable are entries with who did it; setup links go to the
// person (the server's webhook) unless the admin asks to see one, which is
// recorded; a new link kills the old; a disabled person's token and
// session die at once; personal tokens are listed and revoked by their
// owner only, and expire.
func TestPeopleChangesAreRecordedAndHeld(t *testing.T) {
	var mu sync.Mutex
	var hooks []map[string]any
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var m map[string]any
		json.NewDecoder(r.Body).Decode(&m)
		mu.Lock()
		hooks = append(hooks, m)
		mu.Unlock()
	}))
	defer hook.Close()
	linkFor := func(email string) string {
		mu.Lock()
		defer mu.Unlock()
		for i := len(hooks) - 1; i >= 0; i-- {
			if hooks[i]["event"] == "user.setup_link" && hooks[i]["to"] == email {
				return hooks[i]["url"].(string)
			}
		}
		return ""
	}
	// Personal tokens live for lifetime here: long enough for the steps
	// between a login and its token's last use under a loaded CI machine
	// (a person added hashes a password), short enough to see one expire.
	const lifetime = 8 * time.Second
	s := arxtest.StartWith(t, t.TempDir(), func(c *server.Config) {
		c.Webhooks = []runtime.Webhook{{URL: hook.URL, Format: "json"}}
		c.UserTokenLifetime = lifetime
	})
	tokenOf := func(link string) string {
		u, err := url.Parse(link)
		if err != nil {
			t.Fatal(err)
		}
		return u.Query().Get("token")
	}
	setPassword := func(link, pw string) int {
		return s.Do("POST", "/v1/auth/setup", "", map[string]string{"token": tokenOf(link), "password": pw}).Status
	}
	const pw = "correct horse battery staple"

	// Added: the link goes to the person, not to the admin.
	r := s.Do("POST", "/v1/users", s.AdminToken, map[string]any{"email": "boss@example.com", "role": "manager"})
	if r.Status != http.StatusCreated || bytes.Contains(r.Body, []byte("arxs_")) {
		t.Fatalf("add: %d %s (the admin must not get the link)", r.Status, r.Body)
	}
	first := linkFor("boss@example.com")
	if first == "" {
		t.Fatal("the person was not sent their link")
	}
	// A reset: no link to the caller; the person's new link kills the old.
	if r := s.Do("POST", "/v1/users/boss@example.com/reset", s.AdminToken, nil); r.Status != http.StatusOK || bytes.Contains(r.Body, []byte("arxs_")) {
		t.Fatalf("reset: %d %s (the caller must not get the link)", r.Status, r.Body)
	}
	second := linkFor("boss@example.com")
	if second == first || second == "" {
		t.Fatal("no new link was sent")
	}
	if st := setPassword(first, pw); st != http.StatusBadRequest && st != http.StatusUnauthorized && st != http.StatusNotFound {
		t.Errorf("the first link still works after the reset: %d", st)
	}
	// Only an explicit option shows the link to an admin; it is recorded.
	r = s.Do("POST", "/v1/users/boss@example.com/reset", s.AdminToken, map[string]bool{"show_link": true})
	var shown struct {
		SetupURL string `json:"setup_url"`
	}
	r.JSON(t, &shown)
	if r.Status != http.StatusOK || shown.SetupURL == "" {
		t.Fatalf("reset with show_link: %d %s", r.Status, r.Body)
	}
	if st := setPassword(second, pw); st == http.StatusOK {
		t.Error("the second link still works after a newer one")
	}
	if st := setPassword(shown.SetupURL, pw); st != http.StatusOK {
		t.Fatalf("the shown link: %d", st)
	}
	login := func() (int, string) {
		r := s.Do("POST", "/v1/auth/tokens", "", map[string]string{"email": "boss@example.com", "password": pw})
		var out struct {
			Token string `json:"token"`
		}
		json.Unmarshal(r.Body, &out)
		return r.Status, out.Token
	}
	st, tok := login()
	if st != http.StatusCreated {
		t.Fatalf("login: %d", st)
	}
	// The owner lists and revokes their own tokens; not someone else's.
	r = s.Do("GET", "/v1/auth/tokens", tok, nil)
	var own struct {
		Tokens []struct {
			ID        string    `json:"id"`
			ExpiresAt time.Time `json:"expires_at"`
		} `json:"tokens"`
	}
	r.JSON(t, &own)
	if len(own.Tokens) != 1 || time.Until(own.Tokens[0].ExpiresAt) > lifetime {
		t.Fatalf("own tokens: %s", r.Body)
	}
	other := s.AddPerson("other@example.com", "manager", pw)
	if r := s.Do("DELETE", "/v1/auth/tokens/"+own.Tokens[0].ID, other, nil); r.Status != http.StatusNotFound {
		t.Errorf("another person revoked boss's token: %d %s", r.Status, r.Body)
	}
	if r := s.Do("GET", "/v1/approvals", tok, nil); r.Status != http.StatusOK {
		t.Fatalf("boss's token after another's attempt: %d", r.Status)
	}
	// A role change, recorded.
	if r := s.Do("POST", "/v1/users/boss@example.com/role", s.AdminToken, map[string]string{"role": "admin"}); r.Status != http.StatusOK {
		t.Fatalf("role: %d %s", r.Status, r.Body)
	}
	// Disabled: the token dies at once; enabled: a login works again.
	if r := s.Do("POST", "/v1/users/boss@example.com/disable", s.AdminToken, nil); r.Status != http.StatusOK {
		t.Fatalf("disable: %d %s", r.Status, r.Body)
	}
	if r := s.Do("GET", "/v1/approvals", tok, nil); r.Status != http.StatusUnauthorized {
		t.Errorf("a disabled person's token: %d", r.Status)
	}
	if st, _ := login(); st == http.StatusCreated {
		t.Error("a disabled person logged in")
	}
	if r := s.Do("POST", "/v1/users/boss@example.com/enable", s.AdminToken, nil); r.Status != http.StatusOK {
		t.Fatalf("enable: %d %s", r.Status, r.Body)
	}
	st, tok = login()
	if st != http.StatusCreated {
		t.Fatalf("login after enable: %d", st)
	}
	// Personal tokens expire.
	r = s.Do("GET", "/v1/auth/tokens", tok, nil)
	if r.Status != http.StatusOK {
		t.Fatalf("a fresh token: %d", r.Status)
	}
	r.JSON(t, &own)
	var last time.Time // the fresh token's, the latest (the list keeps the revoked one)
	for _, k := range own.Tokens {
		if k.ExpiresAt.After(last) {
			last = k.ExpiresAt
		}
	}
	if time.Until(last) > lifetime {
		t.Fatalf("own tokens after enable: %s", r.Body)
	}
	time.Sleep(time.Until(last) + 100*time.Millisecond)
	if r := s.Do("GET", "/v1/approvals", tok, nil); r.Status != http.StatusUnauthorized || !strings.Contains(string(r.Body), "expired") {
		t.Errorf("an expired personal token: %d %s", r.Status, r.Body)
	}

	// Every change is in the log, with who did it.
	r = s.Do("GET", "/v1/log/entries?start=0&limit=1000", s.AdminToken, nil)
	var le struct {
		Entries []struct {
			Data string `json:"data"`
		} `json:"entries"`
	}
	r.JSON(t, &le)
	got := map[string][]map[string]any{}
	for _, e := range le.Entries {
		b, _ := base64.StdEncoding.DecodeString(e.Data)
		var x struct {
			Type  string         `json:"type"`
			Actor string         `json:"actor"`
			Data  map[string]any `json:"data"`
		}
		json.Unmarshal(b, &x)
		if strings.HasPrefix(x.Type, "user.") && x.Data["user"] == "boss@example.com" {
			if !strings.HasPrefix(x.Actor, "admin:") {
				t.Errorf("%s recorded with actor %q", x.Type, x.Actor)
			}
			got[x.Type] = append(got[x.Type], x.Data)
		}
	}
	if len(got["user.added"]) != 1 || got["user.added"][0]["link"] != "sent to the person" {
		t.Errorf("user.added: %v", got["user.added"])
	}
	if resets := got["user.reset"]; len(resets) != 2 || resets[0]["link"] != "sent to the person" || resets[1]["link"] != "shown to the caller" {
		t.Errorf("user.reset: %v", resets)
	}
	for _, typ := range []string{"user.role_changed", "user.disabled", "user.enabled"} {
		if len(got[typ]) != 1 {
			t.Errorf("%s: %v", typ, got[typ])
		}
	}
	// The log holds no setup link.
	for _, e := range le.Entries {
		if b, _ := base64.StdEncoding.DecodeString(e.Data); bytes.Contains(b, []byte("arxs_")) {
			t.Errorf("an entry holds a setup link: %s", b)
		}
	}
}

// TestSetupLinkNeedsAChannel: without a webhook to send the link through,
// adding or resetting a person without --show-link is refused before
// anything is done.
func TestSetupLinkNeedsAChannel(t *testing.T) {
	s := arxtest.Start(t)
	r := s.Do("POST", "/v1/users", s.AdminToken, map[string]any{"email": "boss@example.com", "role": "manager"})
	if r.Status != http.StatusBadRequest || !strings.Contains(string(r.Body), "show-link") {
		t.Fatalf("add without a channel: %d %s", r.Status, r.Body)
	}
	if r := s.Do("GET", "/v1/users", s.AdminToken, nil); bytes.Contains(r.Body, []byte("boss@example.com")) {
		t.Error("the refused add made the account")
	}
}
