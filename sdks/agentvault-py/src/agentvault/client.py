"""The ARX client: calls, approvals, completions, and the current call's credential."""

from __future__ import annotations

import contextvars
import json
import logging
import os
import re
import threading
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple

from . import _http
from ._local import APPROVE_PROMPT, CREDENTIAL_PREFIX, LocalBackend, check_ask, record_unreachable
from .errors import (
    CODE_LOCAL_MODE,
    CODE_NO_CLIENT,
    ArxError,
    ArxUnreachableError,
    NotInGovernedCall,
)

__all__ = [
    "Client",
    "Call",
    "Credential",
    "GatewayResponse",
    "DEFAULT_BASE_URL",
    "DEFAULT_LOCAL_RECORD_DIR",
    "set_default_client",
    "default_client",
]

#: The agent API of the hosted ARX service (``ARX_BASE_URL`` overrides it).
DEFAULT_BASE_URL = "https://api.arxsec.io/v1"
#: Where local records go (``ARX_LOCAL_RECORD_DIR`` overrides it).
DEFAULT_LOCAL_RECORD_DIR = "arx-records"

REDACTED = "REDACTED"
_MAX_OUTCOME_ERROR = 1024

log = logging.getLogger("agentvault")


class _Secret:
    """Holds the agent token; prints as REDACTED however it is printed."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return REDACTED if self._value else "''"

    __str__ = __repr__


class Credential(str):
    """The credential of one governed call.

    It *is* the token string, so that ``f"Bearer {arx.credential}"``,
    ``"Bearer " + arx.credential`` and ``{"Authorization": ...}`` headers
    work as they would with a plain ``str``. So that it never lands in a log
    by accident, ``str()``, ``repr()`` and ``%``-formatting (which logging
    uses) show ``REDACTED``; use an f-string, :attr:`token` or
    :meth:`auth_header` where the secret is really needed.

    In local-only mode the token starts with ``local.`` and is not a JWT: no
    system of record accepts it.
    """

    call_id: str
    agent_id: str
    connector: str
    action: str
    risk: str
    expires_at: str

    def __new__(cls, token: str, *, call_id: str = "", agent_id: str = "", connector: str = "", action: str = "",
                risk: str = "", expires_at: str = "") -> "Credential":
        obj = super().__new__(cls, token)
        obj.call_id, obj.agent_id, obj.connector, obj.action = call_id, agent_id, connector, action
        obj.risk, obj.expires_at = risk, expires_at
        return obj

    @property
    def token(self) -> str:
        """The secret itself, as a plain ``str``."""
        return str.__str__(self)

    @property
    def is_local(self) -> bool:
        """True for local-only mode's stub credential."""
        return self.token.startswith(CREDENTIAL_PREFIX)

    def auth_header(self) -> Dict[str, str]:
        """``{"Authorization": "Bearer <token>"}``."""
        return {"Authorization": "Bearer " + self.token}

    def __str__(self) -> str:
        return f"Credential(call={self.call_id}, connector={self.connector}, action={self.action}, token={REDACTED})"

    __repr__ = __str__

    def __format__(self, spec: str) -> str:
        return format(self.token, spec)


@dataclass
class Call:
    """A governed call as ARX describes it (docs/api.md). Its repr never shows the credential."""

    id: str
    agent_id: str
    connector: str
    action: str
    declared_risk: str
    risk: str
    status: str
    idempotency_key: str
    summary: str = ""
    outcome: str = ""
    created_at: str = ""
    expires_at: str = ""
    credential: Optional[Credential] = field(default=None, repr=False)

    @classmethod
    def from_json(cls, doc: Dict[str, Any]) -> "Call":
        c = cls(id=doc["id"], agent_id=doc.get("agent_id", ""), connector=doc.get("connector", ""),
                action=doc.get("action", ""), declared_risk=doc.get("declared_risk", ""), risk=doc.get("risk", ""),
                status=doc["status"], idempotency_key=doc.get("idempotency_key", ""), summary=doc.get("summary", ""),
                outcome=doc.get("outcome", ""), created_at=doc.get("created_at", ""), expires_at=doc.get("expires_at", ""))
        cred = doc.get("credential")
        if isinstance(cred, dict) and cred.get("token"):
            c.credential = Credential(cred["token"], call_id=c.id, agent_id=c.agent_id, connector=c.connector,
                                      action=c.action, risk=c.risk, expires_at=cred.get("expires_at") or c.expires_at)
        return c


