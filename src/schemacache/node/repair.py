"""Repair: a full sync (list the registry, refresh desired state, reconcile).

Requests coalesce: at most one repair runs and one waits; every request made
while one waits shares its result.  A repair whose listing fails fires
``SchemaRepairFailing`` and, for the reasons the watch loop does not retry
itself, tries again with backoff.

The repairer also decides what a registry that is not the one the node synced
from means (a ``reset`` or ``rewound`` registry, see :mod:`.rewind`).  It
reaches the node through narrow ports only: a :class:`Refresh` function that
folds a listing into the node's state, the node's received revision, the
registry cluster id it knows and the durable record of a rewind in progress.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from .._gc import freeze_long_lived, gc_paused
from ..backoff import compute_backoff
from ..errors import CompactedError, RegistryRewoundError
from ..observe.alerts import Alerter
from ..observe.metrics import NodeMetrics
from ..registry import Registry
from .config import NodeSettings
from .listing import list_registry
from .rewind import ALERT_REWOUND as ALERT_REWOUND
from .rewind import ClusterIdentity, RewindGuard, RewindRecord
from .tasks import cancel_and_wait

if TYPE_CHECKING:
    from .reconciler import Listed
    from .workers import WorkBatch

log = logging.getLogger(__name__)

ALERT_REPAIR_FAILING = "SchemaRepairFailing"
REASONS = ("exhausted", "compacted", "reset", "rewound", "startup", "periodic", "manual")
OUTCOMES = ("ok", "partial", "error")
"""Label ``outcome`` of ``schemacache_repairs_total`` (a cancelled run is not counted)."""
_RANK = {"periodic": 0, "exhausted": 1, "manual": 2, "compacted": 3, "startup": 4, "rewound": 5,
         "reset": 6}
_SELF_RETRIED = ("exhausted", "periodic", "manual")
"""Reasons whose failed repairs this module retries (the watch loop retries the others)."""
PERIODIC_JITTER = 0.1
"""Periodic repairs run every ``interval`` ± this fraction."""


class Refresh(Protocol):
    """Folds a full listing at ``revision`` into the node's desired state and
    enqueues every key whose desired version differs from the applied one
    (``Reconciler.refresh_from_listing``); the batch is done once each was handled."""

    def __call__(self, resources: Iterable[Listed], revision: int, *, reset: bool,
                 manual: bool, rewound: bool) -> WorkBatch: ...


@dataclass
class RepairRun:
    """One repair, requested or running.

    :param reason: why it runs (the most important of the coalesced requests).
    :param listed: resolves to the listing's revision once desired state is
        refreshed (``None`` if the listing failed).
    :param done: resolves to the result once every enqueued key was handled.
    """

    reason: str
    listed: asyncio.Future[int | None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future())
    done: asyncio.Future[dict[str, Any]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future())


class Repairer:
    """Runs coalesced repairs for one node, and tells a reset or rewound registry.

    :param registry: the registry to list.
    :param settings: the node's settings: ``repair_interval`` between periodic
        repairs (``0`` = none), ``repair_backoff_base``/``repair_backoff_cap``
        bounding the retry delays of a failed repair.
    :param refresh: folds a listing into the node's state (see :class:`Refresh`).
    :param received: returns the revision the node received every event up to.
    :param identity: the registry cluster id the node knows.
    :param rewind_record: where a rewind in progress is recorded durably.
    :param metrics: node metrics.
    :param alerter: alert sink.
    """

    def __init__(self, registry: Registry, settings: NodeSettings, *, refresh: Refresh,
                 received: Callable[[], int], identity: ClusterIdentity,
                 rewind_record: RewindRecord, metrics: NodeMetrics, alerter: Alerter):
        self.registry = registry
        self._refresh = refresh
        self._received = received
        self.guard = RewindGuard(registry, identity, rewind_record, alerter)
        """Tells a reset or rewound registry (see :mod:`.rewind`)."""
        self.metrics = metrics
        self.alerter = alerter
        self.interval = settings.repair_interval
        self.backoff_base = settings.repair_backoff_base
        self.backoff_cap = settings.repair_backoff_cap
        self.count = 0
        self.last_outcome: str | None = None
        self.last_finished: float | None = None
        self.last_reason: str | None = None
        self._current: RepairRun | None = None
        self._pending: RepairRun | None = None
        self._task: asyncio.Task[None] | None = None
        self._periodic: asyncio.Task[None] | None = None
        self._retry_handle: asyncio.TimerHandle | None = None
        self._fail_streak = 0
        self._stopped = False

    # ------------------------------------------------------------------ requests

    def request(self, reason: str) -> RepairRun:
        """Ask for a repair; returns the run that will cover it."""
        if reason not in REASONS:
            raise ValueError(f"unknown repair reason {reason!r} (known: {', '.join(REASONS)})")
        if self._stopped:
            run = RepairRun(reason)
            run.listed.set_result(None)
            run.done.set_result({"reason": reason, "outcome": "cancelled"})
            return run
        if self._task is None:
            run = RepairRun(reason)
            self._current = run
            self._task = asyncio.create_task(self._loop(run), name="repair")
            return run
        if self._pending is None:
            self._pending = RepairRun(reason)
        elif _RANK[reason] > _RANK[self._pending.reason]:
            self._pending.reason = reason
        return self._pending

    @property
    def running(self) -> bool:
        return self._current is not None

    @property
    def rewinds(self) -> int:
        """Rewinds of the registry this node converged after."""
        return self.guard.rewinds

    def info(self) -> dict[str, Any]:
        return {
            "running": self._current is not None,
            "pending": self._pending is not None,
            "count": self.count,
            "last_reason": self.last_reason,
            "last_outcome": self.last_outcome,
            "last_finished": self.last_finished,
        }

    # ------------------------------------------------------------------ lifecycle

    def start_periodic(self) -> None:
        if self.interval > 0 and self._periodic is None:
            self._periodic = asyncio.create_task(self._periodic_loop(), name="repair-periodic")

    async def stop(self) -> None:
        self._stopped = True
        if self._retry_handle is not None:
            self._retry_handle.cancel()
        await cancel_and_wait([t for t in (self._task, self._periodic) if t is not None])
        for run in (self._current, self._pending):
            if run is not None:
                self._cancel_run(run)
        self._task = self._periodic = None
        self._current = self._pending = None

    @staticmethod
    def _cancel_run(run: RepairRun) -> None:
        if not run.listed.done():
            run.listed.set_result(None)
        if not run.done.done():
            run.done.set_result({"reason": run.reason, "outcome": "cancelled"})

    async def _periodic_loop(self) -> None:
        while True:
            jitter = random.uniform(1 - PERIODIC_JITTER, 1 + PERIODIC_JITTER)
            await asyncio.sleep(self.interval * jitter)
            self.request("periodic")

    # ------------------------------------------------------------------ running

    async def _loop(self, run: RepairRun | None) -> None:
        try:
            while run is not None:
                self._current = run
                try:
                    await self._run_once(run)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # never let one repair kill the next
                    log.exception("repair (%s) failed unexpectedly", run.reason)
                    self._finish(run, "error", time.perf_counter(), None, 0, str(exc))
                run, self._pending = self._pending, None
        finally:
            self._current = None
            self._task = None

    async def _run_once(self, run: RepairRun) -> None:
        started = time.perf_counter()
        log.info("repair started (reason %s)", run.reason)
        # A listing is one large allocation of objects without cycles, most of
        # which become the long-lived desired state: the collector stays off
        # from decoding it to freezing what it became (see schemacache._gc).
        pause = contextlib.ExitStack()
        try:
            cluster_id = await self.registry.cluster_id()
            pause.enter_context(gc_paused())
            resources, revision = await list_registry(self.registry)
        except asyncio.CancelledError:
            pause.close()
            raise
        except Exception as exc:
            pause.close()
            self._listing_failed(run, started, f"{type(exc).__name__}: {exc}")
            return
        self._fail_streak = 0
        reason = run.reason = await self.guard.listing_reason(
            run.reason, cluster_id, revision, self._received())
        with pause:
            batch = self._refresh(resources, revision, reset=reason == "reset",
                                  manual=reason == "manual", rewound=reason == "rewound")
            del resources
            freeze_long_lived()
        self.guard.adopt(cluster_id)
        self.alerter.resolve(ALERT_REPAIR_FAILING)
        if not run.listed.done():
            run.listed.set_result(revision)
        enqueued = len(batch.outstanding)
        await batch.done.wait()
        self.guard.converged(reason)
        self._finish(run, "partial" if batch.incomplete else "ok", started, revision,
                     enqueued, None)

    def _listing_failed(self, run: RepairRun, started: float, text: str) -> None:
        reason = run.reason
        self._fail_streak += 1
        log.warning("repair (%s) could not list the registry: %s", reason, text)
        self.alerter.fire(ALERT_REPAIR_FAILING,
                          summary=f"repair ({reason}) cannot list the registry", error=text)
        if not run.listed.done():
            run.listed.set_result(None)
        self._finish(run, "error", started, None, 0, text)
        if reason in _SELF_RETRIED and not self._stopped:
            # Jittered: every node of a cluster retries the same registry.
            delay = compute_backoff(self._fail_streak, base=self.backoff_base,
                                    cap=self.backoff_cap)
            if self._retry_handle is not None:
                self._retry_handle.cancel()
            self._retry_handle = asyncio.get_running_loop().call_later(
                delay, self.request, reason)

    # ------------------------------------------------------------------ registry identity

    async def check_registry(self) -> str | None:
        """``"reset"`` when the registry was recreated since the node synced from
        it, else ``None`` (see :meth:`RewindGuard.check_registry`)."""
        return await self.guard.check_registry()

    async def resume_refused(self, exc: CompactedError | RegistryRewoundError) -> str:
        """The reason of the repair a refused watch resume needs (see
        :meth:`RewindGuard.resume_refused`)."""
        return await self.guard.resume_refused(exc)

    def resume_rewound(self, summary: str) -> RepairRun:
        """Take up a rewind a previous process of the node fired ``SchemaRegistryRewound``
        for (``summary``) and did not converge after: fire it again and repair, which
        resolves it."""
        log.warning("the node stopped before converging after a registry rewind (%s): "
                    "repairing", summary)
        self.guard.fire(summary)
        return self.request("rewound")

    def _finish(self, run: RepairRun, outcome: str, started: float, revision: int | None,
                enqueued: int, error: str | None) -> None:
        duration = time.perf_counter() - started
        self.count += 1
        self.last_outcome = outcome
        self.last_finished = time.time()
        self.last_reason = run.reason
        self.metrics.repairs.labels(reason=run.reason, outcome=outcome).inc()
        self.metrics.repair_duration.observe(duration)
        if outcome in ("ok", "partial"):
            self.metrics.last_repair_success.set(self.last_finished)
        log.info("repair finished (reason %s): %s, %d keys enqueued, %.3fs", run.reason,
                 outcome, enqueued, duration)
        result: dict[str, Any] = {"reason": run.reason, "outcome": outcome, "revision": revision,
                                  "enqueued": enqueued, "duration_seconds": round(duration, 6)}
        if error is not None:
            result["error"] = error
        with contextlib.suppress(asyncio.InvalidStateError):
            run.done.set_result(result)
