"""Resuming from durable state: adopt what was on disk, hand a restarted
handler the versions it may have seen (the start-up replay), then queue
every key whose desired version is not applied yet.
"""

from __future__ import annotations

from .._gc import gc_paused
from ..kinds import kind_of_key, level_of_key
from ..model import Resource
from .deps import Dependencies
from .failures import FailureLog
from .gate import DependencyGate, prerequisite_keys, stored_prerequisite_keys
from .meters import ReconcileMeters
from .nodestate import Desired, NodeState, delete_version
from .queue import PRIO_LIVE, PRIO_REPAIR, WorkQueue
from .retry import RetryLimiter
from .schedule import Scheduler
from .state import LoadedState

Keyed = list[tuple[str, Resource]]
"""Resources, each with its key, in the order the start-up replay hands them over."""


def _apply_rank(item: tuple[str, Resource]) -> tuple[int, str]:
    """:func:`~schemacache.kinds.apply_order`'s rank, from the key at hand."""
    return level_of_key(item[0]), item[0]


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
        # and those handed their applied one because their desired one waits.
        self._desired_handed: set[str] = set()
        self._held: set[str] = set()

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
        # With a handler, the start-up replay hands it every applied version:
        # built here, while the collector is paused and before the survivors
        # are frozen (built later, each collection walks them all again).
        hand_over = self.state.write_ahead
        for key, (rev, stored) in loaded.applied.items():
            self.applied[key] = (rev, stored)
            self.deps.index(key, (), stored_prerequisite_keys(key, stored))
            kind = kind_of_key(key)
            counts[kind] = counts.get(kind, 0) + 1
            d = desired.get(key)
            if d is None:  # cannot happen with an intact file; be safe
                desired[key] = d = Desired(rev, False, stored)
            if hand_over and d.stored is stored:
                d.model = stored.model()  # dropped once settled
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
        unsettled: Keyed = []
        deletes: Keyed = []
        self._held.clear()
        self._desired_handed.clear()
        applied = self.applied
        for key, d in self.desired.items():
            a = applied.get(key)
            if d.deleted:
                if a is not None:
                    deletes.append((key, d.resource_of(delete_version(d.stored, a[1]))))
            elif a is not None and a[0] == d.revision:
                applies.append((key, d.resource_of(a[1])))
            else:
                unsettled.append((key, d.resource))
        applies += self._handed_applies(unsettled)
        # Ranked by the keys at hand: a model's key is built anew on each read.
        applies.sort(key=_apply_rank)
        return applies, self._handed_deletes(deletes)

    def _handed_applies(self, unsettled: Keyed) -> Keyed:
        """What to hand over for the ``unsettled`` keys: the desired version of
        those whose prerequisites were ready (see :meth:`DependencyGate.blockers`),
        the applied version (if any) of the others."""
        unsettled.sort(key=_apply_rank)
        handed: Keyed = []
        for key, res in unsettled:
            if all(self._replayed_ready(ref, self._desired_handed)
                   for ref in prerequisite_keys(res)):
                handed.append((key, res))
                self._desired_handed.add(key)
                continue
            held = self._applied_model(key)
            if held is not None:
                handed.append((key, held))
                self._held.add(key)
        return handed

    def _applied_model(self, key: str) -> Resource | None:
        a = self.applied.get(key)
        return self.desired[key].resource_of(a[1]) if a is not None else None

    def _replayed_ready(self, key: str, handed: set[str]) -> bool:
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
        what it handed over without an error is applied (or deleted); a key in
        ``errors`` is applied again by a worker, and so is a key handed its
        applied version because its desired one waits (see :meth:`replay_plan`)."""
        desired = self.desired
        applied = self.applied
        held = self._held
        for key, res in applies:
            d = desired[key]
            previous = applied.get(key)
            if key in errors or key in held or (
                    previous is not None and previous[0] == d.revision):
                continue
            # Not settled before: ``res`` is the desired version (see replay_plan).
            self.state.set_applied(key, d.revision, d.stored)
            self.gate.reindex(key, previous, prerequisite_keys(res))
            if previous is None:
                self._meters.cached(kind_of_key(key), +1)
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