@dataclass
class GatewayResponse:
    """An answer from a system of record, through the ARX gateway."""

    status: int
    headers: Dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class _Scope:
    client: "Client"
    call: Call
    credential: Credential
    # What the call used, as report_usage adds it up.
    tokens: int = 0
    micros: int = 0
    currency: str = ""
    reported: bool = False

    def usage(self) -> Optional[Dict[str, Any]]:
        if not self.reported:
            return None
        u: Dict[str, Any] = {}
        if self.tokens:
            u["tokens"] = self.tokens
        if self.currency:
            u["amount"] = format_money(self.micros, self.currency)
        return u


_MONEY = re.compile(r"([0-9]+)(?:\.([0-9]{1,6}))? ([A-Z]{3})")
_MAX_MONEY = 1_000_000_000 * 1_000_000


def parse_money(s: str) -> Tuple[int, str]:
    """Read an amount such as ``"0.013 USD"``: (millionths of the unit, currency).

    At most six decimals and an ISO 4217 code, as ARX reads them."""
    m = _MONEY.fullmatch(s) if isinstance(s, str) else None
    if m is None:
        raise ValueError(f"{s!r} is not an amount with at most six decimals and a currency, such as \"12.50 USD\"")
    micros = int(m.group(1)) * 1_000_000 + int((m.group(2) or "").ljust(6, "0"))
    if micros > _MAX_MONEY:
        raise ValueError(f"{s!r} is more than {_MAX_MONEY // 1_000_000} {m.group(3)}")
    return micros, m.group(3)


def format_money(micros: int, currency: str) -> str:
    """The text form of an amount, as ARX writes it: two decimals at least, six at most."""
    frac = f"{micros % 1_000_000:06d}".rstrip("0").ljust(2, "0")
    return f"{micros // 1_000_000}.{frac} {currency}"


# The governed call running in this context: asyncio tasks and threads each
# have their own, so none sees another's credential.
_current: contextvars.ContextVar[Optional[_Scope]] = contextvars.ContextVar("agentvault_current_call", default=None)

_default: Optional["Client"] = None
_default_lock = threading.Lock()


def set_default_client(client: Optional["Client"]) -> None:
    """Make ``client`` the one ``@governed`` functions use when they name none."""
    global _default
    with _default_lock:
        _default = client


def default_client() -> "Client":
    """The client ``@governed`` uses by default: the last one made by ``Client.from_env()``."""
    with _default_lock:
        c = _default
    if c is None:
        raise ArxError(CODE_NO_CLIENT, "a governed function ran before any ARX client was configured",
                       "call `arx = Client.from_env()` at start-up, or pass client= to @governed")
    return c


def _truthy(name: str, value: str) -> bool:
    v = value.strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("", "0", "false", "no", "off"):
        return False
    raise ValueError(f"agentvault: {name}={value!r} is not a boolean (hint: set {name} to 1 or 0)")


