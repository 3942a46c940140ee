"""The top-N aggregation, its source measure and its criteria tree (BanyanDB's ``model.v1``)."""

from __future__ import annotations

import builtins
from typing import Any, ClassVar, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    Field,
    field_validator,
    model_validator,
)

from .spec_types import (
    BASE64_RE,
    NAME,
    BinaryOp,
    Int32,
    Int64,
    LogicalOp,
    MatchOperator,
    ProtoMessage,
    Sort,
    UInt32,
    proto_enum,
)
from .validation import field_error, unique

__all__ = [
    "NULL_VALUE",
    "Condition",
    "Criteria",
    "Int",
    "IntArray",
    "LogicalExpression",
    "MatchOption",
    "MeasureRef",
    "ProtoMetadata",
    "QueryOrder",
    "Str",
    "StrArray",
    "TagValue",
    "TopNAggregationSpec",
]



class ProtoMetadata(ProtoMessage):
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


class Str(ProtoMessage):
    value: str = ""


class StrArray(ProtoMessage):
    value: list[str] = Field(default_factory=list)


class Int(ProtoMessage):
    value: Int64 = 0


class IntArray(ProtoMessage):
    value: list[Int64] = Field(default_factory=list)


NULL_VALUE = "NULL_VALUE"


class TagValue(ProtoMessage):
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
        if value is not None and not BASE64_RE.match(value):
            raise ValueError("expected base64 text")
        return value

    @model_validator(mode="after")
    def _one_of(self) -> TagValue:
        _one_of(self, self.ONE_OF)
        return self


class MatchOption(ProtoMessage):
    analyzer: str = ""
    operator: proto_enum(MatchOperator) = MatchOperator.UNSPECIFIED  # type: ignore[valid-type]


class Condition(ProtoMessage):
    name: str = ""
    op: proto_enum(BinaryOp) = BinaryOp.UNSPECIFIED  # type: ignore[valid-type]
    value: TagValue | None = None
    match_option: MatchOption | None = None


class LogicalExpression(ProtoMessage):
    op: proto_enum(LogicalOp) = LogicalOp.UNSPECIFIED  # type: ignore[valid-type]
    left: Criteria | None = None
    right: Criteria | None = None


class Criteria(ProtoMessage):
    """A filter: a logical expression (``le``) or one condition, not both."""

    ONE_OF: ClassVar[tuple[str, ...]] = ("le", "condition")

    le: LogicalExpression | None = None
    condition: Condition | None = None

    @model_validator(mode="after")
    def _one_of(self) -> Criteria:
        _one_of(self, self.ONE_OF)
        return self


class QueryOrder(ProtoMessage):
    index_rule_name: str = ""
    sort: proto_enum(Sort) = Sort.UNSPECIFIED  # type: ignore[valid-type]


def _one_of(model: BaseModel, members: tuple[str, ...]) -> None:
    chosen = [name for name in members if getattr(model, name) is not None]
    if len(chosen) > 1:
        raise field_error(chosen[1], f"only one of {', '.join(members)} may be set "
                                      f"({chosen[0]} is set)")


LogicalExpression.model_rebuild()


class TopNAggregationSpec(ProtoMessage):
    """A top-N aggregation.

    A manifest that leaves ``counters_number`` or ``lru_size`` out gets 1000
    and 10; a BanyanDB document that leaves them out means 0, as in the proto
    (BanyanDB rejects ``counters_number`` 0; ``lru_size`` 0 is its default).
    """

    PROTO_ZEROS: ClassVar[dict[str, Any]] = {"counters_number": 0, "lru_size": 0}

    source_measure: MeasureRef
    field_name: str = Field(pattern=NAME)
    field_value_sort: proto_enum(Sort) = Sort.UNSPECIFIED  # type: ignore[valid-type]
    group_by_tag_names: list[str] = Field(default_factory=list)
    criteria: Criteria | None = None
    counters_number: Int32 = Field(default=1000, gt=0)
    lru_size: Int32 = Field(default=10, ge=0)

    @model_validator(mode="after")
    def _unique_group_by(self) -> TopNAggregationSpec:
        unique(self.group_by_tag_names, "group_by_tag_names", "tag")
        return self


