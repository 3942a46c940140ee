"""Protojson, as BanyanDB writes its schema messages, over the spec models.

Reading: snake_case or lowerCamelCase names, ``null`` as absent, enum values by
full name, short name or number, the proto's zero values where schemacache's
defaults differ.  Writing: snake_case names, full enum names, 64-bit integers
as strings, zero values left out.  Both work on a model's fields as
:mod:`schemacache.spec_types` annotates them.
"""

from __future__ import annotations

import functools
import types
import typing
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel
from pydantic.alias_generators import to_camel

from .errors import ValidationError
from .spec_types import PROTO_ENUMS, ProtoInt64
from .topn import NULL_VALUE


@dataclass(frozen=True)
class _Field:
    """How protojson reads and writes one field of a model."""

    name: str
    message: type[BaseModel] | None  # the nested message's model
    enum_prefix: str | None  # the full names' prefix of an enum field
    int64: bool  # written as a string


@functools.cache
def _fields(model: type[BaseModel]) -> dict[str, _Field]:
    """The fields of a model by every name a document may give them (snake and camel)."""
    out: dict[str, _Field] = {}
    for name, info in model.model_fields.items():
        leaf, metadata = _leaf(info.annotation, list(info.metadata))
        message = leaf if isinstance(leaf, type) and issubclass(leaf, BaseModel) else None
        enum = PROTO_ENUMS.get(leaf) if isinstance(leaf, type) else None
        field = _Field(name, message, enum.prefix if enum else None,
                       any(isinstance(m, ProtoInt64) for m in metadata))
        out[name] = out[to_camel(name)] = field
    return out


def _leaf(annotation: Any, metadata: list[Any]) -> tuple[Any, list[Any]]:
    """The element type under ``X | None``, ``list[X]`` and ``Annotated[X, …]``."""
    while True:
        origin = typing.get_origin(annotation)
        args = typing.get_args(annotation)
        if origin is typing.Annotated:
            metadata.extend(args[1:])
            annotation = args[0]
        elif origin in (typing.Union, types.UnionType):
            annotation = next(a for a in args if a is not type(None))
        elif origin is list:
            annotation = args[0]
        else:
            return annotation, metadata


def read_message(data: Any, model: type[BaseModel], path: str = "") -> Any:
    """A document's message as ``model`` validates it, read with protojson's rules.

    Field names in lowerCamelCase become snake_case, ``null`` means absent (but
    sets a one-of member, as for ``TagValue.null``), a field given under both
    names is refused, and a field left out means the proto's zero value where
    schemacache's default differs (:attr:`~schemacache.spec_types.ProtoMessage.PROTO_ZEROS`).
    Unknown fields are kept for the model to refuse with their path.

    :param path: the message's field path in the document, for errors.
    """
    if not isinstance(data, dict):
        return data
    fields = _fields(model)
    one_of: tuple[str, ...] = getattr(model, "ONE_OF", ())
    out: dict[str, Any] = {}
    for key, value in data.items():
        field = fields.get(key)
        if field is None:
            out[key] = value
            continue
        if value is None and field.name not in one_of:
            continue
        if field.name in out:
            raise ValidationError(f"given twice, as {field.name} and {to_camel(field.name)}",
                                  field=_join(path, field.name))
        out[field.name] = _read_value(value, field.message, _join(path, field.name))
    for name, zero in getattr(model, "PROTO_ZEROS", {}).items():
        out.setdefault(name, zero)
    return out


def _read_value(value: Any, message: type[BaseModel] | None, path: str) -> Any:
    if message is None:
        return value
    if isinstance(value, list):
        return [read_message(item, message, f"{path}[{i}]") for i, item in enumerate(value)]
    return read_message(value, message, path)


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def write_message(data: dict[str, Any], model: type[BaseModel]) -> dict[str, Any]:
    """A normalised spec (or part of one) as protojson writes the message ``model`` models.

    snake_case names, full enum names, int64 as strings, zero values left out
    (one-of members and nested messages are kept, even empty).  Works on the
    stored form, without validating it again.
    """
    fields = _fields(model)
    one_of: tuple[str, ...] = getattr(model, "ONE_OF", ())
    out: dict[str, Any] = {}
    for name, value in data.items():
        field = fields.get(name)
        if field is None:
            out[name] = value
            continue
        if value is None or (name not in one_of and _is_zero(value, field)):
            continue
        out[name] = _write_value(value, field)
    return out


def _is_zero(value: Any, field: _Field) -> bool:
    if field.enum_prefix is not None and isinstance(value, str):
        return value == "UNSPECIFIED"
    if isinstance(value, bool | int | float | str | list):
        return not value
    return False


def _write_value(value: Any, field: _Field) -> Any:
    if isinstance(value, list):
        return [_write_value(item, field) for item in value]
    if field.message is not None and isinstance(value, dict):
        return write_message(value, field.message)
    if field.enum_prefix is not None:
        return field.enum_prefix + str(value)
    if field.int64:
        return str(value)
    if value == NULL_VALUE and field.name == "null":
        return None  # the NullValue member of a one-of
    return value  # strings (timestamps as the spec stores them), numbers, a Struct


def timestamp(value: datetime) -> str:
    """RFC 3339 in UTC as protojson writes a Timestamp: 0, 3 or 6 fraction digits and ``Z``."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    value = value.astimezone(UTC)
    micros = value.microsecond
    fraction = "" if not micros else (
        f".{micros // 1000:03d}" if micros % 1000 == 0 else f".{micros:06d}")
    return value.strftime("%Y-%m-%dT%H:%M:%S") + fraction + "Z"
