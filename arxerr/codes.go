// Package arxerr lists every error code the ARX API returns, in one place.
//
// The codes are part of the API: clients (the SDKs, scripts, systems of
// record) branch on them, so a code, once published, keeps its meaning.
// Each code maps to one HTTP status. The JSON body of every error is
//
//	{"error": {"code": "manifest.connector_not_declared", "message": "...", "hint": "..."}}
package arxerr

import (
	"fmt"
	"net/http"
	"sort"
)

// Code is a stable, dotted error code.
type Code string

// The codes. Group by the first segment; keep the list sorted within a group.
const (
	// Request shape.
	BadRequest       Code = "request.invalid"   // malformed JSON, wrong types, unknown fields
	BodyTooLarge     Code = "request.too_large" // body over the size limit
	UnsupportedMedia Code = "request.unsupported_media_type"
	NotFound         Code = "request.not_found" // no such route or object
	MethodNotAllowed Code = "request.method_not_allowed"
	Conflict         Code = "request.conflict" // idempotency key reused with different parameters
	RateLimited      Code = "request.rate_limited"

	// Authentication and authorization of the caller.
	Unauthenticated Code = "auth.unauthenticated" // no or malformed bearer token
	InvalidToken    Code = "auth.invalid_token"   // unknown or revoked token
	Forbidden       Code = "auth.forbidden"       // token valid but not allowed to do this

	// Agents.
	AgentNotFound   Code = "agent.not_found"
	AgentTerminated Code = "agent.terminated"
	AgentSuspended  Code = "agent.suspended"
	AgentNameTaken  Code = "agent.name_taken" // an active agent already has the name
	ShadowNotFound  Code = "agent.no_shadow"  // the agent has no shadow job description to promote or discard

	// Decisions from chat tools (Slack, signed webhooks).
	ChatNotLinked     Code = "chat.not_linked"        // the chat account is linked to no person
	ChatLinkInvalid   Code = "chat.link_invalid"      // a link code is malformed, forged or expired
	ChatSignature     Code = "chat.signature_invalid" // the request's signature or timestamp does not verify
	ChatNotConfigured Code = "chat.not_configured"    // the server has no signing secret for this chat tool

	// Manifest checks on a call.
	ManifestInvalid      Code = "manifest.invalid"
	ConnectorNotDeclared Code = "manifest.connector_not_declared"
	ActionNotDeclared    Code = "manifest.action_not_declared"
	ConditionNotMet      Code = "manifest.condition_not_met" // the call's arguments break its action's when: condition
	InvalidRisk          Code = "manifest.invalid_risk"
	DriftRefused         Code = "drift.refused"   // outside the declared role, and on_drift is refuse
	BudgetExceeded       Code = "budget.exceeded" // the day's spend or tokens are at the cap, and on_budget is refuse
	UsageInvalid         Code = "usage.invalid"   // a reported usage that cannot be counted (recorded as usage_refused, not answered)

	// Calls.
	CallNotFound Code = "call.not_found"
	CallClosed   Code = "call.closed" // completed, failed, expired, refused, denied or revoked
	CallPending  Code = "call.pending_approval"
	CallDenied   Code = "call.denied"
	CallExpired  Code = "call.expired"

	// Approvals.
	ApprovalNotFound Code = "approval.not_found"
	ApprovalDecided  Code = "approval.already_decided"
	ApprovalExpired  Code = "approval.expired"
	NotApprover      Code = "approval.not_approver"     // the person is not named by the manifest
	SelfApproval     Code = "approval.self_approval"    // the person raised the request
	PasskeyRequired  Code = "approval.passkey_required" // the manifest counts only passkey-signed decisions
	PasskeyInvalid   Code = "approval.passkey_invalid"  // a passkey ceremony's answer was not accepted

	// Passkeys.
	PasskeyUnavailable Code = "passkey.unavailable" // the server's public URL cannot be a WebAuthn relying party
	PasskeyNotFound    Code = "passkey.not_found"

	// People and sessions.
	LoginFailed  Code = "auth.login_failed"
	CSRFFailed   Code = "auth.csrf"
	SetupInvalid Code = "auth.setup_token_invalid"
	SSOFailed    Code = "auth.sso_failed"         // the identity provider's answer could not be used
	SSONoRole    Code = "auth.sso_no_role"        // the identity provider puts the person in no ARX group
	SSORequired  Code = "auth.sso_required"       // local passwords are off: people sign in through the identity provider
	SSOUnknown   Code = "auth.sso_unknown_person" // no such person in ARX, and no groups claim to add them
	SSONotOn     Code = "auth.sso_not_configured"
	UserExists   Code = "user.exists"
	UserNotFound Code = "user.not_found"
	WeakPassword Code = "user.weak_password"

	// Credentials.
	CredentialInvalid  Code = "credential.invalid"        // malformed, bad signature, wrong algorithm
	CredentialExpired  Code = "credential.expired"        // TTL passed
	CredentialClosed   Code = "credential.call_closed"    // its call is no longer open
	CredentialMismatch Code = "credential.scope_mismatch" // used for another agent, connector or action

	// Connectors and the gateway.
	ConnectorNotFound    Code = "connector.not_found"          // no such connector configured on the server (or not of the kind asked)
	ConnectorUnavailable Code = "connector.unavailable"        // the system of record could not make the call's credential (postgres role)
	GatewayMethod        Code = "gateway.method_not_allowed"   // the call's action does not allow this HTTP method
	GatewayPath          Code = "gateway.path_not_allowed"     // the call's action does not allow this path
	GatewayPathInvalid   Code = "gateway.path_invalid"         // dot segments, encoded slashes, empty segments
	GatewayAmbiguous     Code = "gateway.request_ambiguous"    // a method override or URL rewrite, in a header or a parameter
	GatewayNotApproved   Code = "gateway.not_approved"         // not the request the call's arguments declared (and an approver approved)
	GatewayCut           Code = "gateway.cut"                  // the call ended (completed, expired, revoked, agent terminated) while its request was in flight
	UpstreamUnreachable  Code = "gateway.upstream_unreachable" // the upstream did not answer (recorded)
	UpstreamTimeout      Code = "gateway.upstream_timeout"     // the upstream did not answer in time (recorded)
	UpstreamTooLarge     Code = "gateway.upstream_too_large"   // the upstream's answer is over the connector's limit

	// The record (fail closed).
	RecordUnavailable Code = "record.unavailable" // the entry could not be committed: nothing was issued

	// Anything else. The message never carries the cause.
	Internal Code = "internal"
)

