"""Dependency checks: whether a key may go to the handler now, or waits for
other keys, and whether a waiting key is done for now.

A measure's apply waits for its group to be applied; a group's delete waits for
the applied keys that reference it to be deleted.  :class:`DependencyGate`
answers those questions from desired and applied state and keeps the
dependents index of :class:`~schemacache.node.deps.Dependencies` in step with
the applied versions.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..kinds import GROUP_ONLY_KINDS, references, references_only_its_group
from ..model import GROUP_KIND, Resource
from ..stored import StoredResource
from .deps import Dependencies
from .desired import Desired
from .failures import FailureLog
from .nodestate import NodeState
from .queue import WorkQueue


def prerequisite_keys(resource: Resource) -> list[str]:
    """The keys ``resource`` references (see :func:`schemacache.kinds.references`)."""
    if resource.kind in GROUP_ONLY_KINDS:
        # Most kinds: no Reference objects built, once per handler call.
        return [f"{GROUP_KIND}/{resource.metadata.group}"]
    return [ref.key for ref in references(resource)]


def stored_prerequisite_keys(key: str, stored: StoredResource) -> list[str]:
    """The keys the version ``stored`` of ``key`` references, read from the key
    when its kind depends only on its group (``<kind>/<group>/<name>``), else
    from the version's model (built for that).  A restart indexes every
    applied resource: most of them need no model built."""
    kind, _, rest = key.partition("/")
    if references_only_its_group(kind):
        return [f"{GROUP_KIND}/{rest.partition('/')[0]}"]
    return prerequisite_keys(stored.model())


class DependencyGate:
    """What keys wait for, over the node's state.

    :param state: desired and applied state.
    :param deps: parked keys and the dependents index.
    :param queue: the work queue (a key in it or at a worker is on its way).
    :param failures: the failure log (a failed prerequisite is final).
    """

    def __init__(self, state: NodeState, deps: Dependencies, queue: WorkQueue,
                 failures: FailureLog):
        self.state = state
        self.deps = deps
        self.queue = queue
        self.failures = failures
        self.desired = state.desired
        self.applied = state.applied

    def blockers(self, key: str, d: Desired, prerequisites: list[str]) -> list[str]:
        """What ``key`` waits for: applied dependents before a delete, the
        ``prerequisites`` (keys ``d.resource`` references) before an apply."""
        if d.deleted:
            return sorted(k for k in self.deps.dependents(key) if k in self.applied)
        # A loop, not a comprehension with a helper: once per handler call.
        desired, applied = self.desired, self.applied
        waiting: list[str] = []
        for ref in prerequisites:
            p = desired.get(ref)
            a = applied.get(ref)
            if p is None or p.deleted or a is None or a[0] != p.revision:
                waiting.append(ref)  # not applied at its desired version
        return waiting

    def is_final(self, key: str) -> bool:
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

    def wake_waiters(self, key: str) -> None:
        """Queue the keys parked behind ``key`` again (it is done for now)."""
        if key not in self.deps.awaited:
            return  # the common case: once per settled key
        for waiter, prio in self.deps.waiters(key):
            self.queue.add(waiter, prio)

    def reindex(self, key: str, previous: tuple[int, StoredResource] | None,
                new_prerequisites: Iterable[str]) -> None:
        """Move ``key`` in the dependents index from what its ``previous`` applied
        version referenced to ``new_prerequisites``."""
        old = stored_prerequisite_keys(key, previous[1]) if previous is not None else ()
        self.deps.index(key, old, new_prerequisites)
