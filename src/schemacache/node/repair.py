"""Repair: a full sync (list the registry, refresh desired state, reconcile).

Requests coalesce: at most one repair runs and one waits; every request made
while one waits shares its result.  A repair whose listing fails fires
``SchemaRepairFailing`` and, for the reasons the watch loop does not retry
itself, tries again with backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from dataclasses import dataclass, field
from typing import Any

from .._gc import freeze_long_lived, gc_paused
from ..backoff import compute_backoff
from ..observe.alerts import Alerter
from ..observe.metrics import NodeMetrics
from ..registry import Registry
from .reconciler import Reconciler, list_registry
from .tasks import cancel_and_wait

log = logging.getLogger(__name__)

ALERT_REPAIR_FAILING = "SchemaRepairFailing"
ALERT_REWOUND = "SchemaRegistryRewound"
REASONS = ("exhausted", "compacted", "reset", "rewound", "startup", "periodic", "manual")
OUTCOMES = ("ok", "partial", "error")
"""Label ``outcome`` of ``schemacache_repairs_total`` (a cancelled run is not counted)."""
_RANK = {"periodic": 0, "exhausted": 1, "manual": 2, "compacted": 3, "startup": 4, "rewound": 5,
         "reset": 6}
_SELF_RETRIED = ("exhausted", "periodic", "manual")
"""Reasons whose failed repairs this module retries (the watch loop retries the others)."""
PERIODIC_JITTER = 0.1
"""Periodic repairs run every ``interval`` ± this fraction."""


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
    """Runs coalesced repairs for one node.

    :param registry: the registry to list.
    :param reconciler: the node's state.
    :param metrics: node metrics.
    :param alerter: alert sink.
    :param interval: seconds between periodic repairs (``0`` = none).
    :param backoff_base: first retry delay of a failed repair.
    :param backoff_cap: largest retry delay of a failed repair.
    """

    def __init__(self, registry: Registry, reconciler: Reconciler, metrics: NodeMetrics,
                 alerter: Alerter, *, interval: float, backoff_base: float, backoff_cap: float):
        self.registry = registry
        self.reconciler = reconciler
        self.metrics = metrics
        self.alerter = alerter
        self.interval = interval
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.count = 0
        self.rewinds = 0
        """Rewinds of the registry this node converged after."""
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
        reason = run.reason
        rec = self.reconciler
        log.info("repair started (reason %s)", reason)
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
            text = f"{type(exc).__name__}: {exc}"
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
            return
        self._fail_streak = 0
        reset = reason == "reset" or self._cluster_changed(cluster_id)
        if reset and reason != "reset":
            log.warning("registry cluster id changed (%s -> %s): treating as a reset",
                        rec.cluster_id, cluster_id)
            reason = run.reason = "reset"
        rewound = not reset and (reason == "rewound" or revision < rec.received_revision)
        if rewound:
            if revision < rec.received_revision:  # else one taken up after a restart
                await self.note_rewound(revision, rec.received_revision)
            reason = run.reason = "rewound"
        with pause:
            batch = rec.refresh_from_listing(resources, revision, reset=reset,
                                             manual=reason == "manual", rewound=rewound)
            del resources
            freeze_long_lived()
        self._adopt_cluster_id(cluster_id)
        self.alerter.resolve(ALERT_REPAIR_FAILING)
        if not run.listed.done():
            run.listed.set_result(revision)
        enqueued = len(batch.outstanding)
        await batch.done.wait()
        outcome = "partial" if batch.incomplete else "ok"
        if rewound:
            # Every key now holds the restored registry's version (or failed, and
            # has its own alert): the node converged on the registry's new history.
            self.rewinds += 1
            self.alerter.resolve(ALERT_REWOUND)
            self.reconciler.store.set_rewound(None)
        self._finish(run, outcome, started, revision, enqueued, None)

    async def check_registry(self) -> str | None:
        """Compare the registry's identity with what the node knows: ``"reset"``
        when its cluster id changed (it was recreated), else ``None``.  A first
        cluster id is adopted."""
        cluster_id = await self.registry.cluster_id()
        if self._cluster_changed(cluster_id):
            log.warning("registry cluster id changed (%s -> %s): the registry was reset; "
                        "repairing from a full listing", self.reconciler.cluster_id, cluster_id)
            return "reset"
        self._adopt_cluster_id(cluster_id)
        return None

    def _cluster_changed(self, cluster_id: str) -> bool:
        known = self.reconciler.cluster_id
        return known is not None and known != cluster_id

    def _adopt_cluster_id(self, cluster_id: str) -> None:
        self.reconciler.state.set_cluster_id(cluster_id)

    async def note_rewound(self, registry_revision: int, seen: int) -> None:
        """Fire ``SchemaRegistryRewound``: the registry is at ``registry_revision``,
        below revision ``seen`` the node already received."""
        log.warning("the registry went back to revision %d, below revision %d this node "
                    "received (a restored backup?): relisting and reconciling against what "
                    "the handler applied", registry_revision, seen)
        summary = (f"registry rewound to revision {registry_revision} below revision "
                   f"{seen} this node received; resyncing")
        # Committed before anyone hears of it: a node killed between firing and
        # resolving takes the rewind up again when it restarts.
        self.reconciler.store.set_rewound(summary)
        with contextlib.suppress(Exception):  # a failing store has its own alert
            await self.reconciler.store.flush()
        self._fire_rewound(summary)

    def resume_rewound(self, summary: str) -> RepairRun:
        """Take up a rewind a previous process of the node fired ``SchemaRegistryRewound``
        for (``summary``) and did not converge after: fire it again and repair, which
        resolves it."""
        log.warning("the node stopped before converging after a registry rewind (%s): "
                    "repairing", summary)
        self._fire_rewound(summary)
        return self.request("rewound")

    def _fire_rewound(self, summary: str) -> None:
        self.alerter.fire(ALERT_REWOUND, severity="critical", summary=summary)

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
