"""Which applied versions a node writes to the ``applied`` table of its state.

Because a handler never sees a version before its desired row is committed
(the write-ahead rule, :mod:`.nodestate`), the desired row also stands for
the common applied state: an applied version that is its key's durable
desired version, every prerequisite being applied at its own durable desired
version, is not written (one row per event instead of two).  A restart finds
such a key unsettled and hands the handler its desired version again, which
it held.  The applied row is written, in the same commit, once the desired
row alone would say something else: when the key's desired version changes
or goes (a tombstone must not stand on disk without the version the handler
holds), when the desired version of a key it references changes (the
restart would hold the key back and hand it nothing), and when it is marked
to be applied again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from ..stored import StoredResource
from .desired import Desired
from .state import StateStore


class AppliedRows:
    """The applied rows of ``store``, and the keys whose row is left unwritten.

    :param store: durable state.
    :param desired: desired versions by key (read only).
    :param applied: applied versions by key (read only).
    :param dependents: the applied keys that reference a key.
    """

    def __init__(self, store: StateStore, desired: dict[str, Desired],
                 applied: dict[str, tuple[int, StoredResource]],
                 dependents: Callable[[str], Iterable[str]]):
        self.store = store
        self.desired = desired
        self.applied = applied
        self._dependents = dependents
        self.unwritten: set[str] = set()
        """Applied keys whose applied version is their durable desired version
        and is not in the ``applied`` table."""

    def record_applied(self, key: str, revision: int, stored: StoredResource,
                       d: Desired | None,
                prerequisites: Iterable[str]) -> None:
        """The handler holds ``stored`` at ``revision`` (referencing
        ``prerequisites``), ``d`` being the key's desired version (``None``:
        write the row in any case): written unless the desired row says it."""
        if (d is not None and d.stored is stored and not d.deleted and d.revision == revision
                and d.batch <= self.store.durable_batch
                and self._settled_durably(prerequisites)):
            self.unwritten.add(key)
            return
        self.unwritten.discard(key)
        self.store.put_applied(key, revision, stored)

    def record_deleted(self, key: str) -> None:
        """The handler deleted ``key``."""
        self.unwritten.discard(key)
        self.store.delete_applied(key)

    def adopt_replayed(self, keys: Iterable[str]) -> None:
        """The start-up replay handed each of ``keys`` its durable desired
        version, in apply order, each prerequisite being applied at its own
        durable desired version or among ``keys``: their rows are left
        unwritten (:meth:`write_unwritten`, through ``mark_reapply``, writes
        those of keys whose call failed, and of their dependents)."""
        self.unwritten.update(keys)

    def write_unwritten(self, key: str) -> None:
        """Write the rows left unwritten of ``key`` and of the applied keys
        referencing it: its desired version is about to change, or it is to
        be applied again, and the same commit must carry them."""
        unwritten = self.unwritten
        if not unwritten:
            return
        for k in (key, *self._dependents(key)):
            if k in unwritten:
                unwritten.discard(k)
                revision, stored = self.applied[k]
                self.store.put_applied(k, revision, stored)

    def _settled_durably(self, keys: Iterable[str]) -> bool:
        """Whether every one of ``keys`` is applied at its durable desired version."""
        durable = self.store.durable_batch
        for key in keys:
            d = self.desired.get(key)
            if d is None or d.deleted or d.batch > durable:
                return False
            a = self.applied.get(key)
            if a is None or a[0] != d.revision:
                return False
        return True
