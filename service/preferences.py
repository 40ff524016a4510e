"""The `Prefer` request header (RFC 7240) and its `wait` preference, as Replicate's sync mode uses it on
`POST /generate`: `Prefer: wait` (the server's longest wait) or `Prefer: wait=N` (seconds)."""

from __future__ import annotations

import re
from collections.abc import Iterable

_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def _split_outside_quotes(text: str, separator: str) -> list[str]:
    """`text` cut at each `separator` that is not inside a quoted string."""
    parts: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for char in text:
        if escaped:
            escaped = False
        elif quoted and char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == separator and not quoted:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    parts.append("".join(current))
    return parts


def preferences(headers: Iterable[str]) -> dict[str, str | None]:
    """Each preference of the `Prefer` headers by lower-case name, with its value (None when it has none; a quoted
    one unquoted); parameters after `;` are dropped; a name given more than once keeps its first value (RFC 7240
    section 2); an element that is not a preference is skipped."""
    found: dict[str, str | None] = {}
    for header in headers:
        for element in _split_outside_quotes(header, ","):
            name, equals, value = _split_outside_quotes(element, ";")[0].partition("=")
            name, value = name.strip(), value.strip()
            if not _TOKEN.fullmatch(name):
                continue
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = re.sub(r"\\(.)", r"\1", value[1:-1])
            found.setdefault(name.lower(), value if equals else None)
    return found


def wait_preference(headers: Iterable[str], longest: int) -> int | None:
    """The seconds to wait for a job's end that `Prefer: wait[=N]` asks for, at most `longest`; None when there is
    nothing to honour: no `wait`, a value that is not whole seconds (ignored, as RFC 7240 says of preferences a
    server cannot apply), a wait of 0, or waits switched off (`longest` 0)."""
    prefer = preferences(headers)
    if "wait" not in prefer:
        return None
    value = prefer["wait"]
    if value is None or value == "":
        seconds = longest
    elif value.isascii() and value.isdigit():
        seconds = min(int(value), longest)
    else:
        return None
    return seconds if seconds > 0 else None
