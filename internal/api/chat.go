package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/arxsec/arx/arxerr"
	"github.com/arxsec/arx/internal/chat"
	"github.com/arxsec/arx/internal/inert"
	"github.com/arxsec/arx/internal/runtime"
)

// Decisions from chat tools: Slack's interactions (POST
// /v1/slack/interactions, signed by Slack) and a generic signed webhook
// (POST /v1/chat/interactions) for other chat tools. Neither carries a
// bearer token: the request's signature is its authentication, and the
// chat account it names decides only as the person who linked it
// (runtime.ChatDecide).

// SlackConfig is what the server needs to take Slack's interactions.
type SlackConfig struct {
	SigningSecret []byte
	Client        *chat.Client
}

// maxChatBody bounds an interaction's body.
const maxChatBody = 64 << 10

// chatAnswerTimeout bounds an answer posted back to Slack.
const chatAnswerTimeout = 10 * time.Second

// readSigned reads a body of at most maxChatBody bytes and checks its
// signature (version, the headers naming the timestamp and signature).
func readSigned(r *http.Request, version string, secret []byte, tsHeader, sigHeader string) ([]byte, error) {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxChatBody+1))
	if err != nil {
		return nil, arxerr.New(arxerr.BadRequest, "could not read the body")
	}
	if len(body) > maxChatBody {
		return nil, arxerr.New(arxerr.BodyTooLarge, "body exceeds %d bytes", maxChatBody)
	}
	if err := chat.Verify(version, secret, r.Header.Get(tsHeader), r.Header.Get(sigHeader), body, time.Now()); err != nil {
		return nil, arxerr.New(arxerr.ChatSignature, "%s", strings.TrimPrefix(err.Error(), chat.ErrSignature.Error()+"\n"))
	}
	return body, nil
}

func (s *server) slackInteractions(w http.ResponseWriter, r *http.Request) error {
	if s.slack == nil {
		return arxerr.New(arxerr.ChatNotConfigured, "this server takes no Slack interactions")
	}
	body, err := readSigned(r, chat.SlackVersion, s.slack.SigningSecret, "X-Slack-Request-Timestamp", "X-Slack-Signature")
	if err != nil {
		return err
	}
	in, err := chat.ParseInteraction(body)
	if err != nil {
		return arxerr.New(arxerr.BadRequest, "%v", err)
	}
	acct := runtime.ChatAccount{Provider: "slack", Subject: in.Subject(), Name: in.User.Username}
	if team, _, _ := strings.Cut(acct.Subject, "/"); !s.slack.Client.TeamAllowed(team) {
		s.log.Warn("slack: an interaction from a workspace not allowed", "team", team)
		if in.Type == "block_actions" {
			s.slackAnswer(r.Context(), in.ResponseURL, chat.Message{ResponseType: "ephemeral", Text: "This Slack workspace may not decide ARX requests."})
		}
		w.WriteHeader(http.StatusOK)
		return nil
	}
	switch {
	case in.Type == "block_actions" && len(in.Actions) > 0 && in.Actions[0].ActionID == chat.ActionApprove:
		s.slackDecide(r.Context(), acct, in.ResponseURL, in.Actions[0].Value, true, "")
	case in.Type == "block_actions" && len(in.Actions) > 0 && in.Actions[0].ActionID == chat.ActionDeny:
		s.slackDeny(r.Context(), acct, in)
	case in.Type == "view_submission" && in.View != nil && in.View.CallbackID == chat.CallbackDeny:
		var md chat.DenyMetadata
		reason := strings.TrimSpace(in.Reason())
		if json.Unmarshal([]byte(in.View.PrivateMetadata), &md) != nil || md.Call == "" {
			return arxerr.New(arxerr.BadRequest, "the modal names no call")
		}
		if reason == "" {
			writeJSON(w, http.StatusOK, map[string]any{"response_action": "errors", "errors": map[string]string{"reason": "Say why: it goes into the agent's record."}})
			return nil
		}
		s.slackDecide(r.Context(), acct, md.ResponseURL, md.Call, false, reason)
	}
	w.WriteHeader(http.StatusOK) // Slack wants an answer within 3 s; the message is updated through response_url
	return nil
}

// slackDecide decides, then tells the clicker (and the channel) through
// the interaction's response_url, in the background.
func (s *server) slackDecide(ctx context.Context, acct runtime.ChatAccount, responseURL, callID string, grant bool, reason string) {
	v, p, err := s.rt.ChatDecide(ctx, acct, callID, grant, reason)
	var m chat.Message
	switch {
	case err == nil:
		m = chat.Message{ReplaceOriginal: true, ResponseType: "in_channel", Text: decidedText(v, p, grant, reason)}
	default:
		m = chat.Message{ResponseType: "ephemeral", Text: s.chatRefusal(ctx, acct, callID, err)}
	}
	s.slackAnswer(ctx, responseURL, m)
}

// slackDeny asks for the reason (a modal), when the clicker is linked.
func (s *server) slackDeny(ctx context.Context, acct runtime.ChatAccount, in *chat.Interaction) {
	callID := in.Actions[0].Value
	p, err := s.rt.ChatPerson(ctx, acct)
	if err != nil {
		s.slackAnswer(ctx, in.ResponseURL, chat.Message{ResponseType: "ephemeral", Text: s.chatRefusal(ctx, acct, callID, err)})
		return
	}
	shown := "Deny the request " + callID + "?"
	if v, err := s.rt.Approval(ctx, p, callID); err == nil {
		shown = fmt.Sprintf("Deny %s's request to run %s %s? %s", v.Agent.Name, v.Call.Connector, v.Call.Action, v.Call.Summary)
	}
	err = s.slack.Client.OpenDenyModal(ctx, in.TriggerID, chat.DenyMetadata{Call: callID, ResponseURL: in.ResponseURL}, inert.Text(shown))
	if err != nil {
		s.log.Warn("slack: the reason modal did not open", "err", err.Error())
		link := s.publicURL + "/console/approvals/" + url.PathEscape(callID)
		s.slackAnswer(ctx, in.ResponseURL, chat.Message{ResponseType: "ephemeral",
			Text: "A denial needs a reason: deny it in the console, <" + chat.Escape(link) + "|here>."})
	}
}

