"""Record entries: their canonical encoding, leaf hash, and local record files.

The same entry always has the same bytes. The encoding is the one the ARX
server and the Go SDK use (package ``record`` of the ARX repository):
canonical JSON after RFC 8785, restricted to objects, arrays, strings,
booleans, null and integers in [-(2**53-1), 2**53-1]; keys sorted by their
UTF-16 code units; no insignificant whitespace; strings escaped only where
JSON requires it (``\\b \\t \\n \\f \\r \\" \\\\`` and ``\\u00xx`` for other
control characters). An entry's fields are written in this order:
``action actor agent call connector data index prev risk time type``.

The leaf hash is RFC 6962's: SHA-256(0x00 || entry).

``testdata/vectors/canonical.json`` in the ARX repository holds entries with
their canonical bytes and hashes; the Go and the Python tests both check
them, so the two implementations never drift apart.

A local record (local-only mode, or calls made while ARX was unreachable) is
a JSONL file: one canonical entry per line, ``index`` counting the lines
from 0, ``prev`` the leaf hash of the same agent's previous line.
:func:`append_local_record` appends to one under an exclusive ``flock``, the
same lock the Go SDK takes, so Go and Python processes can share a file.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import re
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

__all__ = [
    "TIME_FORMAT",
    "MAX_ENTRY_SIZE",
    "CanonicalError",
    "canonical_entry",
    "canonical_json",
    "leaf_hash",
    "parse_entry",
    "format_time",
    "append_local_record",
    "text_problem",
]

#: strftime form of an entry's time: UTC, always six digits of microseconds.
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"

#: The largest encoded entry, in bytes.
MAX_ENTRY_SIZE = 64 << 10

_MAX_SAFE_INT = (1 << 53) - 1
_MAX_DEPTH = 32
# Checked with fullmatch ("$" would also match before a trailing newline),
# and with [0-9], not \d, which takes any script's digits.
_TIME_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z")
_HASH_RE = re.compile(r"[0-9a-fA-F]{64}")
_STRING_FIELDS = ("time", "agent", "prev", "type", "call", "connector", "action", "risk", "actor")
_FIELDS = frozenset(_STRING_FIELDS + ("index", "data"))


class CanonicalError(ValueError):
    """A value that has no canonical encoding, or bytes that are not a canonical entry."""


def _string(s: str) -> str:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        raise CanonicalError("string is not valid Unicode (it holds a lone surrogate)") from None
    # With ensure_ascii=False the standard encoder escapes exactly what
    # RFC 8785 escapes, with lowercase hex.
    return json.dumps(s, ensure_ascii=False)


def _utf16_key(k: str) -> bytes:
    return k.encode("utf-16-be", "surrogatepass")


def _value(v: Any, depth: int, out: List[str]) -> None:
    if depth > _MAX_DEPTH:
        raise CanonicalError("data nested too deeply")
    if v is None:
        out.append("null")
    elif v is True:
        out.append("true")
    elif v is False:
        out.append("false")
    elif isinstance(v, str):
        out.append(_string(v))
    elif isinstance(v, int):
        if v > _MAX_SAFE_INT or v < -_MAX_SAFE_INT:
            raise CanonicalError(f"integer {v} out of range")
        out.append(str(int(v)))
    elif isinstance(v, float):
        if v != v or v in (float("inf"), float("-inf")) or not v.is_integer() or abs(v) > _MAX_SAFE_INT:
            raise CanonicalError(f"number {v!r} is not a safe integer")
        out.append(str(int(v)))
    elif isinstance(v, Mapping):
        _object(v, depth, out)
    elif isinstance(v, (list, tuple)):
        out.append("[")
        for i, e in enumerate(v):
            if i:
                out.append(",")
            _value(e, depth + 1, out)
        out.append("]")
    else:
        raise CanonicalError(f"unsupported value of type {type(v).__name__}")


def _object(m: Mapping, depth: int, out: List[str]) -> None:
    for k in m:
        if not isinstance(k, str):
            raise CanonicalError(f"object key {k!r} is not a string")
    out.append("{")
    for i, k in enumerate(sorted(m, key=_utf16_key)):
        if i:
            out.append(",")
        out.append(_string(k))
        out.append(":")
        _value(m[k], depth + 1, out)
    out.append("}")


def canonical_json(value: Any) -> bytes:
    """Encode any JSON value canonically (RFC 8785, integers only)."""
    out: List[str] = []
    _value(value, 0, out)
    return "".join(out).encode("utf-8")


def format_time(t: _dt.datetime) -> str:
    """Render a time as entries do: UTC, microseconds, ``Z``."""
    if t.tzinfo is None:
        raise CanonicalError("time has no time zone")
    t = t.astimezone(_dt.timezone.utc)
    return f"{t.year:04d}-{t.month:02d}-{t.day:02d}T{t.hour:02d}:{t.minute:02d}:{t.second:02d}.{t.microsecond:06d}Z"


def canonical_entry(entry: Mapping[str, Any]) -> bytes:
    """Return the canonical bytes of a record entry.

    ``entry`` has the fields ``index`` (int), ``time`` (a canonical time
    string or an aware datetime), ``agent``, ``prev``, ``type``, ``call``,
    ``connector``, ``action``, ``risk``, ``actor`` (strings; missing ones are
    empty) and ``data`` (a mapping; missing is ``{}``).
    """
    typ = entry.get("type", "")
    if not typ:
        raise CanonicalError("entry has no type")
    index = entry.get("index", 0)
    if isinstance(index, bool) or not isinstance(index, int) or index < 0 or index > _MAX_SAFE_INT:
        raise CanonicalError(f"index {index!r} out of range")
    t = entry.get("time", "")
    if isinstance(t, _dt.datetime):
        t = format_time(t)
    fields: Dict[str, str] = {}
    for name in _STRING_FIELDS:
        v = t if name == "time" else entry.get(name, "")
        if not isinstance(v, str):
            raise CanonicalError(f"field {name} is not a string")
        fields[name] = v
    data = entry.get("data")
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise CanonicalError("data is not an object")
    out: List[str] = []
    for key in ("action", "actor", "agent", "call", "connector"):
        out.append(("{" if key == "action" else ",") + f'"{key}":' + _string(fields[key]))
    out.append(',"data":')
    _object(data, 1, out)
    out.append(f',"index":{index}')
    for key in ("prev", "risk", "time", "type"):
        out.append(f',"{key}":' + _string(fields[key]))
    out.append("}")
    b = "".join(out).encode("utf-8")
    if len(b) > MAX_ENTRY_SIZE:
        raise CanonicalError(f"entry of {len(b)} bytes exceeds {MAX_ENTRY_SIZE}")
    return b


def text_problem(s: str, limit: int) -> str:
    """What makes s unfit to store as a text field of at most limit bytes
    (a call's summary, an error, a reason), or "" when it is fit: Go's
    record.TextProblem, held to it by testdata/vectors/asks.json. Controls
    are fit: they are stored, and shown inert."""
    if len(s.encode("utf-8", "surrogatepass")) > limit:
        return f"is longer than {limit} bytes"
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid UTF-8"
    if "\x00" in s:
        return "holds a NUL character"
    return ""


def leaf_hash(data: bytes) -> str:
    """The RFC 6962 leaf hash of an encoded entry, as lowercase hex."""
    return hashlib.sha256(b"\x00" + data).hexdigest()


def _no_float(s: str) -> Any:
    raise CanonicalError(f"number {s} is not an integer")


def _no_constant(s: str) -> Any:
    raise CanonicalError(f"{s} is not JSON")


def parse_entry(data: bytes) -> Dict[str, Any]:
    """Decode an entry and check that ``data`` is exactly its canonical encoding.

    Raises :class:`CanonicalError` for anything else, as the server's
    verifier does.
    """
    if len(data) > MAX_ENTRY_SIZE:
        raise CanonicalError(f"entry of {len(data)} bytes exceeds {MAX_ENTRY_SIZE}")
    try:
        text = data.decode("utf-8")
        e = json.loads(text, parse_float=_no_float, parse_constant=_no_constant)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise CanonicalError(f"malformed entry: {err}") from None
    if not isinstance(e, dict):
        raise CanonicalError("malformed entry: not an object")
    if set(e) != _FIELDS:
        missing, extra = _FIELDS - set(e), set(e) - _FIELDS
        raise CanonicalError(f"malformed entry: missing {sorted(missing)} unknown {sorted(extra)}")
    for name in _STRING_FIELDS:
        if not isinstance(e[name], str):
            raise CanonicalError(f"malformed entry: {name} is not a string")
    if not isinstance(e["data"], dict):
        raise CanonicalError("malformed entry: data is not an object")
    if not _TIME_RE.fullmatch(e["time"]):
        raise CanonicalError(f"malformed entry: time {e['time']!r} is not in the canonical format")
    try:
        _dt.datetime.strptime(e["time"], TIME_FORMAT)
    except ValueError:
        raise CanonicalError(f"malformed entry: time {e['time']!r} is not a time") from None
    if e["prev"] and not _HASH_RE.fullmatch(e["prev"]):
        raise CanonicalError(f"malformed entry: prev {e['prev']!r} is not 64 hex digits")
    if canonical_entry(e) != data:
        raise CanonicalError("entry is not in canonical form")
    return e


# Local record files.


def _lock(fd: int) -> None:
    try:
        import fcntl
    except ImportError:
        raise OSError("local records need a Unix system (fcntl.flock)") from None
    fcntl.flock(fd, fcntl.LOCK_EX)  # retried by Python on EINTR (PEP 475)


def _unlock(fd: int) -> None:
    import fcntl

    fcntl.flock(fd, fcntl.LOCK_UN)


def _head(fd: int, agents: Iterable[str]) -> Tuple[int, Dict[str, str]]:
    """The file's next index, and the leaf hash of each agent's last entry."""
    heads = {a: "" for a in agents}
    size = os.fstat(fd).st_size
    if size == 0:
        return 0, heads
    n = min(size, MAX_ENTRY_SIZE + 1)
    tail = os.pread(fd, n, size - n)
    if not tail.endswith(b"\n"):
        raise CanonicalError("the file ends in a partial line: a writer was interrupted; move the file aside to start a new chain")
    tail = tail[:-1]
    start = tail.rfind(b"\n") + 1
    if start == 0 and n < size:
        raise CanonicalError("the last line is longer than an entry may be")
    line = tail[start:]
    try:
        last = parse_entry(line)
    except CanonicalError as err:
        raise CanonicalError(f"the last line is not a record entry: {err}") from None
    if set(heads) == {last["agent"]}:
        heads[last["agent"]] = leaf_hash(line)
        return last["index"] + 1, heads
    # Another agent wrote last: find each agent's last entry.
    with os.fdopen(os.dup(fd), "rb") as f:
        f.seek(0)
        for raw in f:
            raw = raw.rstrip(b"\n")
            try:
                e = parse_entry(raw)
            except CanonicalError:
                continue
            if e["agent"] in heads:
                heads[e["agent"]] = leaf_hash(raw)
    return last["index"] + 1, heads


def append_local_record(path: str, entries: List[Dict[str, Any]]) -> None:
    """Append entries to the local record at ``path``, chained and numbered.

    Sets each entry's ``index`` and ``prev``. An exclusive ``flock`` on the
    file is held from reading its last entry until the new ones are written
    and synced, so several processes (Go or Python) can append to one file;
    the entries are durable when this returns.
    """
    if not entries:
        return
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        _lock(fd)
        try:
            nxt, heads = _head(fd, [e.get("agent", "") for e in entries])
            buf = []
            for e in entries:
                e["index"] = nxt
                e["prev"] = heads[e.get("agent", "")]
                b = canonical_entry(e)
                heads[e.get("agent", "")] = leaf_hash(b)
                buf.append(b + b"\n")
                nxt += 1
            data = b"".join(buf)
            while data:
                n = os.write(fd, data)
                data = data[n:]
            os.fsync(fd)
            if nxt == len(entries):  # a new file: make its name durable too
                try:
                    dfd = os.open(directory, os.O_RDONLY)
                    try:
                        os.fsync(dfd)
                    finally:
                        os.close(dfd)
                except OSError:
                    pass
        finally:
            _unlock(fd)
    finally:
        os.close(fd)


def read_local_record(path: str) -> List[bytes]:
    """The lines of a local record file, without their newlines."""
    with open(path, "rb") as f:
        data = f.read()
    if not data:
        return []
    return data.rstrip(b"\n").split(b"\n") if data.endswith(b"\n") else data.split(b"\n")


def verify_lines(lines: List[bytes]) -> List[str]:
    """Check lines as ``arx record verify`` does; return the problems found."""
    problems: List[str] = []
    heads: Dict[str, str] = {}
    for pos, line in enumerate(lines):
        try:
            e = parse_entry(line)
        except CanonicalError as err:
            problems.append(f"entry {pos}: malformed: {err}")
            continue
        if e["index"] != pos:
            problems.append(f"entry {pos}: index {e['index']}")
        want: Optional[str] = heads.get(e["agent"], "")
        if e["prev"] != want:
            problems.append(f"entry {pos}: chain_broken")
        heads[e["agent"]] = leaf_hash(line)
    return problems
