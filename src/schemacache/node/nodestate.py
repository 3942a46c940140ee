"""One owner of a node's state: desired and applied versions per key, the
received revision with its change mark, and the registry's cluster id.

Every change goes through :class:`NodeState` and, in the same call, updates
memory, buffers the durable write in the :class:`StateStore` and invalidates
the cache digest.  It also owns the write-ahead rule: a handler never sees a
version before that version's desired row is committed, so a restarted node
never hands a handler an older version than one it was handed before.

The applied table holds only what the desired rows do not already say
(:mod:`.appliedrows`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from ..model import Event
from ..registry.history import event_mark
from ..stored import StoredResource
from .appliedrows import AppliedRows
from .cache import NodeCache
from .desired import Desired
from .queue import PRIO_RETRY
from .state import MAX_PENDING_WRITES, StateStore

UNKNOWN_REVISION = -1
"""Applied revision of a resource whose version must be applied again (after a
registry reset, or when re-applying it at start-up failed)."""


class NodeState:
    """Desired and applied state, the received revision and the cluster id,
    written through to ``store``.

    :param store: durable state.
    :param on_durable: called with a key and its priority when the key may go
        to a worker (see :meth:`admit`).
    :param write_ahead: a handler is called, so a key goes to a worker only
        once its desired row is durable (default ``True``; ``False`` when no
        handler runs: nothing can go back in time).
    :param dependents: the applied keys that reference a key (default: none),
        whose unwritten applied rows are written when that key's desired
        version changes.
    """

    def __init__(self, store: StateStore, *, on_durable: Callable[[str, int], None],
                 write_ahead: bool = True,
                 dependents: Callable[[str], Iterable[str]] = lambda key: ()):
        self.store = store
        self.desired: dict[str, Desired] = {}
        self.applied: dict[str, tuple[int, StoredResource]] = {}
        self.cache = NodeCache(self.applied)
        self.cluster_id: str | None = None
        self.received_revision = 0
        """Every change up to it was received: the watch resumes after it."""
        self._received: Event | str = ""
        # The change received at the received revision, or its mark ("": unknown).
        self.write_ahead = write_ahead
        self._on_durable = on_durable
        self.rows = AppliedRows(store, self.desired, self.applied, dependents)
        """Which applied versions are written to the ``applied`` table."""
        # Keys whose handler call waits for their desired row to be committed,
        # with the priority they go back to the queue at then.
        self._awaiting: dict[str, int] = {}
        self.awaiting_urgent = 0
        """Of those, keys at live or retry priority."""
        store.on_desired_committed = self._committed

    # --- desired ---------------------------------------------------------------

    def set_desired(self, key: str, d: Desired) -> None:
        """``d`` is the newest version of ``key``."""
        previous = self.desired.get(key)
        if previous is not None and (previous.revision != d.revision
                                     or previous.deleted != d.deleted):
            self.rows.write_unwritten(key)
        self.desired[key] = d
        d.batch = self.store.put_desired(key, d.revision, d.deleted, d.stored, d.live)

    def drop_desired(self, key: str) -> None:
        """Forget ``key`` (deleted everywhere)."""
        self.rows.write_unwritten(key)
        del self.desired[key]
        self.store.delete_desired(key)

    # --- applied ---------------------------------------------------------------

    def set_applied(self, key: str, revision: int, stored: StoredResource,
                    prerequisites: Iterable[str] = ()) -> tuple[int, StoredResource] | None:
        """The handler holds ``stored`` at ``revision``, which references
        ``prerequisites`` (default: none); the previous entry."""
        previous = self.applied.get(key)
        self.applied[key] = (revision, stored)
        self.cache.invalidate()
        d = self.desired.get(key)
        if d is not None and d.stored is stored:
            d.model = None
        self.rows.record_applied(key, revision, stored, d if self.write_ahead else None,
                                 prerequisites)
        return previous

    def adopt_replayed(self, keys: Iterable[str]) -> dict[str, tuple[int, StoredResource]]:
        """The start-up replay handed each of ``keys`` its durable desired
        version (see :meth:`AppliedRows.adopt_replayed`): all applied; the
        previous entries of those that had one."""
        desired = self.desired
        applied = self.applied
        previous: dict[str, tuple[int, StoredResource]] = {}
        for key in keys:
            d = desired[key]
            old = applied.get(key)
            if old is not None:
                previous[key] = old
            applied[key] = (d.revision, d.stored)
            d.model = None
        self.rows.adopt_replayed(keys)
        self.cache.invalidate()
        return previous

    def drop_applied(self, key: str) -> tuple[int, StoredResource] | None:
        """The handler deleted ``key``; the previous entry."""
        previous = self.applied.pop(key, None)
        self.rows.record_deleted(key)
        self.cache.invalidate()
        d = self.desired.get(key)
        if d is not None and d.deleted:
            d.model = None
        return previous

    def release_model(self, key: str) -> None:
        """``key`` is settled: hold its desired version as its record only."""
        d = self.desired.get(key)
        if d is not None:
            d.model = None

    def mark_reapply(self, keys: Iterable[str], *, durable: bool = False) -> None:
        """Force the applied version of ``keys`` to be applied again (``durable``:
        also on disk, default ``False``)."""
        for key in keys:
            # What the disk says is applied must stay true whether or not
            # the mark is written.
            self.rows.write_unwritten(key)
            entry = self.applied.get(key)
            if entry is not None:
                self.applied[key] = (UNKNOWN_REVISION, entry[1])
                if durable:
                    self.store.put_applied(key, UNKNOWN_REVISION, entry[1])
        self.cache.invalidate()

    def is_settled(self, key: str, d: Desired) -> bool:
        """Whether the applied state of ``key`` matches ``d``."""
        a = self.applied.get(key)
        if d.deleted:
            return a is None
        return a is not None and a[0] == d.revision

    def set_cluster_id(self, cluster_id: str) -> None:
        if self.cluster_id != cluster_id:
            self.cluster_id = cluster_id
            self.store.set_cluster_id(cluster_id)

    # --- received revision -----------------------------------------------------

    def adopt_received(self, revision: int, mark: str, cluster_id: str | None) -> None:
        """Take the received revision, its change ``mark`` and the cluster id as
        read from durable state (not written back)."""
        self.received_revision = revision
        self._received = mark
        self.cluster_id = cluster_id

    def receive(self, revision: int, change: Event | None = None) -> bool:
        """Every change up to ``revision`` was received, ``change`` the one at
        ``revision`` (``None``: a progress mark, no change known); whether the
        received revision moved (it never goes back here)."""
        if revision <= self.received_revision:
            return False
        self.received_revision = revision
        self._received = "" if change is None else change
        self.store.set_received_revision(revision, change)
        return True

    def set_received(self, revision: int) -> None:
        """The received revision is ``revision`` (a full listing's; it may go
        back, to a rewound registry's), the change there not known."""
        self.received_revision = revision
        self._received = ""
        self.store.set_received_revision(revision)

    @property
    def received_mark(self) -> str:
        """The change mark of the change received at :attr:`received_revision`
        (``""``: not known, e.g. the revision of a listing or a progress mark)."""
        received = self._received
        return received if isinstance(received, str) else event_mark(received)

    # --- write backpressure ------------------------------------------------------

    @property
    def writes_backlogged(self) -> bool:
        """Whether more writes wait for a commit than the store should buffer."""
        return self.store.pending > MAX_PENDING_WRITES

    async def wait_writable(self) -> None:
        """Return once the store takes writes again."""
        await self.store.wait_writable()

    # --- write-ahead -------------------------------------------------------------

    def admit(self, key: str, prio: int) -> None:
        """Hand ``key`` to ``on_durable`` at ``prio`` -- at once when its desired
        row is durable (or no handler runs), else once it is committed."""
        if self.write_ahead:
            d = self.desired.get(key)
            if d is not None and d.batch > self.store.durable_batch:
                self.hold_for_commit(key, prio)
                return
        self._on_durable(key, prio)

    def durable(self, key: str) -> bool:
        """Whether ``key``'s desired version is committed (or it has none)."""
        d = self.desired.get(key)
        return d is None or d.batch <= self.store.durable_batch

    def hold_for_commit(self, key: str, prio: int) -> None:
        """Keep ``key`` from the workers until its desired row is committed, then
        hand it to ``on_durable`` at ``prio`` (the most urgent one asked for)."""
        old = self._awaiting.get(key)
        if old is not None:
            prio = min(prio, old)
            self.awaiting_urgent -= old <= PRIO_RETRY
        self._awaiting[key] = prio
        self.awaiting_urgent += prio <= PRIO_RETRY
        self.store.request_commit()

    def awaits_commit(self, key: str) -> bool:
        return key in self._awaiting

    def _committed(self) -> None:
        awaiting = self._awaiting
        if not awaiting:
            return
        # Released in the order held: the order events arrived in, or the
        # dependency order a repair queued its keys in.
        self._awaiting = waiting = {}
        self.awaiting_urgent = 0
        desired = self.desired
        durable = self.store.durable_batch
        on_durable = self._on_durable
        for key, prio in awaiting.items():
            d = desired.get(key)
            if d is None or d.batch <= durable:
                on_durable(key, prio)
            else:  # written again after the commit was taken: the next one
                waiting[key] = prio
                self.awaiting_urgent += prio <= PRIO_RETRY
        if waiting:
            self.store.request_commit()
