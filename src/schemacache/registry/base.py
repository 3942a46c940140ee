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
import functools
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal

from ..errors import ReferencedError, RegistryRewoundError, ValidationError
from ..kinds import delete_order, level, references
from ..model import Event, Resource

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


Outcome = Literal["created", "updated", "unchanged"]


@dataclass(frozen=True)
class ApplyResult:
    """What :meth:`Registry.apply` did to one key.

    :param key: the key.
    :param outcome: ``created``, ``updated`` or ``unchanged`` (no write made).
    :param revision: the key's mod_revision after the apply.
    """

    key: str
    outcome: Outcome
    revision: int


@dataclass(frozen=True)
class ApplyStep:
    """One resource of a checked apply plan.

    :param resource: the resource to write.
    :param current: its stored version in the snapshot (``None``: absent).
    :param key: the resource's key (default: computed from it).
    """

    resource: Resource
    current: Resource | None
    key: str = ""

    def __post_init__(self) -> None:
        if not self.key:
            object.__setattr__(self, "key", self.resource.key)

    @property
    def changed(self) -> bool:
        return self.current is None or not self.current.same_content(self.resource)

    @property
    def current_revision(self) -> int:
        """The stored version's mod_revision (0 when absent)."""
        return self.current.mod_revision if self.current is not None else 0

    @property
    def outcome(self) -> Outcome:
        if self.current is None:
            return "created"
        return "updated" if self.changed else "unchanged"


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

    @abc.abstractmethod
    async def revision(self) -> int:
        """The registry's current revision."""

    async def check_resume(self, start_revision: int) -> None:
        """Check that a watch can resume at ``start_revision``: raises
        :class:`CompactedError` when that history was compacted away and
        :class:`RegistryRewoundError` when ``start_revision - 1`` is above the
        registry's revision (it went back: a restored backup).  The default
        checks the revision only; backends that can tell check compaction too."""
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


# ---------------------------------------------------------------- shared write rules


def check_references(resource: Resource, lookup: Callable[[str], Resource | None]) -> list[str]:
    """Check that every key ``resource`` references exists (with the right catalog).

    :param lookup: returns the current version of a key, or ``None``.
    :returns: the referenced keys (backends that can compare them in a
        transaction use this list).
    :raises ValidationError: naming the referencing field.
    """
    keys = []
    for ref in references(resource):
        target = lookup(ref.key)
        if target is None:
            raise ValidationError(f"references {ref.key}, which does not exist", field=ref.path)
        if ref.catalog is not None and target.spec.get("catalog") != ref.catalog:
            raise ValidationError(
                f"group {target.name!r} has catalog {target.spec.get('catalog')}, "
                f"a {resource.kind} needs {ref.catalog}",
                field=ref.path,
            )
        if ref.check is not None:
            ref.check(resource, target)
        keys.append(ref.key)
    return keys


def check_group_update(
    resource: Resource, current: Resource | None, members: Callable[[], Iterable[Resource]]
) -> None:
    """Refuse to change a group's catalog while resources still live in it."""
    if resource.kind != "group" or current is None:
        return
    if resource.spec.get("catalog") != current.spec.get("catalog") and any(True for _ in members()):
        raise ValidationError(
            "catalog cannot change while the group has members", field="spec.catalog"
        )


def direct_dependents(key: str, candidates: Iterable[Resource]) -> list[Resource]:
    """The resources among ``candidates`` that reference ``key``."""
    return [c for c in candidates if any(ref.key == key for ref in references(c))]


def cascade_plan(key: str, candidates: Iterable[Resource]) -> list[Resource]:
    """Every resource that transitively references ``key``, in delete order.

    Linear in the number of candidates: their references are indexed once.

    :param candidates: the resources that may reference ``key`` (all of them,
        or a superset of the dependents).
    """
    referrers: defaultdict[str, list[Resource]] = defaultdict(list)
    for candidate in candidates:
        if candidate.key != key:
            for ref_key in {ref.key for ref in references(candidate)}:
                referrers[ref_key].append(candidate)
    found: dict[str, Resource] = {}
    frontier = [key]
    while frontier:
        for dep in referrers.get(frontier.pop(), ()):
            if dep.key not in found:
                found[dep.key] = dep
                frontier.append(dep.key)
    return delete_order(found.values())


