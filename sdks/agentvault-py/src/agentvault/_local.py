"""Local-only mode: the manifest checked by the SDK, the record kept in JSONL files."""

from __future__ import annotations

import datetime as _dt
import getpass
import os
import re
import secrets
import threading
import uuid
from typing import Any, Callable, Dict, List, Optional

from . import _inert
from .errors import ArxError
from .manifest import RISKS, Manifest, load_manifest
from .record import CanonicalError, append_local_record, format_time, text_problem

APPROVE_PROMPT, APPROVE_ALLOW, APPROVE_DENY = "prompt", "allow", "deny"
CREDENTIAL_PREFIX = "local."

# The shape of a call an agent asks for, as the runtime checks it (Go's
# manifest.CheckAsk; testdata/vectors/asks.json pins both). fullmatch: "$"
# would also match before a trailing newline.
_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,127}")
_KEY_RE = re.compile(r"[\x21-\x7e]{1,128}")
MAX_SUMMARY = 512  # bytes (Go's manifest.MaxSummary)


def check_ask(connector: str, action: str, risk: str, key: str) -> str:
    """Check a call's connector, action, idempotency key and declared risk
    ("" is low), in that order; return the risk or raise ArxError with the
    runtime's code."""
    if not isinstance(connector, str) or not _NAME_RE.fullmatch(connector):
        raise ArxError("request.invalid", f"connector {str(connector)[:64]!r} is not a valid name")
    if not isinstance(action, str) or not _NAME_RE.fullmatch(action):
        raise ArxError("request.invalid", f"action {str(action)[:64]!r} is not a valid name")
    if not isinstance(key, str) or not _KEY_RE.fullmatch(key):
        raise ArxError("request.invalid", "idempotency_key must be 1 to 128 printable ASCII characters")
    risk = risk or "low"
    if not isinstance(risk, str) or risk not in RISKS:
        raise ArxError("manifest.invalid_risk", f"risk {str(risk)[:16]!r} is not low, medium or high")
    return risk

# Asker: (question, cancel event) -> True/False; raises OSError without a terminal.
Asker = Callable[[str, Optional[threading.Event]], bool]


def ask_terminal(question: str, cancel: Optional[threading.Event] = None) -> bool:
    """Ask a yes/no question on the controlling terminal (not stdin)."""
    with open("/dev/tty", "r+b", buffering=0) as tty:
        tty.write(question.encode("utf-8"))
        line = b""
        while not line.endswith(b"\n"):
            if cancel is not None and cancel.is_set():
                return False
            import select

            ready, _, _ = select.select([tty], [], [], 0.2)
            if ready:
                chunk = tty.read(1)
                if not chunk:
                    break
                line += chunk
        return line.strip().lower() in (b"y", b"yes")


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no user database entry
        return "unknown"


