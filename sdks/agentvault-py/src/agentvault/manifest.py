"""The agent's manifest, as local-only mode reads it, and the decisions it makes.

Python's standard library has no YAML parser, and a second, hand-written
parser of ``job_description.yaml`` would sooner or later accept what the
server refuses. So local-only mode reads the manifest as the ARX server
parsed it: ``arx manifest export FILE`` prints the parsed manifest (after
strict validation, with its defaults) as JSON, with the SHA-256 of the YAML
it came from. :func:`load_manifest` finds it, in this order:

1. ``manifests/job_description.json`` beside the YAML (written with
   ``arx manifest export manifests/job_description.yaml -o manifests/job_description.json``),
   used only while its ``manifest_hash`` matches the YAML, so it is never stale;
2. otherwise it runs ``arx manifest export`` itself, with ``arx`` from
   ``ARX_BIN``, else the one the platform wheel installed beside the
   interpreter, else ``PATH``;
3. otherwise it fails with an error that says how to get either.

:meth:`Manifest.decide` applies the runtime's rules (Go: ``manifest.Decide``);
``testdata/vectors/decisions.json`` in the ARX repository pins them for both.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sysconfig
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional

from .errors import ArxError

__all__ = ["Manifest", "Decision", "load_manifest", "parse_duration", "RISKS", "DEFAULT_MANIFEST", "EXPORT_FORMAT"]

#: Where local-only mode looks for the manifest (``ARX_MANIFEST`` overrides).
DEFAULT_MANIFEST = "manifests/job_description.yaml"

#: The ``format`` of ``arx manifest export``'s document.
EXPORT_FORMAT = "arx.dev/v1/manifest-export"

#: The risks, in increasing order.
RISKS = {"low": 1, "medium": 2, "high": 3}

_DURATION_RE = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(ns|us|µs|μs|ms|s|m|h)")  # [0-9]: \d takes any script's digits
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(s: str) -> float:
    """Parse a Go duration string ("15m", "2m30s", "1.5s") into seconds."""
    if s in ("", "0"):
        return 0.0
    pos, total = 0, 0.0
    for m in _DURATION_RE.finditer(s):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if pos != len(s):
        raise ValueError(f"invalid duration {s!r}")
    return total


@dataclass
class Decision:
    """What the manifest says of one call (see :meth:`Manifest.decide`)."""

    refusal: str  # an error code, "" when the call may go on
    message: str
    risk: str  # the effective risk
    drift: List[Dict[str, Any]] = field(default_factory=list)  # data of drift.detected entries
    needs_approval: bool = False


@dataclass
class Action:
    name: str
    risk: str
    max_duration: float  # seconds; 0: the budget's


@dataclass
class Manifest:
    """A parsed manifest, as ``arx manifest export`` describes it."""

    name: str
    owner: str
    connectors: Dict[str, Dict[str, Action]]
    approvers: List[str]
    delegates: List[str]
    approval_timeout: float  # seconds
    max_call_duration: float  # seconds
    on_drift: str
    manifest_hash: str = ""
    source: str = ""

    @classmethod
    def from_export(cls, doc: Mapping[str, Any], source: str = "") -> "Manifest":
        """Read the document ``arx manifest export`` prints."""
        if not isinstance(doc, Mapping) or doc.get("format") != EXPORT_FORMAT or not isinstance(doc.get("manifest"), Mapping):
            raise ArxError("manifest.invalid", f"{source or 'the manifest export'} is not the output of `arx manifest export`",
                           "write it with `arx manifest export manifests/job_description.yaml -o manifests/job_description.json`")
        m = doc["manifest"]
        try:
            connectors: Dict[str, Dict[str, Action]] = {}
            for c in m["scope"]["connectors"]:
                connectors[c["name"]] = {a["name"]: Action(a["name"], a["risk"], parse_duration(a.get("max_duration", "")))
                                         for a in c["actions"]}
            approval = m.get("approval") or {}
            budget = m.get("budget") or {}
            return cls(name=m["agent"]["name"], owner=m["agent"].get("owner", ""), connectors=connectors,
                       approvers=list(approval.get("approvers") or []), delegates=list(approval.get("delegates") or []),
                       approval_timeout=parse_duration(approval.get("timeout", "") or "15m"),
                       max_call_duration=parse_duration(budget.get("max_call_duration", "") or "5m"),
                       on_drift=m.get("on_drift") or "record", manifest_hash=doc.get("manifest_hash", ""), source=source)
        except (KeyError, TypeError, ValueError) as err:
            raise ArxError("manifest.invalid", f"{source or 'the manifest export'} is malformed: {err!r}",
                           "export it again with `arx manifest export`") from None

    def decide(self, connector: str, action: str, declared: str) -> Decision:
        """Apply the manifest's scope to a call, by the runtime's rules.

        A connector not on the manifest is refused, whatever ``on_drift``
        says. An action not declared for a declared connector is drift (or,
        under ``on_drift: refuse``, refused). The effective risk is the
        higher of the declared risk and the manifest's; declaring lower is
        drift. A call needs approval when its effective risk is high, or when
        it drifts under ``on_drift: require_approval``.
        """
        d = Decision(refusal="", message="", risk=declared)
        actions = self.connectors.get(connector)
        if actions is None:
            d.refusal = "manifest.connector_not_declared"
            d.message = f"connector {json.dumps(connector)} is not on the manifest of agent {self.name}"
            return d
        act = actions.get(action)
        if act is None:
            if self.on_drift == "refuse":
                d.refusal = "manifest.action_not_declared"
                d.message = f"action {json.dumps(action)} is not declared for connector {json.dumps(connector)}"
                return d
            d.drift.append({"rule": "undeclared_action", "policy": self.on_drift,
                            "facts": {"connector": connector, "action": action}})
        else:
            if RISKS[act.risk] > RISKS[declared]:
                d.risk = act.risk
                d.drift.append({"rule": "risk_underdeclared", "policy": self.on_drift,
                                "facts": {"declared": declared, "manifest": act.risk}})
        d.needs_approval = RISKS[d.risk] >= RISKS["high"] or (bool(d.drift) and self.on_drift == "require_approval")
        return d

    def call_ttl(self, connector: str, action: str) -> float:
        """How long a credential of the action lives, in seconds."""
        act = self.connectors.get(connector, {}).get(action)
        if act is not None and act.max_duration > 0:
            return act.max_duration
        return self.max_call_duration or 300.0


def _yaml_hash(path: str) -> Optional[str]:
    try:
        with open(path, "rb") as f:
            return "sha256:" + hashlib.sha256(f.read()).hexdigest()
    except OSError:
        return None


def bundled_arx() -> Optional[str]:
    """The arx binary a platform wheel installed beside this interpreter
    (its scripts directory, as for the ``arx`` command), or None."""
    exe = "arx.exe" if os.name == "nt" else "arx"
    schemes = [None]
    user = getattr(sysconfig, "get_preferred_scheme", lambda _: None)("user") or (os.name + "_user")
    schemes.append(user)
    for scheme in schemes:
        try:
            scripts = sysconfig.get_path("scripts", scheme) if scheme else sysconfig.get_path("scripts")
        except KeyError:
            continue
        if scripts:
            path = os.path.join(scripts, exe)
            if os.path.isfile(path) and os.access(path, os.X_OK):
                return path
    return None


def _arx_binary(arx_bin: Optional[str]) -> Optional[str]:
    """ARX_BIN (or the argument), else the arx the wheel bundles, else PATH."""
    if arx_bin:
        return arx_bin
    env = os.environ.get("ARX_BIN", "").strip()
    if env:
        return env
    return bundled_arx() or shutil.which("arx")


def load_manifest(path: Optional[str] = None, arx_bin: Optional[str] = None) -> Manifest:
    """Find and read the manifest for local-only mode (see the module's doc)."""
    path = path or DEFAULT_MANIFEST
    if path.endswith(".json"):
        return _read_export(path)
    exported = os.path.splitext(path)[0] + ".json"
    yaml_hash = _yaml_hash(path)
    if yaml_hash is None:
        raise ArxError("manifest.invalid", f"local-only mode needs the agent's manifest, and {path} cannot be read",
                       "run from the agent's directory, or set ARX_MANIFEST to its job_description.yaml")
    stale = False
    if os.path.exists(exported):
        m = _read_export(exported)
        if m.manifest_hash == yaml_hash:
            return m
        stale = True
    binary = _arx_binary(arx_bin)
    if binary:
        try:
            proc = subprocess.run([binary, "manifest", "export", path], capture_output=True, timeout=60, check=False)
        except OSError as err:
            raise ArxError("manifest.invalid", f"cannot run {binary}: {err}", "set ARX_BIN to the arx binary") from None
        if proc.returncode != 0:
            msg = proc.stderr.decode("utf-8", "replace").strip() or f"exit status {proc.returncode}"
            raise ArxError("manifest.invalid", f"{path} is not a valid manifest:\n{msg}", f"run `arx manifest lint {path}`")
        try:
            doc = json.loads(proc.stdout)
        except json.JSONDecodeError:
            raise ArxError("manifest.invalid", f"`{binary} manifest export` printed something that is not JSON",
                           "set ARX_BIN to the arx binary") from None
        return Manifest.from_export(doc, path)
    if stale:
        raise ArxError("manifest.invalid", f"{exported} was exported from another version of {path}",
                       f"run `arx manifest export {path} -o {exported}` again (or put arx on PATH, or set ARX_BIN)")
    raise ArxError("client.arx_not_found",
                   f"local-only mode reads {path} through the arx binary, and this installation has none "
                   f"(no arx beside the interpreter, on PATH or in ARX_BIN, and no {exported})",
                   "install the agentvault wheel for your platform (it bundles arx), put arx on PATH, set ARX_BIN, "
                   f"or run `arx manifest export {path} -o {exported}` where arx is")


def _read_export(path: str) -> Manifest:
    try:
        with open(path, "rb") as f:
            doc = json.load(f)
    except OSError as err:
        raise ArxError("manifest.invalid", f"cannot read {path}: {err.strerror}",
                       "set ARX_MANIFEST to the agent's job_description.yaml") from None
    except json.JSONDecodeError as err:
        raise ArxError("manifest.invalid", f"{path} is not JSON: {err}", "export it again with `arx manifest export`") from None
    return Manifest.from_export(doc, path)
