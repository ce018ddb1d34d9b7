"""The ``@governed`` decorator."""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Optional, TypeVar, Union, cast

from .client import Call, Client, Credential, _current, _decided, _Scope, default_client
from .errors import ArxError, CompletionError
from .manifest import RISKS

__all__ = ["governed"]

log = logging.getLogger("agentvault")

F = TypeVar("F", bound=Callable[..., Any])

Summary = Union[str, Callable[..., str], None]


@dataclass(frozen=True)
class _Spec:
    connector: str
    action: str
    risk: str
    summary: Summary
    client: Optional[Client]

    def resolve(self) -> Client:
        return self.client if self.client is not None else default_client()

    def summarize(self, args: Any, kwargs: Any) -> str:
        if self.summary is None:
            return ""
        if callable(self.summary):
            return str(self.summary(*args, **kwargs))
        return self.summary


def governed(connector: str, action: str, risk: str = "low", *, summary: Summary = None,
             client: Optional[Client] = None) -> Callable[[F], F]:
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
        client: the :class:`~agentvault.Client` to use; by default the one
            ``Client.from_env()`` made last (see ``set_default_client``),
            looked up at each call.
    """
    if risk not in RISKS:
        raise ValueError(f"agentvault: risk {risk!r} is not low, medium or high")
    if not connector or not action:
        raise ValueError("agentvault: @governed needs a connector and an action")
    spec = _Spec(connector, action, risk, summary, client)

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


def _finish(c: Client, call_id: str, outcome: str, error: str, duration: float) -> Optional[BaseException]:
    """Complete a call; return (and log) the error instead of raising it."""
    try:
        c.complete(call_id, outcome, error, duration)
        return None
    except Exception as err:  # noqa: BLE001
        log.warning("arx: completing call %s with %r failed; the record may lack its completion: %s", call_id, outcome, err)
        return err


def _completion_failed(call: Call, result: Any, err: BaseException) -> CompletionError:
    return CompletionError(f"call {call.id} ran, but its completion could not be recorded: {err}", call.id, result, err)


_CANCELLED = (KeyboardInterrupt, SystemExit, asyncio.CancelledError)


def _run_sync(spec: _Spec, fn: Callable[..., Any], args: Any, kwargs: Any) -> Any:
    c = spec.resolve()
    call = c.request(spec.connector, spec.action, spec.risk, spec.summarize(args, kwargs))
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
    token = _current.set(_Scope(c, call, cred))
    start = time.monotonic()
    try:
        result = fn(*args, **kwargs)
    except BaseException as e:
        _current.reset(token)
        outcome = "cancelled" if isinstance(e, _CANCELLED) else "error"
        _finish(c, call.id, outcome, _describe(e, cred), time.monotonic() - start)
        raise
    _current.reset(token)
    err = _finish(c, call.id, "success", "", time.monotonic() - start)
    if err is not None:
        raise _completion_failed(call, result, err)
    return result


def _retrieve(fut: "asyncio.Future[Any]") -> None:
    # Consume a background result, so asyncio does not warn about it.
    if not fut.cancelled():
        fut.exception()


async def _finish_async(c: Client, call_id: str, outcome: str, error: str, duration: float) -> Optional[BaseException]:
    # Shielded: once started, a completion is sent even if the task is cancelled again.
    fut = asyncio.ensure_future(asyncio.to_thread(_finish, c, call_id, outcome, error, duration))
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
    req = asyncio.ensure_future(asyncio.to_thread(c.request, spec.connector, spec.action, spec.risk,
                                                  spec.summarize(args, kwargs)))
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
    token = _current.set(_Scope(c, call, cred))
    start = time.monotonic()
    try:
        result = await fn(*args, **kwargs)
    except BaseException as e:
        _current.reset(token)
        outcome = "cancelled" if isinstance(e, _CANCELLED) else "error"
        try:
            await _finish_async(c, call.id, outcome, _describe(e, cred), time.monotonic() - start)
        except asyncio.CancelledError:
            pass
        raise
    _current.reset(token)
    err = await _finish_async(c, call.id, "success", "", time.monotonic() - start)
    if err is not None:
        raise _completion_failed(call, result, err)
    return result
