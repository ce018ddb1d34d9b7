"""The ``@governed`` decorator."""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Dict, Optional, TypeVar, Union, cast

from .client import Call, Client, Credential, _current, _decided, _Scope, default_client
from .errors import ArxError, CompletionError
from .manifest import RISKS

__all__ = ["governed"]

log = logging.getLogger("agentvault")

F = TypeVar("F", bound=Callable[..., Any])

Summary = Union[str, Callable[..., str], None]
Args = Union[bool, Callable[..., Any]]

# MAX_ARGS_BYTES bounds the arguments a call carries, as JSON (the server's limit).
MAX_ARGS_BYTES = 8 << 10


@dataclass(frozen=True)
class _Spec:
    connector: str
    action: str
    risk: str
    summary: Summary
    client: Optional[Client]
    args: Args = True

    def resolve(self) -> Client:
        return self.client if self.client is not None else default_client()

    def summarize(self, args: Any, kwargs: Any) -> str:
        if self.summary is None:
            return ""
        if callable(self.summary):
            return str(self.summary(*args, **kwargs))
        return self.summary

    def arguments(self, fn: Callable[..., Any], args: Any, kwargs: Any) -> Optional[dict]:
        """The call's arguments, as the server gets them (``args`` in ``POST /calls``)."""
        if self.args is False or self.args is None:
            return None
        if callable(self.args) and self.args is not True:
            v = self.args(*args, **kwargs)
            out = {str(k): _jsonable(x) for k, x in dict(v).items()} if v else None
        else:
            try:
                sig = inspect.signature(fn)
                bound = sig.bind_partial(*args, **kwargs)
            except (TypeError, ValueError):
                return None
            bound.apply_defaults()
            out = {}
            for name, value in bound.arguments.items():
                kind = sig.parameters[name].kind
                if name in ("self", "cls"):
                    continue
                if kind is inspect.Parameter.VAR_KEYWORD:
                    out.update({str(k): _jsonable(x) for k, x in value.items()})
                else:
                    out[name] = _jsonable(value)
        if not out:
            return None
        if len(json.dumps(out, ensure_ascii=False).encode("utf-8")) > MAX_ARGS_BYTES:
            raise ArxError("request.invalid", f"the arguments of {self.connector} {self.action} are larger than {MAX_ARGS_BYTES} bytes as JSON",
                           hint="pass args=False, or args=lambda ...: {...} with what the job description's conditions need, to @governed")
        return out


def _jsonable(v: Any, depth: int = 0) -> Any:
    """A value as JSON can carry it: JSON's own types as they are, anything else as its text."""
    if depth > 8:
        return str(v)[:256]
    if v is None or isinstance(v, (bool, str, int)):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else str(v)
    if isinstance(v, (list, tuple)):
        return [_jsonable(x, depth + 1) for x in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(x, depth + 1) for k, x in v.items()}
    return str(v)[:256]


def governed(connector: str, action: str, risk: str = "low", *, summary: Summary = None,
             client: Optional[Client] = None, args: Args = True) -> Callable[[F], F]:
    """Run the decorated function as one governed call of ``action`` on ``connector``.

    Each call of the function asks ARX for a call (one idempotency key for
    all its retries), waits for a named approver when the call is high risk,
    runs the body with :attr:`Client.credential` bound to this call only,
    and completes the call with its outcome:

    * ``success`` when the body returns;
    * ``error`` when it raises (the exception's type and message, without
      the credential or the token, cut to 1 KiB); the exception propagates;
    * ``cancelled`` when its task is cancelled or the process interrupted,
      also while it waits for approval (the request is then withdrawn and the
      body never runs).

    A refusal (a connector not on the manifest, a denied approval, ...)
    raises :class:`~agentvault.ArxError` with the server's code, and the body
    does not run. When ARX is unreachable the call fails closed with
    :class:`~agentvault.ArxUnreachableError`. When the body returned but the
    completion could not be sent, :class:`~agentvault.CompletionError` carries
    its return value.

    Works on ``async def`` functions (the SDK's blocking HTTP runs in a
    thread, ``asyncio.to_thread``, so the event loop is never blocked) and
    on plain functions (which block their thread while waiting).

    Args:
        connector: a connector on the agent's manifest.
        action: one of its actions.
        risk: the risk the code declares: ``low``, ``medium`` or ``high``. ARX
            uses the higher of it and the manifest's.
        summary: shown to approvers, never secrets: a string, or a function
            called with the decorated function's arguments.
        args: the call's arguments: by default the decorated function's own
            (by name; ``self`` left out; values JSON cannot carry sent as
            text), which the job description's conditions (``when:``) are
            evaluated on and approvers see; the record keeps them, or only
            their hash where the action says ``record_args: hash``. A
            function called with the same arguments returning a dict sends
            that instead; ``False`` sends none.
        client: the :class:`~agentvault.Client` to use; by default the one
            ``Client.from_env()`` made last (see ``set_default_client``),
            looked up at each call.
    """
    if risk not in RISKS:
        raise ValueError(f"agentvault: risk {risk!r} is not low, medium or high")
    if not connector or not action:
        raise ValueError("agentvault: @governed needs a connector and an action")
    spec = _Spec(connector, action, risk, summary, client, args)

    def decorate(fn: F) -> F:
        if inspect.isasyncgenfunction(fn) or inspect.isgeneratorfunction(fn):
            raise TypeError("agentvault: @governed cannot wrap a generator: its body would run after the call ended")
        if inspect.iscoroutinefunction(fn):
            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                return await _run_async(spec, cast(Callable[..., Awaitable[Any]], fn), args, kwargs)

            async_wrapper.__arx_governed__ = spec  # type: ignore[attr-defined]
            return cast(F, async_wrapper)

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            return _run_sync(spec, fn, args, kwargs)

        wrapper.__arx_governed__ = spec  # type: ignore[attr-defined]
        return cast(F, wrapper)

    return decorate