def candidate_prefixes_closure(key: str) -> builtins.list[str]:
    """Every prefix under which a transitive dependent of ``key`` can live.

    The prefixes depend only on a key's kind and group, so the closure is
    computed over those pairs, not over the dependents themselves.
    """
    prefixes: dict[str, None] = {}
    seen: set[tuple[str, str]] = set()
    todo = [key]
    while todo:
        current = todo.pop()
        for prefix in dependent_candidates_prefixes(current):
            if prefix in prefixes:
                continue
            prefixes[prefix] = None
            kind, _, rest = prefix.partition("/")
            group = rest.rstrip("/")
            if (kind, group) not in seen:
                seen.add((kind, group))
                # A stand-in key of that kind and group: its candidates are the
                # same for every name.
                todo.append(f"{kind}/{group or '_'}/_")
    return list(prefixes)


def plan_apply(
    resources: Sequence[Resource],
    lookup: Callable[[str], Resource | None],
    members: Callable[[str], Iterable[Resource]],
) -> builtins.list[ApplyStep]:
    """Check an apply against one snapshot; the steps in apply order.

    :param resources: the manifest's resources, in document order.
    :param lookup: the snapshot's version of a key, or ``None``.
    :param members: the snapshot's resources that may live in a group (its
        dependents' candidates), for groups whose catalog changes.
    :raises ValidationError: naming the document (1-based) and the field.
    """
    number: dict[str, int] = {}
    in_manifest: dict[str, Resource] = {}
    for position, resource in enumerate(resources, 1):
        key = resource.key
        if key in number:
            raise ValidationError(f"{key} is defined twice (also document {number[key]})",
                                  field="metadata.name", document=position)
        number[key] = position
        in_manifest[key] = resource
    seen: dict[str, Resource | None] = {}

    def stored(key: str) -> Resource | None:
        # Many documents share a reference (their group): read each key once.
        if key not in seen:
            seen[key] = lookup(key)
        return seen[key]

    def resolve(key: str) -> Resource | None:
        return in_manifest.get(key) or stored(key)

    steps = []
    for key, resource in sorted(in_manifest.items(),
                                key=lambda item: (level(item[1].kind), item[0])):
        current = stored(key)
        try:
            check_references(resource, resolve)
            check_group_update(resource, current, functools.partial(members, key))
        except ValidationError as exc:
            raise ValidationError(f"{key}: {exc.reason}", exc.field,
                                  document=number[key]) from None
        steps.append(ApplyStep(resource, current, key))
    return steps


def refuse_if_referenced(key: str, candidates: Iterable[Resource]) -> None:
    """Raise :class:`ReferencedError` if any candidate references ``key``."""
    deps = direct_dependents(key, candidates)
    if deps:
        raise ReferencedError(key, [d.key for d in deps])


def dependent_candidates_prefixes(key: str) -> list[str]:
    """Key prefixes under which resources referencing ``key`` can live.

    A group's members live in that group; a measure can also be the source of
    a top-N aggregation in another group, so the candidates of a measure (and,
    transitively, of its group) include every ``topn_aggregation/`` key.
    """
    kind, _, rest = key.partition("/")
    if kind == "group":
        members = [f"{k}/{rest}/" for k in ("stream", "measure", "trace", "property",
                                             "index_rule", "index_rule_binding")]
        # A top-N anywhere may rank one of the group's measures.
        return [*members, "topn_aggregation/"]
    group = rest.split("/", 1)[0]
    prefixes = [f"index_rule_binding/{group}/"]
    if kind == "measure":
        prefixes.append("topn_aggregation/")
    return prefixes
