"""Folding a full listing of the registry into desired state (what a repair does).

Every listed key newer than its desired version replaces it; every desired key
the listing lacks is deleted at the listing's revision.  After a registry reset
everything is applied again; after a rewind (a restored backup) what the node
knows from beyond the registry's revision is forgotten.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..kinds import kind_of_key
from ..model import NODE_KIND, Resource
from ..registry.base import Registry
from ..stored import StoredResource
from .desired import Desired
from .nodestate import NodeState
from .progress import Progress
from .queue import PRIO_REPAIR
from .schedule import Scheduler

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


class ListingRefresh:
    """Folds full listings into desired state.

    :param state: desired and applied state, the received revision.
    :param progress: unsettled keys.
    :param scheduler: bookkeeping of changed keys (attempts, failures); queues
        the unsettled ones.
    """

    def __init__(self, *, state: NodeState, progress: Progress, scheduler: Scheduler):
        self.state = state
        self.desired = state.desired
        self.applied = state.applied
        self.progress = progress
        self.scheduler = scheduler

    def refresh(self, resources: Iterable[Listed], revision: int, *, reset: bool,
                manual: bool, rewound: bool = False) -> list[str]:
        """Fold a full listing at ``revision`` (see :func:`list_registry`) into
        desired state and enqueue every unsettled key at repair priority; the
        keys enqueued.

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
        listed = {key: r for key, r in resources if kind_of_key(key) != NODE_KIND}
        # Rewound below what the node received, the versions above the listing are
        # the lost ones; at or past it (restored, then written past) revisions cannot
        # tell lost from kept, so every version is taken from the listing again.
        past = rewound and revision >= self.state.received_revision
        if rewound and not reset:
            self._forget_future(0 if past else revision)
        if reset:
            self.state.mark_reapply(list(self.applied), durable=True)
            self.scheduler.forget_all()
        for key, r in listed.items():
            cur = self.desired.get(key)
            if reset or past or cur is None or cur.revision < r.mod_revision or (
                    rewound and cur.revision != r.mod_revision):
                d = (Desired.of(r.mod_revision, False, r) if isinstance(r, Resource)
                     else Desired(r.mod_revision, False, r))
                self._set_desired(key, d)
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
                self._set_desired(key, Desired(revision, True, cur.stored))
        if reset or rewound or revision > self.state.received_revision:
            self.state.set_received(revision)
        self.progress.notify()
        return self.scheduler.enqueue_unsettled(list(self.desired), manual=manual,
                                                prio=PRIO_REPAIR)

    def _set_desired(self, key: str, d: Desired) -> None:
        self.state.set_desired(key, d)
        self.scheduler.forget_stale(key, d)

    def _forget_future(self, revision: int) -> None:
        """Drop what the node knows from beyond ``revision`` of a rewound registry:
        those applied versions are applied again, their failures and attempts go."""
        self.state.mark_reapply([k for k, (rev, _) in self.applied.items() if rev > revision],
                                durable=True)
        self.scheduler.forget_above(revision)
