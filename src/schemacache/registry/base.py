"""The Registry interface every backend implements, and the write rules they share.

Revision semantics are etcd's: one counter for the whole registry, +1 per
write; ``create_revision``/``mod_revision`` are set by the registry.
``put(expected_revision=0)`` creates only; ``expected_revision=N`` is a
compare-and-set on the key's ``mod_revision``.  ``watch(prefix, start)`` yields
every event with ``revision >= start`` in order, with no gaps and no repeats,
and raises :class:`CompactedError` when ``start`` is older than the oldest
revision kept (``start < compact_revision``, as etcd does).

Writes enforce references (a measure needs its group of catalog MEASURE, a
binding its rules and subject, a top-N its source measure); a delete of a
referenced key is refused unless ``cascade=True``.

Node registrations (:class:`NodeInfo`) are not schema: they live apart from
the schema keys, expire with a lease unless refreshed, and never show up in
``list``/``watch``.
"""

from __future__ import annotations

import abc
import builtins
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from ..errors import RegistryRewoundError
from ..model import Event, Resource
from ..stored import StoredResource
from .rules import ApplyResult as ApplyResult  # where it was defined first

DEFAULT_NODE_TTL = 10.0
"""Seconds a node registration lives without a refresh."""

DEFAULT_HISTORY = 100_000
"""Revisions of change history kept by the embedded backends before compaction."""


@dataclass(frozen=True)
class WatchProgress:
    """A mark in a watch: every change under the watched prefix up to
    ``revision`` has been yielded before it (nothing else changed there).

    :param revision: the registry revision the watch has covered.
    """

    revision: int


@dataclass(frozen=True)
class NodeInfo:
    """A live node, as registered in the registry.

    :param name: the node's unique name.
    :param admin_url: base URL of the node's admin HTTP server.
    """

    name: str
    admin_url: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "admin_url": self.admin_url}


@dataclass
class NodeLease:
    """A node registration kept alive by :meth:`refresh`; gone after ``ttl`` without one.

    :param info: what was registered.
    :param ttl: seconds the registration lives without a refresh.
    :param refresh: coroutine function extending the lease by ``ttl``
        (re-registers if the lease had already expired).
    :param revoke: coroutine function removing the registration at once.
    """

    info: NodeInfo
    ttl: float
    refresh: Callable[[], Any] = field(repr=False)
    revoke: Callable[[], Any] = field(repr=False)


