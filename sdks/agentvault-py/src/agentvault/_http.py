"""Blocking HTTP to the ARX agent API, with the standard library only."""

from __future__ import annotations

import ipaddress
import json
import random
import socket
import threading
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from http.client import HTTPException
from typing import Any, Dict, Optional

USER_AGENT = "agentvault-py/0.1"
MAX_BODY = 1 << 20


@dataclass
class Answer:
    status: int
    headers: Dict[str, str]
    body: bytes

    def transient(self) -> bool:
        """Whether a retry of the same request may fare better."""
        return self.status >= 500 or self.status == 429

    def retry_after(self) -> float:
        try:
            return max(0.0, float(self.headers.get("retry-after", "")))
        except ValueError:
            return 0.0

    def json(self) -> Any:
        return json.loads(self.body)


class TransportError(Exception):
    """A request that got no HTTP answer (connection refused, reset, timeout)."""


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    # The bearer token goes only to the configured server.
    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        return None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def make_opener(base_url: str) -> urllib.request.OpenerDirector:
    """An opener that never follows redirects, and uses no proxy for loopback."""
    host = urllib.parse.urlsplit(base_url).hostname or ""
    proxies = {} if _is_loopback(host) else None
    return urllib.request.build_opener(urllib.request.ProxyHandler(proxies), _NoRedirect())


def exchange(opener: urllib.request.OpenerDirector, method: str, url: str, headers: Dict[str, str],
             body: Optional[bytes], timeout: float) -> Answer:
    """Send one request and read its answer. Raises TransportError, never with headers in it."""
    req = urllib.request.Request(url, data=body, method=method)
    for k, v in headers.items():
        req.add_header(k, v)
    req.add_header("User-Agent", USER_AGENT)
    try:
        resp = opener.open(req, timeout=timeout)
    except urllib.error.HTTPError as err:
        resp = err
    except (urllib.error.URLError, OSError, HTTPException, socket.timeout) as err:
        reason = getattr(err, "reason", err)
        raise TransportError(f"{method} {urllib.parse.urlsplit(url).path}: {reason}") from None
    try:
        with resp:
            data = resp.read(MAX_BODY + 1)
            status = resp.status if hasattr(resp, "status") else resp.code
            hdrs = {k.lower(): v for k, v in resp.headers.items()}
    except (OSError, HTTPException, socket.timeout) as err:
        raise TransportError(f"{method} {urllib.parse.urlsplit(url).path}: reading the answer: {err}") from None
    if len(data) > MAX_BODY:
        raise TransportError(f"{method} {urllib.parse.urlsplit(url).path}: answer larger than {MAX_BODY} bytes")
    return Answer(status=status, headers=hdrs, body=data)


@dataclass
class Backoff:
    attempts: int  # total tries; 0: no bound
    base: float
    max: float

    def delay(self, n: int) -> float:
        """The pause after the n-th failed try: random in [d/2, d], d doubling from base to max."""
        d = min(self.base * (2 ** max(n - 1, 0)), self.max)
        return d / 2 + random.random() * d / 2


def sleep(seconds: float, cancel: Optional[threading.Event]) -> bool:
    """Sleep; return False when cancel was set meanwhile."""
    if cancel is None:
        threading.Event().wait(seconds)
        return True
    return not cancel.wait(seconds)
