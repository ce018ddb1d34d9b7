package credential

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/arxsec/arx/arxerr"
)

// Verifier checks call credentials for a system of record: the signature
// with ARX's published keys (fetched from /.well-known/jwks.json and cached),
// the connector and action, and then, on every request, whether the call is
// still open, by asking ARX (POST /v1/credentials/introspect). There is no
// cache on that last answer: a completed call or a terminated agent is
// refused from the moment ARX commits it.
type Verifier struct {
	arx    string // ARX server URL, without /v1
	client *http.Client
	issuer string

	mu        sync.Mutex
	keys      *KeySet
	fetchedAt time.Time
}

// VerifyError is a refused credential, with ARX's stable code.
type VerifyError struct {
	Code    arxerr.Code
	Message string
}

func (e *VerifyError) Error() string { return fmt.Sprintf("%s: %s", e.Code, e.Message) }

// NewVerifier returns a Verifier for the ARX server at arxURL (for example
// http://127.0.0.1:8080; a trailing /v1 is accepted). client nil means a
// client with a 5 second timeout.
//
// What it checks, in order, on every request: an EdDSA signature by a key
// ARX publishes (no other algorithm, "none" included); the issuer, when
// RequireIssuer named it; the audience arx:connector:<connector> and the
// connector; the action; the time window (exp, nbf); and then, asking ARX,
// that the call is still open and its agent active (revocation), and that
// ARX's answer is about this very call.
func NewVerifier(arxURL string, client *http.Client) *Verifier {
	if client == nil {
		client = &http.Client{Timeout: 5 * time.Second}
	}
	u := strings.TrimSuffix(strings.TrimSuffix(arxURL, "/"), "/v1")
	return &Verifier{arx: u, client: client}
}

// RequireIssuer makes the Verifier refuse credentials not issued by origin
// (the iss claim: the ARX deployment's log origin, `arx serve` prints it).
// Call it before the Verifier is used.
func (v *Verifier) RequireIssuer(origin string) *Verifier {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.issuer = origin
	v.keys = nil // keys are parsed with the issuer
	return v
}

// keySet returns the cached keys, refreshing them when older than an hour
// or when refresh is set (an unknown key id), at most every ten seconds.
func (v *Verifier) keySet(ctx context.Context, refresh bool) (*KeySet, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	age := time.Since(v.fetchedAt)
	if v.keys != nil && age < time.Hour && (!refresh || age < 10*time.Second) {
		return v.keys, nil
	}
	req, err := http.NewRequestWithContext(ctx, "GET", v.arx+"/.well-known/jwks.json", nil)
	if err != nil {
		return nil, err
	}
	resp, err := v.client.Do(req)
	if err != nil {
		if v.keys != nil {
			return v.keys, nil
		}
		return nil, fmt.Errorf("credential: fetch jwks: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("credential: fetch jwks: HTTP %d", resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("credential: fetch jwks: %w", err)
	}
	ks, err := ParseKeySet(body, v.issuer)
	if err != nil {
		return nil, err
	}
	v.keys, v.fetchedAt = ks, time.Now()
	return ks, nil
}

// Verify checks token for connector and action (empty action: any) and
// returns its claims, or a *VerifyError.
func (v *Verifier) Verify(ctx context.Context, token, connector, action string) (*Claims, error) {
	ks, err := v.keySet(ctx, false)
	if err != nil {
		return nil, err
	}
	c, err := ks.Verify(token, time.Now())
	if errors.Is(err, ErrInvalid) && strings.Contains(err.Error(), "unknown key id") {
		if ks, err = v.keySet(ctx, true); err != nil {
			return nil, err
		}
		c, err = ks.Verify(token, time.Now())
	}
	switch {
	case errors.Is(err, ErrExpired):
		return nil, &VerifyError{Code: arxerr.CredentialExpired, Message: "the credential has expired"}
	case err != nil:
		return nil, &VerifyError{Code: arxerr.CredentialInvalid, Message: "the credential is not valid"}
	}
	if err := c.Require(connector, action); err != nil {
		return nil, &VerifyError{Code: arxerr.CredentialMismatch, Message: err.Error()}
	}
	if err := v.introspect(ctx, token, c); err != nil {
		return nil, err
	}
	return c, nil
}

func (v *Verifier) introspect(ctx context.Context, token string, c *Claims) error {
	body, _ := json.Marshal(map[string]string{"credential": token})
	req, err := http.NewRequestWithContext(ctx, "POST", v.arx+"/v1/credentials/introspect", bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := v.client.Do(req)
	if err != nil {
		return fmt.Errorf("credential: ask ARX whether the call is open: %w", err) // fail closed
	}
	defer resp.Body.Close()
	var out struct {
		Active    bool        `json:"active"`
		Code      arxerr.Code `json:"code"`
		Message   string      `json:"message"`
		CallID    string      `json:"call_id"`
		AgentID   string      `json:"agent_id"`
		Connector string      `json:"connector"`
		Action    string      `json:"action"`
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("credential: introspect: HTTP %d", resp.StatusCode)
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&out); err != nil {
		return fmt.Errorf("credential: introspect: %w", err)
	}
	if !out.Active {
		if out.Code == "" {
			out.Code = arxerr.CredentialInvalid
		}
		return &VerifyError{Code: out.Code, Message: out.Message}
	}
	if out.CallID != c.CallID || out.AgentID != c.AgentID || out.Connector != c.Connector || out.Action != c.Action {
		return fmt.Errorf("credential: introspect: ARX answered about another call") // fail closed
	}
	return nil
}

type claimsKey struct{}

// FromContext returns the claims Middleware verified for this request.
func FromContext(ctx context.Context) (*Claims, bool) {
	c, ok := ctx.Value(claimsKey{}).(*Claims)
	return c, ok
}

// Middleware lets a request through only with a live credential for
// connector and the action that action(r) names (action(r) == "" accepts
// any action of the connector: map every route to its action instead).
// Refusals answer in ARX's error format; failures to reach ARX answer 503
// (fail closed).
func (v *Verifier) Middleware(connector string, action func(*http.Request) string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := r.Header.Get("Authorization")
		if len(h) < 7 || !strings.EqualFold(h[:7], "bearer ") {
			writeErr(w, arxerr.New(arxerr.Unauthenticated, "missing call credential"))
			return
		}
		c, err := v.Verify(r.Context(), strings.TrimSpace(h[7:]), connector, action(r))
		var ve *VerifyError
		switch {
		case errors.As(err, &ve):
			e := arxerr.New(ve.Code, "%s", ve.Message)
			writeErr(w, e)
			return
		case err != nil:
			e := arxerr.New(arxerr.Internal, "cannot verify the credential now")
			e.Status = http.StatusServiceUnavailable
			writeErr(w, e)
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), claimsKey{}, c)))
	})
}

func writeErr(w http.ResponseWriter, e *arxerr.Error) {
	w.Header().Set("Content-Type", "application/json")
	if e.Status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="arx-credential"`)
	}
	w.WriteHeader(e.Status)
	json.NewEncoder(w).Encode(arxerr.Body{Error: e})
}
