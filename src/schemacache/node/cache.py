"""The read side of a node: its applied state, as users and the admin API see it."""

from __future__ import annotations

import builtins
from collections.abc import Callable

from ..model import Resource, digest


class NodeCache:
    """Read-only view of the resources the handler has applied.

    :param applied: the node's applied state, ``key -> (revision, resource)``
        (shared, not copied: the view is always current).
    :param on_change: unused hook kept for subclasses (default ``None``).
    """

    def __init__(self, applied: dict[str, tuple[int, Resource]],
                 on_change: Callable[[], None] | None = None):
        self._applied = applied
        self._digest: str | None = None
        self._on_change = on_change

    def get(self, key: str) -> Resource | None:
        """The applied version of ``key``, or ``None``."""
        entry = self._applied.get(key)
        return entry[1] if entry is not None else None

    def list(self, kind: str | None = None) -> list[Resource]:
        """Applied resources sorted by key, optionally only those of ``kind``."""
        if kind is None:
            return [self._applied[k][1] for k in sorted(self._applied)]
        prefix = f"{kind}/"
        return [self._applied[k][1] for k in sorted(self._applied) if k.startswith(prefix)]

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
            self._digest = digest((k, r.mod_revision) for k, (_, r) in self._applied.items())
        return self._digest

    def invalidate(self) -> None:
        """Forget the memoised digest (the applied state changed)."""
        self._digest = None
