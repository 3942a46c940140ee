"""The BanyanDB schema kinds: spec models, semantic checks and dependencies.

Each kind has a pydantic model for its spec (``extra="forbid"``), optional
checks across fields (entity tags declared, no duplicate names, …) and a
function naming the keys it depends on.  Other kinds can be added with
:func:`register_kind`; a kind registered without a ``references`` function has
no dependencies.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .errors import ValidationError

if TYPE_CHECKING:
    from .model import Metadata, Resource

NAME = r"^[A-Za-z_][A-Za-z0-9_.-]{0,254}$"
DURATION = r"^[0-9]+(ms|s|m|h|d)$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", use_enum_values=True)


class Catalog(StrEnum):
    STREAM = "STREAM"
    MEASURE = "MEASURE"
    TRACE = "TRACE"
    PROPERTY = "PROPERTY"


class IntervalUnit(StrEnum):
    HOUR = "HOUR"
    DAY = "DAY"


class TagType(StrEnum):
    STRING = "STRING"
    INT = "INT"
    STRING_ARRAY = "STRING_ARRAY"
    INT_ARRAY = "INT_ARRAY"
    DATA_BINARY = "DATA_BINARY"
    TIMESTAMP = "TIMESTAMP"


class FieldType(StrEnum):
    STRING = "STRING"
    INT = "INT"
    DATA_BINARY = "DATA_BINARY"
    FLOAT = "FLOAT"


class EncodingMethod(StrEnum):
    UNSPECIFIED = "UNSPECIFIED"
    GORILLA = "GORILLA"


class CompressionMethod(StrEnum):
    UNSPECIFIED = "UNSPECIFIED"
    ZSTD = "ZSTD"


class IndexRuleType(StrEnum):
    INVERTED = "INVERTED"
    SKIPPING = "SKIPPING"
    TREE = "TREE"


class Sort(StrEnum):
    UNSPECIFIED = "UNSPECIFIED"
    DESC = "DESC"
    ASC = "ASC"


# ---------------------------------------------------------------- group


class IntervalRule(_Strict):
    unit: IntervalUnit
    num: int = Field(gt=0)


class LifecycleStage(_Strict):
    name: str = Field(pattern=NAME)
    shard_num: int = Field(gt=0)
    segment_interval: IntervalRule
    ttl: IntervalRule
    node_selector: str = ""
    close: bool = False


class ResourceOpts(_Strict):
    shard_num: int = Field(gt=0)
    segment_interval: IntervalRule | None = None
    ttl: IntervalRule | None = None
    replicas: int = Field(default=0, ge=0)
    stages: list[LifecycleStage] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_stages(self) -> ResourceOpts:
        _unique((s.name for s in self.stages), "stages", "stage")
        return self


class GroupSpec(_Strict):
    catalog: Catalog
    resource_opts: ResourceOpts

    @model_validator(mode="after")
    def _intervals_for_data(self) -> GroupSpec:
        if self.catalog != Catalog.PROPERTY:
            if self.resource_opts.segment_interval is None:
                raise _field_error("resource_opts.segment_interval", "required for this catalog")
            if self.resource_opts.ttl is None:
                raise _field_error("resource_opts.ttl", "required for this catalog")
        return self


# ---------------------------------------------------------------- stream / measure


class TagSpec(_Strict):
    name: str = Field(pattern=NAME)
    type: TagType


class TagFamilySpec(_Strict):
    name: str = Field(pattern=NAME)
    tags: list[TagSpec] = Field(min_length=1)


class Entity(_Strict):
    tag_names: list[str] = Field(min_length=1)


class ShardingKey(_Strict):
    tag_names: list[str] = Field(min_length=1)


class FieldSpec(_Strict):
    name: str = Field(pattern=NAME)
    field_type: FieldType
    encoding_method: EncodingMethod = EncodingMethod.UNSPECIFIED
    compression_method: CompressionMethod = CompressionMethod.UNSPECIFIED


def _declared_tags(families: list[TagFamilySpec]) -> set[str]:
    names: list[str] = []
    _unique((f.name for f in families), "tag_families", "tag family")
    for i, fam in enumerate(families):
        _unique((t.name for t in fam.tags), f"tag_families[{i}].tags", "tag")
        names.extend(t.name for t in fam.tags)
    _unique(names, "tag_families", "tag")
    return set(names)


def _check_declared(names: list[str], declared: set[str], path: str) -> None:
    for i, name in enumerate(names):
        if name not in declared:
            raise _field_error(f"{path}[{i}]", f"tag {name!r} is not declared in tag_families")


class StreamSpec(_Strict):
    tag_families: list[TagFamilySpec] = Field(min_length=1)
    entity: Entity

    @model_validator(mode="after")
    def _entity_declared(self) -> StreamSpec:
        declared = _declared_tags(self.tag_families)
        _check_declared(self.entity.tag_names, declared, "entity.tag_names")
        return self


class MeasureSpec(_Strict):
    tag_families: list[TagFamilySpec] = Field(min_length=1)
    fields: list[FieldSpec] = Field(default_factory=list)
    entity: Entity
    interval: str = Field(default="", pattern=r"^$|" + DURATION)
    index_mode: bool = False
    sharding_key: ShardingKey | None = None

    @model_validator(mode="after")
    def _names_declared(self) -> MeasureSpec:
        declared = _declared_tags(self.tag_families)
        _check_declared(self.entity.tag_names, declared, "entity.tag_names")
        if self.sharding_key is not None:
            _check_declared(self.sharding_key.tag_names, declared, "sharding_key.tag_names")
        _unique((f.name for f in self.fields), "fields", "field")
        clash = declared & {f.name for f in self.fields}
        if clash:
            raise _field_error("fields", f"name {sorted(clash)[0]!r} is both a tag and a field")
        return self


class TraceSpec(_Strict):
    tags: list[TagSpec] = Field(min_length=1)
    trace_id_tag_name: str
    timestamp_tag_name: str
    span_id_tag_name: str

    @model_validator(mode="after")
    def _special_tags_declared(self) -> TraceSpec:
        _unique((t.name for t in self.tags), "tags", "tag")
        types = {t.name: t.type for t in self.tags}
        for attr in ("trace_id_tag_name", "timestamp_tag_name", "span_id_tag_name"):
            name = getattr(self, attr)
            if name not in types:
                raise _field_error(attr, f"tag {name!r} is not declared in tags")
        if types[self.timestamp_tag_name] != TagType.TIMESTAMP:
            raise _field_error("timestamp_tag_name", "must name a TIMESTAMP tag")
        return self


class IndexRuleSpec(_Strict):
    tags: list[str] = Field(min_length=1)
    type: IndexRuleType
    analyzer: Literal["", "keyword", "standard", "simple", "url"] = ""
    no_sort: bool = False

    @model_validator(mode="after")
    def _unique_tags(self) -> IndexRuleSpec:
        _unique(self.tags, "tags", "tag")
        return self


class Subject(_Strict):
    catalog: Literal["STREAM", "MEASURE", "TRACE"]
    name: str = Field(pattern=NAME)


class IndexRuleBindingSpec(_Strict):
    rules: list[str] = Field(min_length=1)
    subject: Subject
    begin_at: datetime | None = None
    expire_at: datetime | None = None

    @field_validator("rules")
    @classmethod
    def _rule_names(cls, rules: list[str]) -> list[str]:
        for i, rule in enumerate(rules):
            if not _NAME_RE.match(rule):
                raise ValueError(f"rules[{i}]: invalid name {rule!r}")
        return rules

    @model_validator(mode="after")
    def _window(self) -> IndexRuleBindingSpec:
        _unique(self.rules, "rules", "rule")
        if self.begin_at and self.expire_at and self.expire_at <= self.begin_at:
            raise _field_error("expire_at", "must be later than begin_at")
        return self


class MeasureRef(_Strict):
    group: str = Field(pattern=NAME)
    name: str = Field(pattern=NAME)


class TopNAggregationSpec(_Strict):
    source_measure: MeasureRef
    field_name: str = Field(pattern=NAME)
    field_value_sort: Sort = Sort.UNSPECIFIED
    group_by_tag_names: list[str] = Field(default_factory=list)
    counters_number: int = Field(default=1000, gt=0)
    lru_size: int = Field(default=10, gt=0)

    @model_validator(mode="after")
    def _unique_group_by(self) -> TopNAggregationSpec:
        _unique(self.group_by_tag_names, "group_by_tag_names", "tag")
        return self


class PropertySpec(_Strict):
    tags: list[TagSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_tags(self) -> PropertySpec:
        _unique((t.name for t in self.tags), "tags", "tag")
        return self


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
    check: Callable[[Resource, Resource], None] | None = None


References = Callable[["Resource"], list[Reference]]

_CATALOG_OF_KIND = {
    "stream": "STREAM",
    "measure": "MEASURE",
    "trace": "TRACE",
    "property": "PROPERTY",
}


def _group_ref(r: Resource) -> list[Reference]:
    return [Reference(f"group/{r.metadata.group}", _CATALOG_OF_KIND.get(r.kind))]


def _binding_refs(r: Resource) -> list[Reference]:
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


def _topn_refs(r: Resource) -> list[Reference]:
    src = r.spec["source_measure"]
    source = Reference(
        f"measure/{src['group']}/{src['name']}", path="spec.source_measure", check=_topn_fits
    )
    return [*_group_ref(r), source]


def _topn_fits(topn: Resource, measure: Resource) -> None:
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


def register_kind(info: KindInfo) -> None:
    """Add (or replace) a kind; a kind with no ``references`` has no dependencies."""
    KINDS[info.name] = info


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


def references(resource: Resource) -> list[Reference]:
    """The keys ``resource`` depends on (empty for a group or a generic kind)."""
    info = KINDS.get(resource.kind)
    if info is None or info.references is None:
        return []
    return info.references(resource)


def level(kind: str) -> int:
    """Dependency level of a kind (0 for unknown/generic kinds)."""
    info = KINDS.get(kind)
    return info.level if info else 0


def level_of_key(key: str) -> int:
    return level(key.split("/", 1)[0])


def apply_order(resources: Iterable[Resource]) -> list[Resource]:
    """Prerequisites first (groups, then streams/measures/…, then bindings/top-N)."""
    return sorted(resources, key=lambda r: (level(r.kind), r.key))


def delete_order(resources: Iterable[Resource]) -> list[Resource]:
    """Dependents first: the reverse of :func:`apply_order`."""
    return sorted(resources, key=lambda r: (-level(r.kind), r.key))


# ---------------------------------------------------------------- validation

_NAME_RE = __import__("re").compile(NAME)


def validate_spec(kind: str, metadata: Metadata, spec: dict[str, Any]) -> dict[str, Any]:
    """Validate ``spec`` for ``kind`` and return it normalised.

    Raises :class:`ValidationError` naming the field path (``spec.…``).
    """
    info = kind_info(kind)
    if info.grouped and not metadata.group:
        raise ValidationError(f"a {kind} needs a group", field="metadata.group")
    if not info.grouped and metadata.group:
        raise ValidationError(f"a {kind} belongs to no group", field="metadata.group")
    if metadata.group is not None and not _NAME_RE.match(metadata.group):
        raise ValidationError(f"invalid name {metadata.group!r}", field="metadata.group")
    if info.spec_model is None:
        return spec
    try:
        model = info.spec_model.model_validate(spec)
    except pydantic.ValidationError as exc:
        raise from_pydantic(exc, prefix="spec") from None
    except _FieldError as exc:
        raise ValidationError(exc.reason, field=f"spec.{exc.path}") from None
    return model.model_dump(mode="json", exclude_none=True)


class _FieldError(ValueError):
    """A semantic check failure carrying the field path, turned into ValidationError."""

    def __init__(self, path: str, reason: str):
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


def _field_error(path: str, reason: str) -> _FieldError:
    return _FieldError(path, reason)


def _unique(names: Iterable[str], path: str, what: str) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise _FieldError(path, f"duplicate {what} name {name!r}")
        seen.add(name)


def format_loc(loc: Iterable[str | int], prefix: str = "") -> str:
    """Render a pydantic error location as ``a.b[0].c``."""
    out = prefix
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif out:
            out += f".{part}"
        else:
            out = str(part)
    return out


def from_pydantic(exc: pydantic.ValidationError, prefix: str = "") -> ValidationError:
    """The first error of a pydantic failure as a :class:`ValidationError`."""
    err = exc.errors()[0]
    loc = [p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-"))]
    ctx = err.get("ctx") or {}
    inner = ctx.get("error")
    if isinstance(inner, ValidationError):
        return inner
    if isinstance(inner, _FieldError):
        base = format_loc(loc, prefix)
        return ValidationError(inner.reason, field=f"{base}.{inner.path}" if base else inner.path)
    msg = err["msg"]
    if err["type"] == "extra_forbidden":
        msg = "unknown field"
    elif err["type"] == "missing":
        msg = "field required"
    return ValidationError(msg, field=format_loc(loc, prefix) or None)