class Registry(abc.ABC):
    """The single source of truth of the schema (an async interface).

    Obtain one with :func:`schemacache.open_registry`; use it as an async
    context manager or call :meth:`close`.
    """

    url: str = ""
    shared_revision: bool = False
    """True when the revision counter also counts writes that are not schema
    changes (etcd: node registrations, leases, other applications' keys), so
    :meth:`revision` may be ahead of the schema with nothing left to receive."""

    # --- reads --------------------------------------------------------------

    @abc.abstractmethod
    async def get(self, key: str) -> Resource:
        """The current version of ``key``; raises :class:`NotFoundError`."""

    @abc.abstractmethod
    async def list(self, prefix: str = "") -> tuple[list[Resource], int]:
        """Every schema resource whose key starts with ``prefix``, sorted by key,
        and the revision of that snapshot (taken atomically)."""

    async def list_stored(
            self, prefix: str = "") -> tuple[builtins.list[tuple[str, StoredResource]], int]:
        """:meth:`list` with each resource as ``(key, record)``, the record holding
        its stored JSON (see :mod:`schemacache.stored`): for a consumer that keeps
        resources as text, without building every model at once.  The default
        encodes :meth:`list`; backends that store JSON hand it out as is (and
        say so with :attr:`lists_stored_text`)."""
        resources, revision = await self.list(prefix)
        return [(r.key, StoredResource.of(r)) for r in resources], revision

    @property
    def lists_stored_text(self) -> bool:
        """Whether :meth:`list_stored` hands out the stored JSON as is, without
        building models (the backend overrides it); otherwise the models of
        :meth:`list` are built anyway, and worth keeping at hand."""
        return type(self).list_stored is not Registry.list_stored

    @abc.abstractmethod
    async def revision(self) -> int:
        """The registry's current revision."""

    async def revisions(self) -> tuple[int, int | None]:
        """The registry's current revision and, read with it, the revision of its
        last schema write (``None`` when the registry cannot tell).  Without
        ``shared_revision`` both are :meth:`revision`."""
        revision = await self.revision()
        return revision, revision

    async def check_resume(self, start_revision: int, mark: str | None = None) -> None:
        """Check that a watch can resume at ``start_revision``: raises
        :class:`CompactedError` when that history was compacted away and
        :class:`RegistryRewoundError` when ``start_revision - 1`` is above the
        registry's revision (it went back: a restored backup), or when ``mark``
        (the :func:`~schemacache.registry.history.change_mark` of the change
        received at ``start_revision - 1``; default ``None``: not known) names
        another change than the registry's own at that revision (a restored
        backup written past it since).  The default checks the revision only;
        backends that can tell check compaction and marks too."""
        current = await self.revision()
        if start_revision - 1 > current:
            raise RegistryRewoundError(current, start_revision - 1)

    @abc.abstractmethod
    async def cluster_id(self) -> str:
        """An id that changes when the registry is recreated (a reset)."""

    async def check(self) -> None:
        """Raise if the registry cannot serve now (a server calls it at start-up,
        to refuse to start with a clear message rather than fail every request)."""
        await self.revision()

    # --- writes -------------------------------------------------------------

    @abc.abstractmethod
    async def put(self, resource: Resource, expected_revision: int | None = None) -> int:
        """Create or update ``resource``; returns the new revision.

        :param resource: the resource; its revisions are ignored.
        :param expected_revision: ``None`` = unconditional, ``0`` = must not
            exist, ``N`` = the key's mod_revision must be ``N``
            (else :class:`ConflictError`).
        """

    @abc.abstractmethod
    async def delete(
        self, key: str, expected_revision: int | None = None, cascade: bool = False
    ) -> int:
        """Delete ``key``; returns the revision of the delete.

        :param expected_revision: as for :meth:`put` (``None`` = unconditional).
        :param cascade: delete the resources that reference ``key`` first, each
            as its own write, dependents first; without it a referenced key
            raises :class:`ReferencedError`.  Every backend makes the whole
            cascade one transaction: no reader sees part of it, and an error
            or a crash part-way deletes nothing.  On SQLite each delete gets
            a revision of its own; on etcd they share the transaction's one.
        """

    @abc.abstractmethod
    async def apply(self, resources: Sequence[Resource]) -> builtins.list[ApplyResult]:
        """Create or update every resource, all or nothing.

        Every rule (validation, references, catalog changes, duplicates) is
        checked against one snapshot before the first write, and the writes
        are one transaction; a resource equal to its stored version is left
        alone (``unchanged``).  Errors name the document (1-based position in
        ``resources``) and nothing is written.  On SQLite and in memory each
        written resource gets a revision of its own; on etcd the whole apply
        is one etcd transaction, so its resources share one revision.

        :returns: one result per resource, in apply order (prerequisites first).
        """

    @abc.abstractmethod
    async def compact(self, revision: int) -> None:
        """Drop change history older than ``revision``."""

    # --- changes ------------------------------------------------------------

    @abc.abstractmethod
    def watch(self, prefix: str = "", start_revision: int | None = None) -> AsyncIterator[Event]:
        """Every change under ``prefix`` from ``start_revision`` on (default: from
        the next revision), in revision order.  Iterate it; closing the iterator
        stops the watch.  Raises :class:`CompactedError` if ``start_revision``
        was compacted."""

    def watch_progress(
        self, prefix: str = "", start_revision: int | None = None
    ) -> AsyncIterator[Event | WatchProgress]:
        """As :meth:`watch`, and also yields :class:`WatchProgress` marks when the
        registry can tell that nothing under ``prefix`` changed up to a revision.

        The default yields events only: on a backend whose revision counts
        schema writes only (``shared_revision`` false) every revision is an
        event, so there is no more to tell.  The etcd backend yields etcd's
        watch progress notifications.
        """
        return self.watch(prefix, start_revision)

    async def watch_batches(
        self, prefix: str = "", start_revision: int | None = None
    ) -> AsyncIterator[Sequence[Event] | WatchProgress]:
        """As :meth:`watch_progress`, with the events in batches: non-empty
        sequences, in revision order, as the backend reads them (a catching-up
        consumer then pays for one step of the iterator per batch, not per
        event).  Closing the iterator stops the watch.

        The default yields each event of :meth:`watch_progress` on its own.
        """
        items = self.watch_progress(prefix, start_revision)
        try:
            async for item in items:
                yield item if isinstance(item, WatchProgress) else (item,)
        finally:
            aclose = getattr(items, "aclose", None)
            if aclose is not None:
                await aclose()

    # --- node registrations ---------------------------------------------------

    @abc.abstractmethod
    async def register_node(
        self, name: str, admin_url: str, ttl: float = DEFAULT_NODE_TTL
    ) -> NodeLease:
        """Register a live node under a lease of ``ttl`` seconds."""

    @abc.abstractmethod
    async def list_nodes(self) -> builtins.list[NodeInfo]:
        """The nodes whose registration has not expired, sorted by name."""

    # --- lifecycle ------------------------------------------------------------

    async def close(self) -> None:  # noqa: B027 - optional for backends
        """Release connections; the registry is unusable afterwards."""

    async def __aenter__(self) -> Registry:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
