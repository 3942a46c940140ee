"""Telling a reset or rewound registry from the one a node synced from.

A registry whose cluster id changed was recreated: a ``reset``.  One whose
revision is below what the node received, or whose change at that revision is
another one, was restored from a backup: it was ``rewound``.  Either way the
node repairs from a full listing against what its handler applied.  A rewind
fires ``SchemaRegistryRewound``, recorded durably first (a node killed before
it converged takes the rewind up again when it restarts); the repair that
converges resolves it.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Protocol

from ..errors import CompactedError, RegistryRewoundError
from ..observe.alerts import Alerter
from ..registry import Registry

log = logging.getLogger(__name__)

ALERT_REWOUND = "SchemaRegistryRewound"


class ClusterIdentity(Protocol):
    """The registry the node synced from (``NodeState``): its cluster id
    (``None``: none known yet), kept durably by ``set_cluster_id``."""

    @property
    def cluster_id(self) -> str | None: ...

    def set_cluster_id(self, cluster_id: str) -> None: ...


class RewindRecord(Protocol):
    """The durable record of a registry rewind the node has not converged after
    (the ``StateStore``): ``set_rewound(summary)`` (``None``: converged), then
    ``flush()`` commits it."""

    def set_rewound(self, summary: str | None) -> None: ...

    async def flush(self) -> None: ...


class RewindGuard:
    """Decides whether the registry is still the history a node synced from.

    :param registry: the registry whose identity is checked.
    :param identity: the registry cluster id the node knows.
    :param rewind_record: where a rewind in progress is recorded durably.
    :param alerter: where ``SchemaRegistryRewound`` fires.
    """

    def __init__(self, registry: Registry, identity: ClusterIdentity,
                 rewind_record: RewindRecord, alerter: Alerter):
        self.registry = registry
        self._identity = identity
        self._record = rewind_record
        self.alerter = alerter
        self.rewinds = 0
        """Rewinds of the registry the node converged after."""

    async def check_registry(self) -> str | None:
        """Compare the registry's identity with what the node knows: ``"reset"``
        when its cluster id changed (it was recreated), else ``None``.  A first
        cluster id is adopted."""
        cluster_id = await self.registry.cluster_id()
        if self._is_reset(cluster_id):
            return "reset"
        self.adopt(cluster_id)
        return None

    async def resume_refused(self, exc: CompactedError | RegistryRewoundError) -> str:
        """Take the registry's refusal to resume the node's watch (its history
        from there was compacted away, or it went back: ``exc``); returns the
        reason of the repair that must run before the watch resumes.  A rewind
        is recorded and alerted on at once (see :meth:`note_rewound`)."""
        if isinstance(exc, CompactedError):
            log.warning("the registry cannot resume the watch: %s; repairing from a full "
                        "listing", exc)
            return "compacted"
        await self.note_rewound(exc.revision, exc.seen, diverged=exc.diverged)
        return "rewound"

    async def listing_reason(self, requested: str, cluster_id: str, revision: int,
                             received: int) -> str:
        """What a listing at ``revision`` of registry ``cluster_id``, requested for
        ``requested``, repairs: ``reset`` for a recreated registry, ``rewound`` for
        one below the revision the node ``received`` (noted here, see
        :meth:`note_rewound`) or one a rewind was found in before, else ``requested``."""
        if requested == "reset" or self._is_reset(cluster_id):
            return "reset"
        if revision < received:
            await self.note_rewound(revision, received)
            return "rewound"
        return requested

    def adopt(self, cluster_id: str) -> None:
        """The node synced from registry ``cluster_id`` now."""
        self._identity.set_cluster_id(cluster_id)

    def converged(self, reason: str) -> None:
        """A repair for ``reason`` converged: after a reset or a rewind every key
        holds the registry's version (or failed, with its own alert), so the
        rewind alert resolves and its durable record is cleared."""
        if reason not in ("reset", "rewound"):
            return
        if reason == "rewound":
            self.rewinds += 1
        self.alerter.resolve(ALERT_REWOUND)
        self._record.set_rewound(None)

    def _is_reset(self, cluster_id: str) -> bool:
        known = self._identity.cluster_id
        if known is None or known == cluster_id:
            return False
        log.warning("registry cluster id changed (%s -> %s): the registry was reset; "
                    "repairing from a full listing", known, cluster_id)
        return True

    async def note_rewound(self, registry_revision: int, seen: int, *,
                           diverged: bool = False) -> None:
        """Fire ``SchemaRegistryRewound``: the registry is at ``registry_revision``,
        below revision ``seen`` the node already received (``diverged``: not
        below, but its change at ``seen`` is another one)."""
        went = (f"was restored and written past revision {seen}" if diverged else
                f"went back to revision {registry_revision}, below revision {seen}")
        summary = f"registry {went} this node received; resyncing"
        log.warning("the %s (a restored backup?): relisting and reconciling against what "
                    "the handler applied", summary.removesuffix("; resyncing"))
        # Committed before anyone hears of it: a node killed between firing and
        # resolving takes the rewind up again when it restarts.
        self._record.set_rewound(summary)
        with contextlib.suppress(Exception):  # a failing store has its own alert
            await self._record.flush()
        self.fire(summary)

    def fire(self, summary: str) -> None:
        """Fire ``SchemaRegistryRewound`` with ``summary``."""
        self.alerter.fire(ALERT_REWOUND, severity="critical", summary=summary)
