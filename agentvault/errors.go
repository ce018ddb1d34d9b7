package agentvault

import (
	"errors"
	"fmt"

	"github.com/arxsec/arx/arxerr"
)

// Error is a refusal or failure reported by the ARX server, with the server's
// stable code (see arxerr). The SDK also uses it, with Status 0, for the few
// checks it makes before sending (an empty connector, an unknown risk), for
// calls that end without approval (call.denied, call.expired) and, with code
// arxerr.Internal, for answers that are not ARX JSON (a proxy's HTML 502).
//
// Branch on Code, never on Message:
//
//	if agentvault.IsCode(err, arxerr.ConnectorNotDeclared) { ... }
//	if errors.Is(err, &agentvault.Error{Code: arxerr.CallDenied}) { ... }
type Error struct {
	Code    arxerr.Code
	Message string
	Hint    string
	// CallID names the call the refusal was recorded under, when there is one.
	CallID string
	// Status is the HTTP status of the answer, or 0 when the SDK made the error.
	Status int
}

// Error returns "arx: <code>: <message>", followed by " (hint: ...)" when
// there is a hint.
func (e *Error) Error() string {
	if e.Hint != "" {
		return fmt.Sprintf("arx: %s: %s (hint: %s)", e.Code, e.Message, e.Hint)
	}
	return fmt.Sprintf("arx: %s: %s", e.Code, e.Message)
}

// Is reports whether target is an *Error with the same code, so that
// errors.Is(err, &Error{Code: c}) matches any error carrying code c.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t != nil && t.Code == e.Code
}

// IsCode reports whether err, or an error it wraps, is an *Error with code.
func IsCode(err error, code arxerr.Code) bool {
	e, ok := errors.AsType[*Error](err)
	return ok && e.Code == code
}

// ErrNotInCall is returned by helpers that need the credential of a governed
// call when they are used outside of one.
var ErrNotInCall = errors.New("agentvault: not inside a governed call (hint: use the credential passed to the function given to Do)")

// askError is manifest.CheckAsk's refusal as the SDK's *Error.
func askError(err error) error {
	if e, ok := errors.AsType[*arxerr.Error](err); ok {
		return &Error{Code: e.Code, Message: e.Message, Hint: e.Hint}
	}
	return err
}

// newError makes an *Error of the SDK's own (Status 0) with the default hint
// of code.
func newError(code arxerr.Code, callID, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...), Hint: arxerr.Lookup(code).Hint, CallID: callID}
}
