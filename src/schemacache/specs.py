"""Spec models of the BanyanDB kinds: group, stream, measure, trace, index rule,
binding and property, with their checks across fields.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any, ClassVar, Literal

from pydantic import (
    Field,
    field_validator,
    model_validator,
)

from .spec_types import (
    NAME,
    NAME_RE,
    Catalog,
    CompressionMethod,
    EncodingMethod,
    FieldType,
    GoDuration,
    IndexRuleType,
    IntervalUnit,
    PipelineEvent,
    ProtoDuration,
    ProtoMessage,
    TagType,
    UInt32,
    proto_enum,
)
from .validation import field_error, unique

__all__ = [
    "Entity",
    "FieldSpec",
    "GroupSpec",
    "IndexRuleBindingSpec",
    "IndexRuleSpec",
    "IntervalRule",
    "LifecycleStage",
    "MeasureSpec",
    "Plugin",
    "PropertySpec",
    "ResourceOpts",
    "SamplerPlugin",
    "ShardingKey",
    "StageRule",
    "StreamSpec",
    "Subject",
    "TagFamilySpec",
    "TagSpec",
    "TracePipelineConfig",
    "TraceSpec",
    "TraceTagSpec",
]



# ---------------------------------------------------------------- group


class IntervalRule(ProtoMessage):
    unit: proto_enum(IntervalUnit, specified=True)  # type: ignore[valid-type]
    num: UInt32 = Field(gt=0)


class LifecycleStage(ProtoMessage):
    name: str = Field(pattern=NAME)
    shard_num: UInt32 = Field(gt=0)
    segment_interval: IntervalRule
    ttl: IntervalRule
    node_selector: str = ""
    close: bool = False
    replicas: UInt32 = 0


class ResourceOpts(ProtoMessage):
    shard_num: UInt32 = Field(gt=0)
    segment_interval: IntervalRule | None = None
    ttl: IntervalRule | None = None
    stages: list[LifecycleStage] = Field(default_factory=list)
    default_stages: list[str] = Field(default_factory=list)
    replicas: UInt32 = 0

    @model_validator(mode="after")
    def _unique_stages(self) -> ResourceOpts:
        unique((s.name for s in self.stages), "stages", "stage")
        unique(self.default_stages, "default_stages", "stage")
        names = {s.name for s in self.stages}
        for i, name in enumerate(self.default_stages):
            if name not in names:
                raise field_error(f"default_stages[{i}]", f"stage {name!r} is not in stages")
        return self


class SamplerPlugin(ProtoMessage):
    path: str = ""
    symbol: str = ""
    abi_version: UInt32 = 0
    config: dict[str, Any] | None = None


class Plugin(ProtoMessage):
    ONE_OF: ClassVar[tuple[str, ...]] = ("sampler",)

    name: str = ""
    sampler: SamplerPlugin | None = None


class StageRule(ProtoMessage):
    stage: str = ""
    plugins: list[Plugin] = Field(default_factory=list)


class TracePipelineConfig(ProtoMessage):
    enabled: bool = False
    plugins: list[Plugin] = Field(default_factory=list)
    merge_grace: ProtoDuration | None = None
    finalize_grace: ProtoDuration | None = None
    stages: list[StageRule] = Field(default_factory=list)
    schema_names: list[str] = Field(default_factory=list)
    schema_name_regex: str = ""
    enabled_events: list[proto_enum(PipelineEvent)] = Field(  # type: ignore[valid-type]
        default_factory=list)

    @field_validator("schema_name_regex")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a regular expression: {exc}") from None
        return value


class GroupSpec(ProtoMessage):
    catalog: proto_enum(Catalog, specified=True)  # type: ignore[valid-type]
    resource_opts: ResourceOpts
    pipeline: TracePipelineConfig | None = None

    @model_validator(mode="after")
    def _catalog_options(self) -> GroupSpec:
        opts = self.resource_opts
        if self.catalog == Catalog.PROPERTY:
            # BanyanDB keeps properties forever, in no segment.
            for name in ("segment_interval", "ttl"):
                if getattr(opts, name) is not None:
                    raise field_error(f"resource_opts.{name}",
                                       "must not be set for a PROPERTY group")
        else:
            if opts.segment_interval is None:
                raise field_error("resource_opts.segment_interval", "required for this catalog")
            if opts.ttl is None:
                raise field_error("resource_opts.ttl", "required for this catalog")
        if self.pipeline is not None and self.catalog != Catalog.TRACE:
            raise field_error("pipeline", "only a TRACE group has a trace pipeline")
        return self


# ---------------------------------------------------------------- stream / measure


class TagSpec(ProtoMessage):
    name: str = Field(pattern=NAME)
    type: proto_enum(TagType, specified=True)  # type: ignore[valid-type]


class TraceTagSpec(TagSpec):
    """A tag of a trace (same fields as :class:`TagSpec`)."""


class TagFamilySpec(ProtoMessage):
    name: str = Field(pattern=NAME)
    tags: list[TagSpec] = Field(min_length=1)


class Entity(ProtoMessage):
    tag_names: list[str] = Field(min_length=1)


class ShardingKey(ProtoMessage):
    tag_names: list[str] = Field(min_length=1)


class FieldSpec(ProtoMessage):
    """A measure field.

    A manifest that leaves ``compression_method`` out gets ``ZSTD``; a BanyanDB
    document that leaves it out means ``UNSPECIFIED``, which BanyanDB rejects.
    """

    PROTO_ZEROS: ClassVar[dict[str, Any]] = {"compression_method": "UNSPECIFIED"}

    name: str = Field(pattern=NAME)
    field_type: proto_enum(FieldType, specified=True)  # type: ignore[valid-type]
    encoding_method: proto_enum(EncodingMethod) = EncodingMethod.UNSPECIFIED  # type: ignore[valid-type]
    compression_method: proto_enum(  # type: ignore[valid-type]
        CompressionMethod, specified=True) = CompressionMethod.ZSTD
def _declared_tags(families: list[TagFamilySpec]) -> set[str]:
    names: list[str] = []
    unique((f.name for f in families), "tag_families", "tag family")
    for i, fam in enumerate(families):
        unique((t.name for t in fam.tags), f"tag_families[{i}].tags", "tag")
        names.extend(t.name for t in fam.tags)
    unique(names, "tag_families", "tag")
    return set(names)


def _check_declared(names: list[str], declared: set[str], path: str) -> None:
    for i, name in enumerate(names):
        if name not in declared:
            raise field_error(f"{path}[{i}]", f"tag {name!r} is not declared in tag_families")


class StreamSpec(ProtoMessage):
    tag_families: list[TagFamilySpec] = Field(min_length=1)
    entity: Entity

    @model_validator(mode="after")
    def _entity_declared(self) -> StreamSpec:
        declared = _declared_tags(self.tag_families)
        _check_declared(self.entity.tag_names, declared, "entity.tag_names")
        return self


class MeasureSpec(ProtoMessage):
    tag_families: list[TagFamilySpec] = Field(min_length=1)
    fields: list[FieldSpec] = Field(default_factory=list)
    entity: Entity
    interval: GoDuration = ""
    index_mode: bool = False
    sharding_key: ShardingKey | None = None

    @model_validator(mode="after")
    def _names_declared(self) -> MeasureSpec:
        if self.index_mode and self.fields:
            raise field_error("fields", "a measure in index mode has no fields")
        declared = _declared_tags(self.tag_families)
        _check_declared(self.entity.tag_names, declared, "entity.tag_names")
        if self.sharding_key is not None:
            _check_declared(self.sharding_key.tag_names, declared, "sharding_key.tag_names")
        unique((f.name for f in self.fields), "fields", "field")
        clash = declared & {f.name for f in self.fields}
        if clash:
            raise field_error("fields", f"name {sorted(clash)[0]!r} is both a tag and a field")
        return self


class TraceSpec(ProtoMessage):
    tags: list[TraceTagSpec] = Field(min_length=1)
    trace_id_tag_name: str
    timestamp_tag_name: str
    span_id_tag_name: str = ""  # later than the other two in the proto; traces may lack it

    @model_validator(mode="after")
    def _special_tags_declared(self) -> TraceSpec:
        unique((t.name for t in self.tags), "tags", "tag")
        types = {t.name: t.type for t in self.tags}
        for attr in ("trace_id_tag_name", "timestamp_tag_name", "span_id_tag_name"):
            name = getattr(self, attr)
            if name not in types and (name or attr != "span_id_tag_name"):
                raise field_error(attr, f"tag {name!r} is not declared in tags")
        if types[self.timestamp_tag_name] != TagType.TIMESTAMP:
            raise field_error("timestamp_tag_name", "must name a TIMESTAMP tag")
        return self


class IndexRuleSpec(ProtoMessage):
    tags: list[str] = Field(min_length=1)
    type: proto_enum(IndexRuleType, specified=True)  # type: ignore[valid-type]
    analyzer: Literal["", "keyword", "standard", "simple", "url"] = ""
    no_sort: bool = False

    @model_validator(mode="after")
    def _unique_tags(self) -> IndexRuleSpec:
        unique(self.tags, "tags", "tag")
        return self


class Subject(ProtoMessage):
    catalog: proto_enum(Catalog, specified=True)  # type: ignore[valid-type]
    name: str = Field(pattern=NAME)

    @field_validator("catalog")
    @classmethod
    def _indexed_catalog(cls, catalog: str) -> str:
        if catalog not in (Catalog.STREAM, Catalog.MEASURE, Catalog.TRACE):
            raise ValueError(f"an index rule binding's subject is a STREAM, MEASURE or TRACE, "
                             f"not {catalog}")
        return catalog


class IndexRuleBindingSpec(ProtoMessage):
    rules: list[str] = Field(min_length=1)
    subject: Subject
    begin_at: datetime | None = None
    expire_at: datetime | None = None

    @field_validator("rules")
    @classmethod
    def _rule_names(cls, rules: list[str]) -> list[str]:
        for i, rule in enumerate(rules):
            if not NAME_RE.match(rule):
                raise ValueError(f"rules[{i}]: invalid name {rule!r}")
        return rules

    @model_validator(mode="after")
    def _window(self) -> IndexRuleBindingSpec:
        unique(self.rules, "rules", "rule")
        if self.begin_at and self.expire_at and _utc(self.expire_at) <= _utc(self.begin_at):
            raise field_error("expire_at", "must be later than begin_at")
        return self


_EPOCH = datetime(1, 1, 1)


def _utc(moment: datetime) -> timedelta:
    """``moment`` as time since 0001-01-01 UTC; a naive datetime is taken as UTC.

    A ``timedelta``, not a ``datetime``: converting ``9999-12-31T23:00-05:00``
    to UTC would overflow the datetime range.
    """
    offset = moment.utcoffset() or timedelta(0)
    return moment.replace(tzinfo=None) - _EPOCH - offset


class PropertySpec(ProtoMessage):
    tags: list[TagSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_tags(self) -> PropertySpec:
        unique((t.name for t in self.tags), "tags", "tag")
        return self

