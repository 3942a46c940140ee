"""Scheduling: which keys go to the workers, and the bookkeeping of a key whose
desired version changed or converged.

A newer desired version wipes what the limiters counted for an older one; a
converged key is settled, waits for nothing and has no failure record; a
full sync queues every unsettled key in dependency order (prerequisites
first for applies, dependents first for deletes) -- except keys whose
backoff still runs.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..kinds import level_of_key
from .deps import Dependencies
from .desired import Desired
from .failures import FailureLog
from .nodestate import NodeState
from .progress import Progress
from .queue import WorkQueue
from .retry import RetryLimiter


class Scheduler:
    """Queues keys and keeps their per-key bookkeeping consistent.

    :param state: desired and applied state (admits keys under the write-ahead rule).
    :param progress: unsettled keys.
    :param deps: dependency parking.
    :param failures: the failure log.
    :param queue: the work queue.
    :param limiter: attempts of the event path.
    :param repair_limiter: repair attempts of failed keys.
    """

    def __init__(self, *, state: NodeState, progress: Progress, deps: Dependencies,
                 failures: FailureLog, queue: WorkQueue, limiter: RetryLimiter,
                 repair_limiter: RetryLimiter):
        self.state = state
        self.desired = state.desired
        self.progress = progress
        self.deps = deps
        self.failures = failures
        self.queue = queue
        self.limiter = limiter
        self.repair_limiter = repair_limiter

    def forget_stale(self, key: str, d: Desired) -> None:
        """``d`` is ``key``'s new desired version: forget attempts and repair
        backoff that belong to an older one."""
        if key not in self.limiter.counting and key not in self.failures.keys:
            return  # nothing counted: the common case, once per event
        if self.limiter.revision(key) not in (None, d.revision):
            # A newer version supersedes a failing one: fresh attempts, at once.
            self.limiter.forget(key)
            self.queue.cancel_timer(key)
        failure = self.failures.get(key)
        if failure is not None and failure.revision != d.revision:
            self.repair_limiter.forget(key)
            self.queue.cancel_timer(key)

    def converged(self, key: str) -> None:
        """``key``'s applied state matches its desired state: settled, waiting for
        nothing, not failed."""
        self.progress.settle(key)
        self.deps.unpark(key)
        if key in self.failures:
            self.clear_failure(key)
        self.state.release_model(key)

    def clear_failure(self, key: str) -> None:
        """``key`` is not failed any more: drop its record and repair backoff."""
        self.failures.clear(key)
        self.repair_limiter.forget(key)

    def forget_above(self, revision: int) -> None:
        """The registry went back to ``revision``: forget failures and attempts
        of versions beyond it (a history the registry no longer has)."""
        for key in self.failures.above(revision):
            self.clear_failure(key)
        for key in self.limiter.forget_above(revision):
            self.queue.cancel_timer(key)

    def forget_all(self) -> None:
        """The registry was recreated: forget every failure and attempt."""
        for key in self.limiter.keys() + self.repair_limiter.keys():
            self.queue.cancel_timer(key)
        for key in list(self.failures):
            self.clear_failure(key)
        self.limiter.clear()
        self.repair_limiter.clear()

    def enqueue_unsettled(self, keys: Iterable[str], *, manual: bool, prio: int) -> list[str]:
        """Queue each of ``keys`` whose applied state differs from its desired
        state, at ``prio``; the keys queued, in the order queued.

        A key the event path still retries is left to it; a failed key waits
        for its repair backoff unless ``manual``.
        """
        puts: list[str] = []
        deletes: list[str] = []
        for key in keys:
            d = self.desired.get(key)
            if d is None:
                continue
            if self.state.is_settled(key, d):
                self.converged(key)
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
        puts.sort(key=lambda k: (level_of_key(k), k))
        deletes.sort(key=lambda k: (-level_of_key(k), k))
        queued = puts + deletes
        for key in queued:
            self.state.admit(key, prio)
        return queued
