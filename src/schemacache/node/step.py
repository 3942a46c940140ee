"""One reconcile step: a worker's turn with one key.

Compare the key's desired with its applied version; if they differ and nothing
blocks it, hand the version to the handler, then record the outcome: applied
state and convergence on success; on failure a retry after the limiter's
backoff, or -- attempts used up -- a failure record, a repair request and the
repair backoff of the key.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from typing import Any, Protocol

from ..errors import PermanentError, TemporaryError
from ..kinds import kind_of_key
from ..model import Resource
from ..observe.metrics import NodeMetrics
from .deps import Dependencies
from .desired import Desired, delete_version
from .failures import FailureLog
from .gate import DependencyGate, prerequisite_keys
from .handler import HandlerCaller
from .meters import ReconcileMeters
from .nodestate import NodeState
from .progress import Progress
from .queue import PRIO_LIVE, PRIO_REPAIR, PRIO_RETRY, WorkQueue
from .retry import RetryLimiter
from .schedule import Scheduler
from .text import error_text, safe

log = logging.getLogger(__name__)


class RepairRequester(Protocol):
    """What the reconciler needs of the repairer: asking for a full sync."""

    def request(self, reason: str) -> Any: ...


def _outcome_of(error: BaseException) -> str:
    """The ``outcome`` label of a handler call that raised ``error``."""
    if isinstance(error, PermanentError):
        return "permanent"
    if isinstance(error, TimeoutError):
        return "timeout"
    return "error"


def _requested_delay(error: BaseException) -> float | None:
    """The wait a handler asked for with ``TemporaryError(delay=…)``, if any."""
    return error.delay if isinstance(error, TemporaryError) else None


class ReconcileStep:
    """Reconciles one key at a time (called by the workers, concurrently for
    different keys).

    :param state: desired and applied state.
    :param caller: handler invoker.
    :param scheduler: bookkeeping of converged keys.
    :param gate: dependency checks.
    :param deps: dependency parking.
    :param failures: the failure log.
    :param queue: the work queue.
    :param progress: unsettled keys.
    :param limiter: attempts of the event path.
    :param repair_limiter: repair attempts of failed keys.
    :param meters: handler call counters.
    :param metrics: node metrics (propagation delay, retries).
    :param retry_gap: wait before retrying a key whose failure could not even
        be recorded (the first per-key repair gap).

    Set :attr:`repairer` to have an exhausted key start a repair.
    """

    def __init__(self, *, state: NodeState, caller: HandlerCaller, scheduler: Scheduler,
                 gate: DependencyGate, deps: Dependencies, failures: FailureLog,
                 queue: WorkQueue, progress: Progress, limiter: RetryLimiter,
                 repair_limiter: RetryLimiter, meters: ReconcileMeters, metrics: NodeMetrics,
                 retry_gap: float):
        self.state = state
        self.desired = state.desired
        self.applied = state.applied
        self.caller = caller
        self.scheduler = scheduler
        self.gate = gate
        self.deps = deps
        self.failures = failures
        self.queue = queue
        self.progress = progress
        self.limiter = limiter
        self.repair_limiter = repair_limiter
        self._meters = meters
        self.metrics = metrics
        self.retry_gap = retry_gap
        self.repairer: RepairRequester | None = None
        self._calls_handler = caller.active
        self._start_call = caller.start
        self._failed = failures.keys
        self._counting = limiter.counting
        self._repair_counting = repair_limiter.counting
        self._write_ahead = state.write_ahead
        self._store = state.store
        # Bound once: the reconcile step runs once per key per change.
        self._is_settled = state.is_settled
        self._converged = scheduler.converged
        self._blockers = gate.blockers
        self._reindex = gate.reindex
        self._wake_waiters = gate.wake_waiters
        self._observe_propagation = metrics.propagation.observe
        # When each running handler call started (``time.perf_counter``).
        self._running: dict[str, float] = {}

    def step(self, key: str, prio: int) -> Awaitable[None] | None:
        """Take ``key`` one step towards its desired version (``prio``: the
        priority it was queued at, which it keeps if it must wait): ``None``
        once the step is done, else an awaitable that finishes it (a handler
        call that waits for something; most never do, and a catching-up node
        takes tens of thousands of steps a second without a coroutine each)."""
        d = self.desired.get(key)
        if d is None:
            return None
        if self._is_settled(key, d):
            self._converged(key)
            return None
        failed = key in self._failed and self.failures.failed_at(key, d.revision)
        # Computed once: the blockers check and the dependents index both need them.
        prerequisites = [] if d.deleted else prerequisite_keys(
            d.resource if d.model is None else d.model)
        blockers = self._blockers(key, d, prerequisites)
        if blockers:
            self.deps.park(key, blockers, prio)
            return None
        self.deps.unpark(key)

        if self._write_ahead and d.batch > self._store.durable_batch:
            # Write-ahead: the handler sees no version before its desired row
            # is durable; the commit puts the key back in the queue.
            self.state.hold_for_commit(key, prio)
            return None
        applied = self.applied.get(key)
        op = "delete" if d.deleted else "apply"
        stored = (delete_version(d.stored, applied[1]) if d.deleted and applied is not None
                  else d.stored)
        resource = d.model if stored is d.stored and d.model is not None else d.resource_of(stored)
        self._running[key] = started = time.perf_counter()
        try:
            pending = self._start_call(op, resource)
        except asyncio.CancelledError:
            self._running.pop(key, None)
            raise
        except BaseException as exc:
            self._ended(key, d, op, resource, prerequisites, failed, started, exc)
            return None
        if pending is not None:
            return self._finish(pending, key, d, op, resource, prerequisites, failed, started)
        self._ended(key, d, op, resource, prerequisites, failed, started, None)
        return None

    async def _finish(self, pending: Awaitable[None], key: str, d: Desired, op: str,
                      resource: Resource, prerequisites: list[str], failed: bool,
                      started: float) -> None:
        """Wait for a handler call that did not finish at once, then record it
        (see :meth:`_ended`)."""
        error: BaseException | None = None
        try:
            await pending
        except asyncio.CancelledError:
            self._running.pop(key, None)
            raise
        except BaseException as exc:
            error = exc
        self._ended(key, d, op, resource, prerequisites, failed, started, error)

    def _ended(self, key: str, d: Desired, op: str, resource: Resource,
               prerequisites: list[str], failed: bool, started: float,
               error: BaseException | None) -> None:
        """Record how the call ``op`` of ``resource`` (``d``, ``failed``: as
        :meth:`step` saw them) ended: ``error`` raised, or ``None``."""
        self._running.pop(key, None)
        kind = resource.kind
        outcome = "ok" if error is None else _outcome_of(error)
        if self._calls_handler:
            self._meters.call(kind, op, outcome, time.perf_counter() - started)
        if error is None:
            self._on_success(key, d, op, resource, prerequisites)
        elif failed:
            self._on_repair_failure(key, error)
        else:
            self._on_failure(key, kind, d.revision, error, outcome)

    def retry_after_error(self, key: str, exc: BaseException) -> None:
        """Count an unexpected error while reconciling ``key`` as a failed attempt."""
        self._running.pop(key, None)
        d = self.desired.get(key)
        if d is None:
            return
        try:
            if self.failures.failed_at(key, d.revision):
                self._on_repair_failure(key, exc)
            else:
                self._on_failure(key, kind_of_key(key), d.revision, exc, "error")
        except Exception:
            log.exception("recording the failure of %s failed too; retrying it in %.1fs",
                          safe(key), self.retry_gap)
            self.progress.mark_unsettled(key, d.revision)
            self.queue.hold(key, self.retry_gap, PRIO_RETRY)

    def outcome(self, key: str) -> bool | None:
        """For the batches: ``None`` while ``key`` waits for a key on its way,
        else whether it converged."""
        if not self.gate.is_final(key):
            return None
        return self.progress.is_settled(key) and key not in self.failures

    def longest_running(self) -> float:
        """Seconds the oldest handler call still running has taken (0: none runs)."""
        if not self._running:
            return 0.0
        return max(0.0, time.perf_counter() - min(self._running.values()))

    def _on_success(self, key: str, d: Desired, op: str, resource: Resource,
                    prerequisites: list[str]) -> None:
        if op == "apply":
            previous = self.state.set_applied(key, d.revision, d.stored, prerequisites)
            self._reindex(key, previous, prerequisites)
            if previous is None:
                self._meters.cached(resource.kind, +1)
            if d.live and resource.metadata.updated_at is not None:
                # Epoch seconds: a third of the cost of subtracting datetimes.
                delay = time.time() - resource.metadata.updated_at.timestamp()
                self._observe_propagation(max(0.0, delay))
        else:
            previous = self.applied.get(key)
            if previous is not None:
                self.state.drop_applied(key)
                self._reindex(key, previous, ())
                self._meters.cached(resource.kind, -1)
        if key in self._counting:
            self.limiter.forget(key)
        if key in self._repair_counting:
            self.repair_limiter.forget(key)
        current = self.desired.get(key)
        if current is d or (current is not None and self._is_settled(key, current)):
            self.progress.settle(key)
        elif current is not None:
            # Desired changed while the call ran and may have looked settled then
            # (a delete arriving during the first apply): make sure it is done.
            self.progress.mark_unsettled(key, current.revision)
            self.queue.add(key, PRIO_LIVE if current.live else PRIO_REPAIR)
        if key in self._failed and (current is d or current is None
                                     or self._is_settled(key, current)):
            self.scheduler.clear_failure(key)
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
            self._exhausted(key, kind, revision, count, text, outcome == "permanent")
            return
        self.metrics.retries.labels(kind=kind).inc()
        log.info("%s revision %d attempt %d failed (%s); retry in %.3fs", safe(key), revision,
                 count, text, delay)

    def _exhausted(self, key: str, kind: str, revision: int, attempts: int, text: str,
                   permanent: bool) -> None:
        """``key``'s attempts at ``revision`` are used up: record it, hand it to
        the repair backoff and ask for a repair."""
        self.failures.exhausted(key, kind, revision, attempts=attempts,
                                first_failed=self.limiter.first_failed(key) or time.time(),
                                error=text, permanent=permanent)
        self.limiter.forget(key)
        self.repair_limiter.forget(key)
        self.queue.add_rate_limited(key, self.repair_limiter, revision, PRIO_REPAIR)
        self.progress.settle(key)
        if self.repairer is not None:
            self.repairer.request("exhausted")
        # Keys parked behind this one are final for now: let their batches see it.
        self._wake_waiters(key)

    def _on_repair_failure(self, key: str, error: BaseException) -> None:
        record = self.failures.repair_failed(key, error_text(error))
        gap = self.queue.add_rate_limited(key, self.repair_limiter, record.revision, PRIO_REPAIR,
                                          delay=_requested_delay(error))
        # The limiter's first count is the wait that followed exhaustion.
        n = self.repair_limiter.attempts(key) - 1
        log.info("%s still failing after repair attempt %d (%s); next in %.1fs", safe(key), n,
                 record.last_error, gap)
        self._wake_waiters(key)
