"""Text ARX did not write, made harmless for a terminal (Go's internal/inert).

An agent's summary, an error an upstream returned, a name: shown on a
person's terminal, nothing in it may move the cursor, clear the screen, set
a window title, hide what follows or reorder it. ``text`` escapes, visibly
and in Go's notation, every character a terminal would act on rather than
show: C0 controls (newlines and tabs too), DEL, C1 controls, Unicode format
characters (bidirectional overrides and isolates, zero-width characters),
line and paragraph separators, and lone surrogates. Everything else is left
as it is. testdata/vectors/inert.json holds this and the Go code to the same
output.
"""

from __future__ import annotations

import unicodedata

__all__ = ["text"]

_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _active(ch: str) -> bool:
    o = ord(ch)
    if o < 0x20 or o == 0x7F or 0x80 <= o <= 0x9F:
        return True
    if o < 0xA0:
        return False
    if 0xD800 <= o <= 0xDFFF:
        return True  # a lone surrogate: not a character a terminal can show
    return unicodedata.category(ch) in ("Cf", "Zl", "Zp")


def text(s: str) -> str:
    """Return s with everything a terminal would act on escaped."""
    if not any(_active(ch) for ch in s):
        return s
    out = []
    for ch in s:
        if not _active(ch):
            out.append(ch)
            continue
        o = ord(ch)
        if ch in _SHORT:
            out.append(_SHORT[ch])
        elif o < 0x80:
            out.append(f"\\x{o:02x}")
        elif 0xDC80 <= o <= 0xDCFF:
            out.append(f"\\x{o - 0xDC00:02x}")  # a byte that was not UTF-8 (surrogateescape), as Go shows it
        elif o <= 0xFFFF:
            out.append(f"\\u{o:04x}")
        else:
            out.append(f"\\U{o:08x}")
    return "".join(out)
