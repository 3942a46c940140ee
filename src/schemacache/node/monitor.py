"""The node's once-a-second look at the registry and at itself.

Each round probes the registry's revisions (reachability for the watch loop,
the schema revision lag is measured against, a registry that went back),
sets the node's gauges and fires or resolves the alerts those figures call
for: ``SchemaCacheLagging``, ``SchemaRegistryUnreachable`` and
``SchemaStateStoreFailing``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from ..observe.alerts import Alerter
from ..observe.metrics import NodeMetrics
from ..registry import Registry
from .config import NodeSettings
from .reconciler import Reconciler
from .repair import Repairer
from .syncer import Syncer

log = logging.getLogger(__name__)

ALERT_UNREACHABLE = "SchemaRegistryUnreachable"
ALERT_LAGGING = "SchemaCacheLagging"
ALERT_STATE_STORE = "SchemaStateStoreFailing"


class Monitor:
    """Probes the registry and keeps the node's gauges and health alerts.

    :param registry: the registry probed.
    :param settings: ``monitor_interval``, ``lag_alert_revisions``,
        ``lag_alert_after``, ``unreachable_alert_after`` and ``state_dir``.
    :param store_error: why the state store cannot commit (``None`` while it can).
    """

    def __init__(self, registry: Registry, settings: NodeSettings, reconciler: Reconciler,
                 syncer: Syncer, repairer: Repairer, metrics: NodeMetrics, alerter: Alerter,
                 store_error: Callable[[], str | None]):
        self.registry = registry
        self.settings = settings
        self.reconciler = reconciler
        self.syncer = syncer
        self.repairer = repairer
        self.metrics = metrics
        self.alerter = alerter
        self.store_error = store_error
        self.registry_revision = 0
        """The registry's revision, as last probed."""
        self.schema_revision = 0
        """The registry's last schema write, as last probed (0: not known)."""
        self._rewinds_seen = 0
        self._lag_since: float | None = None

    async def run(self) -> None:
        """Probe and check every ``monitor_interval`` seconds, until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            await self.probe()
            try:
                self.check(loop.time())
            except Exception:
                log.exception("node monitor failed")
            await asyncio.sleep(self.settings.monitor_interval)

    def known_registry_revision(self) -> int:
        """The newest registry revision the node knows the schema at: what its
        watch delivered (events and progress marks), and the probed revision of
        the registry's last schema write.  On etcd the cluster-wide revision also
        counts node registrations and other applications' keys, which are no
        lag: the probe reads the schema write mark instead, and only the watch
        tells when no write has set it yet."""
        return max(self.schema_revision, self.reconciler.received_revision)

    async def probe(self) -> None:
        """Read the registry's revisions once (reachability, lag, rewinds)."""
        try:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a
            # cancel that lands as the probe completes, and stop() then hangs.
            received = self.reconciler.received_revision
            async with asyncio.timeout(max(1.0, 2 * self.settings.monitor_interval)):
                rev, schema_rev = await self.registry.revisions()
            self.note(rev, received, schema_rev)
            self.syncer.note_probe(True)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.syncer.note_probe(False, f"{type(exc).__name__}: {exc}".rstrip(": "))

    def note(self, rev: int, received: int, schema_rev: int | None = None) -> None:
        """Take the registry's revision ``rev`` and its last schema write's
        ``schema_rev`` (``None``: unknown), read after the node had received
        revision ``received``."""
        if self.repairer.rewinds != self._rewinds_seen:
            # The registry's history restarted: its old revisions mean nothing.
            self._rewinds_seen = self.repairer.rewinds
            self.registry_revision = rev
            self.schema_revision = schema_rev or 0
        else:
            self.registry_revision = max(self.registry_revision, rev)
            self.schema_revision = max(self.schema_revision, schema_rev or 0)
        if rev < received:
            # Below what the watch had delivered: a restored backup.
            self.syncer.recheck("rewound")

    def check(self, now: float) -> None:
        """Set the gauges and fire or resolve the health alerts at time ``now``."""
        rec = self.reconciler
        m = self.metrics
        applied = rec.applied_revision
        registry_rev = self.known_registry_revision()
        lag = max(0, registry_rev - applied)
        m.applied_revision.set(applied)
        m.registry_revision.set(registry_rev)
        m.revision_lag.set(lag)
        m.queue_depth.set(len(rec.queue))
        m.queue_longest_running.set(rec.longest_running())
        m.failed_keys.set(len(rec.failures))
        self._check_lag(now, applied, registry_rev, lag)
        self._check_reachable(now)
        self._check_store()

    def _check_lag(self, now: float, applied: int, registry_rev: int, lag: int) -> None:
        if lag < self.settings.lag_alert_revisions:
            self._lag_since = None
            self.alerter.resolve(ALERT_LAGGING)
        elif self._lag_since is None:
            self._lag_since = now
        elif now - self._lag_since >= self.settings.lag_alert_after:
            self.alerter.fire(ALERT_LAGGING,
                              summary=f"applied revision {applied} lags the registry "
                                      f"({registry_rev}) by {lag} revisions")

    def _check_reachable(self, now: float) -> None:
        since = self.syncer.disconnected_since
        if since is None:
            self.alerter.resolve(ALERT_UNREACHABLE)
        elif now - since >= self.settings.unreachable_alert_after:
            self.alerter.fire(ALERT_UNREACHABLE,
                              summary=f"registry unreachable for {now - since:.0f}s; "
                                      "serving the cached schema",
                              error=self.syncer.last_error or "")

    def _check_store(self) -> None:
        error = self.store_error()
        if error is None:
            self.alerter.resolve(ALERT_STATE_STORE)
        else:
            self.alerter.fire(ALERT_STATE_STORE, severity="critical",
                              summary=f"node state {self.settings.state_dir} cannot commit; "
                                      "new changes wait for it (not ready)", error=error)
