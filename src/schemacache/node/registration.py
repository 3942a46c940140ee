"""The node's registration in the registry: one lease, kept alive.

``schemacache nodes`` and ``apply --wait`` find nodes through these
registrations; a node that stops revokes its own, one that dies lets it
expire after ``node_ttl`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from ..registry import NodeLease, Registry

log = logging.getLogger(__name__)

REFRESH_FLOOR = 0.05
"""Shortest pause between two refreshes of the lease, in seconds."""


class Registration:
    """Keeps one node registered under its admin URL.

    :param registry: where the node registers.
    :param name: the node's name.
    :param ttl: seconds the registration outlives the last refresh; refreshed
        every ``ttl``/3.
    """

    def __init__(self, registry: Registry, name: str, ttl: float):
        self.registry = registry
        self.name = name
        self.ttl = ttl
        self.admin_url: str | None = None
        self._lease: NodeLease | None = None

    async def keep(self, admin_url: str) -> None:
        """Register under ``admin_url`` and refresh until cancelled; a failed
        registration or refresh is logged and tried again."""
        self.admin_url = admin_url
        interval = max(REFRESH_FLOOR, self.ttl / 3)
        while True:
            try:
                if self._lease is None:
                    self._lease = await self.registry.register_node(self.name, admin_url,
                                                                    ttl=self.ttl)
                else:
                    await self._lease.refresh()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("node registration failed (%s: %s); retrying", type(exc).__name__,
                            exc)
                self._lease = None
            await asyncio.sleep(interval)

    async def revoke(self, wait_seconds: float) -> None:
        """Remove the registration (waiting at most ``wait_seconds``; a failure
        leaves it to expire)."""
        lease, self._lease = self._lease, None
        if lease is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(wait_seconds):
                    await lease.revoke()
