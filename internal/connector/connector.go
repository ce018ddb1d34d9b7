// Package connector is how ARX reaches the systems of record configured on
// the server (connectors.yaml): their configuration, parsed strictly with line
// numbers, and the small interfaces each kind of backend implements. The
// backends live in their own packages: httpconn (kind http: the gateway
// forwards the agent's requests and injects the real secret) and postgres
// (kind postgres: a database role that exists only for one call).
//
// What it promises: a connector's secret is given by reference (env:NAME or
// file:PATH), resolved when ARX starts, and never returned by Info, an error
// or a log line of this package or its backends.
package connector

import (
	"context"
	"errors"
	"net/http"
	"time"
)

// Kinds of connector.
const (
	KindHTTP     = "http"
	KindPostgres = "postgres"
)

// Connector is one system of record configured on the server.
type Connector interface {
	Name() string
	Kind() string
	// Info describes the connector for operators, without its secret.
	Info() Info
}

// Gateway is a connector ARX forwards HTTP requests to (kind http).
type Gateway interface {
	Connector
	// Allow says whether a credential for action may send method to path
	// (validated and decoded by CleanPath). A refusal is a *Refusal.
	Allow(action, method, path string) error
	// MaxRequestBytes bounds the body of one forwarded request.
	MaxRequestBytes() int64
	// Timeout bounds one forwarded request, answer included.
	Timeout() time.Duration
	// Forward sends r upstream to rawPath (escaped, validated) and r's raw
	// query, with the connector's own authentication in place of the
	// agent's, and streams the answer to w. When Exchange.Wrote is false
	// nothing was written to w and the caller answers with the error.
	Forward(w http.ResponseWriter, r *http.Request, rawPath string) Exchange
}

// Exchange says what happened to one forwarded request.
type Exchange struct {
	Status        int   // the upstream's status, 0 when it did not answer
	RequestBytes  int64 // body bytes sent upstream
	ResponseBytes int64 // body bytes sent to the agent
	Wrote         bool  // an answer (headers at least) went to the agent
	Redacted      bool  // the upstream's answer held the connector's secret, masked before the agent got it
	Err           error // nil, or one of the Err* failures below (wrapped)
}

// Failures of a forwarded request. The API maps them to stable codes.
var (
	ErrUnreachable      = errors.New("upstream unreachable")
	ErrTimeout          = errors.New("upstream timed out")
	ErrRequestTooLarge  = errors.New("request body too large")
	ErrResponseTooLarge = errors.New("upstream answer too large")
	ErrClientGone       = errors.New("the agent went away")
	ErrUpstreamBroken   = errors.New("upstream answer broken off")
	// ErrCut is the cause of a forwarded request's context that ARX ended
	// because its call may no longer be forwarded (completed, expired,
	// revoked, its agent terminated): "cut by ARX: REASON".
	ErrCut = errors.New("cut by ARX")
)

// Refusal is a request a gateway rule does not allow.
type Refusal struct {
	Reason  string // RefusedMethod or RefusedPath
	Message string
}

// Reasons for a Refusal.
const (
	RefusedMethod = "method"
	RefusedPath   = "path"
)

func (r *Refusal) Error() string { return r.Message }

// Provisioner is a connector that makes a credential of its own for each
// call in the system of record (kind postgres: a database role), and removes
// it when the call ends.
type Provisioner interface {
	Connector
	// Provision makes the call's access, or finds it made by an earlier
	// attempt, and returns what the agent connects with (a DSN). It is
	// idempotent: the same call gives the same answer.
	Provision(ctx context.Context, c Call) (string, error)
	// Revoke ends the call's access at once and removes what Provision
	// made; existed says whether anything was left to remove. Idempotent.
	Revoke(ctx context.Context, callID string) (existed bool, err error)
	// Provisioned lists the calls whose access exists now, for finding
	// what was left behind.
	Provisioned(ctx context.Context) ([]string, error)
	// Resource names what Provision makes for a call (a role name), for
	// the record.
	Resource(callID string) string
}

// Checker is what a connector offers when it can look at its upstream for
// weaknesses that ARX cannot fix itself (the operator's to fix): each
// warning says what and how. The runtime logs them at start.
type Checker interface {
	Check(ctx context.Context) (warnings []string, err error)
}

// Call is what a Provisioner needs to know about a call.
type Call struct {
	ID       string
	Action   string
	Expiry   time.Time
	Password string // derived per call by ARX; never stored
}

// Info describes a connector for `arx connectors list`: its configuration
// with the secret's reference, never its value.
type Info struct {
	Name             string       `json:"name"`
	Kind             string       `json:"kind"`
	Description      string       `json:"description,omitempty"`
	Upstream         string       `json:"upstream"`
	Secret           string       `json:"secret"` // the reference: env:NAME or file:PATH
	Auth             string       `json:"auth,omitempty"`
	Timeout          string       `json:"timeout"`
	MaxRequestBytes  int64        `json:"max_request_bytes,omitempty"`
	MaxResponseBytes int64        `json:"max_response_bytes,omitempty"`
	MaxConnections   int          `json:"max_connections,omitempty"`
	Actions          []ActionInfo `json:"actions"`
}

// ActionInfo is what one action allows.
type ActionInfo struct {
	Name   string   `json:"name"`
	Allow  []string `json:"allow,omitempty"`
	Grants []string `json:"grants,omitempty"`
}
