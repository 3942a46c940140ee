"""The Node: one process's self-healing schema cache.

:class:`Node` is the public face: its settings, metrics and alerts, and what
users ask of it.  Starting it builds a :class:`~schemacache.node.lifecycle.NodeRun`,
which composes the durable state, the reconciler (work queue, workers, retry
limiter, dependencies), the watch loop, repairs, the monitor and the node's
registration in the registry; :class:`~schemacache.node.status.NodeStatus`
answers its status questions.
"""

from __future__ import annotations

import asyncio
import os
import socket
from types import TracebackType
from typing import Any

from ..kinds import KINDS
from ..model import Resource
from ..observe import alerts
from ..observe.alerts import Alerter
from ..observe.metrics import NodeMetrics
from ..registry import Registry
from .cache import NodeCache
from .config import NodeSettings
from .handler import Handler
from .lifecycle import NodeRun
from .monitor import ALERT_LAGGING, ALERT_STATE_STORE, ALERT_UNREACHABLE
from .reconciler import ALERT_EXHAUSTED, Reconciler
from .registration import Registration
from .repair import ALERT_REPAIR_FAILING, ALERT_REWOUND
from .repair import OUTCOMES as REPAIR_OUTCOMES
from .repair import REASONS as REPAIR_REASONS
from .retry import RetryPolicy
from .state import StateStore
from .status import STATES, NodeStatus, wait_for_revision
from .syncer import RESTART_REASONS

ALERT_NAMES = (ALERT_EXHAUSTED, ALERT_REPAIR_FAILING, ALERT_UNREACHABLE, ALERT_LAGGING,
               ALERT_REWOUND, ALERT_STATE_STORE)
"""Every alert a node sends itself."""

__all__ = ["ALERT_LAGGING", "ALERT_NAMES", "ALERT_STATE_STORE", "STATES", "Node"]


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
        self._run: NodeRun | None = None
        self._ready = asyncio.Event()
        self._started = False
        self._stopped = False
        self._registration = Registration(registry, self._name, settings.node_ttl)

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
            self._run = NodeRun(self, self._registration, self._ready)
            await self._run.start()
        except BaseException:
            # A node that failed to start (its state directory in use, say)
            # lets go of what it took; it cannot be started again.
            await self.stop()
            raise

    async def stop(self) -> None:
        """Stop syncing, revoke the registration, commit state and close alerts."""
        if not self._started or self._stopped:
            return
        self._stopped = True
        if self._run is not None:
            await self._run.stop()

    # ------------------------------------------------------------------ reading

    @property
    def state_moved_aside(self) -> str | None:
        """Where a corrupt state file was moved at start-up (``None``: it was not)."""
        return self._run.state_moved_aside if self._run is not None else None

    @property
    def _store(self) -> StateStore | None:
        return self._run.store if self._run is not None else None

    @property
    def _reconciler(self) -> Reconciler:
        if self._run is None or self._run.rec is None:
            raise RuntimeError("the node is not started")
        return self._run.rec

    @property
    def _view(self) -> NodeStatus:
        if self._run is None or self._run.status is None:
            raise RuntimeError("the node is not started")
        return self._run.status

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
        return self._ready.is_set() and not self._stopped and self._view.is_ready()

    def is_healthy(self) -> bool:
        """True while the watch loop and the workers run."""
        return self._run is not None and not self._stopped and self._run.is_healthy()

    async def wait_for_revision(
        self, revision: int, timeout: float | None = None  # noqa: ASYNC109 - public API
    ) -> bool:
        """Wait until :attr:`settled_revision` ≥ ``revision``.

        :param timeout: seconds to wait (default ``None``: forever).
        :returns: True once reached, False when ``timeout`` ran out first.
        """
        return await wait_for_revision(self._reconciler, revision, timeout)

    def known_registry_revision(self) -> int:
        """The newest registry revision the node knows the schema at (see
        :meth:`Monitor.known_registry_revision`)."""
        assert self._run is not None and self._run.monitor is not None
        return self._run.monitor.known_registry_revision()

    def state(self) -> str:
        """One of ``syncing``, ``ready``, ``repairing``, ``degraded``, ``disconnected``."""
        return self._view.state()

    def status(self) -> dict[str, Any]:
        """The ``/v1/status`` document."""
        return self._view.status()

    def failures(self) -> list[dict[str, Any]]:
        """The failure records: ``key``, ``revision``, ``attempts``, ``first_failed``,
        ``last_failed``, ``last_error``."""
        return self._reconciler.failure_list()

    def blocked(self) -> list[dict[str, Any]]:
        """Parked keys: ``key`` and ``blocked_by``."""
        return self._reconciler.blocked()

    def cache_snapshot(self) -> dict[str, Any]:
        """``{"applied_revision": R, "resources": [envelopes]}``."""
        return self._view.cache_snapshot()

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
        repairer = self._run.repairer if self._run is not None else None
        if repairer is None or self._stopped:
            raise RuntimeError("the node is not running")
        coalesced = repairer.running
        run = repairer.request(reason)
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
        assert self._run is not None
        if self.admin_url is not None and self._run.registered():
            if admin_url == self.admin_url:
                return
            raise RuntimeError("the node is already registered")
        self.admin_url = admin_url
        self._run.register(admin_url)
