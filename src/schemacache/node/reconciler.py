"""The heart of a node: desired vs applied state per key, reconciled by workers.

Events (and repairs) only change *desired* state and enqueue the key; a worker
takes the key, compares desired with applied, and calls the handler.  Failed
calls are retried with backoff up to ``max_attempts`` per (key, revision);
after that the key is recorded as failed and only repair touches it, with its
own per-key backoff.  A key whose prerequisite is not applied is parked until
it is.

:class:`Reconciler` composes the parts that do this, one concern each:
:class:`~.nodestate.NodeState` (state, written through; the write-ahead rule),
:class:`~.intake.Intake` (watch events), :class:`~.listing.ListingRefresh`
(full listings), :class:`~.startup.Startup` (resuming from disk),
:class:`~.step.ReconcileStep` (one key's turn with the handler),
:class:`~.schedule.Scheduler`, :class:`~.gate.DependencyGate`,
:class:`~.progress.Progress`, :class:`~.failures.FailureLog`, the retry
limiters, the work queue and the workers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Any

from ..model import Event
from ..observe.alerts import Alerter
from ..observe.metrics import NodeMetrics
from .deps import Dependencies
from .desired import Desired
from .failures import ALERT_EXHAUSTED, FailureLog
from .gate import DependencyGate
from .handler import HandlerCaller
from .intake import Intake
from .listing import Listed, ListingRefresh
from .meters import ReconcileMeters
from .nodestate import UNKNOWN_REVISION, NodeState
from .progress import Progress
from .queue import WorkQueue
from .retry import RetryLimiter, RetryPolicy
from .schedule import Scheduler
from .startup import Keyed, Startup
from .state import LoadedState, StateStore
from .step import ReconcileStep, RepairRequester
from .workers import WorkBatch, Workers

__all__ = ["ALERT_EXHAUSTED", "UNKNOWN_REVISION", "Desired", "Listed", "Reconciler",
           "RepairRequester", "WorkBatch"]


CAPACITY_RESUME_DIVISOR = 4
"""A watch held back at ``limit`` urgent keys resumes at ``limit - limit // 4``."""
ROOM_CHECK_EVERY = 64
"""Most events the watch takes between two back-pressure checks (see
:meth:`Reconciler.room`)."""


