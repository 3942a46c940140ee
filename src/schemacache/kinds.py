"""The BanyanDB schema kinds: the registry of kinds, their dependencies, spec validation.

Each kind has a pydantic model for its spec (``extra="forbid"``; the models live
in :mod:`schemacache.specs` and :mod:`schemacache.topn`, their building blocks in
:mod:`schemacache.spec_types`), optional checks across fields (entity tags
declared, no duplicate names, …) and a function naming the keys it depends on.
Other kinds can be added with :func:`register_kind`; a kind registered without a
``references`` function has no dependencies.

This module knows resources only by their shape (:class:`SchemaObject`), so
that :mod:`schemacache.model` can validate every resource through it without
an import cycle.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import pydantic
from pydantic import BaseModel

from .errors import ValidationError

# The spec models and their building blocks are re-exported: this module is
# where users have always found them.
from .spec_types import *  # noqa: F403
from .spec_types import NAME_RE
from .spec_types import ProtoMessage as _Strict  # noqa: F401  (its former name)
from .specs import *  # noqa: F403
from .specs import (
    GroupSpec,
    IndexRuleBindingSpec,
    IndexRuleSpec,
    MeasureSpec,
    PropertySpec,
    StreamSpec,
    TraceSpec,
)
from .topn import *  # noqa: F403
from .topn import TopNAggregationSpec
from .validation import FieldError, from_pydantic


class _Identity(Protocol):
    @property
    def group(self) -> str | None: ...


class SchemaObject(Protocol):
    """What this module reads of a resource (:class:`schemacache.Resource` has it all)."""

    @property
    def kind(self) -> str: ...

    @property
    def key(self) -> str: ...

    @property
    def metadata(self) -> _Identity: ...

    @property
    def spec(self) -> dict[str, Any]: ...


_R = TypeVar("_R", bound=SchemaObject)


# ---------------------------------------------------------------- dependencies


@dataclass(frozen=True)
class Reference:
    """A key a resource needs to exist before it can be written.

    :param key: the referenced key.
    :param catalog: when set, the referenced group must have this catalog.
    :param path: the spec field that makes the reference (for error messages).
    """

    key: str
    catalog: str | None = None
    path: str = "metadata.group"
    check: Callable[[SchemaObject, SchemaObject], None] | None = None


References = Callable[[SchemaObject], list[Reference]]

_CATALOG_OF_KIND = {
    "stream": "STREAM",
    "measure": "MEASURE",
    "trace": "TRACE",
    "property": "PROPERTY",
}


def _group_ref(r: SchemaObject) -> list[Reference]:
    return [Reference(f"group/{r.metadata.group}", _CATALOG_OF_KIND.get(r.kind))]


def _binding_refs(r: SchemaObject) -> list[Reference]:
    refs = _group_ref(r)
    refs += [
        Reference(f"index_rule/{r.metadata.group}/{rule}", path=f"spec.rules[{i}]")
        for i, rule in enumerate(r.spec["rules"])
    ]
    subject = r.spec["subject"]
    refs.append(
        Reference(f"{subject['catalog'].lower()}/{r.metadata.group}/{subject['name']}",
                  path="spec.subject")
    )
    return refs


def _topn_refs(r: SchemaObject) -> list[Reference]:
    src = r.spec["source_measure"]
    source = Reference(
        f"measure/{src['group']}/{src['name']}", path="spec.source_measure", check=_topn_fits
    )
    return [*_group_ref(r), source]


def _topn_fits(topn: SchemaObject, measure: SchemaObject) -> None:
    """A top-N must rank a field of its source measure and group by its tags."""
    fields = {f["name"] for f in measure.spec.get("fields", [])}
    if topn.spec["field_name"] not in fields:
        raise ValidationError(
            f"{measure.key} has no field {topn.spec['field_name']!r}", field="spec.field_name"
        )
    tags = {t["name"] for fam in measure.spec.get("tag_families", []) for t in fam["tags"]}
    for i, tag in enumerate(topn.spec.get("group_by_tag_names", [])):
        if tag not in tags:
            raise ValidationError(
                f"{measure.key} has no tag {tag!r}", field=f"spec.group_by_tag_names[{i}]"
            )


@dataclass(frozen=True)
class KindInfo:
    """How one kind is validated and ordered.

    :param name: the kind's name (first segment of its keys).
    :param spec_model: the pydantic model of its spec (``None`` = any mapping).
    :param level: dependency level; prerequisites have lower levels.
    :param references: returns the keys a resource of the kind depends on.
    :param grouped: whether resources of the kind belong to a group.
    """

    name: str
    spec_model: type[BaseModel] | None
    level: int = 0
    references: References | None = None
    grouped: bool = True


KINDS: dict[str, KindInfo] = {}
GROUP_ONLY_KINDS: set[str] = set()
"""The kinds whose resources depend on nothing but their group (see
:func:`references_only_its_group`; a set, for checks made once per event)."""


def register_kind(info: KindInfo) -> None:
    """Add (or replace) a kind; a kind with no ``references`` has no dependencies."""
    KINDS[info.name] = info
    if info.references is _group_ref:
        GROUP_ONLY_KINDS.add(info.name)
    else:
        GROUP_ONLY_KINDS.discard(info.name)


for _info in (
    KindInfo("group", GroupSpec, level=0, grouped=False),
    KindInfo("stream", StreamSpec, level=1, references=_group_ref),
    KindInfo("measure", MeasureSpec, level=1, references=_group_ref),
    KindInfo("trace", TraceSpec, level=1, references=_group_ref),
    KindInfo("property", PropertySpec, level=1, references=_group_ref),
    KindInfo("index_rule", IndexRuleSpec, level=1, references=_group_ref),
    KindInfo("index_rule_binding", IndexRuleBindingSpec, level=2, references=_binding_refs),
    KindInfo("topn_aggregation", TopNAggregationSpec, level=2, references=_topn_refs),
):
    register_kind(_info)


def kind_info(kind: str) -> KindInfo:
    try:
        return KINDS[kind]
    except KeyError:
        known = ", ".join(sorted(KINDS))
        raise ValidationError(f"unknown kind {kind!r} (known: {known})", field="kind") from None


def references(resource: SchemaObject) -> list[Reference]:
    """The keys ``resource`` depends on (empty for a group or a generic kind)."""
    info = KINDS.get(resource.kind)
    if info is None or info.references is None:
        return []
    return info.references(resource)


def references_only_its_group(kind: str) -> bool:
    """Whether a ``kind`` resource depends on nothing but its group, which its
    key names: its prerequisites are known without reading its spec."""
    return kind in GROUP_ONLY_KINDS


def level(kind: str) -> int:
    """Dependency level of a kind (0 for unknown/generic kinds)."""
    info = KINDS.get(kind)
    return info.level if info else 0


def kind_of_key(key: str) -> str:
    """The kind a key names (its first segment)."""
    return key.split("/", 1)[0]


def level_of_key(key: str) -> int:
    return level(kind_of_key(key))


def apply_order(resources: Iterable[_R]) -> list[_R]:
    """Prerequisites first (groups, then streams/measures/…, then bindings/top-N)."""
    return sorted(resources, key=lambda r: (level(r.kind), r.key))


def delete_order(resources: Iterable[_R]) -> list[_R]:
    """Dependents first: the reverse of :func:`apply_order`."""
    return sorted(resources, key=lambda r: (-level(r.kind), r.key))


# ---------------------------------------------------------------- validation

def validate_spec(kind: str, metadata: _Identity, spec: dict[str, Any]) -> dict[str, Any]:
    """Validate ``spec`` for ``kind`` and return it normalised.

    Raises :class:`ValidationError` naming the field path (``spec.…``).
    """
    info = kind_info(kind)
    if info.grouped and not metadata.group:
        raise ValidationError(f"a {kind} needs a group", field="metadata.group")
    if not info.grouped and metadata.group:
        raise ValidationError(f"a {kind} belongs to no group", field="metadata.group")
    if metadata.group is not None and not NAME_RE.match(metadata.group):
        raise ValidationError(f"invalid name {metadata.group!r}", field="metadata.group")
    if info.spec_model is None:
        return spec
    try:
        model = info.spec_model.model_validate(spec)
    except pydantic.ValidationError as exc:
        raise from_pydantic(exc, prefix="spec") from None
    except FieldError as exc:
        raise ValidationError(exc.reason, field=f"spec.{exc.path}") from None
    return model.model_dump(mode="json", exclude_none=True)
