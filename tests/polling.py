"""Waiting for a condition with a deadline, never a bare sleep."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

POLL_INTERVAL = 0.02
"""Seconds between two checks."""


async def until(check: Callable[[], Any], what: str, within: float,
                interval: float = POLL_INTERVAL) -> Any:
    """Call ``check`` (plain or async) until it returns something truthy; return that.

    :param what: named in the :class:`AssertionError` raised when ``within``
        seconds pass first.
    :param interval: seconds between checks (default :data:`POLL_INTERVAL`).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {within:.0f}s waiting for {what}")
        await asyncio.sleep(interval)