class LocalBackend:
    """Decides calls by the manifest and records them, as the runtime would."""

    def __init__(self, manifest_path: Optional[str], record_dir: str, approve: str) -> None:
        if approve not in (APPROVE_PROMPT, APPROVE_ALLOW, APPROVE_DENY):
            raise ValueError(f"ARX_LOCAL_APPROVE={approve!r} is not allow, deny or prompt")
        self.manifest_path = manifest_path
        self.record_dir = record_dir
        self.approve = approve
        self.ask: Asker = ask_terminal
        self._manifest: Optional[Manifest] = None
        self._load_lock = threading.Lock()
        self._lock = threading.Lock()
        self._calls: Dict[str, Dict[str, Any]] = {}
        self._keys: Dict[str, str] = {}

    # The manifest is read on the first call, so that a client made at
    # import time does not need it yet.
    def manifest(self) -> Manifest:
        with self._load_lock:
            if self._manifest is None:
                self._manifest = load_manifest(self.manifest_path)
            return self._manifest

    @property
    def agent(self) -> str:
        return "local:" + self.manifest().name

    @property
    def file(self) -> str:
        return os.path.join(self.record_dir, self.manifest().name + ".jsonl")

    def _entry(self, call: Dict[str, Any], typ: str, data: Dict[str, Any], actor: Optional[str] = None,
               now: Optional[_dt.datetime] = None) -> Dict[str, Any]:
        return {"time": now or _now(), "agent": self.agent, "type": typ, "call": call["id"], "connector": call["connector"],
                "action": call["action"], "risk": call["risk"], "actor": actor or "agent:" + self.agent, "data": data}

    def request(self, connector: str, action: str, risk: str, summary: str, key: str) -> Dict[str, Any]:
        """Decide and record a call; returns the call as the server's JSON would describe it."""
        m = self.manifest()
        risk = check_ask(connector, action, risk, key)
        problem = text_problem(summary, MAX_SUMMARY)
        if problem:
            raise ArxError("request.invalid", f"summary {problem}",
                           hint=f"send a summary of valid UTF-8, at most {MAX_SUMMARY} bytes, without NUL characters")
        with self._lock:
            known = self._keys.get(key)
            if known is not None:
                call = self._calls.get(known)
                if call is None:
                    raise ArxError("call.closed", f"call {known} is closed", call_id=known)
                if (call["connector"], call["action"], call["declared_risk"]) != (connector, action, risk):
                    raise ArxError("request.conflict", f"idempotency_key {key!r} was used for a different call")
                return dict(call)
            d = m.decide(connector, action, risk)
            now = _now()
            call = {"id": str(uuid.uuid4()), "agent_id": self.agent, "connector": connector, "action": action,
                    "declared_risk": risk, "risk": d.risk, "idempotency_key": key, "summary": summary,
                    "created_at": format_time(now), "outcome": ""}
            entries: List[Dict[str, Any]] = [self._entry(call, "drift.detected", dr, now=now) for dr in d.drift]
            if d.refusal:
                call["status"], call["expires_at"] = "refused", format_time(now)
                entries.append(self._entry(call, "credential.refused", {"code": d.refusal, "reason": d.message,
                                                                        "declared_risk": risk, "summary": summary,
                                                                        "idempotency_key": key}, now=now))
            elif d.needs_approval:
                call["status"] = "pending_approval"
                call["expires_at"] = format_time(now + _dt.timedelta(seconds=m.approval_timeout))
                entries.append(self._entry(call, "call.requested", {"declared_risk": risk, "summary": summary,
                                                                    "idempotency_key": key}, now=now))
                entries.append(self._entry(call, "approval.requested", {"approvers": list(m.approvers),
                                                                        "delegates": list(m.delegates),
                                                                        "expires_at": call["expires_at"]}, now=now))
            else:
                call["status"] = "approved"
                call["expires_at"] = format_time(now + _dt.timedelta(seconds=m.call_ttl(connector, action)))
                entries.append(self._entry(call, "credential.issued", {"declared_risk": risk, "summary": summary,
                                                                       "idempotency_key": key,
                                                                       "expires_at": call["expires_at"]}, now=now))
                call["credential"] = self._credential(call)
            self._append(entries)
            if d.refusal:
                raise ArxError(d.refusal, d.message, call_id=call["id"], status=0)
            self._calls[call["id"]] = call
            self._keys[key] = call["id"]
            return dict(call)

    def wait(self, call_id: str, cancel: Optional[threading.Event] = None) -> Dict[str, Any]:
        """Decide a pending call as ARX_LOCAL_APPROVE says; record the local decision."""
        with self._lock:
            call = self._calls.get(call_id)
            if call is None:
                raise ArxError("call.not_found", f"no open local call {call_id}", call_id=call_id)
            if call["status"] != "pending_approval":
                return dict(call)
            snapshot = dict(call)
        if self.approve == APPROVE_ALLOW:
            granted, reason = True, "ARX_LOCAL_APPROVE=allow"
        elif self.approve == APPROVE_DENY:
            granted, reason = False, "ARX_LOCAL_APPROVE=deny"
        else:
            # The summary is the agent's text, shown on a person's terminal:
            # inert, so it cannot clear the screen or rewrite the question.
            q = f"ARX local-only mode: approve {snapshot['risk']} risk call {snapshot['connector']} {snapshot['action']}"
            if snapshot["summary"]:
                q += f" ({_inert.text(snapshot['summary'])})"
            try:
                granted, reason = self.ask(q + "? [y/N] ", cancel), "answered on the terminal"
            except OSError as err:
                granted = False
                reason = f"no terminal to ask on ({err.strerror or err}); set ARX_LOCAL_APPROVE=allow or deny"
            if cancel is not None and cancel.is_set():
                return snapshot
        who = "local:" + _user()
        decision = {"local": True, "mode": self.approve, "approver": who, "reason": reason}
        with self._lock:
            if call["status"] != "pending_approval":  # withdrawn meanwhile
                return dict(call)
            now = _now()
            if not granted:
                self._append([self._entry(call, "approval.denied", decision, actor=who, now=now)])
                call["status"], call["completed_at"] = "denied", format_time(now)
                self._calls.pop(call_id, None)
                raise ArxError("call.denied", f"call {call_id} was denied in local-only mode: {reason}", call_id=call_id)
            m = self.manifest()
            expires = format_time(now + _dt.timedelta(seconds=m.call_ttl(call["connector"], call["action"])))
            # As the runtime writes it, with who approved it.
            issued = {"declared_risk": call["declared_risk"], "summary": call["summary"],
                      "idempotency_key": call["idempotency_key"], "expires_at": expires, "approved_by": who}
            self._append([self._entry(call, "approval.granted", decision, actor=who, now=now),
                                            self._entry(call, "credential.issued", issued, now=now)])
            call["status"], call["expires_at"] = "approved", expires
            call["credential"] = self._credential(call)
            return dict(call)

    def complete(self, call_id: str, outcome: str, error: str, duration_ms: int) -> Dict[str, Any]:
        """Record the end of a call: call.completed, or approval.withdrawn while it waited."""
        with self._lock:
            call = self._calls.get(call_id)
            if call is None:
                raise ArxError("call.not_found", f"no open local call {call_id}", call_id=call_id)
            now = _now()
            data: Dict[str, Any] = {"outcome": outcome, "error": error, "duration_ms": max(int(duration_ms), 0)}
            typ, status = "call.completed", "completed" if outcome == "success" else "failed"
            if call["status"] == "pending_approval":
                typ, status = "approval.withdrawn", "failed"
            elif format_time(now) >= call["expires_at"]:
                data["late"] = True
            self._append([self._entry(call, typ, data, now=now)])
            call.update(status=status, outcome=outcome, completed_at=format_time(now))
            call.pop("credential", None)
            self._calls.pop(call_id, None)
            self._keys.pop(call["idempotency_key"], None)
            return dict(call)

    def _append(self, entries: List[Dict[str, Any]]) -> None:
        # Fail closed: a call whose entry cannot be written does not happen.
        try:
            append_local_record(self.file, entries)
        except (OSError, CanonicalError) as err:
            raise ArxError("record.unavailable", f"local record {self.file}: {err}",
                           f"check it with `arx record verify {self.record_dir}`") from None

    @staticmethod
    def _credential(call: Dict[str, Any]) -> Dict[str, Any]:
        # Not a JWT: "local." and random hex, so nobody takes it for one ARX issued.
        return {"token": CREDENTIAL_PREFIX + secrets.token_hex(16), "type": "Bearer", "expires_at": call["expires_at"]}


def record_unreachable(record_dir: str, agent_id: str, base_url: str, connector: str, action: str, risk: str,
                       summary: str, key: str, error: str) -> str:
    """Record a call that was not made because ARX was unreachable; return the file."""
    name = re.sub(r"[^A-Za-z0-9._-]", "_", agent_id or "unknown-agent")
    path = os.path.join(record_dir, name + ".jsonl")
    append_local_record(path, [{
        "time": _now(), "agent": agent_id, "type": "call.unreachable", "call": "", "connector": connector,
        "action": action, "risk": risk, "actor": "agent:" + agent_id,
        "data": {"declared_risk": risk, "summary": summary, "idempotency_key": key, "server": base_url, "error": error[:1024]},
    }])
    return path
