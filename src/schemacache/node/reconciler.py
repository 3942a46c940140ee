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
import heapq
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .._gc import gc_paused
from ..errors import PermanentError, TemporaryError
from ..kinds import level, references
from ..model import Event, EventType, Resource
from ..observe.alerts import Alerter
from ..observe.metrics import NodeMetrics
from .cache import NodeCache
from .handler import HandlerCaller
from .queue import PRIO_LIVE, PRIO_REPAIR, PRIO_RETRY, WorkQueue
from .retry import RetryLimiter, RetryPolicy
from .state import FailureRecord, LoadedState, StateStore
from .tasks import cancel_and_wait
from .text import error_text, safe

log = logging.getLogger(__name__)

ALERT_EXHAUSTED = "SchemaEventRetriesExhausted"
UNKNOWN_REVISION = -1
"""Applied revision of a resource whose version must be applied again (after a
registry reset, or when re-applying it at start-up failed)."""
YIELD_EVERY = 64
"""Keys a worker handles without a handler await before yielding to the loop."""

NODE_KIND = "node"


@dataclass(slots=True)
class Desired:
    """The newest version of a key the node knows of.

    :param revision: the version's revision (the delete revision for a tombstone).
    :param deleted: a tombstone: the key is deleted at ``revision``.
    :param resource: the version (for a tombstone, the last version known).
    :param live: received from the watch (its propagation delay is measured).
    """

    revision: int
    deleted: bool
    resource: Resource
    live: bool = False


@dataclass
class WorkBatch:
    """Keys enqueued together (a repair, the start-up backlog); done when a
    worker has handled each of them once."""

    outstanding: set[str]
    done: asyncio.Event = field(default_factory=asyncio.Event)
    incomplete: bool = False

    def finish(self, key: str, ok: bool) -> None:
        if key in self.outstanding:
            self.outstanding.discard(key)
            if not ok:
                self.incomplete = True
            if not self.outstanding:
                self.done.set()


def _prerequisite_keys(resource: Resource) -> list[str]:
    """The keys ``resource`` references (see :func:`schemacache.kinds.references`)."""
    return [ref.key for ref in references(resource)]


def _kind(key: str) -> str:
    return key.split("/", 1)[0]


def _requested_delay(error: BaseException) -> float | None:
    """The wait a handler asked for with ``TemporaryError(delay=…)``, if any."""
    return error.delay if isinstance(error, TemporaryError) else None


