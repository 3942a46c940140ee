"""Validation errors from pydantic failures and semantic checks, with field paths.

A spec model raises :class:`FieldError` (through :func:`field_error`) from its
own checks; :func:`from_pydantic` turns any pydantic failure into the one
:class:`~schemacache.errors.ValidationError` a user sees, naming the field as
``spec.tag_families[0].tags[1].name``.
"""

from __future__ import annotations

from collections.abc import Iterable

import pydantic
from pydantic.alias_generators import to_snake

from .errors import ValidationError


class FieldError(ValueError):
    """A semantic check failure carrying the field path, turned into ValidationError."""

    def __init__(self, path: str, reason: str):
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


def field_error(path: str, reason: str) -> FieldError:
    """A :class:`FieldError` for ``path`` (relative to the model being validated)."""
    return FieldError(path, reason)


def unique(names: Iterable[str], path: str, what: str) -> None:
    """Raise :class:`FieldError` at ``path`` for the first name seen twice."""
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise FieldError(path, f"duplicate {what} name {name!r}")
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
    if isinstance(inner, FieldError):
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
