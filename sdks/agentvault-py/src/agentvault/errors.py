"""The errors the SDK raises.

Branch on :attr:`ArxError.code`, never on the message. The codes are the
server's (``arxerr/codes.go`` and docs/api.md in the ARX repository), such
as ``manifest.connector_not_declared``, ``call.denied`` or
``record.unavailable``; the SDK adds a few of its own, all starting with
``client.``.
"""

from __future__ import annotations

from typing import Any, Optional

__all__ = [
    "ArxError",
    "ArxUnreachableError",
    "CompletionError",
    "NotInGovernedCall",
    "CODE_UNREACHABLE",
    "CODE_COMPLETION_FAILED",
    "CODE_NO_CLIENT",
    "CODE_LOCAL_MODE",
]

#: The server could not be reached; the call was not made (fail closed).
CODE_UNREACHABLE = "client.unreachable"
#: The work ran, but its completion could not be sent to ARX.
CODE_COMPLETION_FAILED = "client.completion_failed"
#: A governed function ran with no client configured.
CODE_NO_CLIENT = "client.no_client"
#: The operation needs an ARX server, and the client is in local-only mode.
CODE_LOCAL_MODE = "client.local_mode"

# Default hints of the server's codes, for errors the SDK makes itself.
_HINTS = {
    "manifest.connector_not_declared": "declare the connector under scope.connectors in manifests/job_description.yaml and rehire the agent",
    "manifest.action_not_declared": "declare the action under its connector in manifests/job_description.yaml",
    "manifest.invalid_risk": "risk is one of low, medium, high",
    "manifest.invalid": "run `arx manifest lint FILE`",
    "call.expired": "start a new call",
    "call.closed": "start a new call",
    "request.invalid": "check the request body against the API reference (docs/api.md)",
    "request.conflict": "use a new idempotency_key for a different call",
}


class ArxError(Exception):
    """A refusal or failure reported by ARX (or, for ``client.*`` codes, by the SDK).

    Attributes:
        code: the stable error code, such as ``manifest.connector_not_declared``.
        message: what happened, for people.
        hint: what to do about it, or ``""``.
        call_id: the call the refusal was recorded under, when there is one.
        status: the HTTP status of the server's answer; 0 when the SDK made the error.
    """

    def __init__(self, code: str, message: str, hint: Optional[str] = None, call_id: Optional[str] = None, status: int = 0) -> None:
        self.code = code
        self.message = message
        self.hint = _HINTS.get(code, "") if hint is None else hint
        self.call_id = call_id or None
        self.status = status
        super().__init__(str(self))

    def __str__(self) -> str:
        s = f"arx: {self.code}: {self.message}"
        if self.hint:
            s += f" (hint: {self.hint})"
        return s

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, message={self.message!r}, call_id={self.call_id!r}, status={self.status})"

    def __reduce__(self) -> Any:
        return (type(self), (self.code, self.message, self.hint, self.call_id, self.status))


class ArxUnreachableError(ArxError):
    """The ARX server could not be reached, so the call was not made (fail closed).

    The attempt is recorded in :attr:`record_file` (under the client's local
    record directory) unless recording failed too; ``arx record import``
    attaches the file to the agent's record once ARX is back.
    """

    def __init__(self, message: str, hint: str = "", record_file: Optional[str] = None) -> None:
        self.record_file = record_file
        super().__init__(CODE_UNREACHABLE, message, hint)

    def __reduce__(self) -> Any:
        return (type(self), (self.message, self.hint, self.record_file))


class CompletionError(ArxError):
    """The governed function returned, but ARX could not be told.

    The function's return value is in :attr:`result`; the record may lack
    the call's completion, and the credential lives until it expires.
    """

    def __init__(self, message: str, call_id: Optional[str], result: Any = None, cause: Optional[BaseException] = None) -> None:
        self.result = result
        self.cause = cause
        super().__init__(CODE_COMPLETION_FAILED, message, "check that ARX is reachable; the call will expire on its own", call_id)

    def __reduce__(self) -> Any:
        return (type(self), (self.message, self.call_id, self.result, None))


class NotInGovernedCall(RuntimeError):
    """``arx.credential`` (or the gateway helper) was used outside a governed call."""
