"""The write rules every registry backend shares: references, group updates,
cascades and the plan of an all-or-nothing apply.

Writes enforce references (a measure needs its group of catalog MEASURE, a
binding its rules and subject, a top-N its source measure); a delete of a
referenced key is refused unless ``cascade=True``.
"""

from __future__ import annotations

import builtins
import functools
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from ..errors import ReferencedError, ValidationError
from ..kinds import delete_order, level, references
from ..model import Resource

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