class Reconciler:
    """Desired/applied state, the work queue, the workers and the retry limiter.

    :param store: durable state.
    :param caller: handler invoker.
    :param retry: retry policy of the event path.
    :param metrics: node metrics.
    :param alerter: alert sink.
    :param workers: concurrent workers.
    :param repair_backoff_base: first gap between repair attempts of a failed key.
    :param repair_backoff_cap: largest such gap.
    :param request_repair: called with a reason when a repair is needed.
    """

    def __init__(self, *, store: StateStore, caller: HandlerCaller, retry: RetryPolicy,
                 metrics: NodeMetrics, alerter: Alerter, workers: int,
                 repair_backoff_base: float, repair_backoff_cap: float,
                 request_repair: Callable[[str], Any]):
        self.store = store
        self.caller = caller
        self.retry = retry
        self.metrics = metrics
        self.alerter = alerter
        self.workers = workers
        self.repair_backoff_base = repair_backoff_base
        self.repair_backoff_cap = repair_backoff_cap
        self._request_repair = request_repair
        self.queue = WorkQueue()
        self.limiter = RetryLimiter(retry)
        """Failed handler calls per key from the event path."""
        # Per-key repair waits the bound, unjittered: a failed key is one key on
        # one node, there is no crowd to spread, and an operator can tell when
        # its next repair attempt comes.
        self.repair_limiter = RetryLimiter(
            RetryPolicy(base=repair_backoff_base, cap=repair_backoff_cap, jitter="none"),
            exhaustible=False)
        """Repair attempts per failed key."""
        self.desired: dict[str, Desired] = {}
        self.applied: dict[str, tuple[int, Resource]] = {}
        self.failures: dict[str, FailureRecord] = {}
        self.cache = NodeCache(self.applied)
        self.received_revision = 0
        self.cluster_id: str | None = None
        self._parked: dict[str, tuple[list[str], int]] = {}
        self._waiters: dict[str, set[str]] = {}
        self._dependents: dict[str, set[str]] = {}
        self._unsettled: dict[str, int] = {}
        # Keys whose handler call waits for their desired row to be committed
        # (write-ahead), with the priority they go back to the queue at then.
        self._awaiting_commit: dict[str, int] = {}
        self._awaiting_urgent = 0  # of those, keys at live or retry priority
        self._heap: list[tuple[int, str]] = []
        self._running: dict[str, float] = {}
        self._batches: list[WorkBatch] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._kind_counts: dict[str, int] = {}
        self._event_counters: dict[tuple[str, EventType], Any] = {}
        self._kind_gauges: dict[str, Any] = {}
        self._call_metrics: dict[tuple[str, str, str], tuple[Any, Any]] = {}
        self._progress = asyncio.Event()
        self._progress_used = False
        self._loop = asyncio.get_running_loop()
        store.on_desired_committed = self._desired_committed

    # ------------------------------------------------------------------ loading

    def load(self, loaded: LoadedState) -> None:
        """Adopt the state found on disk."""
        # Millions of long-lived objects are created here and none form cycles:
        # with the collector on, its passes over the growing heap dominate.
        with gc_paused():
            self._load(loaded)

    def _load(self, loaded: LoadedState) -> None:
        self.received_revision = loaded.received_revision
        self.cluster_id = loaded.cluster_id
        for key, (rev, deleted, res) in loaded.desired.items():
            self.desired[key] = Desired(rev, deleted, res)
        counts: dict[str, int] = {}
        for key, (rev, res) in loaded.applied.items():
            self.applied[key] = (rev, res)
            self._index_dependents(key, None, _prerequisite_keys(res))
            kind = _kind(key)
            counts[kind] = counts.get(kind, 0) + 1
            if key not in self.desired:  # cannot happen with an intact file; be safe
                self.desired[key] = Desired(rev, False, res)
        # One gauge update per kind, not per key (labels()/set() cost microseconds).
        for kind, n in counts.items():
            self._count_kind(kind, n)
        self.failures.update(loaded.failures)
        for key, failure in self.failures.items():
            # A failed key is retried by repair one base gap after start-up.
            self.queue.add_rate_limited(key, self.repair_limiter, failure.revision, PRIO_REPAIR)
        self.metrics.failed_keys.set(len(self.failures))
        self.cache.invalidate()

    def mark_reapply(self, keys: Iterable[str]) -> None:
        """Force the applied version of ``keys`` to be applied again."""
        for key in keys:
            entry = self.applied.get(key)
            if entry is not None:
                self.applied[key] = (UNKNOWN_REVISION, entry[1])

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
                    # The tombstone carries the registry's last version: the one
                    # the handler may hold, possibly newer than the applied one.
                    deletes.append(d.resource)
            elif a is not None and a[0] == d.revision:
                applies.append(a[1])
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
            self.applied[key] = (d.revision, res)
            self.store.put_applied(key, d.revision, res)
            self._index_dependents(key, previous[1] if previous else None,
                                   _prerequisite_keys(res))
            if previous is None:
                self._count_kind(_kind(key), +1)
        for res in deletes:
            key = res.key
            if key in errors:
                continue
            previous = self.applied.pop(key, None)
            self.store.delete_applied(key)
            if previous is not None:
                self._index_dependents(key, previous[1], ())
                self._count_kind(_kind(key), -1)
        self.mark_reapply(errors)
        self.cache.invalidate()

    def enqueue_backlog(self) -> WorkBatch:
        """Enqueue every key whose desired != applied (after loading state)."""
        return self._enqueue_unsettled(self.desired.keys(), manual=False, prio=PRIO_LIVE)

    # ------------------------------------------------------------------ workers

    def start_workers(self) -> None:
        for i in range(self.workers):
            self._tasks.append(asyncio.create_task(self._worker(), name=f"worker-{i}"))

    async def stop_workers(self) -> None:
        self.queue.shutdown()
        await cancel_and_wait(self._tasks)
        self._tasks.clear()
        for batch in self._batches:
            batch.done.set()

    def workers_alive(self) -> bool:
        return bool(self._tasks) and not any(t.done() for t in self._tasks)

    async def _worker(self) -> None:
        handled = 0
        while True:
            key, prio = await self.queue.pop()
            try:
                await self._reconcile(key, prio)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # A bug must not lose the key: it is retried by the normal rules.
                log.exception("reconcile of %s failed unexpectedly; it will be retried",
                              safe(key))
                self._retry_after_error(key, exc)
            finally:
                self.queue.done(key)
            if self._batches and self._is_final(key):
                ok = self._is_settled(key) and key not in self.failures
                for batch in self._batches:
                    batch.finish(key, ok)
                self._batches = [b for b in self._batches if not b.done.is_set()]
            handled += 1
            if handled % YIELD_EVERY == 0:
                await asyncio.sleep(0)

    # ------------------------------------------------------------------ events

    def on_event(self, event: Event) -> None:
        """Take one watch event: update desired state and enqueue the key."""
        key = event.key
        deleted = event.type == EventType.DELETE
        counter = self._event_counters.get((event.resource.kind, event.type))
        if counter is None:
            counter = self.metrics.events_received.labels(kind=event.resource.kind,
                                                          type=event.type.value)
            self._event_counters[(event.resource.kind, event.type)] = counter
        counter.inc()
        if event.resource.kind != NODE_KIND:
            cur = self.desired.get(key)
            if cur is None or cur.revision < event.revision:
                d = Desired(event.revision, deleted, event.resource, True)
                self.desired[key] = d
                self.store.put_desired(key, d.revision, deleted, d.resource, True,
                                       event.stored_json)
                self._desired_changed(key, d, PRIO_LIVE)
        if event.revision > self.received_revision:
            self.received_revision = event.revision
            self.store.set_received_revision(event.revision)
        self._notify_progress()

    def on_progress(self, revision: int) -> None:
        """Take a watch progress mark: nothing under the schema changed after
        the events received so far, up to ``revision``."""
        if revision > self.received_revision:
            self.received_revision = revision
            self.store.set_received_revision(revision)
            self._notify_progress()

    def _desired_changed(self, key: str, d: Desired, prio: int) -> None:
        self._desired_changed_quiet(key, d)
        if self._is_settled_applied(key, d):
            self._settle(key)
            self._unpark(key)
            if key in self.failures:
                self._clear_failure(key)
            self._wake_waiters(key)
        else:
            self._mark_unsettled(key, d.revision)
            self._enqueue(key, prio)

    # ------------------------------------------------------------------ repair

    def refresh_from_listing(self, resources: list[Resource], revision: int, *, reset: bool,
                             manual: bool, rewound: bool = False) -> WorkBatch:
        """Fold a full listing at ``revision`` into desired state and enqueue every
        unsettled key at repair priority.

        :param reset: the registry was recreated: revisions before it mean nothing,
            so every applied version is applied again and desired state is replaced.
        :param manual: ignore the per-key repair backoff of failed keys.
        :param rewound: the registry went back to ``revision`` (a restored
            backup; default ``False``): every version the node knows above it
            belongs to a history the registry no longer has -- those desired
            versions are replaced by the listing (or a tombstone) and those
            applied versions are applied again; versions at or below it are
            the registry's own and stay.
        """
        listed: dict[str, Resource] = {}
        for r in resources:
            if r.kind != NODE_KIND:
                listed[r.key] = r
        if rewound and not reset:
            self._forget_future(revision)
        if reset:
            self.mark_reapply(list(self.applied))
            for key, (rev, res) in self.applied.items():
                self.store.put_applied(key, rev, res)
            for key in self.limiter.keys() + self.repair_limiter.keys():
                self.queue.cancel_timer(key)
            for key in list(self.failures):
                self._clear_failure(key)
            self.limiter.clear()
            self.repair_limiter.clear()
        for key, r in listed.items():
            cur = self.desired.get(key)
            if reset or cur is None or cur.revision < r.mod_revision or (
                    rewound and cur.revision != r.mod_revision):
                d = Desired(r.mod_revision, False, r)
                self.desired[key] = d
                self.store.put_desired(key, d.revision, False, r)
                self._desired_changed_quiet(key, d)
        for key, cur in list(self.desired.items()):
            if key in listed:
                continue
            if cur.deleted:
                if key not in self.applied and (reset or rewound or cur.revision <= revision):
                    # Deleted everywhere and covered by this listing: forget it.
                    del self.desired[key]
                    self.store.delete_desired(key)
                    self._settle(key)
                    continue
                if not (rewound and cur.revision > revision):
                    continue
            if reset or rewound or cur.revision <= revision:
                d = Desired(revision, True, cur.resource)
                self.desired[key] = d
                self.store.put_desired(key, d.revision, True, d.resource)
                self._desired_changed_quiet(key, d)
        if reset or rewound or revision > self.received_revision:
            self.received_revision = revision
            self.store.set_received_revision(revision)
        self._notify_progress()
        return self._enqueue_unsettled(list(self.desired), manual=manual, prio=PRIO_REPAIR)

    def _forget_future(self, revision: int) -> None:
        """Drop what the node knows from beyond ``revision`` of a rewound registry."""
        for key, (rev, res) in list(self.applied.items()):
            if rev > revision:
                self.applied[key] = (UNKNOWN_REVISION, res)
                self.store.put_applied(key, UNKNOWN_REVISION, res)
        for key in [k for k, f in self.failures.items() if f.revision > revision]:
            self._clear_failure(key)
        for key in self.limiter.forget_above(revision):
            self.queue.cancel_timer(key)
        self.cache.invalidate()

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
                self._settle(key)
                self._unpark(key)
                if key in self.failures:
                    self._clear_failure(key)
                continue
            self._mark_unsettled(key, d.revision)
            failure = self.failures.get(key)
            if failure is not None and failure.revision == d.revision:
                self._settle(key)  # recorded as failed: settled until it changes
                if manual:
                    self.queue.cancel_timer(key)  # a manual repair tries it at once
                elif self.queue.is_held(key):
                    continue  # its repair backoff brings it back
            elif self.limiter.attempts(key, d.revision):
                continue  # the event path still owns it
            (deletes if d.deleted else puts).append(key)
        puts.sort(key=lambda k: (level(_kind(k)), k))
        deletes.sort(key=lambda k: (-level(_kind(k)), k))
        batch = WorkBatch(set(puts) | set(deletes))
        for key in puts + deletes:
            self._enqueue(key, prio)
        if batch.outstanding:
            self._batches.append(batch)
        else:
            batch.done.set()
        return batch

    # ------------------------------------------------------------------ reconcile

    async def _reconcile(self, key: str, prio: int) -> None:
        d = self.desired.get(key)
        if d is None:
            return
        if self._is_settled_applied(key, d):
            self._settle(key)
            self._unpark(key)
            if key in self.failures:
                self._clear_failure(key)
            return
        failure = self.failures.get(key)
        failed = failure is not None and failure.revision == d.revision
        # Computed once: the blockers check and the dependents index both need them.
        prerequisites = [] if d.deleted else _prerequisite_keys(d.resource)
        blockers = self._blockers(key, d, prerequisites)
        if blockers:
            self._park(key, blockers, prio)
            return
        self._unpark(key)

        revision = d.revision
        if self.caller.active and not self.store.desired_durable(key, revision):
            # Write-ahead: the handler sees no version before its desired row
            # is durable; the commit puts the key back in the queue.
            self._await_commit(key, prio)
            return
        applied = self.applied.get(key)
        op = "delete" if d.deleted else "apply"
        resource = applied[1] if d.deleted and applied is not None else d.resource
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
            self._count_call(kind, op, outcome, time.perf_counter() - started)
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
            failure = self.failures.get(key)
            if failure is not None and failure.revision == d.revision:
                self._on_repair_failure(key, exc, "error")
            else:
                self._on_failure(key, _kind(key), d.revision, exc, "error")
        except Exception:
            log.exception("recording the failure of %s failed too; retrying it in %.1fs",
                          safe(key), self.repair_backoff_base)
            self._mark_unsettled(key, d.revision)
            self.queue.hold(key, self.repair_backoff_base, PRIO_RETRY)

    def _enqueue(self, key: str, prio: int) -> None:
        """Queue ``key`` for a worker -- once its desired row is durable, when a
        handler is called (write-ahead; until then it waits, see
        :meth:`_desired_committed`)."""
        d = self.desired.get(key)
        if self.caller.active and d is not None and not self.store.desired_durable(
                key, d.revision):
            self._await_commit(key, prio)
        else:
            self.queue.add(key, prio)

    def _await_commit(self, key: str, prio: int) -> None:
        old = self._awaiting_commit.get(key)
        if old is not None:
            prio = min(prio, old)
            self._awaiting_urgent -= old <= PRIO_RETRY
        self._awaiting_commit[key] = prio
        self._awaiting_urgent += prio <= PRIO_RETRY
        self.store.request_commit()

    def _desired_committed(self, keys: Iterable[str]) -> None:
        awaiting = self._awaiting_commit
        if not awaiting:
            return
        released: list[tuple[int, int, str]] = []
        desired = self.desired
        durable = self.store.desired_durable
        for key in keys:
            prio = awaiting.get(key)
            if prio is None:
                continue
            d = desired.get(key)
            if d is None or durable(key, d.revision):
                del awaiting[key]
                self._awaiting_urgent -= prio <= PRIO_RETRY
                lvl = level(_kind(key))
                released.append((prio, -lvl if d is not None and d.deleted else lvl, key))
        # Most urgent first; prerequisites before what needs them, dependents
        # before the deletes they block (as a repair queues them).
        released.sort()
        for prio, _, key in released:
            self.queue.add(key, prio)

    @property
    def urgent(self) -> int:
        """Keys waiting at live or retry priority, in the queue or for a commit."""
        return self.queue.urgent + self._awaiting_urgent

    async def wait_urgent_below(self, limit: int) -> None:
        """Return once fewer than ``limit`` keys count as :attr:`urgent`."""
        await self.queue.wait_for(lambda: self.urgent < limit)

    def _count_call(self, kind: str, op: str, outcome: str, seconds: float) -> None:
        # labels() hashes and locks on every call: keep the children per label set.
        children = self._call_metrics.get((kind, op, outcome))
        if children is None:
            children = (self.metrics.handler_calls.labels(kind=kind, op=op, outcome=outcome),
                        self.metrics.handler_duration.labels(kind=kind, op=op))
            self._call_metrics[(kind, op, outcome)] = children
        children[0].inc()
        children[1].observe(seconds)

    def _on_success(self, key: str, d: Desired, op: str, resource: Resource,
                    prerequisites: list[str]) -> None:
        previous = self.applied.get(key)
        if op == "apply":
            self.applied[key] = (d.revision, resource)
            self.store.put_applied(key, d.revision, resource)
            self._index_dependents(key, previous[1] if previous else None, prerequisites)
            if previous is None:
                self._count_kind(_kind(key), +1)
            if d.live and resource.metadata.updated_at is not None:
                delay = (datetime.now(UTC) - resource.metadata.updated_at).total_seconds()
                self.metrics.propagation.observe(max(0.0, delay))
        else:
            if previous is not None:
                del self.applied[key]
                self.store.delete_applied(key)
                self._index_dependents(key, previous[1], ())
                self._count_kind(_kind(key), -1)
        self.cache.invalidate()
        self.limiter.forget(key)
        self.repair_limiter.forget(key)
        current = self.desired.get(key)
        if current is d or (current is not None and self._is_settled_applied(key, current)):
            self._settle(key)
        elif current is not None:
            # Desired changed while the call ran and may have looked settled then
            # (a delete arriving during the first apply): make sure it is done.
            self._mark_unsettled(key, current.revision)
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
            now_wall = time.time()
            record = FailureRecord(key, revision, count,
                                   self.limiter.first_failed(key) or now_wall, now_wall, text)
            self.limiter.forget(key)
            self.failures[key] = record
            self.store.put_failure(record)
            self.metrics.retries_exhausted.labels(kind=kind).inc()
            self.metrics.failed_keys.set(len(self.failures))
            self.repair_limiter.forget(key)
            self.queue.add_rate_limited(key, self.repair_limiter, revision, PRIO_REPAIR)
            self._settle(key)
            why = "permanent error" if outcome == "permanent" else f"{count} attempts"
            log.warning("%s revision %d failed (%s): %s", safe(key), revision, why, text)
            self.alerter.fire(ALERT_EXHAUSTED, key=key,
                              summary=f"{key} revision {revision} failed after {why}",
                              error=text)
            self._request_repair("exhausted")
            # Keys parked behind this one are final for now: let their batches see it.
            self._wake_waiters(key)
            return
        self.metrics.retries.labels(kind=kind).inc()
        log.info("%s revision %d attempt %d failed (%s); retry in %.3fs", safe(key), revision,
                 count, text, delay)

    def _on_repair_failure(self, key: str, error: BaseException, outcome: str) -> None:
        record = self.failures[key]
        record.attempts += 1
        record.last_failed = time.time()
        record.last_error = error_text(error)
        self.store.put_failure(record)
        gap = self.queue.add_rate_limited(key, self.repair_limiter, record.revision, PRIO_REPAIR,
                                          delay=_requested_delay(error))
        # The limiter's first count is the wait that followed exhaustion.
        n = self.repair_limiter.attempts(key) - 1
        log.info("%s still failing after repair attempt %d (%s); next in %.1fs", safe(key), n,
                 record.last_error, gap)
        self._wake_waiters(key)
        self.alerter.fire(ALERT_EXHAUSTED, key=key,
                          summary=f"{key} revision {record.revision} still failing "
                                  f"after {record.attempts} attempts",
                          error=record.last_error)

    def _clear_failure(self, key: str) -> None:
        if self.failures.pop(key, None) is not None:
            self.store.delete_failure(key)
            self.metrics.failed_keys.set(len(self.failures))
            self.alerter.resolve(ALERT_EXHAUSTED, key=key)
            log.info("%s converged; failure record cleared", safe(key))
        self.repair_limiter.forget(key)

    # ------------------------------------------------------------------ dependencies

    def _prerequisite_ready(self, key: str) -> bool:
        d = self.desired.get(key)
        a = self.applied.get(key)
        return d is not None and not d.deleted and a is not None and a[0] == d.revision

    def _blockers(self, key: str, d: Desired, prerequisites: list[str]) -> list[str]:
        """What ``key`` waits for: applied dependents before a delete, the
        ``prerequisites`` (keys ``d.resource`` references) before an apply."""
        if d.deleted:
            return sorted(k for k in self._dependents.get(key, ()) if k in self.applied)
        return [ref for ref in prerequisites if not self._prerequisite_ready(ref)]

    def _is_final(self, key: str) -> bool:
        """Whether a worker is done with ``key`` for now: not parked behind a
        prerequisite that is still on its way (one that failed or is gone is final)."""
        entry = self._parked.get(key)
        if key in self._awaiting_commit:
            return False
        if entry is None or self.queue.is_dirty(key):
            return entry is None
        for b in entry[0]:
            if self.queue.is_dirty(b) or self.queue.is_processing(b):
                continue  # on its way
            d = self.desired.get(b)
            if d is None or b in self.failures or (d.deleted and b not in self.applied):
                return True
        return False

    def _park(self, key: str, blockers: list[str], prio: int) -> None:
        self._unpark(key)
        self._parked[key] = (blockers, prio)
        for b in blockers:
            self._waiters.setdefault(b, set()).add(key)
        self.metrics.blocked_keys.set(len(self._parked))

    def _unpark(self, key: str) -> None:
        entry = self._parked.pop(key, None)
        if entry is None:
            return
        for b in entry[0]:
            waiting = self._waiters.get(b)
            if waiting is not None:
                waiting.discard(key)
                if not waiting:
                    del self._waiters[b]
        self.metrics.blocked_keys.set(len(self._parked))

    def _wake_waiters(self, key: str) -> None:
        for waiter in list(self._waiters.get(key, ())):
            entry = self._parked.get(waiter)
            self.queue.add(waiter, entry[1] if entry else PRIO_LIVE)

    def _index_dependents(self, key: str, old: Resource | None,
                          new_prerequisites: Iterable[str]) -> None:
        """Move ``key`` in the dependents index from what ``old`` (its previous
        applied version, if any) references to ``new_prerequisites``."""
        if old is not None:
            for ref in _prerequisite_keys(old):
                deps = self._dependents.get(ref)
                if deps is not None:
                    deps.discard(key)
                    if not deps:
                        del self._dependents[ref]
        for ref in new_prerequisites:
            self._dependents.setdefault(ref, set()).add(key)

    # ------------------------------------------------------------------ settledness

    def _is_settled_applied(self, key: str, d: Desired) -> bool:
        a = self.applied.get(key)
        if d.deleted:
            return a is None
        return a is not None and a[0] == d.revision

    def _is_settled(self, key: str) -> bool:
        return key not in self._unsettled

    def _mark_unsettled(self, key: str, revision: int) -> None:
        if self._unsettled.get(key) != revision:
            self._unsettled[key] = revision
            heapq.heappush(self._heap, (revision, key))

    def _settle(self, key: str) -> None:
        if self._unsettled.pop(key, None) is not None:
            self._notify_progress()

    @property
    def applied_revision(self) -> int:
        """Highest R such that every event up to R is settled."""
        heap = self._heap
        unsettled = self._unsettled
        while heap and unsettled.get(heap[0][1]) != heap[0][0]:
            heapq.heappop(heap)
        if not heap:
            return self.received_revision
        return min(self.received_revision, heap[0][0] - 1)

    def progress_event(self) -> asyncio.Event:
        """An event set at the next change of desired or applied state (take it
        before checking the condition you wait for)."""
        self._progress_used = True
        return self._progress

    def _notify_progress(self) -> None:
        if self._progress_used:
            event, self._progress = self._progress, asyncio.Event()
            self._progress_used = False
            event.set()

    # ------------------------------------------------------------------ introspection

    def _count_kind(self, kind: str, delta: int) -> None:
        n = self._kind_counts.get(kind, 0) + delta
        self._kind_counts[kind] = n
        gauge = self._kind_gauges.get(kind)
        if gauge is None:
            gauge = self._kind_gauges[kind] = self.metrics.cache_entries.labels(kind=kind)
        gauge.set(n)

    def blocked(self) -> list[dict[str, Any]]:
        return [{"key": k, "blocked_by": list(v[0])} for k, v in sorted(self._parked.items())]

    def failure_list(self) -> list[dict[str, Any]]:
        return [self.failures[k].to_dict() for k in sorted(self.failures)]

    def longest_running(self) -> float:
        if not self._running:
            return 0.0
        return max(0.0, self._loop.time() - min(self._running.values()))

    @property
    def pending(self) -> int:
        """Keys not settled yet."""
        return len(self._unsettled)
