"""Text that goes into log lines and failure records: never forged, never raising.

A handler's exception and a resource's key come from outside the node.  Their
text is escaped before it reaches a log line (a newline in an error must not
start a forged record), and an exception whose ``__str__`` or ``__repr__``
raises still yields a text, so a failure is always recorded.
"""

from __future__ import annotations

import logging

ERROR_TEXT_LIMIT = 2000
"""Characters of an error's text kept in failure records and alerts."""

_ESCAPES = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F, *range(0x80, 0xA0))}
_ESCAPES.update({0x09: "\\t", 0x0A: "\\n", 0x0D: "\\r", 0x2028: "\\u2028", 0x2029: "\\u2029"})


def safe(text: object) -> str:
    """``text`` with control characters (newline, CR, ESC, C1, line separators) escaped."""
    return str(text).translate(_ESCAPES)


def error_text(exc: BaseException, limit: int = ERROR_TEXT_LIMIT) -> str:
    """``"Type: message"`` of ``exc``, escaped (see :func:`safe`), at most ``limit``
    characters; falls back to the ``repr`` and then to the type alone when the
    exception's own ``__str__`` raises.

    :param limit: characters kept (default :data:`ERROR_TEXT_LIMIT`).
    """
    name = _type_name(exc)
    message = ""
    for render in (str, repr):
        try:
            message = render(exc)
            break
        except Exception:
            message = "<exception text unavailable: its __str__ and __repr__ raise>"
    text = f"{name}: {message}" if message else name
    return safe(text)[:limit]


def _type_name(exc: BaseException) -> str:
    try:
        return str(type(exc).__name__)
    except Exception:
        return "Exception"


class OneLineFormatter(logging.Formatter):
    """A formatter that writes each record on one line: control characters in the
    message are escaped, and a traceback follows on the same line with its line
    breaks escaped."""

    def format(self, record: logging.LogRecord) -> str:
        return safe(super().format(record))
