"""The read side of a node: its applied state, as users and the admin API see it."""

from __future__ import annotations

import builtins
from collections.abc import Callable

from ..model import Resource, digest
from ..stored import StoredResource


class NodeCache:
    """Read-only view of the resources the handler has applied.

    Resources are held as their stored text (see :mod:`.record`); each read
    builds new models from it.

    :param applied: the node's applied state, ``key -> (revision, record)``
        (shared, not copied: the view is always current).
    :param on_change: unused hook kept for subclasses (default ``None``).
    """

    def __init__(self, applied: dict[str, tuple[int, StoredResource]],
                 on_change: Callable[[], None] | None = None):
        self._applied = applied
        self._digest: str | None = None
        self._on_change = on_change

    def get(self, key: str) -> Resource | None:
        """The applied version of ``key``, or ``None``."""
        entry = self._applied.get(key)
        return entry[1].model() if entry is not None else None

    def list(self, kind: str | None = None) -> list[Resource]:
        """Applied resources sorted by key, optionally only those of ``kind``."""
        applied = self._applied
        if kind is None:
            return [applied[k][1].model() for k in sorted(applied)]
        prefix = f"{kind}/"
        return [applied[k][1].model() for k in sorted(applied) if k.startswith(prefix)]

    def keys(self) -> builtins.list[str]:
        return sorted(self._applied)

    def __contains__(self, key: object) -> bool:
        return key in self._applied

    def __len__(self) -> int:
        return len(self._applied)

    @property
    def size(self) -> int:
        return len(self._applied)

    def digest(self) -> str:
        """SHA-256 of the applied state (see :func:`schemacache.model.digest`)."""
        if self._digest is None:
            self._digest = digest((k, s.mod_revision) for k, (_, s) in self._applied.items())
        return self._digest

    def invalidate(self) -> None:
        """Forget the memoised digest (the applied state changed)."""
        self._digest = None
