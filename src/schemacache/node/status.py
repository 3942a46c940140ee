"""What a running node reports of itself: its state word, readiness, health,
lag, its applied state as a snapshot, and the ``/v1/status`` document.

:class:`NodeStatus` only reads the node's parts; the :class:`~schemacache.node.Node`
answers through it once started.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from .monitor import Monitor
from .reconciler import Reconciler
from .repair import Repairer
from .state import StateStore
from .syncer import Syncer

STATES = ("syncing", "ready", "repairing", "degraded", "disconnected")
"""Every word :meth:`NodeStatus.state` answers."""


def _iso(timestamp: float) -> str:
    """``timestamp`` (seconds since the epoch) as ISO 8601 UTC, milliseconds, ``Z``."""
    text = datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


class NodeStatus:
    """The reading side of a running node, over its parts.

    :param name: the node's name.
    :param reconciler: desired and applied state, failures, parked keys.
    :param syncer: the watch loop (whether it is connected).
    :param repairer: repairs (whether one runs, the last one, rewinds).
    :param monitor: the registry revision the node knows the schema at.
    :param store: the state store (whether it commits).
    :param ready: set once the initial sync is done.
    """

    def __init__(self, name: str, *, reconciler: Reconciler, syncer: Syncer,
                 repairer: Repairer, monitor: Monitor, store: StateStore,
                 ready: asyncio.Event):
        self.name = name
        self._rec = reconciler
        self._syncer = syncer
        self._repairer = repairer
        self._monitor = monitor
        self._store = store
        self._ready = ready

    def store_error(self) -> str | None:
        """Why the state store cannot commit (``None`` while it can)."""
        return self._store.failing

    def is_ready(self) -> bool:
        """True once the initial sync is done, while the state store commits."""
        return self._ready.is_set() and self.store_error() is None

    def state(self) -> str:
        """One of :data:`STATES`, the first that holds of: ``disconnected``
        from the registry, ``syncing`` before ready, ``degraded`` while the
        state store cannot commit, ``repairing``, ``degraded`` with failed or
        parked keys, else ``ready``."""
        rec = self._rec
        if self._syncer.disconnected_since is not None:
            return "disconnected"
        if not self._ready.is_set():
            return "syncing"
        if self.store_error() is not None:
            return "degraded"  # nothing new reaches the handler until it commits
        if self._repairer.running:
            return "repairing"
        if rec.failures or rec.blocked():
            return "degraded"
        return "ready"

    def status(self) -> dict[str, Any]:
        """The ``/v1/status`` document."""
        rec = self._rec
        repair = self._repairer.info()
        if repair["last_finished"] is not None:
            repair["last_finished"] = _iso(repair["last_finished"])
        applied = rec.settled_revision
        registry_rev = self._monitor.known_registry_revision()
        store_error = self.store_error()
        return {
            "node": self.name,
            "state": self.state(),
            "settled_revision": applied,
            # The same figure under its first name, which clients and the
            # schemacache_applied_revision metric still use.
            "applied_revision": applied,
            "received_revision": rec.received_revision,
            "registry_revision": registry_rev,
            "lag": max(0, registry_rev - applied),
            "registry": {"cluster_id": rec.cluster_id, "rewinds": self._repairer.rewinds},
            "state_store": {"ok": store_error is None, "error": store_error},
            "cache": {"size": rec.cache.size, "digest": rec.cache.digest()},
            "failures": rec.failure_list(),
            "blocked": rec.blocked(),
            "repair": repair,
        }

    def cache_snapshot(self) -> dict[str, Any]:
        """``{"applied_revision": R, "resources": [envelopes]}``."""
        rec = self._rec
        return {"applied_revision": rec.applied_revision,
                "resources": [r.to_dict() for r in rec.cache.list()]}


async def wait_for_revision(reconciler: Reconciler, revision: int,
                            timeout: float | None) -> bool:  # noqa: ASYNC109 - public API
    """Wait until ``reconciler``'s settled revision is at least ``revision``.

    :param timeout: seconds to wait (``None``: forever).
    :returns: True once reached, False when ``timeout`` ran out first.
    """
    reached = reconciler.reached(revision)
    if reached is None:
        return True
    try:
        async with asyncio.timeout(timeout):
            await reached
    except TimeoutError:
        return False
    finally:
        if not reached.done() or reached.cancelled():
            reconciler.progress.discard(reached)
    return True
