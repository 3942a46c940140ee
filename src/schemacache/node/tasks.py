"""Stopping background tasks reliably."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

RECANCEL_INTERVAL = 0.2
"""Seconds between repeated cancellations of a task that has not ended yet."""


async def cancel_and_wait(tasks: Iterable[asyncio.Task[Any]]) -> None:
    """Cancel ``tasks`` and wait until every one has ended.

    A cancellation can be lost when it races with a result (``asyncio.wait_for``
    before Python 3.12 may return the result and drop the cancellation), so a
    task still running after :data:`RECANCEL_INTERVAL` is cancelled again.
    """
    pending = {t for t in tasks if not t.done()}
    for task in pending:
        task.cancel()
    while pending:
        _, pending = await asyncio.wait(pending, timeout=RECANCEL_INTERVAL)
        for task in pending:
            task.cancel()
