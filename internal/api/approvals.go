package api

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	nurl "net/url"
	"strconv"
	"time"

	"github.com/arxsec/arx/arxerr"
	"github.com/arxsec/arx/internal/runtime"
	"github.com/arxsec/arx/internal/store"
	"github.com/arxsec/arx/record"
)

type approvalView struct {
	CallID      string     `json:"call_id"`
	Status      string     `json:"status"`
	Agent       agentView  `json:"agent"`
	Call        callView   `json:"call"`
	Approvers   []string   `json:"approvers"`
	RequestedAt time.Time  `json:"requested_at"`
	ExpiresAt   time.Time  `json:"expires_at"`
	DecidedBy   string     `json:"decided_by,omitempty"`
	DecidedAt   *time.Time `json:"decided_at"`
	Reason      string     `json:"reason,omitempty"`
	Passkey     string     `json:"passkey,omitempty"` // the credential id of the passkey that signed the decision
	Quorum      int        `json:"quorum,omitempty"`  // approvers who must grant, when more than one
	Grants      []string   `json:"grants,omitempty"`  // those who granted so far
}

func viewApproval(a *runtime.ApprovalView, now time.Time) approvalView {
	return approvalView{CallID: a.CallID, Status: a.Status, Agent: viewAgent(a.Agent, false), Call: viewCall(a.Call, "", now),
		Approvers: a.Approvers, RequestedAt: a.RequestedAt, ExpiresAt: a.ExpiresAt, DecidedBy: a.DecidedBy,
		DecidedAt: a.DecidedAt, Reason: a.Reason, Passkey: a.Passkey, Quorum: a.Quorum, Grants: a.Grants}
}

func (s *server) listApprovals(w http.ResponseWriter, r *http.Request) error {
	limit, err := intParam(r, "limit", 100, 1, 1000)
	if err != nil {
		return err
	}
	list, err := s.rt.Approvals(r.Context(), principal(r), r.URL.Query().Get("status"), int(limit))
	if err != nil {
		return err
	}
	now := time.Now()
	out := make([]approvalView, 0, len(list))
	for i := range list {
		out = append(out, viewApproval(&list[i], now))
	}
	writeJSON(w, http.StatusOK, map[string]any{"approvals": out})
	return nil
}

func (s *server) getApproval(w http.ResponseWriter, r *http.Request) error {
	a, err := s.rt.Approval(r.Context(), principal(r), r.PathValue("id"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, viewApproval(a, time.Now()))
	return nil
}

func (s *server) decide(grant bool) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		var req struct {
			Reason string `json:"reason"`
			// Passkey, when set, is the decision signed with the person's
			// passkey: the time /challenge fixed, and the
			// PublicKeyCredential navigator.credentials.get returned.
			Passkey *struct {
				DecidedAt  string          `json:"decided_at"`
				Credential json.RawMessage `json:"credential"`
			} `json:"passkey"`
		}
		if err := decode(r, MaxBodyBytes, &req); err != nil {
			return err
		}
		var a *runtime.ApprovalView
		var err error
		if pk := req.Passkey; pk != nil {
			at, perr := time.Parse(record.TimeFormat, pk.DecidedAt)
			if perr != nil {
				return arxerr.New(arxerr.PasskeyInvalid, "passkey.decided_at is not the time /challenge answered")
			}
			a, err = s.rt.DecideSigned(r.Context(), principal(r), r.PathValue("id"), grant, req.Reason,
				&runtime.SignedDecision{At: at, Assertion: pk.Credential})
		} else {
			a, err = s.rt.Decide(r.Context(), principal(r), r.PathValue("id"), grant, req.Reason)
		}
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, viewApproval(a, time.Now()))
		return nil
	}
}

// decisionChallenge answers what a person's passkey signs to decide a
// request: WebAuthn request options whose challenge is the decision's
// digest, and the decision's time, to send back with the signature.
func (s *server) decisionChallenge(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		Decision string `json:"decision"`
		Reason   string `json:"reason"`
	}
	if err := decode(r, MaxBodyBytes, &req); err != nil {
		return err
	}
	if req.Decision != record.DecisionApprove && req.Decision != record.DecisionDeny {
		return arxerr.New(arxerr.BadRequest, "decision must be approve or deny")
	}
	ch, err := s.rt.BeginDecision(r.Context(), principal(r), r.PathValue("id"), req.Decision == record.DecisionApprove, req.Reason)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, ch)
	return nil
}

// eventStream serves server-sent events: approvals requested and decided,
// as they commit. A comment line every 15 seconds keeps proxies from
// closing the stream.
func (s *server) eventStream(w http.ResponseWriter, r *http.Request) error {
	p := principal(r)
	if !p.IsAdmin() && !p.IsPerson() {
		return arxerr.New(arxerr.Forbidden, "events are for people and operators")
	}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	go func() {
		select {
		case <-s.rt.Stopping():
			cancel()
		case <-ctx.Done():
		}
	}()
	ServeEvents(w, r.WithContext(ctx), s.rt.Events())
	return nil
}

