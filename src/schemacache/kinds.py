"""The BanyanDB schema kinds: spec models, semantic checks and dependencies.

Each kind has a pydantic model for its spec (``extra="forbid"``), optional
checks across fields (entity tags declared, no duplicate names, …) and a
function naming the keys it depends on.  Other kinds can be added with
:func:`register_kind`; a kind registered without a ``references`` function has
no dependencies.
"""

from __future__ import annotations

import builtins
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

import pydantic
from pydantic import (
    AfterValidator,
    AliasGenerator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel, to_snake

from .errors import ValidationError

if TYPE_CHECKING:
    from .model import Metadata, Resource

NAME = r"^[A-Za-z_][A-Za-z0-9_.-]{0,254}$"

UINT32_MAX = 2**32 - 1
INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1

_GO_DURATION_UNITS = ("ns", "us", "\u00b5s", "\u03bcs", "ms", "s", "m", "h", "d")
_GO_DURATION_RE = re.compile(
    r"^(?:(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:" + "|".join(_GO_DURATION_UNITS) + r"))+$"
)
_PROTO_DURATION_RE = re.compile(r"^-?[0-9]+(?:\.[0-9]{1,9})?s$")
_BASE64_RE = re.compile(r"^[A-Za-z0-9+/_-]*={0,2}$")


class ProtoInt64:
    """Marks an ``int64`` field: protojson writes its values as JSON strings."""


UInt32 = Annotated[int, Field(ge=0, le=UINT32_MAX)]
Int32 = Annotated[int, Field(ge=-INT32_MAX - 1, le=INT32_MAX)]
Int64 = Annotated[int, Field(ge=-INT64_MAX - 1, le=INT64_MAX), ProtoInt64()]


def _check_go_duration(value: str) -> str:
    if value not in ("", "0") and not _GO_DURATION_RE.match(value):
        raise ValueError(
            f"invalid duration {value!r}: expected a Go duration such as 1m, 1h30m, 1.5h, "
            "500ms, 100ns, 500us or 7d"
        )
    return value


def _check_proto_duration(value: str) -> str:
    if not _PROTO_DURATION_RE.match(value):
        raise ValueError(f"invalid duration {value!r}: expected seconds such as 1.5s or 30s")
    return value


GoDuration = Annotated[str, AfterValidator(_check_go_duration)]
ProtoDuration = Annotated[str, AfterValidator(_check_proto_duration)]


class _Strict(BaseModel):
    """A proto message: unknown fields rejected, snake_case or lowerCamelCase names."""

    model_config = ConfigDict(
        extra="forbid",
        use_enum_values=True,
        alias_generator=AliasGenerator(validation_alias=to_camel),
        validate_by_name=True,
        validate_by_alias=True,
    )

    PROTO_ZEROS: ClassVar[dict[str, Any]] = {}
    """Fields whose schemacache default differs from the proto zero value, with that
    value: what a BanyanDB document that leaves them out means."""

    ONE_OF: ClassVar[tuple[str, ...]] = ()
    """Members of the message's one-of group: written when set, even to a zero value."""



# ---------------------------------------------------------------- enums
#
# Values are stored by their short names (``STRING``); a document may also
# name them by full proto name (``TAG_TYPE_STRING``) or number.  Members are
# declared in number order.


class Catalog(StrEnum):
    UNSPECIFIED = "UNSPECIFIED"
    STREAM = "STREAM"
    MEASURE = "MEASURE"
    PROPERTY = "PROPERTY"
    TRACE = "TRACE"


class IntervalUnit(StrEnum):
    UNSPECIFIED = "UNSPECIFIED"
    HOUR = "HOUR"
    DAY = "DAY"


class PipelineEvent(StrEnum):
    UNSPECIFIED = "UNSPECIFIED"
    MERGE = "MERGE"
    FINALIZE = "FINALIZE"


class TagType(StrEnum):
    UNSPECIFIED = "UNSPECIFIED"
    STRING = "STRING"
    INT = "INT"
    STRING_ARRAY = "STRING_ARRAY"
    INT_ARRAY = "INT_ARRAY"
    DATA_BINARY = "DATA_BINARY"
    TIMESTAMP = "TIMESTAMP"


class FieldType(StrEnum):
    UNSPECIFIED = "UNSPECIFIED"
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
    UNSPECIFIED = "UNSPECIFIED"
    INVERTED = "INVERTED"
    SKIPPING = "SKIPPING"
    TREE = "TREE"


class Sort(StrEnum):
    UNSPECIFIED = "UNSPECIFIED"
    DESC = "DESC"
    ASC = "ASC"


class BinaryOp(StrEnum):
    UNSPECIFIED = "UNSPECIFIED"
    EQ = "EQ"
    NE = "NE"
    LT = "LT"
    GT = "GT"
    LE = "LE"
    GE = "GE"
    HAVING = "HAVING"
    NOT_HAVING = "NOT_HAVING"
    IN = "IN"
    NOT_IN = "NOT_IN"
    MATCH = "MATCH"


class MatchOperator(StrEnum):
    UNSPECIFIED = "UNSPECIFIED"
    AND = "AND"
    OR = "OR"


class LogicalOp(StrEnum):
    UNSPECIFIED = "UNSPECIFIED"
    AND = "AND"
    OR = "OR"


@dataclass(frozen=True)
class ProtoEnum:
    """How one enum is spelled in BanyanDB's protos.

    :param proto_name: the enum's name in the proto (``IntervalRule.Unit``).
    :param prefix: what the full value names add before the short name (``UNIT_``).
    """

    proto_name: str
    prefix: str


PROTO_ENUMS: dict[type[StrEnum], ProtoEnum] = {
    Catalog: ProtoEnum("Catalog", "CATALOG_"),
    IntervalUnit: ProtoEnum("IntervalRule.Unit", "UNIT_"),
    PipelineEvent: ProtoEnum("PipelineEvent", "PIPELINE_EVENT_"),
    TagType: ProtoEnum("TagType", "TAG_TYPE_"),
    FieldType: ProtoEnum("FieldType", "FIELD_TYPE_"),
    EncodingMethod: ProtoEnum("EncodingMethod", "ENCODING_METHOD_"),
    CompressionMethod: ProtoEnum("CompressionMethod", "COMPRESSION_METHOD_"),
    IndexRuleType: ProtoEnum("IndexRule.Type", "TYPE_"),
    Sort: ProtoEnum("Sort", "SORT_"),
    BinaryOp: ProtoEnum("Condition.BinaryOp", "BINARY_OP_"),
    MatchOperator: ProtoEnum("Condition.MatchOption.Operator", "OPERATOR_"),
    LogicalOp: ProtoEnum("LogicalExpression.LogicalOp", "LOGICAL_OP_"),
}
"""Every enum of the schema protos, by the class that models it."""


def _proto_enum(enum: type[StrEnum], *, specified: bool = False) -> Any:
    """The annotated type of a field holding ``enum``, read as protojson does (and by short name).

    :param enum: the enum class (members in proto number order).
    :param specified: reject the ``UNSPECIFIED`` zero value, as BanyanDB does at
        create time for this field (default ``False``).
    """
    prefix = PROTO_ENUMS[enum].prefix
    members = [m.value for m in enum]

    def parse(value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            if 0 <= value < len(members):
                value = members[value]
            else:
                raise ValueError(f"no {PROTO_ENUMS[enum].proto_name} value is numbered {value}")
        elif isinstance(value, str) and value.startswith(prefix) and value[len(prefix):] in members:
            value = value[len(prefix):]
        if specified and value == "UNSPECIFIED":
            raise ValueError(f"{prefix}UNSPECIFIED is not allowed here: name a value")
        return value

    return Annotated[enum, BeforeValidator(parse)]


# ---------------------------------------------------------------- group


class IntervalRule(_Strict):
    unit: _proto_enum(IntervalUnit, specified=True)  # type: ignore[valid-type]
    num: UInt32 = Field(gt=0)


class LifecycleStage(_Strict):
    name: str = Field(pattern=NAME)
    shard_num: UInt32 = Field(gt=0)
    segment_interval: IntervalRule
    ttl: IntervalRule
    node_selector: str = ""
    close: bool = False
    replicas: UInt32 = 0


class ResourceOpts(_Strict):
    shard_num: UInt32 = Field(gt=0)
    segment_interval: IntervalRule | None = None
    ttl: IntervalRule | None = None
    stages: list[LifecycleStage] = Field(default_factory=list)
    default_stages: list[str] = Field(default_factory=list)
    replicas: UInt32 = 0

    @model_validator(mode="after")
    def _unique_stages(self) -> ResourceOpts:
        _unique((s.name for s in self.stages), "stages", "stage")
        _unique(self.default_stages, "default_stages", "stage")
        names = {s.name for s in self.stages}
        for i, name in enumerate(self.default_stages):
            if name not in names:
                raise _field_error(f"default_stages[{i}]", f"stage {name!r} is not in stages")
        return self


class SamplerPlugin(_Strict):
    path: str = ""
    symbol: str = ""
    abi_version: UInt32 = 0
    config: dict[str, Any] | None = None


class Plugin(_Strict):
    ONE_OF: ClassVar[tuple[str, ...]] = ("sampler",)

    name: str = ""
    sampler: SamplerPlugin | None = None


class StageRule(_Strict):
    stage: str = ""
    plugins: list[Plugin] = Field(default_factory=list)


class TracePipelineConfig(_Strict):
    enabled: bool = False
    plugins: list[Plugin] = Field(default_factory=list)
    merge_grace: ProtoDuration | None = None
    finalize_grace: ProtoDuration | None = None
    stages: list[StageRule] = Field(default_factory=list)
    schema_names: list[str] = Field(default_factory=list)
    schema_name_regex: str = ""
    enabled_events: list[_proto_enum(PipelineEvent)] = Field(  # type: ignore[valid-type]
        default_factory=list)

    @field_validator("schema_name_regex")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a regular expression: {exc}") from None
        return value


class GroupSpec(_Strict):
    catalog: _proto_enum(Catalog, specified=True)  # type: ignore[valid-type]
    resource_opts: ResourceOpts
    pipeline: TracePipelineConfig | None = None

    @model_validator(mode="after")
    def _catalog_options(self) -> GroupSpec:
        opts = self.resource_opts
        if self.catalog == Catalog.PROPERTY:
            # BanyanDB keeps properties forever, in no segment.
            for name in ("segment_interval", "ttl"):
                if getattr(opts, name) is not None:
                    raise _field_error(f"resource_opts.{name}",
                                       "must not be set for a PROPERTY group")
        else:
            if opts.segment_interval is None:
                raise _field_error("resource_opts.segment_interval", "required for this catalog")
            if opts.ttl is None:
                raise _field_error("resource_opts.ttl", "required for this catalog")
        if self.pipeline is not None and self.catalog != Catalog.TRACE:
            raise _field_error("pipeline", "only a TRACE group has a trace pipeline")
        return self


# ---------------------------------------------------------------- stream / measure


class TagSpec(_Strict):
    name: str = Field(pattern=NAME)
    type: _proto_enum(TagType, specified=True)  # type: ignore[valid-type]


class TraceTagSpec(TagSpec):
    """A tag of a trace (same fields as :class:`TagSpec`)."""


class TagFamilySpec(_Strict):
    name: str = Field(pattern=NAME)
    tags: list[TagSpec] = Field(min_length=1)


class Entity(_Strict):
    tag_names: list[str] = Field(min_length=1)


class ShardingKey(_Strict):
    tag_names: list[str] = Field(min_length=1)


class FieldSpec(_Strict):
    """A measure field.

    A manifest that leaves ``compression_method`` out gets ``ZSTD``; a BanyanDB
    document that leaves it out means ``UNSPECIFIED``, which BanyanDB rejects.
    """

    PROTO_ZEROS: ClassVar[dict[str, Any]] = {"compression_method": "UNSPECIFIED"}

    name: str = Field(pattern=NAME)
    field_type: _proto_enum(FieldType, specified=True)  # type: ignore[valid-type]
    encoding_method: _proto_enum(EncodingMethod) = EncodingMethod.UNSPECIFIED  # type: ignore[valid-type]
    compression_method: _proto_enum(  # type: ignore[valid-type]
        CompressionMethod, specified=True) = CompressionMethod.ZSTD
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
    interval: GoDuration = ""
    index_mode: bool = False
    sharding_key: ShardingKey | None = None

    @model_validator(mode="after")
    def _names_declared(self) -> MeasureSpec:
        if self.index_mode and self.fields:
            raise _field_error("fields", "a measure in index mode has no fields")
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
    tags: list[TraceTagSpec] = Field(min_length=1)
    trace_id_tag_name: str
    timestamp_tag_name: str
    span_id_tag_name: str = ""  # later than the other two in the proto; traces may lack it

    @model_validator(mode="after")
    def _special_tags_declared(self) -> TraceSpec:
        _unique((t.name for t in self.tags), "tags", "tag")
        types = {t.name: t.type for t in self.tags}
        for attr in ("trace_id_tag_name", "timestamp_tag_name", "span_id_tag_name"):
            name = getattr(self, attr)
            if name not in types and (name or attr != "span_id_tag_name"):
                raise _field_error(attr, f"tag {name!r} is not declared in tags")
        if types[self.timestamp_tag_name] != TagType.TIMESTAMP:
            raise _field_error("timestamp_tag_name", "must name a TIMESTAMP tag")
        return self


class IndexRuleSpec(_Strict):
    tags: list[str] = Field(min_length=1)
    type: _proto_enum(IndexRuleType, specified=True)  # type: ignore[valid-type]
    analyzer: Literal["", "keyword", "standard", "simple", "url"] = ""
    no_sort: bool = False

    @model_validator(mode="after")
    def _unique_tags(self) -> IndexRuleSpec:
        _unique(self.tags, "tags", "tag")
        return self


class Subject(_Strict):
    catalog: _proto_enum(Catalog, specified=True)  # type: ignore[valid-type]
    name: str = Field(pattern=NAME)

    @field_validator("catalog")
    @classmethod
    def _indexed_catalog(cls, catalog: str) -> str:
        if catalog not in (Catalog.STREAM, Catalog.MEASURE, Catalog.TRACE):
            raise ValueError(f"an index rule binding's subject is a STREAM, MEASURE or TRACE, "
                             f"not {catalog}")
        return catalog


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
        if self.begin_at and self.expire_at and _utc(self.expire_at) <= _utc(self.begin_at):
            raise _field_error("expire_at", "must be later than begin_at")
        return self


_EPOCH = datetime(1, 1, 1)


def _utc(moment: datetime) -> timedelta:
    """``moment`` as time since 0001-01-01 UTC; a naive datetime is taken as UTC.

    A ``timedelta``, not a ``datetime``: converting ``9999-12-31T23:00-05:00``
    to UTC would overflow the datetime range.
    """
    offset = moment.utcoffset() or timedelta(0)
    return moment.replace(tzinfo=None) - _EPOCH - offset


class ProtoMetadata(_Strict):
    """``common.v1.Metadata`` as a document writes it (identity of a BanyanDB object)."""

    group: str = ""
    name: str = ""
    id: UInt32 = 0
    create_revision: Int64 = 0
    mod_revision: Int64 = 0


class MeasureRef(ProtoMetadata):
    """The source measure of a top-N: a full ``Metadata`` naming a measure."""

    group: str = Field(pattern=NAME)
    name: str = Field(pattern=NAME)


# ---------------------------------------------------------------- top-N criteria (model.v1)


class Str(_Strict):
    value: str = ""


class StrArray(_Strict):
    value: list[str] = Field(default_factory=list)


class Int(_Strict):
    value: Int64 = 0


class IntArray(_Strict):
    value: list[Int64] = Field(default_factory=list)


NULL_VALUE = "NULL_VALUE"


class TagValue(_Strict):
    """One value compared by a condition: at most one member is set."""

    ONE_OF: ClassVar[tuple[str, ...]] = ("null", "str", "str_array", "int", "int_array",
                                         "binary_data", "timestamp")

    null: Literal["NULL_VALUE"] | None = None
    str: Str | None = None
    str_array: StrArray | None = None
    int: Int | None = None
    int_array: IntArray | None = None
    binary_data: builtins.str | None = None
    timestamp: AwareDatetime | None = None

    @model_validator(mode="before")
    @classmethod
    def _null_is_set(cls, data: Any) -> Any:
        # protojson writes the NullValue member as JSON null: present, not absent.
        if isinstance(data, dict) and "null" in data and data["null"] in (None, 0, NULL_VALUE):
            return {**data, "null": NULL_VALUE}
        return data

    @field_validator("binary_data")
    @classmethod
    def _base64(cls, value: builtins.str | None) -> builtins.str | None:
        if value is not None and not _BASE64_RE.match(value):
            raise ValueError("expected base64 text")
        return value

    @model_validator(mode="after")
    def _one_of(self) -> TagValue:
        _one_of(self, self.ONE_OF)
        return self


class MatchOption(_Strict):
    analyzer: str = ""
    operator: _proto_enum(MatchOperator) = MatchOperator.UNSPECIFIED  # type: ignore[valid-type]


class Condition(_Strict):
    name: str = ""
    op: _proto_enum(BinaryOp) = BinaryOp.UNSPECIFIED  # type: ignore[valid-type]
    value: TagValue | None = None
    match_option: MatchOption | None = None


class LogicalExpression(_Strict):
    op: _proto_enum(LogicalOp) = LogicalOp.UNSPECIFIED  # type: ignore[valid-type]
    left: Criteria | None = None
    right: Criteria | None = None


class Criteria(_Strict):
    """A filter: a logical expression (``le``) or one condition, not both."""

    ONE_OF: ClassVar[tuple[str, ...]] = ("le", "condition")

    le: LogicalExpression | None = None
    condition: Condition | None = None

    @model_validator(mode="after")
    def _one_of(self) -> Criteria:
        _one_of(self, self.ONE_OF)
        return self


class QueryOrder(_Strict):
    index_rule_name: str = ""
    sort: _proto_enum(Sort) = Sort.UNSPECIFIED  # type: ignore[valid-type]


def _one_of(model: BaseModel, members: tuple[str, ...]) -> None:
    chosen = [name for name in members if getattr(model, name) is not None]
    if len(chosen) > 1:
        raise _field_error(chosen[1], f"only one of {', '.join(members)} may be set "
                                      f"({chosen[0]} is set)")


LogicalExpression.model_rebuild()


class TopNAggregationSpec(_Strict):
    """A top-N aggregation.

    A manifest that leaves ``counters_number`` or ``lru_size`` out gets 1000
    and 10; a BanyanDB document that leaves them out means 0, as in the proto
    (BanyanDB rejects ``counters_number`` 0; ``lru_size`` 0 is its default).
    """

    PROTO_ZEROS: ClassVar[dict[str, Any]] = {"counters_number": 0, "lru_size": 0}

    source_measure: MeasureRef
    field_name: str = Field(pattern=NAME)
    field_value_sort: _proto_enum(Sort) = Sort.UNSPECIFIED  # type: ignore[valid-type]
    group_by_tag_names: list[str] = Field(default_factory=list)
    criteria: Criteria | None = None
    counters_number: Int32 = Field(default=1000, gt=0)
    lru_size: Int32 = Field(default=10, ge=0)

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

_NAME_RE = re.compile(NAME)


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
    errors = exc.errors()
    # A misspelt field also makes the right one missing: name the misspelling.
    err = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    loc = [p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-"))]
    ctx = err.get("ctx") or {}
    inner = ctx.get("error")
    if isinstance(inner, ValidationError):
        return inner
    if isinstance(inner, _FieldError):
        base = format_loc(loc, prefix)
        return ValidationError(inner.reason, field=f"{base}.{inner.path}" if base else inner.path)
    msg = err["msg"]
    if err["type"] == "value_error" and inner is not None:
        msg = str(inner)
    elif err["type"] == "extra_forbidden":
        msg = "unknown field"
    elif err["type"] == "missing":
        msg = "field required"
        if loc and isinstance(loc[-1], str):
            loc[-1] = to_snake(loc[-1])  # reported by its lowerCamelCase alias
    return ValidationError(msg, field=format_loc(loc, prefix) or None)
