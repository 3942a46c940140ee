"""The watch loop: keeps desired state current from the registry's change stream.

Start-up without state lists the registry (a ``startup`` repair) and watches
from the listing's revision + 1; a restart resumes from the received revision
+ 1.  A compacted resume point or a changed registry cluster id leads to a
repair, then the watch resumes after the listing.  Watch progress marks
(etcd's progress notifications) advance the received revision past
revisions that changed no schema key.  Connection errors are
retried with backoff and jitter while the cache keeps serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Protocol

from .._gc import BurstPause
from ..backoff import compute_backoff
from ..errors import CompactedError, RegistryRewoundError, RegistryUnavailableError
from ..model import Event
from ..observe.metrics import NodeMetrics
from ..registry import Registry, WatchProgress
from .config import DEFAULT_MAX_PENDING_KEYS as MAX_PENDING_KEYS
from .config import DEFAULT_RECONNECT_BASE as RECONNECT_BASE
from .config import DEFAULT_RECONNECT_CAP as RECONNECT_CAP
from .repair import Repairer, RepairRun
from .tasks import cancel_and_wait

log = logging.getLogger(__name__)

BURST_KEYS = 500
"""Keys waiting at live priority from which the watch counts as catching up
with a backlog (and the garbage collector is paused until it drained)."""
BURST_QUIET = 0.25
"""Seconds without events after which a drained backlog counts as caught up.
A registry hands a backlog over in batches, and on a busy machine the next
batch can take tens of milliseconds to decode; ending the burst there would run
a full collection over the whole heap in the middle of the catch-up (measured:
0.7 s of a 3 s catch-up of 50,000 events)."""
RESTART_REASONS = ("error", "compacted", "reset", "rewound", "reconnect")
"""Label ``reason`` of ``schemacache_watch_restarts_total``."""


class EventSink(Protocol):
    """What the watch loop feeds (the reconciler)."""

    @property
    def received_revision(self) -> int:
        """Every event up to it was taken: the watch resumes after it."""
        ...

    @property
    def received_mark(self) -> str:
        """The change mark of the change at :attr:`received_revision` ("": unknown):
        the watch resumes only on a registry whose change there is the same."""
        ...

    @property
    def urgent(self) -> int:
        """Keys waiting to be handled (how far behind the handler is)."""
        ...

    def on_event(self, event: Event) -> None: ...

    def full(self, limit: int) -> bool:
        """Whether :meth:`capacity` would wait."""
        ...

    def on_progress(self, revision: int) -> None: ...

    def room(self, limit: int) -> int:
        """Events that may be taken before :meth:`full` is asked again."""
        ...

    async def capacity(self, limit: int) -> None:
        """Return once another event can be taken (backpressure)."""

    async def wait_urgent_below(self, limit: int) -> None: ...


class Syncer:
    """Runs the watch loop of one node.

    :param registry: the registry to watch.
    :param reconciler: where events go.
    :param repairer: checks the registry's identity and runs the listings the
        loop needs.
    :param metrics: node metrics.
    :param reconnect_base: first reconnect delay bound (default :data:`RECONNECT_BASE`).
    :param reconnect_cap: largest reconnect delay bound (default :data:`RECONNECT_CAP`).
    :param max_pending_keys: backpressure threshold (default :data:`MAX_PENDING_KEYS`).
    """

    def __init__(self, registry: Registry, reconciler: EventSink, repairer: Repairer,
                 metrics: NodeMetrics, *, reconnect_base: float = RECONNECT_BASE,
                 reconnect_cap: float = RECONNECT_CAP,
                 max_pending_keys: int = MAX_PENDING_KEYS):
        self.registry = registry
        self.reconciler = reconciler
        self.repairer = repairer
        self.metrics = metrics
        self.reconnect_base = reconnect_base
        self.reconnect_cap = reconnect_cap
        self.max_pending_keys = max_pending_keys
        self.connected = False
        self.disconnected_since: float | None = None
        self.synced = asyncio.Event()
        self.startup_run: RepairRun | None = None
        self.last_error: str | None = None
        self._loop = asyncio.get_running_loop()
        self._watch_task: asyncio.Task[None] | None = None
        self._restart_requested = False
        self._recheck = False
        self._probe_ok = True
        self._events = 0

    def _set_connected(self, connected: bool) -> None:
        if connected:
            if self.disconnected_since is not None:
                log.info("registry reachable again; watch resumed")
            self.connected = True
            self.disconnected_since = None
            self.last_error = None
        else:
            self.connected = False
            if self.disconnected_since is None:
                self.disconnected_since = self._loop.time()
        self.metrics.registry_connected.set(1 if connected else 0)

    async def run(self, fresh: bool) -> None:
        """Watch until cancelled.

        :param fresh: no durable state was loaded: start with a full listing.
        """
        rec = self.reconciler
        reason: str | None = "startup" if fresh else None
        checked = fresh
        failures = 0
        while True:
            try:
                if not checked or self._recheck:
                    self._recheck = False
                    found = await self.repairer.check_registry()
                    if found is not None:
                        self.metrics.watch_restarts.labels(reason=found).inc()
                        reason = found
                    checked = True
                if reason is not None:
                    run = self.repairer.request(reason)
                    if self.startup_run is None and not self.synced.is_set():
                        # Not ready before the first repair (whatever its reason) is done.
                        self.startup_run = run
                    revision = await asyncio.shield(run.listed)
                    if revision is None:
                        raise RegistryUnavailableError(f"{reason} repair could not list")
                    reason = None
                start = rec.received_revision + 1
                # Ready only once the resume point is known good: not compacted
                # away, not above a registry that went back.
                await self.registry.check_resume(start, rec.received_mark or None)
                self.synced.set()
                self._set_connected(True)
                failures = 0
                if await self._watch_until_restart(start):
                    continue
                raise RegistryUnavailableError("watch stream ended")
            except (CompactedError, RegistryRewoundError) as exc:
                # The repairer tells what the refusal means and which repair it needs.
                reason = await self.repairer.resume_refused(exc)
                self.metrics.watch_restarts.labels(reason=reason).inc()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                self._set_connected(False)
                self.metrics.watch_restarts.labels(reason="error").inc()
                delay = compute_backoff(failures, base=self.reconnect_base,
                                        cap=self.reconnect_cap)
                log.warning("registry watch failed (%s); reconnecting in %.2fs",
                            self.last_error, delay)
                await asyncio.sleep(delay)
                checked = False

    async def _watch_until_restart(self, start: int) -> bool:
        """Watch from ``start``; True when :meth:`restart_watch` interrupted it."""
        task = asyncio.create_task(self._watch(start), name="watch-stream")
        self._watch_task = task
        try:
            await asyncio.wait({task})
        finally:
            self._watch_task = None
            if not task.done():
                await cancel_and_wait([task])
        if self._restart_requested:
            self._restart_requested = False
            if not task.cancelled() and task.exception() is not None:
                task.result()
            return True
        task.result()
        return False

    def restart_watch(self, reason: str) -> None:
        """Re-open the watch from the received revision + 1 (safe at any time:
        events already seen are ignored)."""
        task = self._watch_task
        if task is not None and not task.done():
            log.info("restarting the registry watch (%s)", reason)
            self.metrics.watch_restarts.labels(reason=reason).inc()
            self._restart_requested = True
            task.cancel()

    def recheck(self, reason: str) -> None:
        """Check the registry's identity and revision again (it may have been
        reset or rewound), then resume watching."""
        self._recheck = True
        self.restart_watch(reason)

    def note_probe(self, ok: bool, error: str | None = None) -> None:
        """Take the outcome of a registry health probe: a failed probe marks the
        node disconnected even while the watch stream looks open; the first good
        probe after that re-opens the watch, in case the stream died silently."""
        if not ok:
            if self._probe_ok:
                log.warning("registry probe failed (%s)", error)
            self._probe_ok = False
            self.last_error = error
            self._set_connected(False)
        elif not self._probe_ok:
            self._probe_ok = True
            if self._watch_task is not None:
                self._set_connected(True)
                self.restart_watch("reconnect")

    async def _watch(self, start: int) -> None:
        rec = self.reconciler
        limit = self.max_pending_keys
        burst = BurstPause()
        ender: asyncio.Task[None] | None = None
        try:
            async for batch in self.registry.watch_batches("", start_revision=start):
                if isinstance(batch, WatchProgress):
                    rec.on_progress(batch.revision)
                    continue
                # Events that may be taken before back-pressure is checked again
                # (at once: retries may have been queued while the batch came).
                room = 0
                for event in batch:
                    # Back-pressure only between revisions: the events of one
                    # revision (an etcd transaction: a whole apply or cascade)
                    # are taken without yielding, so neither a state flush nor
                    # a status answer ever sees a revision received in part.
                    if room <= 0 and event.revision > rec.received_revision:
                        if rec.full(limit):
                            await rec.capacity(limit)
                        room = rec.room(limit)
                    rec.on_event(event)
                    room -= 1
                self._events += len(batch)
                if not burst.active and rec.urgent >= BURST_KEYS:
                    # A backlog: catch up with the collector off (see BurstPause).
                    burst.start()
                    ender = asyncio.create_task(self._end_burst(burst), name="burst-end")
        finally:
            if ender is not None:
                await cancel_and_wait([ender])
            burst.end(settle=False)

    async def _end_burst(self, burst: BurstPause) -> None:
        """End ``burst`` once the backlog drained and no event came for
        :data:`BURST_QUIET` seconds, or its time ran out (when cancelled, the
        watch ends it without collecting)."""
        rec = self.reconciler
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(burst.max_seconds):
                seen = -1
                while seen != self._events:
                    await rec.wait_urgent_below(1)
                    seen = self._events
                    # A registry hands a backlog over in batches: the queue
                    # drains between two of them without the catch-up being over.
                    await asyncio.sleep(BURST_QUIET)
        burst.end()