class Client:
    """Talks to the ARX agent API, or, in local-only mode, to nobody.

    Make one per process, usually with :meth:`from_env`, and share it: it is
    safe to use from many threads and asyncio tasks at once.

    Args:
        token: the agent's bearer token, shown when it was hired (``ARX_TOKEN``).
            Required unless ``local_mode``.
        base_url: the agent API, ending in ``/v1`` (``ARX_BASE_URL``).
        agent_id: the hired agent's id (``ARX_AGENT_ID``); names the file of
            calls recorded while ARX is unreachable.
        local_record_dir: where local records go (``ARX_LOCAL_RECORD_DIR``).
        local_mode: run without a server (``ARX_LOCAL_MODE``).
        manifest: local-only mode's manifest (``ARX_MANIFEST``), default
            ``manifests/job_description.yaml``.
        local_approve: local-only mode's answer to calls that need an approver
            (``ARX_LOCAL_APPROVE``): ``prompt`` (ask on the terminal, deny
            without one; the default), ``allow`` or ``deny``.
        timeout: seconds for one request (long polls excepted).
        wait: seconds the server may hold one long poll while a call awaits approval.
    """

    def __init__(self, token: Optional[str] = None, base_url: Optional[str] = None, agent_id: Optional[str] = None,
                 local_record_dir: Optional[str] = None, local_mode: bool = False, *, manifest: Optional[str] = None,
                 local_approve: Optional[str] = None, timeout: float = 30.0, wait: float = 30.0) -> None:
        token = (token or "").strip()
        if not local_mode and not token:
            raise ValueError("agentvault: no agent token (hint: set ARX_TOKEN to the token shown when the agent was hired, "
                             "or ARX_LOCAL_MODE=1 for local-only mode)")
        if any(ord(ch) <= 32 or ord(ch) >= 127 for ch in token):
            raise ValueError("agentvault: the agent token contains spaces or non-printable characters "
                             "(hint: check ARX_TOKEN; copy the token exactly as it was shown)")
        base = (base_url or DEFAULT_BASE_URL).strip()
        u = urllib.parse.urlsplit(base)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ValueError(f"agentvault: base URL {base!r} is not an absolute http or https URL "
                             f"(hint: set ARX_BASE_URL to an address like {DEFAULT_BASE_URL})")
        if u.username or u.password:
            raise ValueError("agentvault: base URL carries credentials (hint: remove them from ARX_BASE_URL; "
                             "the agent authenticates with ARX_TOKEN)")
        if u.query or u.fragment:
            raise ValueError(f"agentvault: base URL {base!r} has a query or fragment")
        self._token = _Secret(token)
        self.base_url = base.rstrip("/")
        self.agent_id = (agent_id or "").strip()
        self.local_record_dir = local_record_dir or DEFAULT_LOCAL_RECORD_DIR
        self.local_mode = bool(local_mode)
        self.timeout = timeout
        self.wait_seconds = wait
        self._retry = _http.Backoff(attempts=5, base=0.2, max=3.0)
        self._wait_retry = _http.Backoff(attempts=0, base=0.25, max=10.0)
        self._opener = _http.make_opener(self.base_url)
        self._local: Optional[LocalBackend] = None
        if self.local_mode:
            approve = (local_approve or APPROVE_PROMPT).strip().lower()
            try:
                self._local = LocalBackend(manifest, self.local_record_dir, approve)
            except ValueError as err:
                raise ValueError(f"agentvault: {err}") from None

    @classmethod
    def from_env(cls, **overrides: Any) -> "Client":
        """Make a client from the environment and make it the default client.

        Reads ``ARX_TOKEN``, ``ARX_BASE_URL``, ``ARX_AGENT_ID``,
        ``ARX_LOCAL_RECORD_DIR``, ``ARX_LOCAL_MODE``, ``ARX_MANIFEST`` and
        ``ARX_LOCAL_APPROVE``; keyword arguments (those of :class:`Client`)
        override them. ``@governed`` functions that name no client use the
        client made last by ``from_env`` (see :func:`set_default_client`).
        """
        env = os.environ
        kw: Dict[str, Any] = {
            "token": env.get("ARX_TOKEN"),
            "base_url": env.get("ARX_BASE_URL") or None,
            "agent_id": env.get("ARX_AGENT_ID"),
            "local_record_dir": env.get("ARX_LOCAL_RECORD_DIR") or None,
            "local_mode": _truthy("ARX_LOCAL_MODE", env.get("ARX_LOCAL_MODE", "")),
            "manifest": env.get("ARX_MANIFEST") or None,
            "local_approve": env.get("ARX_LOCAL_APPROVE") or None,
        }
        kw.update(overrides)
        client = cls(**kw)
        set_default_client(client)
        return client

    def __repr__(self) -> str:
        return (f"Client(base_url={self.base_url!r}, agent_id={self.agent_id!r}, local_mode={self.local_mode}, "
                f"local_record_dir={self.local_record_dir!r}, token={self._token!r})")

    # The current call.

    @property
    def credential(self) -> Credential:
        """The credential of the governed call running in this context.

        Raises :class:`NotInGovernedCall` outside a governed function's body:
        a credential exists only while its call runs, and only for it.
        """
        return self._scope().credential

    @property
    def current_call(self) -> Call:
        """The governed call running in this context (see :attr:`credential`)."""
        return self._scope().call

    def report_usage(self, tokens: int = 0, amount: Optional[str] = None) -> None:
        """Add what the governed call running in this context used.

        ``tokens`` (a model's, say) and ``amount`` (``"0.013 USD"``, in the
        currency of the job description's spend cap) are summed over the
        call and sent when it completes; ARX charges them to the agent's
        daily caps (``budget.tokens``, ``budget.spend``). An action that
        declares its ``cost:`` is charged that instead of the amount.
        Raises :class:`NotInGovernedCall` outside a governed function's body.
        """
        scope = self._scope()
        if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 0:
            raise ValueError(f"tokens must be a whole number of at least 0, not {tokens!r}")
        micros, currency = (0, "") if amount is None else parse_money(amount)
        if currency and scope.currency and currency != scope.currency:
            raise ValueError(f"usage amount in {currency} after amounts in {scope.currency}")
        scope.tokens += tokens
        if currency:
            scope.micros += micros
            scope.currency = currency
        scope.reported = True

    def _scope(self) -> _Scope:
        s = _current.get()
        if s is None:
            raise NotInGovernedCall("arx.credential exists only inside a @governed function, while its call runs "
                                    "(hint: read it in the function's body)")
        if s.client is not self:
            raise NotInGovernedCall("the governed call running here belongs to another agentvault Client")
        return s

    # The protocol (docs/api.md).

    def _headers(self, with_body: bool) -> Dict[str, str]:
        h = {"Authorization": "Bearer " + self._token.reveal(), "Accept": "application/json"}
        if with_body:
            h["Content-Type"] = "application/json"
        return h

    def _scrub(self, s: str) -> str:
        tok = self._token.reveal()
        return s.replace(tok, REDACTED) if tok else s

    def _api_error(self, ans: _http.Answer, call_id: Optional[str] = None) -> ArxError:
        try:
            e = json.loads(ans.body)["error"]
            code = e["code"]
            if not isinstance(code, str) or not code:
                raise ValueError
            # Every field is the server's text: the token goes, wherever it is echoed.
            return ArxError(self._scrub(code), self._scrub(str(e.get("message", ""))), self._scrub(str(e.get("hint", ""))),
                            self._scrub(str(e.get("call_id") or "")) or call_id, ans.status)
        except (ValueError, KeyError, TypeError):
            pass
        what = "an empty body" if not ans.body else "a body that is not an ARX error"
        return ArxError("internal", f"server answered HTTP {ans.status} with {what}",
                        "a proxy or load balancer in front of ARX may have answered; check ARX_BASE_URL", call_id, ans.status)

    def _send(self, method: str, path: str, body: Optional[Dict[str, Any]]) -> _http.Answer:
        """Send with retries on network errors, 5xx and 429; raise TransportError or return the last answer."""
        data = json.dumps(body).encode() if body is not None else None
        n = 0
        while True:
            n += 1
            try:
                ans = _http.exchange(self._opener, method, self.base_url + path, self._headers(data is not None), data, self.timeout)
                if not ans.transient():
                    return ans
                reason, delay_floor = f"HTTP {ans.status}", min(ans.retry_after(), self._retry.max)
            except _http.TransportError as err:
                ans, reason, delay_floor = None, self._scrub(str(err)), 0.0
                if n >= self._retry.attempts:
                    raise
            if n >= self._retry.attempts:
                assert ans is not None
                return ans
            d = max(self._retry.delay(n), delay_floor)
            log.warning("arx: retrying %s %s (attempt %d, in %.2fs): %s", method, path, n, d, reason)
            _http.sleep(d, None)

    def request(self, connector: str, action: str, risk: str = "low", summary: str = "",
                idempotency_key: Optional[str] = None, args: Optional[Dict[str, Any]] = None) -> Call:
        """Ask ARX for a call (``POST /calls``).

        Returns the call: ``approved`` with a credential, or
        ``pending_approval`` (then :meth:`wait`). A refusal raises
        :class:`ArxError` with the server's code. Retries (network errors,
        5xx, 429) reuse one idempotency key, so they never make a second call.
        When ARX cannot be reached the call fails closed with
        :class:`ArxUnreachableError`, and the attempt is recorded under
        ``local_record_dir``. ``args`` are the call's arguments, a dict
        JSON can carry: the job description's conditions are evaluated on
        them (local-only mode does not send them anywhere).
        """
        risk = risk or "low"
        key = idempotency_key or str(uuid.uuid4())
        if self._local is not None:
            return Call.from_json(self._local.request(connector, action, risk, summary, key))
        # What the server would refuse before deciding anything is refused
        # here, by the same check (nothing is sent, nothing recorded).
        risk = check_ask(connector, action, risk, key)
        body = {"connector": connector, "action": action, "risk": risk, "idempotency_key": key}
        if summary:
            body["summary"] = summary
        if args:
            body["args"] = args
        try:
            ans = self._send("POST", "/calls", body)
        except _http.TransportError as err:
            raise self._unreachable(connector, action, risk, summary, key, str(err)) from None
        if ans.status not in (200, 201, 202):
            if ans.transient():
                raise self._unreachable(connector, action, risk, summary, key, str(self._api_error(ans)))
            raise self._api_error(ans)
        call = self._parse_call(ans, "POST /calls")
        log.debug("arx: call %s requested: %s %s %s, %s", call.id, call.connector, call.action, call.risk, call.status)
        return call

    def _unreachable(self, connector: str, action: str, risk: str, summary: str, key: str, cause: str) -> ArxUnreachableError:
        cause = self._scrub(cause)
        try:
            path = record_unreachable(self.local_record_dir, self.agent_id, self.base_url, connector, action, risk,
                                      summary, key, cause)
            where = f"the attempt is recorded in {path}"
            hint = f"attach it with `arx record import {path} --agent AGENT` once ARX is back"
        except Exception as err:  # noqa: BLE001 - report, do not mask the outage
            path, where, hint = None, f"recording the attempt locally failed too: {err}", "check ARX_LOCAL_RECORD_DIR"
        return ArxUnreachableError(f"ARX at {self.base_url} is unreachable, so the call was not made ({where}): {cause}",
                                   hint, path)

    def _parse_call(self, ans: _http.Answer, what: str) -> Call:
        try:
            return Call.from_json(ans.json())
        except (ValueError, KeyError, TypeError) as err:
            raise ArxError("internal", f"{what}: malformed answer (HTTP {ans.status}): {type(err).__name__}",
                           "check that ARX_BASE_URL points at an ARX server") from None

    def wait(self, call_id: str, cancel: Optional[threading.Event] = None) -> Call:
        """Long-poll a call until it is decided (``GET /calls/{id}?wait=...``).

        Asks again as soon as a poll runs out, so it returns as soon as an
        approver decides; network errors and 5xx answers do not end the wait
        (it retries with a capped backoff). Returns the approved call with its
        credential; a call that ends without approval raises :class:`ArxError`
        (``call.denied``, ``call.expired``, ``call.closed``). Setting
        ``cancel`` ends the wait, returning the call as last seen.
        """
        if self._local is not None:
            return Call.from_json(self._local.wait(call_id, cancel))
        path = f"/calls/{urllib.parse.quote(call_id, safe='')}?wait={int(self.wait_seconds)}s"
        failures, quick = 0, 0
        last: Optional[Call] = None
        while True:
            if cancel is not None and cancel.is_set() and last is not None:
                return last
            started = time.monotonic()
            try:
                ans = _http.exchange(self._opener, "GET", self.base_url + path, self._headers(False), None,
                                     self.wait_seconds + self.timeout)
            except _http.TransportError as err:
                ans, reason = None, self._scrub(str(err))
            if ans is not None and not ans.transient():
                if ans.status != 200:
                    raise self._api_error(ans, call_id)
                call = self._parse_call(ans, "GET /calls/{id}")
                if call.status != "pending_approval":
                    _decided(call)
                    return call
                last, failures = call, 0
                if time.monotonic() - started >= self.wait_seconds / 4:
                    quick = 0  # the server held the poll: ask again at once
                    continue
                quick += 1  # it answered early (no long poll): do not spin
                if not _http.sleep(self._wait_retry.delay(quick), cancel):
                    return last
                continue
            if ans is not None:
                reason = f"HTTP {ans.status}"
            failures += 1
            d = self._wait_retry.delay(failures)
            log.warning("arx: waiting for approval of call %s: retrying in %.2fs: %s", call_id, d, reason)
            if not _http.sleep(d, cancel):
                if last is None:
                    raise ArxError("call.pending_approval", f"stopped waiting for call {call_id}", call_id=call_id)
                return last

    def complete(self, call_id: str, outcome: str, error: str = "", duration: float = 0.0,
                 usage: Optional[Dict[str, Any]] = None) -> Call:
        """Close a call (``POST /calls/{id}/complete``); its credential dies with it.

        ``outcome`` is ``success``, ``error`` or ``cancelled``; ``error`` (cut
        to 1 KiB, the token removed) says briefly what went wrong; ``duration``
        is in seconds; ``usage`` (``{"tokens": 1200, "amount": "0.013 USD"}``)
        is what the call used (a ``@governed`` function reports it with
        :meth:`report_usage`).
        """
        if outcome not in ("success", "error", "cancelled"):
            raise ArxError("request.invalid", f"unknown outcome {outcome!r} (want success, error or cancelled)", call_id=call_id)
        # An error can carry anything (bytes an upstream returned); the
        # outcome must still land: NULs are shown as \x00, as the server needs.
        error = _truncate(self._scrub(error).replace("\x00", "\\x00"), _MAX_OUTCOME_ERROR)
        ms = max(int(duration * 1000), 0)
        if self._local is not None:
            return Call.from_json(self._local.complete(call_id, outcome, error, ms))
        path = f"/calls/{urllib.parse.quote(call_id, safe='')}/complete"
        body: Dict[str, Any] = {"outcome": outcome, "error": error, "duration_ms": ms}
        if usage:
            body["usage"] = usage
        ans = self._send("POST", path, body)
        if ans.status not in (200, 201):
            raise self._api_error(ans, call_id)
        return self._parse_call(ans, "POST /calls/{id}/complete")

    # The gateway.

    def gateway_request(self, method: str, path: str, *, body: Optional[bytes] = None,
                        headers: Optional[Dict[str, str]] = None, timeout: Optional[float] = None) -> GatewayResponse:
        """Send a request to the current call's system of record through the ARX gateway.

        Goes to ``{base_url}/gateway/{connector}/{path}`` with the current
        governed call's credential; the gateway forwards it with the
        connector's real secret, which never reaches the agent. Must run
        inside a ``@governed`` function. Any HTTP status is returned, not
        raised. Needs a server with the connector gateway
        (``ANY /v1/gateway/{connector}/{path}``); in local-only mode there is
        no gateway, and this raises :class:`ArxError` ``client.local_mode``.
        """
        scope = self._scope()
        if self._local is not None:
            raise ArxError(CODE_LOCAL_MODE, "the gateway needs an ARX server; local-only mode has none",
                           "call the system directly in local-only mode, or run against `arx serve`")
        url = f"{self.base_url}/gateway/{urllib.parse.quote(scope.call.connector, safe='')}/{path.lstrip('/')}"
        h = dict(headers or {})
        h["Authorization"] = "Bearer " + scope.credential.token
        try:
            ans = _http.exchange(self._opener, method.upper(), url, h, body, timeout or self.timeout)
        except _http.TransportError as err:
            raise ArxError("client.unreachable", self._scrub(str(err)).replace(scope.credential.token, REDACTED),
                           "check that ARX is reachable", scope.call.id) from None
        return GatewayResponse(ans.status, ans.headers, ans.body)

    async def gateway_request_async(self, method: str, path: str, **kw: Any) -> GatewayResponse:
        """:meth:`gateway_request` for async code, off the event loop."""
        import asyncio

        return await asyncio.to_thread(self.gateway_request, method, path, **kw)


def _truncate(s: str, n: int) -> str:
    b = s.encode("utf-8", "replace")
    if len(b) <= n:
        return s
    return b[: n - 3].decode("utf-8", "ignore") + "…"


def _decided(call: Call) -> None:
    """Raise the ArxError of a call that may not proceed."""
    if call.status == "approved":
        if call.credential is not None:
            return
        raise ArxError("call.expired", f"call {call.id} is approved but has no credential: it expired", call_id=call.id)
    if call.status == "denied":
        raise ArxError("call.denied", f"call {call.id} was denied by an approver", "", call.id)
    if call.status == "expired":
        raise ArxError("call.expired", f"call {call.id} expired", call_id=call.id)
    if call.status == "pending_approval":
        raise ArxError("call.pending_approval", f"call {call.id} is waiting for approval", "", call.id)
    raise ArxError("call.closed", f"call {call.id} is {call.status}", call_id=call.id)
