"""The heart of a node: desired vs applied state per key, reconciled by workers.

Events (and repairs) only change *desired* state and enqueue the key; a worker
takes the key, compares desired with applied, and calls the handler.  Failed
calls are retried with backoff up to ``max_attempts`` per (key, revision);
after that the key is recorded as failed and only repair touches it, with its
own per-key backoff.  A key whose prerequisite is not applied is parked until
it is.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, Protocol

from .._gc import gc_paused
from ..errors import PermanentError, TemporaryError
from ..kinds import level, references
from ..model import Event, EventType, Resource
from ..observe.alerts import Alerter
from ..observe.metrics import NodeMetrics
from ..registry.base import Registry
from ..registry.history import event_mark
from ..stored import StoredResource
from .deps import Dependencies
from .failures import ALERT_EXHAUSTED, FailureLog
from .handler import HandlerCaller
from .meters import ReconcileMeters
from .nodestate import UNKNOWN_REVISION, Desired, NodeState
from .progress import Progress
from .queue import PRIO_LIVE, PRIO_REPAIR, PRIO_RETRY, WorkQueue
from .retry import RetryLimiter, RetryPolicy
from .state import MAX_PENDING_WRITES, LoadedState, StateStore
from .text import error_text, safe
from .workers import WorkBatch, Workers

log = logging.getLogger(__name__)

__all__ = ["ALERT_EXHAUSTED", "UNKNOWN_REVISION", "Desired", "Reconciler", "WorkBatch"]

NODE_KIND = "node"


class RepairRequester(Protocol):
    """What the reconciler needs of the repairer: asking for a full sync."""

    def request(self, reason: str) -> Any: ...


Listed = tuple[str, StoredResource | Resource]
"""One resource of a full listing: its key and its record, or its model when
the registry built one anyway."""


async def list_registry(registry: Registry) -> tuple[Iterable[Listed], int]:
    """``registry``'s full listing for a sync (to be iterated once): its stored
    text where the backend hands that out (no model is built), else the models
    of :meth:`Registry.list` (a model whose key needs it becomes a record, and
    is kept until the key settles)."""
    if registry.lists_stored_text:
        return await registry.list_stored()
    resources, revision = await registry.list()
    return ((r.key, r) for r in resources), revision


def _prerequisite_keys(resource: Resource) -> list[str]:
    """The keys ``resource`` references (see :func:`schemacache.kinds.references`)."""
    return [ref.key for ref in references(resource)]


def _delete_version(tombstone: StoredResource, applied: StoredResource) -> StoredResource:
    """The version a delete names: the newest the handler may hold.

    The tombstone carries the registry's last version, possibly newer than the
    applied one (handed, then lost to a crash before it settled); a start-up
    replay hands that one, so every retry must too -- never an older one.  A
    tombstone whose last version was compacted away (revision 0) names the
    applied version.
    """
    return tombstone if tombstone.mod_revision >= applied.mod_revision else applied


def _kind(key: str) -> str:
    return key.split("/", 1)[0]


def _requested_delay(error: BaseException) -> float | None:
    """The wait a handler asked for with ``TemporaryError(delay=…)``, if any."""
    return error.delay if isinstance(error, TemporaryError) else None


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

    def __init__(self, *, store: StateStore, caller: HandlerCaller, retry: RetryPolicy,
                 metrics: NodeMetrics, alerter: Alerter, workers: int,
                 repair_backoff_base: float, repair_backoff_cap: float):
        self.store = store
        self.caller = caller
        self.retry = retry
        self.metrics = metrics
        self.repair_backoff_base = repair_backoff_base
        self.repairer: RepairRequester | None = None
        self.queue = WorkQueue()
        self.workers = Workers(self.queue, workers, reconcile=self._reconcile,
                               on_error=self._retry_after_error, outcome=self._outcome)
        self.progress = Progress()
        self._received: Event | str = ""
        """The change received at the received revision, or its mark ("": unknown)."""
        self.deps = Dependencies(metrics.blocked_keys)
        self.failures = FailureLog(store=store, metrics=metrics, alerter=alerter)
        self._meters = ReconcileMeters(metrics)
        self.limiter = RetryLimiter(retry)
        """Failed handler calls per key from the event path."""
        # Per-key repair waits the bound, unjittered: a failed key is one key on
        # one node, there is no crowd to spread, and an operator can tell when
        # its next repair attempt comes.
        self.repair_limiter = RetryLimiter(
            RetryPolicy(base=repair_backoff_base, cap=repair_backoff_cap, jitter="none"),
            exhaustible=False)
        """Repair attempts per failed key."""
        self.state = NodeState(store, on_durable=self.queue.add)
        """The one owner of desired and applied state (read through the aliases below)."""
        self.desired = self.state.desired
        self.applied = self.state.applied
        self.cache = self.state.cache
        self._running: dict[str, float] = {}
        self._loop = asyncio.get_running_loop()

    # ------------------------------------------------------------------ loading

    def load(self, loaded: LoadedState) -> None:
        """Adopt the state found on disk."""
        # Millions of long-lived objects are created here and none form cycles:
        # with the collector on, its passes over the growing heap dominate.
        with gc_paused():
            self._load(loaded)

    def _load(self, loaded: LoadedState) -> None:
        self.progress.received_revision = loaded.received_revision
        self._received = loaded.received_mark
        self.state.cluster_id = loaded.cluster_id
        for key, (rev, deleted, stored) in loaded.desired.items():
            self.desired[key] = Desired(rev, deleted, stored)
        counts: dict[str, int] = {}
        for key, (rev, stored) in loaded.applied.items():
            self.applied[key] = (rev, stored)
            model = stored.model()
            self.deps.index(key, (), _prerequisite_keys(model))
            kind = _kind(key)
            counts[kind] = counts.get(kind, 0) + 1
            d = self.desired.get(key)
            if d is None:  # cannot happen with an intact file; be safe
                self.desired[key] = d = Desired(rev, False, stored)
            if d.stored is stored:
                d.model = model  # the start-up replay hands it over; dropped once settled
        # One gauge update per kind, not per key (labels()/set() cost microseconds).
        for kind, n in counts.items():
            self._meters.cached(kind, n)
        self.failures.load(loaded.failures)
        for key, failure in loaded.failures.items():
            # A failed key is retried by repair one base gap after start-up.
            self.queue.add_rate_limited(key, self.repair_limiter, failure.revision, PRIO_REPAIR)
        self.cache.invalidate()

    @property
    def cluster_id(self) -> str | None:
        """The registry's cluster id, as last seen."""
        return self.state.cluster_id

    def replay_plan(self) -> tuple[list[Resource], list[Resource]]:
        """What a restarted handler must be handed to rebuild its state: the
        resources to apply and those to delete.

        Per key, the newest version the handler may have seen: the applied one
        for a settled key; for any other key, its durable desired version --
        a handler is never handed a version before that row is committed, so
        it is never older than anything handed before the crash -- as an
        apply, or as a delete for a tombstone.  A stale applied version is
        never handed over again.
        """
        applies: list[Resource] = []
        deletes: list[Resource] = []
        for key, d in self.desired.items():
            a = self.applied.get(key)
            if d.deleted:
                if a is not None:
                    deletes.append(d.resource_of(_delete_version(d.stored, a[1])))
            elif a is not None and a[0] == d.revision:
                applies.append(d.resource_of(a[1]))
            else:
                applies.append(d.resource)
        return applies, deletes

    def replayed(self, applies: list[Resource], deletes: list[Resource],
                 errors: dict[str, BaseException]) -> None:
        """Adopt the outcome of the start-up replay (see :meth:`replay_plan`)."""
        for res in applies:
            key = res.key
            d = self.desired[key]
            previous = self.applied.get(key)
            if key in errors or (previous is not None and previous[0] == d.revision):
                continue
            # Not settled before: ``res`` is the desired version (see replay_plan).
            self.state.set_applied(key, d.revision, d.stored)
            self._reindex(key, previous, _prerequisite_keys(res))
            if previous is None:
                self._meters.cached(_kind(key), +1)
        for res in deletes:
            key = res.key
            if key in errors:
                continue
            previous = self.state.drop_applied(key)
            if previous is not None:
                self._reindex(key, previous, ())
                self._meters.cached(_kind(key), -1)
        self.state.mark_reapply(errors)

    def enqueue_backlog(self) -> WorkBatch:
        """Enqueue every key whose desired != applied (after loading state)."""
        return self._enqueue_unsettled(self.desired.keys(), manual=False, prio=PRIO_LIVE)

    # ------------------------------------------------------------------ workers

    def start_workers(self) -> None:
        self.workers.start()

    async def stop_workers(self) -> None:
        await self.workers.stop()

    def workers_alive(self) -> bool:
        return self.workers.alive()

    def _outcome(self, key: str) -> bool | None:
        """For the batches: ``None`` while ``key`` waits for a key on its way,
        else whether it converged."""
        if not self._is_final(key):
            return None
        return self.progress.is_settled(key) and key not in self.failures

    # ------------------------------------------------------------------ events

    def on_event(self, event: Event) -> None:
        """Take one watch event: update desired state and enqueue the key."""
        key = event.key
        deleted = event.type == EventType.DELETE
        self._meters.event(event.resource.kind, event.type)
        if event.resource.kind != NODE_KIND:
            cur = self.desired.get(key)
            if cur is None or cur.revision < event.revision:
                d = Desired.of(event.revision, deleted, event.resource, True, event.stored_json)
                self.state.set_desired(key, d)
                self._desired_changed(key, d, PRIO_LIVE)
        if self.progress.receive(event.revision):
            self._received = event
            self.store.set_received_revision(event.revision, event)
        self.progress.notify()

    def on_progress(self, revision: int) -> None:
        """Take a watch progress mark: nothing under the schema changed after
        the events received so far, up to ``revision``."""
        if self.progress.receive(revision):
            self._received = ""
            self.store.set_received_revision(revision)
            self.progress.notify()

    def _desired_changed(self, key: str, d: Desired, prio: int) -> None:
        self._desired_changed_quiet(key, d)
        if self._is_settled_applied(key, d):
            self._converged(key)
            self._wake_waiters(key)
        else:
            self.progress.mark_unsettled(key, d.revision)
            self._enqueue(key, prio)

    # ------------------------------------------------------------------ repair

    def refresh_from_listing(self, resources: Iterable[Listed], revision: int, *, reset: bool,
                             manual: bool, rewound: bool = False) -> WorkBatch:
        """Fold a full listing at ``revision`` (see :func:`list_registry`) into
        desired state and enqueue every unsettled key at repair priority.

        :param reset: the registry was recreated: revisions before it mean nothing,
            so every applied version is applied again and desired state is replaced.
        :param manual: ignore the per-key repair backoff of failed keys.
        :param rewound: the registry went back to ``revision`` (a restored
            backup; default ``False``): every version the node knows above it
            belongs to a history the registry no longer has -- those desired
            versions are replaced by the listing (or a tombstone) and those
            applied versions are applied again; versions at or below it are
            the registry's own and stay.  When ``revision`` is not below the
            received revision (restored, then written past it), every desired
            version is replaced and every applied one applied again.
        """
        listed = {key: r for key, r in resources if _kind(key) != NODE_KIND}
        # Rewound below what the node received, the versions above the listing are
        # the lost ones; at or past it (restored, then written past) revisions cannot
        # tell lost from kept, so every version is taken from the listing again.
        past = rewound and revision >= self.progress.received_revision
        if rewound and not reset:
            self._forget_future(0 if past else revision)
        if reset:
            self.state.mark_reapply(list(self.applied), durable=True)
            for key in self.limiter.keys() + self.repair_limiter.keys():
                self.queue.cancel_timer(key)
            for key in list(self.failures):
                self._clear_failure(key)
            self.limiter.clear()
            self.repair_limiter.clear()
        for key, r in listed.items():
            cur = self.desired.get(key)
            if reset or past or cur is None or cur.revision < r.mod_revision or (
                    rewound and cur.revision != r.mod_revision):
                d = (Desired.of(r.mod_revision, False, r) if isinstance(r, Resource)
                     else Desired(r.mod_revision, False, r))
                self.state.set_desired(key, d)
                self._desired_changed_quiet(key, d)
        for key, cur in list(self.desired.items()):
            if key in listed:
                continue
            if cur.deleted:
                if key not in self.applied and (reset or rewound or cur.revision <= revision):
                    # Deleted everywhere and covered by this listing: forget it.
                    self.state.drop_desired(key)
                    self.progress.settle(key)
                    continue
                if not (rewound and cur.revision > revision):
                    continue
            if reset or rewound or cur.revision <= revision:
                d = Desired(revision, True, cur.stored)
                self.state.set_desired(key, d)
                self._desired_changed_quiet(key, d)
        if reset or rewound or revision > self.progress.received_revision:
            self.progress.received_revision = revision
            self._received = ""
            self.store.set_received_revision(revision)
        self.progress.notify()
        return self._enqueue_unsettled(list(self.desired), manual=manual, prio=PRIO_REPAIR)

    def _forget_future(self, revision: int) -> None:
        """Drop what the node knows from beyond ``revision`` of a rewound registry."""
        self.state.mark_reapply([k for k, (rev, _) in self.applied.items() if rev > revision],
                                durable=True)
        for key in self.failures.above(revision):
            self._clear_failure(key)
        for key in self.limiter.forget_above(revision):
            self.queue.cancel_timer(key)

    def _desired_changed_quiet(self, key: str, d: Desired) -> None:
        """Forget attempts and repair backoff that belong to an older version."""
        if self.limiter.revision(key) not in (None, d.revision):
            # A newer version supersedes a failing one: fresh attempts, at once.
            self.limiter.forget(key)
            self.queue.cancel_timer(key)
        failure = self.failures.get(key)
        if failure is not None and failure.revision != d.revision:
            self.repair_limiter.forget(key)
            self.queue.cancel_timer(key)

    def _enqueue_unsettled(self, keys: Iterable[str], *, manual: bool, prio: int) -> WorkBatch:
        puts: list[str] = []
        deletes: list[str] = []
        for key in keys:
            d = self.desired.get(key)
            if d is None:
                continue
            if self._is_settled_applied(key, d):
                self._converged(key)
                continue
            self.progress.mark_unsettled(key, d.revision)
            failure = self.failures.get(key)
            if failure is not None and failure.revision == d.revision:
                self.progress.settle(key)  # recorded as failed: settled until it changes
                if manual:
                    self.queue.cancel_timer(key)  # a manual repair tries it at once
                elif self.queue.is_held(key):
                    continue  # its repair backoff brings it back
            elif self.limiter.attempts(key, d.revision):
                continue  # the event path still owns it
            (deletes if d.deleted else puts).append(key)
        puts.sort(key=lambda k: (level(_kind(k)), k))
        deletes.sort(key=lambda k: (-level(_kind(k)), k))
        batch = self.workers.track(puts + deletes)
        for key in puts + deletes:
            self._enqueue(key, prio)
        return batch

    # ------------------------------------------------------------------ reconcile

    async def _reconcile(self, key: str, prio: int) -> None:
        d = self.desired.get(key)
        if d is None:
            return
        if self._is_settled_applied(key, d):
            self._converged(key)
            return
        failed = self.failures.failed_at(key, d.revision)
        # Computed once: the blockers check and the dependents index both need them.
        prerequisites = [] if d.deleted else _prerequisite_keys(d.resource)
        blockers = self._blockers(key, d, prerequisites)
        if blockers:
            self.deps.park(key, blockers, prio)
            return
        self.deps.unpark(key)

        revision = d.revision
        if self.caller.active and not self.state.durable(key):
            # Write-ahead: the handler sees no version before its desired row
            # is durable; the commit puts the key back in the queue.
            self.state.hold_for_commit(key, prio)
            return
        applied = self.applied.get(key)
        op = "delete" if d.deleted else "apply"
        stored = (_delete_version(d.stored, applied[1]) if d.deleted and applied is not None
                  else d.stored)
        resource = d.resource_of(stored)
        kind = resource.kind
        self._running[key] = self._loop.time()
        started = time.perf_counter()
        outcome = "ok"
        error: BaseException | None = None
        try:
            await self.caller.call(op, resource)
        except PermanentError as exc:
            outcome, error = "permanent", exc
        except TimeoutError as exc:
            outcome, error = "timeout", exc
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            outcome, error = "error", exc
        finally:
            self._running.pop(key, None)
        if self.caller.active:
            self._meters.call(kind, op, outcome, time.perf_counter() - started)
        if error is None:
            self._on_success(key, d, op, resource, prerequisites)
        elif failed:
            self._on_repair_failure(key, error, outcome)
        else:
            self._on_failure(key, kind, revision, error, outcome)

    def _retry_after_error(self, key: str, exc: BaseException) -> None:
        """Count an unexpected error while reconciling ``key`` as a failed attempt."""
        self._running.pop(key, None)
        d = self.desired.get(key)
        if d is None:
            return
        try:
            if self.failures.failed_at(key, d.revision):
                self._on_repair_failure(key, exc, "error")
            else:
                self._on_failure(key, _kind(key), d.revision, exc, "error")
        except Exception:
            log.exception("recording the failure of %s failed too; retrying it in %.1fs",
                          safe(key), self.repair_backoff_base)
            self.progress.mark_unsettled(key, d.revision)
            self.queue.hold(key, self.repair_backoff_base, PRIO_RETRY)

    def _enqueue(self, key: str, prio: int) -> None:
        """Queue ``key`` for a worker -- once its desired row is durable, when a
        handler is called (write-ahead; until then :attr:`state` holds it)."""
        if self.caller.active and not self.state.durable(key):
            self.state.hold_for_commit(key, prio)
        else:
            self.queue.add(key, prio)

    @property
    def urgent(self) -> int:
        """Keys waiting at live or retry priority, in the queue or for a commit."""
        return self.queue.urgent + self.state.awaiting_urgent

    async def wait_urgent_below(self, limit: int) -> None:
        """Return once fewer than ``limit`` keys count as :attr:`urgent`."""
        await self.queue.wait_for(lambda: self.urgent < limit)

    async def capacity(self, limit: int) -> None:
        """Return once another event can be taken: fewer than ``limit`` keys count
        as :attr:`urgent` and the state store takes writes (backpressure: slow
        handlers or a slow disk slow the watch instead of growing a buffer)."""
        if self.urgent >= limit:
            await self.wait_urgent_below(limit)
        if self.store.pending > MAX_PENDING_WRITES:
            await self.store.wait_writable()

    def _on_success(self, key: str, d: Desired, op: str, resource: Resource,
                    prerequisites: list[str]) -> None:
        previous = self.applied.get(key)
        if op == "apply":
            self.state.set_applied(key, d.revision, d.stored)
            self._reindex(key, previous, prerequisites)
            if previous is None:
                self._meters.cached(_kind(key), +1)
            if d.live and resource.metadata.updated_at is not None:
                delay = (datetime.now(UTC) - resource.metadata.updated_at).total_seconds()
                self.metrics.propagation.observe(max(0.0, delay))
        else:
            if previous is not None:
                self.state.drop_applied(key)
                self._reindex(key, previous, ())
                self._meters.cached(_kind(key), -1)
        self.limiter.forget(key)
        self.repair_limiter.forget(key)
        current = self.desired.get(key)
        if current is d or (current is not None and self._is_settled_applied(key, current)):
            self.progress.settle(key)
        elif current is not None:
            # Desired changed while the call ran and may have looked settled then
            # (a delete arriving during the first apply): make sure it is done.
            self.progress.mark_unsettled(key, current.revision)
            self.queue.add(key, PRIO_LIVE if current.live else PRIO_REPAIR)
        if key in self.failures and (current is d or current is None
                                     or self._is_settled_applied(key, current)):
            self._clear_failure(key)
        self._wake_waiters(key)

    def _on_failure(self, key: str, kind: str, revision: int, error: BaseException,
                    outcome: str) -> None:
        current = self.desired.get(key)
        if current is not None and current.revision != revision:
            # Superseded while the call ran: the newer version is already queued.
            self.limiter.forget(key)
            return
        text = error_text(error)
        if outcome == "permanent":
            self.limiter.when(key, revision)  # counted; no retry
            delay = None
        else:
            delay = self.queue.add_rate_limited(key, self.limiter, revision, PRIO_RETRY,
                                                delay=_requested_delay(error))
        count = self.limiter.attempts(key)
        if delay is None:
            self.failures.exhausted(key, kind, revision, attempts=count,
                                    first_failed=self.limiter.first_failed(key) or time.time(),
                                    error=text, permanent=outcome == "permanent")
            self.limiter.forget(key)
            self.repair_limiter.forget(key)
            self.queue.add_rate_limited(key, self.repair_limiter, revision, PRIO_REPAIR)
            self.progress.settle(key)
            if self.repairer is not None:
                self.repairer.request("exhausted")
            # Keys parked behind this one are final for now: let their batches see it.
            self._wake_waiters(key)
            return
        self.metrics.retries.labels(kind=kind).inc()
        log.info("%s revision %d attempt %d failed (%s); retry in %.3fs", safe(key), revision,
                 count, text, delay)

    def _on_repair_failure(self, key: str, error: BaseException, outcome: str) -> None:
        record = self.failures.repair_failed(key, error_text(error))
        gap = self.queue.add_rate_limited(key, self.repair_limiter, record.revision, PRIO_REPAIR,
                                          delay=_requested_delay(error))
        # The limiter's first count is the wait that followed exhaustion.
        n = self.repair_limiter.attempts(key) - 1
        log.info("%s still failing after repair attempt %d (%s); next in %.1fs", safe(key), n,
                 record.last_error, gap)
        self._wake_waiters(key)

    def _clear_failure(self, key: str) -> None:
        self.failures.clear(key)
        self.repair_limiter.forget(key)

    def _converged(self, key: str) -> None:
        """``key``'s applied state matches its desired state: settled, waiting for
        nothing, not failed."""
        self.progress.settle(key)
        self.deps.unpark(key)
        if key in self.failures:
            self._clear_failure(key)
        self.state.release_model(key)

    # ------------------------------------------------------------------ dependencies

    def _prerequisite_ready(self, key: str) -> bool:
        d = self.desired.get(key)
        a = self.applied.get(key)
        return d is not None and not d.deleted and a is not None and a[0] == d.revision

    def _blockers(self, key: str, d: Desired, prerequisites: list[str]) -> list[str]:
        """What ``key`` waits for: applied dependents before a delete, the
        ``prerequisites`` (keys ``d.resource`` references) before an apply."""
        if d.deleted:
            return sorted(k for k in self.deps.dependents(key) if k in self.applied)
        return [ref for ref in prerequisites if not self._prerequisite_ready(ref)]

    def _is_final(self, key: str) -> bool:
        """Whether a worker is done with ``key`` for now: not parked behind a
        prerequisite that is still on its way (one that failed or is gone is final)."""
        blockers = self.deps.blockers(key)
        if self.state.awaits_commit(key):
            return False
        if blockers is None or self.queue.is_dirty(key):
            return blockers is None
        for b in blockers:
            if self.queue.is_dirty(b) or self.queue.is_processing(b):
                continue  # on its way
            d = self.desired.get(b)
            if d is None or b in self.failures or (d.deleted and b not in self.applied):
                return True
        return False

    def _wake_waiters(self, key: str) -> None:
        for waiter, prio in self.deps.waiters(key):
            self.queue.add(waiter, prio)

    def _reindex(self, key: str, previous: tuple[int, StoredResource] | None,
                 new_prerequisites: Iterable[str]) -> None:
        """Move ``key`` in the dependents index from what its ``previous`` applied
        version referenced to ``new_prerequisites``."""
        old = _prerequisite_keys(previous[1].model()) if previous is not None else ()
        self.deps.index(key, old, new_prerequisites)

    # ------------------------------------------------------------------ progress

    def _is_settled_applied(self, key: str, d: Desired) -> bool:
        return self.state.is_settled(key, d)

    @property
    def received_mark(self) -> str:
        """The change mark of the change received at :attr:`received_revision`
        (``""``: not known, e.g. the revision of a listing or a progress mark)."""
        received = self._received
        return received if isinstance(received, str) else event_mark(received)

    @property
    def received_revision(self) -> int:
        """Every event up to it was received."""
        return self.progress.received_revision

    @property
    def settled_revision(self) -> int:
        """Highest R such that every event up to R is settled (applied, deleted or
        recorded as failed)."""
        return self.progress.settled_revision

    applied_revision = settled_revision
    """Former name of :attr:`settled_revision`."""

    def progress_event(self) -> asyncio.Event:
        """An event set at the next change of desired or applied state (take it
        before checking the condition you wait for)."""
        return self.progress.changed()

    # ------------------------------------------------------------------ introspection

    def blocked(self) -> list[dict[str, Any]]:
        return self.deps.blocked()

    def failure_list(self) -> list[dict[str, Any]]:
        return self.failures.to_list()

    def longest_running(self) -> float:
        if not self._running:
            return 0.0
        return max(0.0, self._loop.time() - min(self._running.values()))

    @property
    def pending(self) -> int:
        """Keys not settled yet."""
        return self.progress.pending
