"""Resuming from durable state: adopt what was on disk, hand a restarted
handler the versions it may have seen (the start-up replay), then queue
every key whose desired version is not applied yet.
"""

from __future__ import annotations

from .._gc import gc_paused
from ..kinds import kind_of_key, level_of_key
from ..model import Resource
from .deps import Dependencies
from .desired import Desired, delete_version
from .failures import FailureLog
from .gate import DependencyGate, prerequisite_keys, stored_prerequisite_keys
from .meters import ReconcileMeters
from .nodestate import NodeState
from .queue import PRIO_LIVE, PRIO_REPAIR, WorkQueue
from .retry import RetryLimiter
from .schedule import Scheduler
from .state import LoadedState

Keyed = list[tuple[str, Resource]]
"""Resources, each with its key, in the order the start-up replay hands them over."""


def _apply_rank(key: str) -> tuple[int, str]:
    """:func:`~schemacache.kinds.apply_order`'s rank, from the key (a model's
    key is built anew on each read)."""
    return level_of_key(key), key


def _delete_rank(item: tuple[str, Resource]) -> tuple[int, str]:
    """:func:`~schemacache.kinds.delete_order`'s rank, from the key at hand."""
    return -level_of_key(item[0]), item[0]


class Startup:
    """Brings a node's parts to where the last process left them.

    :param state: desired and applied state.
    :param deps: the dependents index.
    :param gate: keeps the index in step with re-applied versions.
    :param failures: the failure log.
    :param meters: cached resources per kind.
    :param queue: the work queue.
    :param repair_limiter: repair attempts of failed keys.
    :param scheduler: queues the unsettled keys.
    """

    def __init__(self, *, state: NodeState, deps: Dependencies, gate: DependencyGate,
                 failures: FailureLog, meters: ReconcileMeters, queue: WorkQueue,
                 repair_limiter: RetryLimiter, scheduler: Scheduler):
        self.state = state
        self.desired = state.desired
        self.applied = state.applied
        self.deps = deps
        self.gate = gate
        self.failures = failures
        self._meters = meters
        self.queue = queue
        self.repair_limiter = repair_limiter
        self.scheduler = scheduler
        # Of the last replay plan: unsettled keys handed their desired version,
        # with the keys it references.
        self._desired_handed: dict[str, list[str]] = {}

    def load(self, loaded: LoadedState) -> None:
        """Adopt the state found on disk."""
        # Millions of long-lived objects are created here and none form cycles:
        # with the collector on, its passes over the growing heap dominate.
        with gc_paused():
            self._load(loaded)

    def _load(self, loaded: LoadedState) -> None:
        self.state.adopt_received(loaded.received_revision, loaded.received_mark,
                                  loaded.cluster_id)
        desired = self.desired
        for key, (rev, deleted, stored) in loaded.desired.items():
            desired[key] = Desired(rev, deleted, stored)
        counts: dict[str, int] = {}
        for key, (rev, stored) in loaded.applied.items():
            self.applied[key] = (rev, stored)
            self.deps.index(key, (), stored_prerequisite_keys(key, stored))
            kind = kind_of_key(key)
            counts[kind] = counts.get(kind, 0) + 1
            if key not in desired:  # cannot happen with an intact file; be safe
                desired[key] = Desired(rev, False, stored)
        if self.state.write_ahead:
            # The start-up replay hands the handler every desired version
            # (most applied versions are the desired ones, and the others are
            # the unwritten applied rows): built here, while the collector is
            # paused and before the survivors are frozen (built later, each
            # collection walks them all again).  Dropped once settled.
            for d in desired.values():
                if not d.deleted:
                    d.model = d.stored.model()
        # One gauge update per kind, not per key (labels()/set() cost microseconds).
        for kind, n in counts.items():
            self._meters.cached(kind, n)
        self.failures.load(loaded.failures)
        for key, failure in loaded.failures.items():
            # A failed key is retried by repair one base gap after start-up.
            self.queue.add_rate_limited(key, self.repair_limiter, failure.revision, PRIO_REPAIR)
        self.state.cache.invalidate()

    def replay_plan(self) -> tuple[Keyed, Keyed]:
        """What a restarted handler must be handed to rebuild its state: the
        resources to apply, prerequisites first, and those to delete,
        dependents first (the orders of :func:`~schemacache.kinds.apply_order`
        and :func:`~schemacache.kinds.delete_order`), each with its key.

        Per key, the newest version the handler may have seen: the applied one
        for a settled key; for any other key, its durable desired version --
        a handler is never handed a version before that row is committed, so
        it is never older than anything handed before the crash -- as an
        apply, or as a delete for a tombstone.  A stale applied version is
        never handed over again.

        A version that was parked was never handed over (every commit takes
        all that is pending, so a prerequisite's later change is never durable
        without the dependent's earlier applied row), so it is held back: an
        unsettled key whose prerequisites are not all applied on disk or
        handed over earlier in this replay (a prerequisite that is missing,
        deleted, recorded as failed or itself held back) gets its applied
        version, the newest it was handed, or nothing; a delete whose key is
        still referenced by an applied key this replay does not delete is left
        out.  Such a key stays unsettled and a worker parks it again.
        """
        applies: Keyed = []
        deletes: Keyed = []
        handed = self._desired_handed
        handed.clear()
        applied = self.applied
        desired = self.desired
        ready: dict[str, bool] = {}  # per prerequisite: most keys share their group
        # In apply order, so a key's prerequisites are decided before it is.
        for key in sorted((k for k, d in desired.items() if not d.deleted), key=_apply_rank):
            d = desired[key]
            a = applied.get(key)
            if a is not None and a[0] == d.revision:
                applies.append((key, d.resource_of(a[1])))
                continue
            res = d.resource
            prerequisites = prerequisite_keys(res)
            for ref in prerequisites:
                if ref not in ready:
                    ready[ref] = self._replayed_ready(ref, handed)
                if not ready[ref]:
                    break
            else:
                applies.append((key, res))
                handed[key] = prerequisites
                continue
            if a is not None:
                applies.append((key, d.resource_of(a[1])))
        for key, d in desired.items():
            a = applied.get(key) if d.deleted else None
            if a is not None:
                deletes.append((key, d.resource_of(delete_version(d.stored, a[1]))))
        return applies, self._handed_deletes(deletes)

    def _replayed_ready(self, key: str, handed: dict[str, list[str]]) -> bool:
        """Whether prerequisite ``key`` is applied once the replay handed the
        unsettled keys in ``handed``: settled on disk, or handed over and not
        recorded as failed at that version (a failure of an older version does
        not stop a newer one from having been handed)."""
        d = self.desired.get(key)
        if d is None or d.deleted:
            return False
        a = self.applied.get(key)
        if a is not None and a[0] == d.revision:
            return True
        return key in handed and not self.failures.failed_at(key, d.revision)

    def _handed_deletes(self, deletes: Keyed) -> Keyed:
        """The ``deletes`` the handler may have been handed, dependents first:
        those whose applied dependents the replay deletes before them."""
        deletes.sort(key=_delete_rank)
        handed: Keyed = []
        handed_keys: set[str] = set()
        for key, res in deletes:
            if self.deps.dependents(key) <= handed_keys:
                handed.append((key, res))
                handed_keys.add(key)
        return handed

    def replayed(self, applies: Keyed, deletes: Keyed,
                 errors: dict[str, BaseException]) -> None:
        """Adopt the outcome of the start-up replay (see :meth:`replay_plan`):
        what it handed over is applied (or deleted, without an error); a key
        in ``errors`` is applied again by a worker, and so is a key handed its
        applied version because its desired one waits (see :meth:`replay_plan`)."""
        # Not settled before, handed their desired versions (see replay_plan),
        # which the handler may hold now even where the call failed (it may
        # have held them before the restart): applied, and applied again
        # below where it failed -- unless that version is recorded as failed
        # (it was never applied, and the failed call changed nothing).
        handed = self._desired_handed
        if errors:
            handed = {key: prerequisites for key, prerequisites in handed.items()
                      if key not in errors
                      or not self.failures.failed_at(key, self.desired[key].revision)}
        replaced = self.state.adopt_replayed(handed)
        added: dict[str, int] = {}
        index = self.deps.index
        for key, prerequisites in handed.items():
            old = replaced.get(key)
            if old is not None:
                self.gate.reindex(key, old, prerequisites)
                continue
            index(key, (), prerequisites)
            kind = kind_of_key(key)
            added[kind] = added.get(kind, 0) + 1
        for kind, n in added.items():
            self._meters.cached(kind, n)
        for key, _ in deletes:
            if key in errors:
                continue
            previous = self.state.drop_applied(key)
            if previous is not None:
                self.gate.reindex(key, previous, ())
                self._meters.cached(kind_of_key(key), -1)
        self.state.mark_reapply(errors)

    def backlog(self) -> list[str]:
        """Enqueue every key whose desired != applied (after loading state); the
        keys enqueued."""
        return self.scheduler.enqueue_unsettled(self.desired.keys(), manual=False,
                                                prio=PRIO_LIVE)
