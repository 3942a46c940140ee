"""No key is ever stuck, and log lines cannot be forged (issue 7, items 3 and 5).

Whatever a handler raises -- an exception whose ``__str__`` and ``__repr__``
raise, one that is no ``Exception`` at all, one whose text holds newlines and
terminal escapes -- is a failed attempt with a text, retried by the normal
rules, recorded when exhausted, and repaired once the handler recovers.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from factories import group, measure
from schemacache.node import RetryPolicy
from schemacache.node.text import OneLineFormatter, error_text, safe
from schemacache.registry import Registry
from test_node_core import DEADLINE, RecordingHandler, new_node, reg, until

__all__ = ["reg"]

RETRY = RetryPolicy(max_attempts=3, base=0.01, cap=0.02)


class Unprintable(RuntimeError):
    """An exception whose text cannot be rendered."""

    def __str__(self) -> str:
        raise ValueError("no text for you")

    def __repr__(self) -> str:
        raise ValueError("no repr either")


class NotAnException(BaseException):
    """Raised by a handler, yet no ``Exception``."""


FORGED = "disk full\n2026-12-01 00:00:00 INFO forged: all good\r\x1b[2Jcleared"


def test_error_text_never_raises_and_escapes() -> None:
    assert error_text(Unprintable()).startswith("Unprintable: <exception text unavailable")
    text = error_text(RuntimeError(FORGED))
    assert "\n" not in text and "\r" not in text and "\x1b" not in text
    assert text == "RuntimeError: disk full\\n2026-12-01 00:00:00 INFO forged: all good\\r" \
                   "\\x1b[2Jcleared"
    assert safe("a\u2028b\x85c\td") == "a\\u2028b\\x85c\\td"
    assert len(error_text(RuntimeError("x" * 5000))) == 2000


@pytest.mark.parametrize("exc", [Unprintable(), NotAnException("odd"), RuntimeError(FORGED)],
                         ids=["str-raises", "base-exception", "forged-lines"])
async def test_any_handler_exception_is_a_failed_attempt_and_repaired(
        reg: Registry, tmp_path: Path, exc: BaseException,
        caplog: pytest.LogCaptureFixture) -> None:
    """The key fails ``max_attempts`` times (every call seen by the handler), gets a
    failure record with a one-line text, and a manual repair applies it once the
    handler works again; every log line of the run is a single line."""
    await reg.put(group("g"))
    bad = "measure/g/bad"
    h = RecordingHandler()
    h.fail[bad] = lambda: exc
    caplog.set_level(logging.INFO, logger="schemacache")
    async with new_node(reg, tmp_path, h, retry=RETRY, repair_backoff_base=60) as node:
        await node.ready(DEADLINE)
        rev = await reg.put(measure("g", "bad"))
        await reg.put(measure("g", "ok"))
        await until(lambda: bool(node.failures()), what="a failure record")
        [record] = node.failures()
        assert (record["key"], record["revision"], record["attempts"]) == (bad, rev, 3)
        assert record["last_error"] == error_text(exc)
        assert "\n" not in record["last_error"]
        assert len(h.calls_for(bad, "apply")) == 3
        assert node.cache.get("measure/g/ok") is not None  # others were not held up
        await until(lambda: node.status()["state"] == "degraded", what="state degraded")
        del h.fail[bad]
        result = await node.repair("manual")
        assert result["outcome"] == "ok", result
        assert node.failures() == []
        entry = node.cache.get(bad)
        assert entry is not None and entry.mod_revision == rev
    formatter = OneLineFormatter("%(levelname)s %(name)s: %(message)s")
    lines = [formatter.format(r) for r in caplog.records]
    assert lines and all("\n" not in line and "\r" not in line for line in lines)
    assert all("\n" not in r.getMessage() for r in caplog.records
               if r.name.startswith("schemacache.node"))
