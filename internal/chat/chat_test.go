package chat

import (
	"errors"
	"testing"
	"time"
)

// TestVerifySlackExample: the example Slack publishes for its signing
// scheme (api.slack.com/authentication/verifying-requests-from-slack).
func TestVerifySlackExample(t *testing.T) {
	secret := []byte("8f742231b10e8888abcd99yyyzzz85a5")
	ts := "1531420618"
	body := []byte("token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c")
	const want = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"
	if got := Sign(SlackVersion, secret, ts, body); got != want {
		t.Fatalf("Sign = %s, want Slack's %s", got, want)
	}
	at := time.Unix(1531420618, 0)
	for _, c := range []struct {
		name     string
		ts, sig  string
		body     []byte
		now      time.Time
		secret   []byte
		version  string
		wantFail bool
	}{
		{"the example", ts, want, body, at.Add(time.Minute), secret, SlackVersion, false},
		{"four minutes early", ts, want, body, at.Add(-4 * time.Minute), secret, SlackVersion, false},
		{"replayed six minutes later", ts, want, body, at.Add(6 * time.Minute), secret, SlackVersion, true},
		{"from the future", ts, want, body, at.Add(-6 * time.Minute), secret, SlackVersion, true},
		{"another body", ts, want, append([]byte{}, append(body, '&')...), at, secret, SlackVersion, true},
		{"another timestamp", "1531420619", want, body, at, secret, SlackVersion, true},
		{"another secret", ts, want, body, at, []byte("not the secret"), SlackVersion, true},
		{"no secret", ts, want, body, at, nil, SlackVersion, true},
		{"a bad timestamp", "soon", want, body, at, secret, SlackVersion, true},
		{"another version", ts, "v1=" + want[3:], body, at, secret, SlackVersion, true},
		{"signed v0, checked as v1", ts, want, body, at, secret, GenericVersion, true},
		{"empty signature", ts, "", body, at, secret, SlackVersion, true},
	} {
		err := Verify(c.version, c.secret, c.ts, c.sig, c.body, c.now)
		if (err != nil) != c.wantFail {
			t.Errorf("%s: Verify = %v", c.name, err)
		}
		if err != nil && len(c.secret) > 0 && !errors.Is(err, ErrSignature) {
			t.Errorf("%s: %v is not ErrSignature", c.name, err)
		}
	}
}

func TestResponseURLAndTeams(t *testing.T) {
	for _, c := range []struct {
		target, base string
		ok           bool
	}{
		{"https://hooks.slack.com/actions/T1/123/abc", "https://hooks.slack.com/", true},
		{"https://hooks.slack.com/actions/T1/123/abc", "https://hooks.slack.com", true},
		{"https://hooks.slack.com.evil.example/actions", "https://hooks.slack.com", false},
		{"http://hooks.slack.com/actions", "https://hooks.slack.com/", false},
		{"https://user@hooks.slack.com/actions", "https://hooks.slack.com/", false},
		{"https://hooks.slack.com/actions", "https://hooks.slack.com/commands/", false},
		{"https://evil.example/?https://hooks.slack.com/", "https://hooks.slack.com/", false},
		{"::", "https://hooks.slack.com/", false},
	} {
		if got := under(c.target, c.base); got != c.ok {
			t.Errorf("under(%q, %q) = %v", c.target, c.base, got)
		}
	}
	any := &Client{}
	some := &Client{Teams: []string{"T1", "T2"}}
	if !any.TeamAllowed("T9") || !some.TeamAllowed("T2") || some.TeamAllowed("T9") || some.TeamAllowed("") {
		t.Error("TeamAllowed")
	}
}