// ServeEvents streams a hub's events as text/event-stream until the client
// goes away. The console uses it too.
func ServeEvents(w http.ResponseWriter, r *http.Request, hub *runtime.Hub) {
	rc := http.NewResponseController(w)
	rc.SetWriteDeadline(time.Time{}) // a stream outlives the server's write timeout
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	events, stop := hub.Subscribe()
	defer stop()
	fmt.Fprintf(w, "retry: 2000\n: connected\n\n")
	rc.Flush()
	keep := time.NewTicker(15 * time.Second)
	defer keep.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-keep.C:
			if _, err := fmt.Fprint(w, ": keep-alive\n\n"); err != nil {
				return
			}
		case e, ok := <-events:
			if !ok {
				return
			}
			b, _ := json.Marshal(e)
			if _, err := fmt.Fprintf(w, "event: %s\ndata: %s\n\n", e.Type, b); err != nil {
				return
			}
		}
		if rc.Flush() != nil {
			return
		}
	}
}

type userView struct {
	ID        string     `json:"id"`
	Email     string     `json:"email"`
	Role      string     `json:"role"`
	HasLogin  bool       `json:"password_set"`
	CreatedAt time.Time  `json:"created_at"`
	Disabled  *time.Time `json:"disabled_at"`
}

func viewUser(u *store.User) userView {
	return userView{ID: u.ID, Email: u.Email, Role: u.Role, HasLogin: u.PasswordHash != "", CreatedAt: u.CreatedAt, Disabled: u.DisabledAt}
}

// linkTo is where a setup link goes: the caller with show_link, else
// the person; the console's address is the public URL, or this request's.
func (s *server) linkTo(r *http.Request, show bool) runtime.LinkTo {
	base := s.publicURL
	if base == "" {
		scheme := "http"
		if r.TLS != nil {
			scheme = "https"
		}
		base = scheme + "://" + r.Host
	}
	return runtime.LinkTo{Show: show, Base: base}
}

// linkAnswer says where the link went, with the link when it is shown.
func linkAnswer(url string) map[string]any {
	out := map[string]any{"setup_expires_in": runtime.SetupLifetime.String()}
	if url != "" {
		out["setup_url"], out["link"] = url, "shown"
		if u, err := nurl.Parse(url); err == nil {
			out["setup_token"] = u.Query().Get("token")
		}
	} else {
		out["link"] = "sent to the person"
	}
	return out
}

func (s *server) addUser(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		Email    string `json:"email"`
		Role     string `json:"role"`
		ShowLink bool   `json:"show_link"`
	}
	if err := decode(r, MaxBodyBytes, &req); err != nil {
		return err
	}
	u, link, err := s.rt.AddUser(r.Context(), principal(r), req.Email, req.Role, s.linkTo(r, req.ShowLink))
	if err != nil {
		return err
	}
	out := linkAnswer(link)
	if !s.rt.LocalPasswords() {
		out = map[string]any{"link": "none"} // the person signs in through the identity provider
	}
	out["user"] = viewUser(u)
	writeJSON(w, http.StatusCreated, out)
	return nil
}

func (s *server) listUsers(w http.ResponseWriter, r *http.Request) error {
	users, err := s.rt.Store().Users(r.Context())
	if err != nil {
		return s.rt.ReadFailed("list users", err)
	}
	out := make([]userView, 0, len(users))
	for i := range users {
		out = append(out, viewUser(&users[i]))
	}
	writeJSON(w, http.StatusOK, map[string]any{"users": out})
	return nil
}

func (s *server) resetUser(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		ShowLink bool `json:"show_link"`
	}
	if r.ContentLength != 0 {
		if err := decode(r, MaxBodyBytes, &req); err != nil {
			return err
		}
	}
	link, err := s.rt.ResetUser(r.Context(), principal(r), r.PathValue("email"), s.linkTo(r, req.ShowLink))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, linkAnswer(link))
	return nil
}

func (s *server) disableUser(w http.ResponseWriter, r *http.Request) error {
	u, err := s.rt.DisableUser(r.Context(), principal(r), r.PathValue("email"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"user": viewUser(u)})
	return nil
}

func (s *server) enableUser(w http.ResponseWriter, r *http.Request) error {
	u, err := s.rt.EnableUser(r.Context(), principal(r), r.PathValue("email"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"user": viewUser(u)})
	return nil
}

func (s *server) setRole(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		Role string `json:"role"`
	}
	if err := decode(r, MaxBodyBytes, &req); err != nil {
		return err
	}
	u, err := s.rt.SetRole(r.Context(), principal(r), r.PathValue("email"), req.Role)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"user": viewUser(u)})
	return nil
}

type tokenView struct {
	ID        string     `json:"id"`
	Label     string     `json:"label"`
	CreatedAt time.Time  `json:"created_at"`
	ExpiresAt time.Time  `json:"expires_at"`
	RevokedAt *time.Time `json:"revoked_at"`
}

