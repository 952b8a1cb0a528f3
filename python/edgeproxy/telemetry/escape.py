"""Free text made safe for one line of a text log: control characters escaped.

A client writes some of what gets logged (the ``model`` it asks for, an error it provoked). In
the text format a raw newline or carriage return there would start what looks like a new log
line, forged by the client. ``escape_controls`` turns every C0/C1 control character, DEL and the
Unicode line/paragraph separators into a visible escape (``\\n``, ``\\x1b``, ``\\u2028``).
"""

from __future__ import annotations

import re

_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
# Whatever makes a value need quoting or escaping: whitespace, quotes, "=", control characters.
_SPECIAL = re.compile('[\\s"=\x00-\x1f\x7f-\x9f\u2028\u2029]')
_PLAIN = (int, float, bool, type(None))  # their str() needs neither


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def escape_controls(text: str) -> str:
    """``text`` with its control characters escaped (unchanged, same object, if it has none)."""
    if _CONTROL.search(text) is None:
        return text
    return _CONTROL.sub(_escape, text)


def needs_quoting(text: str) -> bool:
    """Whether ``text`` holds whitespace, a quote, ``=`` or a control character."""
    return _SPECIAL.search(text) is not None


def text_value(value: object) -> str:
    """A ``key=value`` log field's value: escaped, and quoted when it holds a space, a quote or
    an ``=`` (so a value cannot pose as further fields); a list's items joined by commas."""
    if type(value) in _PLAIN:
        return str(value)
    if isinstance(value, list | tuple):
        text = ",".join(str(item) for item in value)
    else:
        text = value if isinstance(value, str) else str(value)
    if text and _SPECIAL.search(text) is None:
        return text
    return '"' + escape_controls(text.replace("\\", "\\\\").replace('"', '\\"')) + '"'
