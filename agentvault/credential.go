package agentvault

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"time"
)

// Credential is the per-call credential ARX issues when a call may proceed.
// It is good only for its own call's connector and action, and dies when the
// call is completed or expires.
//
// Token is the secret. Printing a Credential with fmt (any verb), logging it
// with log/slog or encoding it as JSON shows the token as REDACTED; read
// Token directly, or use SetAuthHeader, where the secret is really needed.
type Credential struct {
	Token     string // compact JWT, signed by ARX
	Type      string // "Bearer"
	CallID    string
	AgentID   string
	Connector string
	Action    string
	Risk      Risk // effective risk of the call
	ExpiresAt time.Time
	// DSN is set for a postgres connector: a database role made for this
	// call only, dropped when the call ends. Secret like Token, and
	// redacted the same way.
	DSN string
}

// SetAuthHeader sets "Authorization: Bearer <token>" on r.
func (c Credential) SetAuthHeader(r *http.Request) {
	r.Header.Set("Authorization", "Bearer "+c.Token)
}

// String returns the credential without its token:
// Credential{call=..., connector=..., action=..., token=REDACTED}.
func (c Credential) String() string {
	dsn := ""
	if c.DSN != "" {
		dsn = ", dsn=" + redacted
	}
	return "Credential{call=" + c.CallID + ", connector=" + c.Connector + ", action=" + c.Action + ", token=" + redacted + dsn + "}"
}

// Format prints String for every verb (%v, %+v, %#v, %s, %q, ...), so no
// formatting path reaches the token.
func (c Credential) Format(f fmt.State, verb rune) {
	s := c.String()
	if verb == 'q' {
		s = strconv.Quote(s)
	}
	_, _ = f.Write([]byte(s))
}

// LogValue logs the credential's scope and expiry, not its token.
func (c Credential) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("call", c.CallID),
		slog.String("agent", c.AgentID),
		slog.String("connector", c.Connector),
		slog.String("action", c.Action),
		slog.String("risk", string(c.Risk)),
		slog.Time("expires_at", c.ExpiresAt),
		slog.String("token", redacted),
	)
}

// MarshalJSON encodes the credential with its token redacted. It is for logs
// and debugging output; a Credential does not travel back to ARX as JSON.
func (c Credential) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Token     string    `json:"token"`
		Type      string    `json:"type"`
		CallID    string    `json:"call_id"`
		AgentID   string    `json:"agent_id"`
		Connector string    `json:"connector"`
		Action    string    `json:"action"`
		Risk      Risk      `json:"risk"`
		ExpiresAt time.Time `json:"expires_at"`
	}{redacted, c.Type, c.CallID, c.AgentID, c.Connector, c.Action, c.Risk, c.ExpiresAt})
}