// ownTokens lists the caller's personal API tokens.
func (s *server) ownTokens(w http.ResponseWriter, r *http.Request) error {
	ts, err := s.rt.UserTokens(r.Context(), principal(r))
	if err != nil {
		return err
	}
	out := make([]tokenView, 0, len(ts))
	for i := range ts {
		t := &ts[i]
		out = append(out, tokenView{ID: t.ID, Label: t.Label, CreatedAt: t.CreatedAt, ExpiresAt: s.rt.TokenExpiry(t), RevokedAt: t.RevokedAt})
	}
	writeJSON(w, http.StatusOK, map[string]any{"tokens": out})
	return nil
}

func (s *server) revokeOwnToken(w http.ResponseWriter, r *http.Request) error {
	if err := s.rt.RevokeUserToken(r.Context(), principal(r), r.PathValue("id")); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "revoked"})
	return nil
}

func (s *server) setupPassword(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		Token    string `json:"token"`
		Password string `json:"password"`
	}
	if err := decode(r, MaxBodyBytes, &req); err != nil {
		return err
	}
	u, err := s.rt.SetPassword(r.Context(), req.Token, req.Password)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"user": viewUser(u)})
	return nil
}

// loginToken exchanges a person's email and password for an API token
// (arx login).
func (s *server) loginToken(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		Email    string `json:"email"`
		Password string `json:"password"`
		Label    string `json:"label"`
	}
	if err := decode(r, MaxBodyBytes, &req); err != nil {
		return err
	}
	u, err := s.rt.CheckLogin(r.Context(), req.Email, req.Password, ClientIP(r))
	if err != nil {
		return err
	}
	token, err := s.rt.IssueUserToken(r.Context(), u, req.Label)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, map[string]any{"token": token, "user": viewUser(u)})
	return nil
}

// ssoInfo says how people sign in: whether the server has an identity
// provider (and where a sign-in starts), and whether it takes passwords.
func (s *server) ssoInfo(w http.ResponseWriter, r *http.Request) error {
	out := map[string]any{"enabled": false, "local_passwords": s.rt.LocalPasswords()}
	if p := s.rt.SSO(); p != nil {
		out["enabled"], out["name"], out["issuer"], out["start"] = true, p.Name(), p.Issuer(), "/console/sso/start"
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// ssoToken redeems the code a single sign-on for `arx login --sso` sent to
// the CLI's loopback address, with the verifier of the challenge the CLI
// started it with, for a personal API token.
func (s *server) ssoToken(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		Code     string `json:"code"`
		Verifier string `json:"verifier"`
	}
	if err := decode(r, MaxBodyBytes, &req); err != nil {
		return err
	}
	token, u, err := s.rt.SSORedeem(r.Context(), req.Code, req.Verifier)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, map[string]any{"token": token, "user": viewUser(u)})
	return nil
}

// ClientIP is the peer address of a request (forwarded headers are not
// trusted: put a proxy that rewrites RemoteAddr in front if needed).
func ClientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

func (s *server) terminate(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		Reason string `json:"reason"`
	}
	if err := decode(r, MaxBodyBytes, &req); err != nil {
		return err
	}
	res, err := s.rt.Terminate(r.Context(), principal(r), r.PathValue("id"), req.Reason)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"agent": viewAgent(res.Agent, false), "revoked_tokens": res.RevokedTokens,
		"revoked_credentials": res.RevokedCredentials, "cancelled_approvals": res.CancelledApprovals, "notices": res.Notices,
		"receipt": res.Receipt})
	return nil
}

func (s *server) review(w http.ResponseWriter, r *http.Request) error {
	days, err := intParam(r, "days", 7, 1, runtime.MaxReviewDays)
	if err != nil {
		return err
	}
	rv, err := s.rt.Review(r.Context(), principal(r), r.PathValue("id"), int(days))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"agent": viewAgent(rv.Agent, false), "review": rv})
	return nil
}

func (s *server) ackDrift(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		Note string `json:"note"`
	}
	if err := decode(r, MaxBodyBytes, &req); err != nil {
		return err
	}
	index, err := strconv.ParseInt(r.PathValue("index"), 10, 64)
	if err != nil || index < 0 {
		return arxerr.New(arxerr.BadRequest, "index must be a record index")
	}
	if err := s.rt.AcknowledgeDrift(r.Context(), principal(r), r.PathValue("id"), index, req.Note); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "acknowledged"})
	return nil
}

// ackAllDrift acknowledges every unacknowledged drift event of the review
// window with one note.
func (s *server) ackAllDrift(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		Note string `json:"note"`
		Days int    `json:"days"`
	}
	if err := decode(r, MaxBodyBytes, &req); err != nil {
		return err
	}
	if req.Days == 0 {
		req.Days = 7
	}
	n, err := s.rt.AcknowledgeAllDrift(r.Context(), principal(r), r.PathValue("id"), req.Days, req.Note)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]int{"acknowledged": n})
	return nil
}
