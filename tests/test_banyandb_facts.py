"""Every message field and enum value of BanyanDB's schema protos has a model.

The table is ``schemacache.banyandb_facts`` (checked in, from the protos at the
commit it names); these tests fail when a model lacks a field or an enum lacks a
value of it, or when a field's model has another type than the proto's.
"""

from __future__ import annotations

import types
import typing
from datetime import datetime
from enum import StrEnum
from typing import Any

import pytest
from pydantic import AwareDatetime, BaseModel

from schemacache import banyandb, banyandb_facts, kinds

TOP_LEVEL = set(banyandb.MESSAGES.values())

SCALARS: dict[str, type] = {
    "string": str,
    "bool": bool,
    "uint32": int,
    "int32": int,
    "int64": int,
    "bytes": str,
    "google.protobuf.Timestamp": datetime,
    "google.protobuf.Duration": str,
    "google.protobuf.Struct": dict,
}

INT_RANGES = {"uint32": (0, 2**32 - 1), "int32": (-(2**31), 2**31 - 1),
              "int64": (-(2**63), 2**63 - 1)}


def _resolve(type_name: str, table: dict[str, Any]) -> str | None:
    """The table entry a field's type names (``model.v1.Sort`` → ``Sort``, ``Unit`` →
    ``IntervalRule.Unit``)."""
    qualified = type_name.startswith(("common.", "model."))
    short = type_name.rsplit(".", 1)[-1] if qualified else type_name
    if short in table:
        return short
    matches = [name for name in table if name.endswith("." + short)]
    return matches[0] if len(matches) == 1 else None


def _inner(annotation: Any) -> tuple[Any, bool]:
    """The element type of an annotation, and whether it is repeated."""
    repeated = False
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            annotation = args[0]
        elif origin is list:
            repeated = True
            annotation = typing.get_args(annotation)[0]
        elif origin is typing.Literal:
            return str, repeated
        elif origin is dict:
            return dict, repeated
        elif annotation is AwareDatetime:
            return datetime, repeated
        else:
            return annotation, repeated


def _field_cases() -> list[tuple[str, str, str]]:
    return [(message, field, proto_type)
            for message, fields in banyandb_facts.MESSAGES.items()
            for field, proto_type in fields.items()]


def test_every_message_has_a_model() -> None:
    assert set(banyandb.MESSAGE_MODELS) == set(banyandb_facts.MESSAGES)


@pytest.mark.parametrize(("message", "field", "proto_type"), _field_cases(),
                         ids=[f"{m}.{f}" for m, f, _ in _field_cases()])
def test_every_field_is_modelled_with_its_type(message: str, field: str, proto_type: str) -> None:
    model = banyandb.MESSAGE_MODELS[message]
    if message in TOP_LEVEL and field in banyandb.ENVELOPE_FIELDS:
        return  # read and written by schemacache.banyandb, outside the spec
    assert field in model.model_fields, f"{model.__name__} lacks {message}.{field}"
    annotation, repeated = _inner(model.model_fields[field].annotation)
    assert repeated == proto_type.startswith("repeated "), f"{message}.{field} repetition"
    type_name = proto_type.removeprefix("repeated ")
    if type_name in SCALARS:
        assert isinstance(annotation, type) and issubclass(annotation, SCALARS[type_name]), (
            f"{message}.{field}: {annotation} is not {type_name}")
        return
    enum = _resolve(type_name, banyandb_facts.ENUMS)
    if enum is not None:
        assert annotation in kinds.PROTO_ENUMS, f"{message}.{field}: {annotation} is no proto enum"
        assert kinds.PROTO_ENUMS[annotation].proto_name == enum
        return
    nested = _resolve(type_name, banyandb_facts.MESSAGES)
    if nested is None and type_name == "google.protobuf.NullValue":
        return  # the TagValue null member: a literal NULL_VALUE
    assert nested is not None, f"{message}.{field}: type {type_name} is not in the table"
    assert isinstance(annotation, type) and issubclass(annotation, BaseModel)
    assert issubclass(annotation, banyandb.MESSAGE_MODELS[nested]), (
        f"{message}.{field}: {annotation.__name__} does not model {nested}")


@pytest.mark.parametrize("proto_type", sorted(INT_RANGES))
def test_integer_fields_take_their_range(proto_type: str) -> None:
    low, high = INT_RANGES[proto_type]
    for message, field, declared in _field_cases():
        if declared != proto_type or field in banyandb.ENVELOPE_FIELDS:
            continue
        model = banyandb.MESSAGE_MODELS[message]
        info = model.model_fields[field]
        bounds = {type(m).__name__: getattr(m, type(m).__name__.lower(), None)
                  for m in info.metadata}
        lower = bounds.get("Ge", bounds.get("Gt"))
        assert lower is not None, f"{message}.{field} has no lower bound"
        assert bounds.get("Le") == high, f"{message}.{field} upper bound"
        assert (bounds.get("Ge") or 0) >= low


@pytest.mark.parametrize("enum_name", sorted(banyandb_facts.ENUMS))
def test_every_enum_value_in_number_order(enum_name: str) -> None:
    found = [cls for cls, spec in kinds.PROTO_ENUMS.items() if spec.proto_name == enum_name]
    assert len(found) == 1, f"no model of enum {enum_name}"
    cls: type[StrEnum] = found[0]
    prefix = kinds.PROTO_ENUMS[cls].prefix
    assert [prefix + member.value for member in cls] == banyandb_facts.ENUMS[enum_name]


@pytest.mark.parametrize("message", sorted(banyandb_facts.ONE_OFS))
def test_one_of_groups(message: str) -> None:
    model = banyandb.MESSAGE_MODELS[message]
    assert getattr(model, "ONE_OF", ()) == tuple(banyandb_facts.ONE_OFS[message])