class Reconciler:
    """The loop that composes a node's parts: events and listings change desired
    state, workers reconcile each key with the handler, outcomes go to the
    retry limiters, the failure log, dependency parking and progress.

    :param store: durable state.
    :param caller: handler invoker.
    :param retry: retry policy of the event path.
    :param metrics: node metrics.
    :param alerter: alert sink.
    :param workers: concurrent workers.
    :param repair_backoff_base: first gap between repair attempts of a failed key.
    :param repair_backoff_cap: largest such gap.

    Set :attr:`repairer` to have an exhausted key start a repair.
    """

    on_event: Callable[[Event], None]
    """Take one watch event: update desired state and enqueue the key."""
    on_progress: Callable[[int], None]
    """Take a watch progress mark: nothing under the schema changed after the
    events received so far, up to the revision given."""

    def __init__(self, *, store: StateStore, caller: HandlerCaller, retry: RetryPolicy,
                 metrics: NodeMetrics, alerter: Alerter, workers: int,
                 repair_backoff_base: float, repair_backoff_cap: float):
        self.caller = caller
        self.queue = WorkQueue()
        self.progress = Progress(received=lambda: self.state.received_revision)
        self.deps = Dependencies(metrics.blocked_keys)
        self.failures = FailureLog(store=store, metrics=metrics, alerter=alerter)
        meters = ReconcileMeters(metrics)
        self.limiter = RetryLimiter(retry)
        """Failed handler calls per key from the event path."""
        # Per-key repair waits the bound, unjittered: a failed key is one key on
        # one node, there is no crowd to spread, and an operator can tell when
        # its next repair attempt comes.
        self.repair_limiter = RetryLimiter(
            RetryPolicy(base=repair_backoff_base, cap=repair_backoff_cap, jitter="none"),
            exhaustible=False)
        """Repair attempts per failed key."""
        self.state = NodeState(store, on_durable=self.queue.add, write_ahead=caller.active,
                               dependents=self.deps.dependents)
        """The one owner of node state (desired and applied read through the aliases below)."""
        self.desired = self.state.desired
        self.applied = self.state.applied
        self.cache = self.state.cache
        gate = DependencyGate(self.state, self.deps, self.queue, self.failures)
        scheduler = Scheduler(state=self.state, progress=self.progress, deps=self.deps,
                              failures=self.failures, queue=self.queue, limiter=self.limiter,
                              repair_limiter=self.repair_limiter)
        self._step = ReconcileStep(
            state=self.state, caller=caller, scheduler=scheduler, gate=gate, deps=self.deps,
            failures=self.failures, queue=self.queue, progress=self.progress, meters=meters,
            limiter=self.limiter, repair_limiter=self.repair_limiter, metrics=metrics,
            retry_gap=repair_backoff_base)
        self.workers = Workers(self.queue, workers, reconcile=self._step.step,
                               on_error=self._step.retry_after_error, outcome=self._step.outcome)
        self._listing = ListingRefresh(state=self.state, progress=self.progress,
                                       scheduler=scheduler)
        self._startup = Startup(state=self.state, deps=self.deps, gate=gate,
                                failures=self.failures, meters=meters, queue=self.queue,
                                repair_limiter=self.repair_limiter, scheduler=scheduler)
        intake = Intake(state=self.state, progress=self.progress, meters=meters,
                        scheduler=scheduler, gate=gate)
        # The syncer calls these once per watch event: bound, not wrapped.
        self.on_event = intake.on_event
        self.on_progress = intake.on_progress

    @property
    def repairer(self) -> RepairRequester | None:
        """Asked for a repair when a key's attempts are used up (``None``: nobody)."""
        return self._step.repairer

    @repairer.setter
    def repairer(self, repairer: RepairRequester | None) -> None:
        self._step.repairer = repairer

    # ------------------------------------------------------------------ loading

    def load(self, loaded: LoadedState) -> None:
        """Adopt the state found on disk."""
        self._startup.load(loaded)
        self.progress.notify()  # a waiter may already be satisfied by the loaded state

    def replay_plan(self) -> tuple[Keyed, Keyed]:
        """What a restarted handler must be handed to rebuild its state: the
        resources to apply and those to delete, in order, each with its key
        (see :meth:`Startup.replay_plan`)."""
        return self._startup.replay_plan()

    def replayed(self, applies: Keyed, deletes: Keyed,
                 errors: dict[str, BaseException]) -> None:
        """Adopt the outcome of the start-up replay (see :meth:`replay_plan`)."""
        self._startup.replayed(applies, deletes, errors)

    def enqueue_backlog(self) -> WorkBatch:
        """Enqueue every key whose desired != applied (after loading state)."""
        return self.workers.track(self._startup.backlog())

    # ------------------------------------------------------------------ workers

    def start_workers(self) -> None:
        self.workers.start()

    async def stop_workers(self) -> None:
        await self.workers.stop()

    def workers_alive(self) -> bool:
        return self.workers.alive()

    # ------------------------------------------------------------------ repair

    def refresh_from_listing(self, resources: Iterable[Listed], revision: int, *, reset: bool,
                             manual: bool, rewound: bool = False) -> WorkBatch:
        """Fold a full listing at ``revision`` (see :func:`list_registry`) into
        desired state and enqueue every unsettled key at repair priority; a
        batch done once a worker handled each (see :meth:`ListingRefresh.refresh`
        for ``reset``, ``manual`` and ``rewound``)."""
        return self.workers.track(self._listing.refresh(resources, revision, reset=reset,
                                                        manual=manual, rewound=rewound))

    # ------------------------------------------------------------------ backpressure

    @property
    def urgent(self) -> int:
        """Keys waiting at live or retry priority, in the queue or for a commit."""
        return self.queue.urgent + self.state.awaiting_urgent

    async def wait_urgent_below(self, limit: int) -> None:
        """Return once fewer than ``limit`` keys count as :attr:`urgent`."""
        # Held keys count too, so the queue's own urgent count must be below as well.
        await self.queue.wait_for(lambda: self.urgent < limit, urgent_below=limit)

    def full(self, limit: int) -> bool:
        """Whether :meth:`capacity` would wait (checked first: most events find
        room, and a call that need not wait should cost no coroutine)."""
        return self.urgent >= limit or self.state.writes_backlogged

    def room(self, limit: int) -> int:
        """Events that may be taken before :meth:`full` must be asked again
        (asking once per event cost a tenth of taking it): an event makes at
        most one more key urgent, its own (keys it unblocks are not held back by
        a check either), and the state store's pending writes are looked at
        every :data:`ROOM_CHECK_EVERY` events at least."""
        return min(limit - self.urgent, ROOM_CHECK_EVERY)

    async def capacity(self, limit: int) -> None:
        """Return once another event can be taken: fewer than ``limit`` keys count
        as :attr:`urgent` and the state store takes writes (backpressure: slow
        handlers or a slow disk slow the watch instead of growing a buffer)."""
        if self.urgent >= limit:
            # Resume at a low-water mark: resuming at ``limit - 1`` switched to
            # the watch and back once per key a worker took.
            await self.wait_urgent_below(limit - limit // CAPACITY_RESUME_DIVISOR)
        if self.state.writes_backlogged:
            await self.state.wait_writable()

    # ------------------------------------------------------------------ progress

    @property
    def cluster_id(self) -> str | None:
        """The registry's cluster id, as last seen."""
        return self.state.cluster_id

    @property
    def received_mark(self) -> str:
        """The change mark of the change received at :attr:`received_revision`
        (``""``: not known, e.g. the revision of a listing or a progress mark)."""
        return self.state.received_mark

    @property
    def received_revision(self) -> int:
        """Every event up to it was received."""
        return self.state.received_revision

    @property
    def settled_revision(self) -> int:
        """Highest R such that every event up to R is settled (applied, deleted or
        recorded as failed)."""
        return self.progress.settled_revision(self.state.received_revision)

    applied_revision = settled_revision
    """Former name of :attr:`settled_revision`."""

    def reached(self, revision: int) -> asyncio.Future[None] | None:
        """``None`` once :attr:`settled_revision` ≥ ``revision``, else a future done
        when it is; one given up on goes to :meth:`Progress.discard`."""
        return self.progress.reached(revision)

    # ------------------------------------------------------------------ introspection

    def blocked(self) -> list[dict[str, Any]]:
        return self.deps.blocked()

    def failure_list(self) -> list[dict[str, Any]]:
        return self.failures.to_list()

    def longest_running(self) -> float:
        return self._step.longest_running()

    @property
    def pending(self) -> int:
        """Keys not settled yet."""
        return self.progress.pending