// Info describes a code: its HTTP status and a default hint.
type Info struct {
	Code   Code   `json:"code"`
	Status int    `json:"status"`
	Hint   string `json:"hint,omitempty"`
}

var infos = map[Code]Info{
	BadRequest:       {Status: http.StatusBadRequest, Hint: "check the request body against the API reference (docs/api.md)"},
	BodyTooLarge:     {Status: http.StatusRequestEntityTooLarge, Hint: "send a smaller body"},
	UnsupportedMedia: {Status: http.StatusUnsupportedMediaType, Hint: "send Content-Type: application/json"},
	NotFound:         {Status: http.StatusNotFound},
	MethodNotAllowed: {Status: http.StatusMethodNotAllowed},
	Conflict:         {Status: http.StatusConflict, Hint: "use a new idempotency_key for a different call"},
	RateLimited:      {Status: http.StatusTooManyRequests, Hint: "retry later"},

	Unauthenticated: {Status: http.StatusUnauthorized, Hint: "send Authorization: Bearer $ARX_TOKEN"},
	InvalidToken:    {Status: http.StatusUnauthorized, Hint: "the token is unknown or revoked: hire the agent again or ask the operator for a new token"},
	Forbidden:       {Status: http.StatusForbidden},

	AgentNotFound:  {Status: http.StatusNotFound, Hint: "list agents with `arx agents`"},
	ShadowNotFound: {Status: http.StatusConflict, Hint: "apply a job description in shadow first: arx manifest apply --shadow FILE --agent NAME"},

	ChatNotLinked:     {Status: http.StatusForbidden, Hint: "link the chat account to a person once: open the link ARX sent to the account, signed in to the console as that person"},
	ChatLinkInvalid:   {Status: http.StatusBadRequest, Hint: "ask for a new link from the chat tool (click Approve or Deny again); a link lasts 10 minutes"},
	ChatSignature:     {Status: http.StatusUnauthorized, Hint: "sign the request with the configured signing secret; its timestamp must be within five minutes of the server's clock"},
	ChatNotConfigured: {Status: http.StatusNotFound, Hint: "start arx serve with --slack-signing-secret-file (Slack) or --chat-signing-secret-file (other chat tools)"},
	AgentTerminated:   {Status: http.StatusForbidden, Hint: "a terminated agent can only be rehired as a new agent"},
	AgentSuspended:    {Status: http.StatusForbidden},
	AgentNameTaken:    {Status: http.StatusConflict, Hint: "terminate the agent on staff first (arx terminate NAME --reason ...), or hire with --replace to terminate it and hire the new one in one step"},

	ManifestInvalid:      {Status: http.StatusUnprocessableEntity, Hint: "run `arx manifest lint FILE`"},
	ConnectorNotDeclared: {Status: http.StatusForbidden, Hint: "declare the connector under scope.connectors in manifests/job_description.yaml and rehire the agent"},
	ActionNotDeclared:    {Status: http.StatusForbidden, Hint: "declare the action under its connector in manifests/job_description.yaml"},
	ConditionNotMet:      {Status: http.StatusForbidden, Hint: "the job description allows this action only with arguments that meet its condition (when:)"},
	InvalidRisk:          {Status: http.StatusBadRequest, Hint: "risk is one of low, medium, high"},
	DriftRefused:         {Status: http.StatusForbidden, Hint: "the manifest's on_drift is refuse: stay within the budget and active hours, or change the job description"},
	BudgetExceeded:       {Status: http.StatusForbidden, Hint: "the day's spend or token cap (budget.spend, budget.tokens) is reached: wait for the next budget day, or raise the cap in the job description"},
	UsageInvalid:         {Status: http.StatusBadRequest, Hint: "report usage as {\"tokens\": 1200, \"amount\": \"0.013 USD\"}: whole tokens, an amount with at most six decimals in the spend cap's currency"},

	CallNotFound: {Status: http.StatusNotFound},
	CallClosed:   {Status: http.StatusConflict, Hint: "start a new call"},
	CallPending:  {Status: http.StatusAccepted, Hint: "wait for a named approver to decide"},
	CallDenied:   {Status: http.StatusForbidden},
	CallExpired:  {Status: http.StatusGone, Hint: "start a new call"},

	ApprovalNotFound: {Status: http.StatusNotFound, Hint: "list pending approvals with `arx approvals list`"},
	ApprovalDecided:  {Status: http.StatusConflict},
	ApprovalExpired:  {Status: http.StatusGone, Hint: "the agent has to ask again"},
	NotApprover:      {Status: http.StatusForbidden, Hint: "only the approvers and delegates named in the agent's manifest can decide"},
	SelfApproval:     {Status: http.StatusForbidden, Hint: "ask another approver named in the manifest"},
	PasskeyRequired: {Status: http.StatusForbidden,
		Hint: "this agent's manifest requires decisions signed with the approver's passkey: decide in the console, which asks for it"},
	PasskeyInvalid: {Status: http.StatusBadRequest, Hint: "decide again; if it keeps failing, register the passkey again in the console"},
	PasskeyUnavailable: {Status: http.StatusConflict,
		Hint: "serve the console at a host name over https (arx serve --public-url https://arx.example.com), or at http://localhost:PORT on one machine"},
	PasskeyNotFound: {Status: http.StatusNotFound, Hint: "list your passkeys on the Passkeys page of the console"},

	LoginFailed:  {Status: http.StatusUnauthorized, Hint: "check the email and password, or ask an admin for a reset link (`arx users reset EMAIL`)"},
	CSRFFailed:   {Status: http.StatusForbidden, Hint: "reload the page and submit the form again"},
	SetupInvalid: {Status: http.StatusBadRequest, Hint: "ask an admin for a new link (`arx users reset EMAIL`)"},
	SSOFailed:    {Status: http.StatusUnauthorized, Hint: "sign in again; if it keeps failing, the server's log names what the identity provider answered"},
	SSONoRole:    {Status: http.StatusForbidden, Hint: "ask your identity provider's admin to add you to one of the groups ARX maps to a role"},
	SSORequired: {Status: http.StatusForbidden,
		Hint: "this server takes no local passwords: sign in with single sign-on (the console's button, or `arx login --sso`)"},
	SSOUnknown:   {Status: http.StatusForbidden, Hint: "ask an ARX admin to add you (`arx users add EMAIL`), then sign in again"},
	SSONotOn:     {Status: http.StatusNotFound, Hint: "start arx serve with --oidc-issuer, --oidc-client-id and --oidc-client-secret-file"},
	UserExists:   {Status: http.StatusConflict},
	UserNotFound: {Status: http.StatusNotFound, Hint: "list people with `arx users list`"},
	WeakPassword: {Status: http.StatusBadRequest, Hint: "use at least 12 characters"},

	CredentialInvalid:  {Status: http.StatusUnauthorized},
	CredentialExpired:  {Status: http.StatusUnauthorized, Hint: "start a new call"},
	CredentialClosed:   {Status: http.StatusUnauthorized, Hint: "a credential lives only as long as its call"},
	CredentialMismatch: {Status: http.StatusForbidden},

	ConnectorNotFound:    {Status: http.StatusNotFound, Hint: "list the connectors of this server with `arx connectors list`"},
	ConnectorUnavailable: {Status: http.StatusServiceUnavailable, Hint: "the system of record is unreachable; retry: the call stays open until it expires"},
	GatewayMethod:        {Status: http.StatusForbidden, Hint: "the connector's configuration lists what each action may do (`arx connectors list`)"},
	GatewayPath:          {Status: http.StatusForbidden, Hint: "the connector's configuration lists what each action may do (`arx connectors list`)"},
	GatewayPathInvalid:   {Status: http.StatusBadRequest, Hint: "send a plain path: no . or .. segments, encoded slashes or empty segments"},
	GatewayCut:           {Status: http.StatusForbidden, Hint: "a call's requests end with the call: request a new call"},
	GatewayAmbiguous:     {Status: http.StatusBadRequest, Hint: "send the method and path you mean, without method-override or URL-rewrite headers or parameters"},
	GatewayNotApproved: {Status: http.StatusForbidden,
		Hint: "send exactly the request the call declared in args.request (agentvault.RequestArgs builds it); another request needs a call of its own"},
	UpstreamUnreachable: {Status: http.StatusBadGateway, Hint: "the system of record did not answer; the attempt is in the record"},
	UpstreamTimeout:     {Status: http.StatusGatewayTimeout, Hint: "the system of record did not answer in time; the attempt is in the record"},
	UpstreamTooLarge:    {Status: http.StatusBadGateway, Hint: "ask for less at a time"},

	RecordUnavailable: {Status: http.StatusServiceUnavailable, Hint: "the personnel record cannot be written; no credential was issued; retry later"},

	Internal: {Status: http.StatusInternalServerError},
}