func (s *server) slackAnswer(ctx context.Context, responseURL string, m chat.Message) {
	if responseURL == "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), chatAnswerTimeout)
	go func() {
		defer cancel()
		if err := s.slack.Client.Respond(ctx, responseURL, m); err != nil {
			s.log.Warn("slack: answering the interaction failed", "err", err.Error())
		}
	}()
}

// chatRefusal says, for the chat tool, why nothing was decided: for an
// account linked to nobody, with the link that links it.
func (s *server) chatRefusal(ctx context.Context, acct runtime.ChatAccount, callID string, err error) string {
	var ae *arxerr.Error
	if !errors.As(err, &ae) {
		s.log.Error("chat decision failed", "call", callID, "err", err.Error())
		return "ARX could not record the decision; nothing was decided. Try again, or decide in the console."
	}
	if ae.Code == arxerr.ChatNotLinked {
		code, cerr := s.rt.ChatLinkCode(ctx, acct)
		if cerr != nil {
			return "Your " + acct.Provider + " account is not linked to a person in ARX, and no link could be made now. Try again."
		}
		link := s.publicURL + "/console/link?code=" + url.QueryEscape(code)
		return "Your " + acct.Provider + " account is not linked to a person in ARX. Open <" + chat.Escape(link) +
			"|this link> signed in to the ARX console as yourself to link it, then decide again. The link lasts 10 minutes; do not pass it on."
	}
	msg := ae.Message
	if ae.Hint != "" {
		msg += " (" + ae.Hint + ")"
	}
	return "Not decided: " + chat.Escape(msg) + " [" + string(ae.Code) + "]"
}

func decidedText(v *runtime.ApprovalView, p *runtime.Principal, grant bool, reason string) string {
	what := ""
	if v != nil && v.Call != nil && v.Agent != nil {
		what = " the request of *" + chat.Escape(v.Agent.Name) + "* to run *" + chat.Escape(v.Call.Connector+" "+v.Call.Action) + "*"
	}
	if grant {
		s := ":white_check_mark: " + chat.Escape(p.User.Email) + " approved" + what + " in Slack."
		if v != nil && v.Status == "pending" {
			s += fmt.Sprintf(" %d of %d approvals so far.", len(v.Grants), v.Quorum)
		}
		return s
	}
	return ":no_entry: " + chat.Escape(p.User.Email) + " denied" + what + " in Slack: " + chat.Escape(reason)
}

// chatInteractions is the generic signed webhook: a chat tool's
// integration sends the account and the decision as JSON, signed
// "v1=" + hex HMAC-SHA256(secret, "v1:" + timestamp + ":" + body), the
// timestamp in X-ARX-Request-Timestamp and the signature in
// X-ARX-Signature.
func (s *server) chatInteractions(w http.ResponseWriter, r *http.Request) error {
	if len(s.chatSecret) == 0 {
		return arxerr.New(arxerr.ChatNotConfigured, "this server takes no chat interactions")
	}
	body, err := readSigned(r, chat.GenericVersion, s.chatSecret, "X-ARX-Request-Timestamp", "X-ARX-Signature")
	if err != nil {
		return err
	}
	var req struct {
		Provider string `json:"provider"`
		Subject  string `json:"subject"`
		Name     string `json:"name"`
		Call     string `json:"call"`
		Decision string `json:"decision"`
		Reason   string `json:"reason"`
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return arxerr.New(arxerr.BadRequest, "the body is not a chat decision: %s", truncate(err.Error(), 120))
	}
	if req.Provider == "slack" {
		// Slack's accounts are Slack's to name, under Slack's signature.
		return arxerr.New(arxerr.BadRequest, "provider slack is taken by Slack's own interactions")
	}
	if req.Decision != "approve" && req.Decision != "deny" {
		return arxerr.New(arxerr.BadRequest, "decision %q is not approve or deny", truncate(req.Decision, 16))
	}
	if req.Decision == "deny" && strings.TrimSpace(req.Reason) == "" {
		e := arxerr.New(arxerr.BadRequest, "a denial needs a reason")
		e.Hint = "ask the person why, and send it as reason"
		return e
	}
	acct := runtime.ChatAccount{Provider: req.Provider, Subject: req.Subject, Name: req.Name}
	v, p, err := s.rt.ChatDecide(r.Context(), acct, req.Call, req.Decision == "approve", req.Reason)
	var ae *arxerr.Error
	if errors.As(err, &ae) && ae.Code == arxerr.ChatNotLinked {
		code, cerr := s.rt.ChatLinkCode(r.Context(), acct)
		if cerr != nil {
			return cerr
		}
		writeJSON(w, http.StatusForbidden, map[string]any{"error": map[string]any{"code": ae.Code, "message": ae.Message, "hint": ae.Hint},
			"link_url": s.publicURL + "/console/link?code=" + url.QueryEscape(code)})
		return nil
	}
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"decided_by": p.User.Email, "approval": viewApproval(v, time.Now())})
	return nil
}
