"""The building blocks of BanyanDB spec models: scalar types, enums, the message base.

Scalars carry protobuf's ranges (``UInt32``, ``Int64`` …), durations their two
spellings (Go's ``1h30m`` and protojson's ``1.5s``); enums are stored by their
short names and read by full proto name or number too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any, ClassVar

from pydantic import (
    AfterValidator,
    AliasGenerator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
)
from pydantic.alias_generators import to_camel

__all__ = [
    "BASE64_RE",
    "INT32_MAX",
    "INT64_MAX",
    "NAME",
    "NAME_RE",
    "PROTO_ENUMS",
    "UINT32_MAX",
    "BinaryOp",
    "Catalog",
    "CompressionMethod",
    "EncodingMethod",
    "FieldType",
    "GoDuration",
    "IndexRuleType",
    "Int32",
    "Int64",
    "IntervalUnit",
    "LogicalOp",
    "MatchOperator",
    "PipelineEvent",
    "ProtoDuration",
    "ProtoEnum",
    "ProtoInt64",
    "ProtoMessage",
    "Sort",
    "TagType",
    "UInt32",
    "proto_enum",
]


NAME = r"^[A-Za-z_][A-Za-z0-9_.-]{0,254}$"

UINT32_MAX = 2**32 - 1
INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1

_GO_DURATION_UNITS = ("ns", "us", "\u00b5s", "\u03bcs", "ms", "s", "m", "h", "d")
_GO_DURATION_RE = re.compile(
    r"^(?:(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:" + "|".join(_GO_DURATION_UNITS) + r"))+$"
)
_PROTO_DURATION_RE = re.compile(r"^-?[0-9]+(?:\.[0-9]{1,9})?s$")
NAME_RE = re.compile(NAME)
BASE64_RE = re.compile(r"^[A-Za-z0-9+/_-]*={0,2}$")


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


class ProtoMessage(BaseModel):
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


def proto_enum(enum: type[StrEnum], *, specified: bool = False) -> Any:
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