func init() {
	for c, i := range infos {
		i.Code = c
		infos[c] = i
	}
}

// Lookup returns the description of c. Unknown codes describe as Internal.
func Lookup(c Code) Info {
	if i, ok := infos[c]; ok {
		return i
	}
	return infos[Internal]
}

// All returns every code, sorted, for documentation and tests.
func All() []Info {
	out := make([]Info, 0, len(infos))
	for _, i := range infos {
		out = append(out, i)
	}
	sort.Slice(out, func(a, b int) bool { return out[a].Code < out[b].Code })
	return out
}

// Error is an API error as it travels on the wire.
type Error struct {
	Code    Code   `json:"code"`
	Message string `json:"message"`
	Hint    string `json:"hint,omitempty"`
	// CallID names the call a refusal was recorded under, when there is one.
	CallID string `json:"call_id,omitempty"`
	// Status is the HTTP status; not sent in the body.
	Status int `json:"-"`
}

func (e *Error) Error() string {
	if e.Hint != "" {
		return fmt.Sprintf("%s: %s (hint: %s)", e.Code, e.Message, e.Hint)
	}
	return fmt.Sprintf("%s: %s", e.Code, e.Message)
}

// New returns an error with code c, its status and default hint.
func New(c Code, format string, args ...any) *Error {
	i := Lookup(c)
	return &Error{Code: c, Message: fmt.Sprintf(format, args...), Hint: i.Hint, Status: i.Status}
}

// Body is the JSON envelope of an error response.
type Body struct {
	Error *Error `json:"error"`
}
