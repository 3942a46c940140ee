"""One run of a node, from loading its state to stopping: the parts it builds
(state store, reconciler, repairer, watch loop, monitor), the start-up replay
that rebuilds a restarted handler's state, the wait for the initial sync, the
background tasks, and stopping them in order.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from .._gc import collect_thawed, freeze_long_lived, gc_paused, thaw
from .handler import HandlerCaller
from .monitor import Monitor
from .reconciler import Reconciler, WorkBatch
from .registration import Registration
from .repair import Repairer
from .state import StateStore
from .status import NodeStatus
from .syncer import Syncer
from .tasks import cancel_and_wait
from .text import error_text, safe

if TYPE_CHECKING:
    from .node import Node

log = logging.getLogger(__name__)

STOP_TIMEOUT = 5.0
"""Seconds :meth:`NodeRun.stop` waits for the registration to be revoked."""


class NodeRun:
    """The running part of a :class:`~schemacache.node.Node`, built by its
    :meth:`~schemacache.node.Node.start`.

    :param node: the node (its registry, settings, handler, retry policy,
        metrics and alerter).
    :param registration: the node's registration, kept while it runs with an
        admin URL.
    :param ready: set once the initial sync is done.
    """

    def __init__(self, node: Node, registration: Registration, ready: asyncio.Event):
        self.node = node
        self.registration = registration
        self.ready = ready
        self.store = StateStore(node.state_dir)
        self.rec: Reconciler | None = None
        self.repairer: Repairer | None = None
        self.syncer: Syncer | None = None
        self.monitor: Monitor | None = None
        self.status: NodeStatus | None = None
        self.sync_task: asyncio.Task[None] | None = None
        self.tasks: list[asyncio.Task[None]] = []
        self.state_moved_aside: str | None = None

    def store_error(self) -> str | None:
        """Why the state store cannot commit (``None`` while it can)."""
        return self.store.failing

    async def start(self) -> None:
        """Load durable state, rebuild the handler's state, and start syncing."""
        node = self.node
        collect_thawed()
        await node.alerter.start()
        # The collector stays off from decoding the file to freezing what it
        # holds: re-enabled in between, its first passes would walk every
        # object just loaded (seconds for 100,000 resources).
        with gc_paused():
            loaded = await self.store.open()
            self.state_moved_aside = loaded.moved_aside
            caller = HandlerCaller(node.handler, node.handler_timeout)
            self.rec = rec = Reconciler(
                store=self.store, caller=caller, retry=node.retry, metrics=node.metrics,
                alerter=node.alerter, workers=node.workers,
                repair_backoff_base=node.repair_backoff_base,
                repair_backoff_cap=node.repair_backoff_cap)
            rec.load(loaded)
            fresh = loaded.fresh
            rewound = loaded.rewound
            del loaded  # its dicts are garbage now: not worth freezing
            freeze_long_lived()
        self.repairer = rec.repairer = Repairer(
            node.registry, node.settings, refresh=rec.refresh_from_listing, identity=rec.state,
            received=lambda: rec.received_revision, rewind_record=self.store,
            metrics=node.metrics, alerter=node.alerter)
        self.syncer = Syncer(
            node.registry, rec, self.repairer, node.metrics, reconnect_base=node.reconnect_base,
            reconnect_cap=node.reconnect_cap, max_pending_keys=node.max_pending_keys)
        self.monitor = Monitor(node.registry, node.settings, rec, self.syncer,
                               self.repairer, node.metrics, node.alerter, self.store_error)
        self.status = NodeStatus(node.name, reconciler=rec, syncer=self.syncer,
                                 repairer=self.repairer, monitor=self.monitor,
                                 store=self.store, ready=self.ready)
        backlog: WorkBatch | None = None
        if not fresh:
            if node.handler is not None:
                await replay_to_handler(rec)
            log.info("node %s resumed from state: %d applied, %d desired, %d failed, "
                     "received revision %d", node.name, len(rec.applied), len(rec.desired),
                     len(rec.failures), rec.received_revision)
            backlog = rec.enqueue_backlog()
        if rewound is not None:
            # Not ready before the rewind the last process did not converge after
            # is repaired.  Requested once the replay is adopted: a listing folded
            # in while the replay runs would be overwritten by its outcome.
            self.syncer.startup_run = self.repairer.resume_rewound(rewound)
        rec.start_workers()
        self.sync_task = asyncio.create_task(self.syncer.run(fresh), name="watch")
        self.tasks = [
            self.sync_task,
            asyncio.create_task(await_ready(node.name, rec, self.syncer, self.monitor,
                                            backlog, self.ready), name="ready"),
            asyncio.create_task(self.monitor.run(), name="monitor"),
        ]
        if node.admin_url is not None:
            self.register(node.admin_url)
        self.repairer.start_periodic()

    def register(self, admin_url: str) -> None:
        """Keep the registration under ``admin_url`` until :meth:`stop`."""
        self.tasks.append(asyncio.create_task(self.registration.keep(admin_url),
                                              name="register"))

    def registered(self) -> bool:
        """Whether the registration is being kept."""
        return any(t.get_name() == "register" for t in self.tasks)

    def is_healthy(self) -> bool:
        """True while the watch loop and the workers run."""
        return (self.rec is not None and self.sync_task is not None
                and not self.sync_task.done() and self.rec.workers_alive())

    async def stop(self) -> None:
        """Stop syncing, revoke the registration, commit state and close alerts."""
        try:
            await cancel_and_wait(self.tasks)
            self.tasks.clear()
            if self.repairer is not None:
                await self.repairer.stop()
            if self.rec is not None:
                await self.rec.stop_workers()
            await self.registration.revoke(STOP_TIMEOUT)
            await self.store.close()
            await self.node.alerter.close()
        finally:
            thaw()  # what the sync froze is freed once the node is dropped


async def replay_to_handler(rec: Reconciler) -> None:
    """Hand the handler what it may have held before the restart (see
    :meth:`Reconciler.replay_plan`: prerequisites first, dependents first for
    deletes) and adopt the outcome; a key whose call failed is retried."""
    with gc_paused():  # builds a model per resource to hand over: no cycles among them
        applies, deletes = rec.replay_plan()
    if not applies and not deletes:
        return
    started = time.perf_counter()
    errors = await rec.caller.replay([r for _, r in applies], [r for _, r in deletes])
    for key, exc in sorted(errors.items()):
        log.warning("re-applying %s at start-up failed (%s); it will be retried",
                    safe(key), error_text(exc))
    rec.replayed(applies, deletes, errors)
    log.info("re-applied %d and re-deleted %d resources to the handler in %.3fs",
             len(applies), len(deletes), time.perf_counter() - started)


async def await_ready(name: str, rec: Reconciler, syncer: Syncer, monitor: Monitor,
                      backlog: WorkBatch | None, ready: asyncio.Event) -> None:
    """Set ``ready`` once the node has caught up: the initial sync (or the
    resumed watch) is done, with the repair a start-up owes and the ``backlog``
    of keys left unsettled by the last process (``None``: none)."""
    await syncer.synced.wait()
    if syncer.startup_run is not None:
        await syncer.startup_run.done
    if backlog is not None:
        await backlog.done.wait()
    freeze_long_lived()  # the initial sync just built the whole cache
    # Know the registry's revision before saying ready, so the first status
    # of a node still catching up shows its lag.
    await monitor.probe()
    ready.set()
    log.info("node %s ready at revision %d", name, rec.settled_revision)
