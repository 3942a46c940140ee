"""The Node: one process's self-healing schema cache.

Composes the durable state, the reconciler (work queue, workers, retry
limiter, dependencies), the watch loop, repairs, metrics, alerts and the
node's registration in the registry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from .._gc import freeze_long_lived, gc_paused
from ..kinds import KINDS, apply_order, delete_order
from ..model import Resource
from ..observe import alerts
from ..observe.alerts import Alerter
from ..observe.metrics import NodeMetrics
from ..registry import Registry
from .cache import NodeCache
from .config import NodeSettings
from .handler import Handler, HandlerCaller
from .monitor import ALERT_LAGGING, ALERT_STATE_STORE, ALERT_UNREACHABLE, Monitor
from .reconciler import ALERT_EXHAUSTED, Reconciler, WorkBatch
from .registration import Registration
from .repair import ALERT_REPAIR_FAILING, ALERT_REWOUND, Repairer
from .repair import OUTCOMES as REPAIR_OUTCOMES
from .repair import REASONS as REPAIR_REASONS
from .retry import RetryPolicy
from .state import StateStore
from .syncer import RESTART_REASONS, Syncer
from .tasks import cancel_and_wait
from .text import error_text, safe

log = logging.getLogger(__name__)

ALERT_NAMES = (ALERT_EXHAUSTED, ALERT_REPAIR_FAILING, ALERT_UNREACHABLE, ALERT_LAGGING,
               ALERT_REWOUND, ALERT_STATE_STORE)
"""Every alert a node sends itself."""
STOP_TIMEOUT = 5.0
"""Seconds :meth:`Node.stop` waits for the registration to be revoked."""

STATES = ("syncing", "ready", "repairing", "degraded", "disconnected")


def default_node_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class Node:
    """A schema cache kept current from a registry, acting through a handler.

    Use it as an async context manager, or call :meth:`start` and :meth:`stop`.
    Its settings are one :class:`~schemacache.node.config.NodeSettings` (each
    field documents its default); keyword arguments set single fields on top,
    so ``Node(registry, state_dir="s", workers=2)`` equals
    ``Node(registry, NodeSettings(state_dir="s", workers=2))``.

    :param registry: the registry (not closed by the node).
    :param settings: the node's settings (default: every field's default).
    :param handler: object with ``apply``/``delete`` (default ``None``: cache only).
    :param retry: retry policy of the event path (default: from the settings'
        ``max_attempts``, ``backoff_base`` and ``backoff_cap``, full jitter).
    :param admin_url: URL of the node's admin server; when set the node registers
        itself in the registry under a lease (default ``None``: not registered).
    :param metrics: metrics to update (default: a new :class:`NodeMetrics`).
    :param alerter: alert sink (default: an :class:`Alerter` built from the
        webhook settings; the node starts and closes whichever it uses).
    :param overrides: single settings, by field name (an unknown name is a
        :class:`TypeError`, an invalid value a :class:`pydantic.ValidationError`).
    """

    def __init__(
        self,
        registry: Registry,
        settings: NodeSettings | None = None,
        *,
        handler: Handler | None = None,
        retry: RetryPolicy | None = None,
        admin_url: str | None = None,
        metrics: NodeMetrics | None = None,
        alerter: Alerter | None = None,
        **overrides: Any,
    ):
        settings = (settings or NodeSettings()).with_overrides(overrides).node_settings()
        self.settings = settings
        self.registry = registry
        self._name = settings.name or default_node_name()
        self.state_dir = settings.state_dir
        self.handler = handler
        self.retry = retry or RetryPolicy(max_attempts=settings.max_attempts,
                                          base=settings.backoff_base, cap=settings.backoff_cap)
        self.workers = settings.workers
        self.handler_timeout = settings.handler_timeout
        self.repair_interval = settings.repair_interval
        self.repair_backoff_base = settings.repair_backoff_base
        self.repair_backoff_cap = settings.repair_backoff_cap
        self.admin_url = admin_url
        self.node_ttl = settings.node_ttl
        self.metrics = metrics if metrics is not None else NodeMetrics()
        self.metrics.initialise(
            kinds=KINDS, repair_reasons=REPAIR_REASONS, repair_outcomes=REPAIR_OUTCOMES,
            watch_restart_reasons=RESTART_REASONS, alertnames=ALERT_NAMES,
            alert_outcomes=alerts.OUTCOMES)
        self.alerter = alerter if alerter is not None else Alerter(
            self._name, settings.alert_webhook, resend_interval=settings.alert_resend_interval,
            metrics=self.metrics)
        self.reconnect_base = settings.reconnect_base
        self.reconnect_cap = settings.reconnect_cap
        self.max_pending_keys = settings.max_pending_keys
        self._monitor: Monitor | None = None
        self._store: StateStore | None = None
        self._rec: Reconciler | None = None
        self._repairer: Repairer | None = None
        self._syncer: Syncer | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._sync_task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._started = False
        self._stopped = False
        self._registration = Registration(registry, self._name, settings.node_ttl)
        self.state_moved_aside: str | None = None

    # ------------------------------------------------------------------ lifecycle

    @property
    def name(self) -> str:
        return self._name

    async def __aenter__(self) -> Node:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.stop()

    async def start(self) -> None:
        """Load durable state, rebuild the handler's state, and start syncing.

        Returns once the node runs; :meth:`ready` tells when the initial sync is done.
        """
        if self._started:
            return
        self._started = True
        try:
            await self._start()
        except BaseException:
            # A node that failed to start (its state directory in use, say)
            # lets go of what it took; it cannot be started again.
            await self.stop()
            raise

    async def _start(self) -> None:
        await self.alerter.start()
        self._store = StateStore(self.state_dir)
        # The collector stays off from decoding the file to freezing what it
        # holds: re-enabled in between, its first passes would walk every
        # object just loaded (seconds for 100,000 resources).
        with gc_paused():
            loaded = await self._store.open()
            self.state_moved_aside = loaded.moved_aside
            caller = HandlerCaller(self.handler, self.handler_timeout)
            self._rec = rec = Reconciler(
                store=self._store, caller=caller, retry=self.retry, metrics=self.metrics,
                alerter=self.alerter, workers=self.workers,
                repair_backoff_base=self.repair_backoff_base,
                repair_backoff_cap=self.repair_backoff_cap)
            rec.load(loaded)
            fresh = loaded.fresh
            rewound = loaded.rewound
            del loaded  # its dicts are garbage now: not worth freezing
            freeze_long_lived()
        self._repairer = rec.repairer = Repairer(
            self.registry, self.settings, refresh=rec.refresh_from_listing, identity=rec.state,
            received=lambda: rec.received_revision, rewind_record=self._store,
            metrics=self.metrics, alerter=self.alerter)
        self._syncer = Syncer(
            self.registry, rec, self._repairer, self.metrics, reconnect_base=self.reconnect_base,
            reconnect_cap=self.reconnect_cap, max_pending_keys=self.max_pending_keys)
        if rewound is not None:
            # Not ready before the rewind the last process did not converge after is.
            self._syncer.startup_run = self._repairer.resume_rewound(rewound)
        self._monitor = Monitor(self.registry, self.settings, rec, self._syncer,
                                self._repairer, self.metrics, self.alerter, self._store_error)
        backlog: WorkBatch | None = None
        if not fresh:
            await self._replay()
            log.info("node %s resumed from state: %d applied, %d desired, %d failed, "
                     "received revision %d", self._name, len(rec.applied), len(rec.desired),
                     len(rec.failures), rec.received_revision)
            backlog = rec.enqueue_backlog()
        rec.start_workers()
        self._sync_task = asyncio.create_task(self._syncer.run(fresh), name="watch")
        self._tasks = [
            self._sync_task,
            asyncio.create_task(self._await_ready(backlog), name="ready"),
            asyncio.create_task(self._monitor.run(), name="monitor"),
        ]
        if self.admin_url is not None:
            self._tasks.append(asyncio.create_task(self._registration.keep(self.admin_url),
                                               name="register"))
        self._repairer.start_periodic()

    async def stop(self) -> None:
        """Stop syncing, revoke the registration, commit state and close alerts."""
        if not self._started or self._stopped:
            return
        self._stopped = True
        await cancel_and_wait(self._tasks)
        self._tasks.clear()
        if self._repairer is not None:
            await self._repairer.stop()
        if self._rec is not None:
            await self._rec.stop_workers()
        await self._registration.revoke(STOP_TIMEOUT)
        if self._store is not None:
            await self._store.close()
        await self.alerter.close()

    async def _replay(self) -> None:
        rec = self._reconciler
        if self.handler is None:
            return
        applies, deletes = rec.replay_plan()
        if not applies and not deletes:
            return
        started = time.perf_counter()
        applies = apply_order(applies)
        deletes = delete_order(deletes)
        errors = await rec.caller.replay(applies, deletes)
        for key, exc in sorted(errors.items()):
            log.warning("re-applying %s at start-up failed (%s); it will be retried",
                        safe(key), error_text(exc))
        rec.replayed(applies, deletes, errors)
        log.info("re-applied %d and re-deleted %d resources to the handler in %.3fs",
                 len(applies), len(deletes), time.perf_counter() - started)

    async def _await_ready(self, backlog: WorkBatch | None) -> None:
        syncer = self._syncer
        assert syncer is not None
        await syncer.synced.wait()
        if syncer.startup_run is not None:
            await syncer.startup_run.done
        if backlog is not None:
            await backlog.done.wait()
        freeze_long_lived()  # the initial sync just built the whole cache
        # Know the registry's revision before saying ready, so the first status
        # of a node still catching up shows its lag.
        assert self._monitor is not None
        await self._monitor.probe()
        self._ready.set()
        log.info("node %s ready at revision %d", self._name, self._reconciler.settled_revision)

    # ------------------------------------------------------------------ reading

    @property
    def _reconciler(self) -> Reconciler:
        if self._rec is None:
            raise RuntimeError("the node is not started")
        return self._rec

    @property
    def cache(self) -> NodeCache:
        """The applied state (:meth:`NodeCache.get`, :meth:`NodeCache.list`)."""
        return self._reconciler.cache

    @property
    def settled_revision(self) -> int:
        """Highest revision R such that every event up to R is settled: applied,
        deleted, or recorded as failed (see :attr:`failures`)."""
        return self._reconciler.settled_revision

    @property
    def applied_revision(self) -> int:
        """Former name of :attr:`settled_revision`, kept for callers of it."""
        return self._reconciler.settled_revision

    @property
    def received_revision(self) -> int:
        return self._reconciler.received_revision

    async def ready(self, timeout: float | None = None) -> None:  # noqa: ASYNC109
        """Wait until the initial sync is done.

        :param timeout: seconds to wait (default ``None``: forever); raises
            :class:`TimeoutError` when it runs out.
        """
        async with asyncio.timeout(timeout):
            await self._ready.wait()

    def is_ready(self) -> bool:
        """True once the initial sync is done, while the state store commits."""
        return self._ready.is_set() and not self._stopped and self._store_error() is None

    def _store_error(self) -> str | None:
        """Why the state store cannot commit (``None`` while it can)."""
        return self._store.failing if self._store is not None else None

    def is_healthy(self) -> bool:
        """True while the watch loop and the workers run."""
        if not self._started or self._stopped or self._rec is None:
            return False
        return (self._sync_task is not None and not self._sync_task.done()
                and self._rec.workers_alive())

    async def wait_for_revision(
        self, revision: int, timeout: float | None = None  # noqa: ASYNC109 - public API
    ) -> bool:
        """Wait until :attr:`settled_revision` ≥ ``revision``.

        :param timeout: seconds to wait (default ``None``: forever).
        :returns: True once reached, False when ``timeout`` ran out first.
        """
        rec = self._reconciler
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            changed = rec.progress_event()
            if rec.settled_revision >= revision:
                return True
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await changed.wait()

    def known_registry_revision(self) -> int:
        """The newest registry revision the node knows the schema at (see
        :meth:`Monitor.known_registry_revision`)."""
        assert self._monitor is not None
        return self._monitor.known_registry_revision()

    def state(self) -> str:
        """One of ``syncing``, ``ready``, ``repairing``, ``degraded``, ``disconnected``."""
        rec = self._reconciler
        assert self._syncer is not None and self._repairer is not None
        if self._syncer.disconnected_since is not None:
            return "disconnected"
        if not self._ready.is_set():
            return "syncing"
        if self._store_error() is not None:
            return "degraded"  # nothing new reaches the handler until it commits
        if self._repairer.running:
            return "repairing"
        if rec.failures or rec.blocked():
            return "degraded"
        return "ready"

    def status(self) -> dict[str, Any]:
        """The ``/v1/status`` document."""
        rec = self._reconciler
        assert self._repairer is not None
        repair = self._repairer.info()
        if repair["last_finished"] is not None:
            repair["last_finished"] = datetime.fromtimestamp(
                repair["last_finished"], UTC).isoformat(timespec="milliseconds").replace(
                "+00:00", "Z")
        applied = rec.settled_revision
        registry_rev = self.known_registry_revision()
        return {
            "node": self._name,
            "state": self.state(),
            "settled_revision": applied,
            # The same figure under its first name, which clients and the
            # schemacache_applied_revision metric still use.
            "applied_revision": applied,
            "received_revision": rec.received_revision,
            "registry_revision": registry_rev,
            "lag": max(0, registry_rev - applied),
            "registry": {"cluster_id": rec.cluster_id, "rewinds": self._repairer.rewinds},
            "state_store": {"ok": self._store_error() is None, "error": self._store_error()},
            "cache": {"size": rec.cache.size, "digest": rec.cache.digest()},
            "failures": rec.failure_list(),
            "blocked": rec.blocked(),
            "repair": repair,
        }

    def failures(self) -> list[dict[str, Any]]:
        """The failure records: ``key``, ``revision``, ``attempts``, ``first_failed``,
        ``last_failed``, ``last_error``."""
        return self._reconciler.failure_list()

    def blocked(self) -> list[dict[str, Any]]:
        """Parked keys: ``key`` and ``blocked_by``."""
        return self._reconciler.blocked()

    def cache_snapshot(self) -> dict[str, Any]:
        """``{"applied_revision": R, "resources": [envelopes]}``."""
        rec = self._reconciler
        return {"applied_revision": rec.applied_revision,
                "resources": [r.to_dict() for r in rec.cache.list()]}

    def resources(self) -> list[Resource]:
        return self.cache.list()

    async def flush(self) -> None:
        """Commit every pending durable write now."""
        if self._store is not None:
            await self._store.flush()

    # ------------------------------------------------------------------ repair

    async def repair(self, reason: str = "manual", wait: bool = True) -> dict[str, Any]:
        """Request a repair (a full sync).

        :param reason: one of ``manual`` (default; ignores failed keys' repair
            backoff), ``periodic``, ``exhausted``, ``compacted``, ``reset``, ``startup``.
        :param wait: wait for the repair to finish and return its result
            (``reason``, ``outcome`` ∈ ok|partial|error|cancelled, ``revision``,
            ``enqueued``, ``duration_seconds``); with ``False`` return at once
            with ``{"reason", "accepted", "coalesced"}``.
        """
        if self._repairer is None or self._stopped:
            raise RuntimeError("the node is not running")
        coalesced = self._repairer.running
        run = self._repairer.request(reason)
        if not wait:
            return {"reason": run.reason, "accepted": True, "coalesced": coalesced}
        return dict(await asyncio.shield(run.done))

    # ------------------------------------------------------------------ background

    def register(self, admin_url: str) -> None:
        """Register the running node in the registry under ``admin_url`` (kept
        alive every ``node_ttl``/3 until :meth:`stop`).  Starting a node with
        ``admin_url`` set does the same."""
        if not self._started or self._stopped:
            raise RuntimeError("the node is not running")
        if self.admin_url is not None and any(t.get_name() == "register" for t in self._tasks):
            if admin_url == self.admin_url:
                return
            raise RuntimeError("the node is already registered")
        self.admin_url = admin_url
        self._tasks.append(asyncio.create_task(self._registration.keep(admin_url),
                                               name="register"))