def _describe(e: BaseException, cred: Optional[Credential]) -> str:
    msg = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
    if cred is not None:
        msg = msg.replace(cred.token, "REDACTED")
    return msg


def _finish(c: Client, call_id: str, outcome: str, error: str, duration: float,
            usage: Optional[Dict[str, Any]] = None) -> Optional[BaseException]:
    """Complete a call; return (and log) the error instead of raising it."""
    try:
        c.complete(call_id, outcome, error, duration, usage)
        return None
    except Exception as err:  # noqa: BLE001
        log.warning("arx: completing call %s with %r failed; the record may lack its completion: %s", call_id, outcome, err)
        return err


def _completion_failed(call: Call, result: Any, err: BaseException) -> CompletionError:
    return CompletionError(f"call {call.id} ran, but its completion could not be recorded: {err}", call.id, result, err)


_CANCELLED = (KeyboardInterrupt, SystemExit, asyncio.CancelledError)


def _run_sync(spec: _Spec, fn: Callable[..., Any], args: Any, kwargs: Any) -> Any:
    c = spec.resolve()
    call = c.request(spec.connector, spec.action, spec.risk, spec.summarize(args, kwargs), args=spec.arguments(fn, args, kwargs))
    if call.status == "pending_approval":
        try:
            call = c.wait(call.id)
        except ArxError:
            raise
        except BaseException as e:
            # Withdraw the request: no approver should decide on work that will not be done.
            _finish(c, call.id, "cancelled", "cancelled while waiting for approval: " + _describe(e, None), 0)
            raise
    else:
        _decided(call)
    cred = call.credential
    assert cred is not None
    scope = _Scope(c, call, cred)
    token = _current.set(scope)
    start = time.monotonic()
    try:
        result = fn(*args, **kwargs)
    except BaseException as e:
        _current.reset(token)
        outcome = "cancelled" if isinstance(e, _CANCELLED) else "error"
        _finish(c, call.id, outcome, _describe(e, cred), time.monotonic() - start, scope.usage())
        raise
    _current.reset(token)
    err = _finish(c, call.id, "success", "", time.monotonic() - start, scope.usage())
    if err is not None:
        raise _completion_failed(call, result, err)
    return result


def _retrieve(fut: "asyncio.Future[Any]") -> None:
    # Consume a background result, so asyncio does not warn about it.
    if not fut.cancelled():
        fut.exception()


async def _finish_async(c: Client, call_id: str, outcome: str, error: str, duration: float,
                        usage: Optional[Dict[str, Any]] = None) -> Optional[BaseException]:
    # Shielded: once started, a completion is sent even if the task is cancelled again.
    fut = asyncio.ensure_future(asyncio.to_thread(_finish, c, call_id, outcome, error, duration, usage))
    try:
        return await asyncio.shield(fut)
    except asyncio.CancelledError:
        fut.add_done_callback(_retrieve)
        raise


def _close_orphan(c: Client, fut: "asyncio.Future[Call]") -> None:
    """Cancelled while asking for a call: close whatever call the request made."""
    if fut.cancelled() or fut.exception() is not None:
        return
    call = fut.result()
    if call.status in ("approved", "pending_approval"):
        threading.Thread(target=_finish, args=(c, call.id, "cancelled", "cancelled before the work started", 0),
                         daemon=True).start()


async def _run_async(spec: _Spec, fn: Callable[..., Awaitable[Any]], args: Any, kwargs: Any) -> Any:
    c = spec.resolve()
    call_args = spec.arguments(fn, args, kwargs)
    req = asyncio.ensure_future(asyncio.to_thread(functools.partial(c.request, spec.connector, spec.action, spec.risk,
                                                                    spec.summarize(args, kwargs), args=call_args)))
    try:
        call = await asyncio.shield(req)
    except asyncio.CancelledError:
        req.add_done_callback(functools.partial(_close_orphan, c))
        raise
    if call.status == "pending_approval":
        stop = threading.Event()
        waiting = asyncio.ensure_future(asyncio.to_thread(c.wait, call.id, stop))
        try:
            call = await asyncio.shield(waiting)
        except asyncio.CancelledError:
            stop.set()
            waiting.add_done_callback(_retrieve)
            try:
                await _finish_async(c, call.id, "cancelled", "cancelled while waiting for approval", 0)
            except asyncio.CancelledError:
                pass  # cancelled again: the withdrawal goes on in its thread
            raise
    else:
        _decided(call)
    cred = call.credential
    assert cred is not None
    scope = _Scope(c, call, cred)
    token = _current.set(scope)
    start = time.monotonic()
    try:
        result = await fn(*args, **kwargs)
    except BaseException as e:
        _current.reset(token)
        outcome = "cancelled" if isinstance(e, _CANCELLED) else "error"
        try:
            await _finish_async(c, call.id, outcome, _describe(e, cred), time.monotonic() - start, scope.usage())
        except asyncio.CancelledError:
            pass
        raise
    _current.reset(token)
    err = await _finish_async(c, call.id, "success", "", time.monotonic() - start, scope.usage())
    if err is not None:
        raise _completion_failed(call, result, err)
    return result
