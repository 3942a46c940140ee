"""Manifest text into plain documents, with hostile input stopped before any model.

Integers are bounded before conversion (:data:`MAX_INT_DIGITS` digits, then 64
bits), strings that cannot be encoded as UTF-8 (lone surrogates) and values
that are not JSON (non-finite floats, binary, sets, non-string keys) are refused
naming their field.  YAML goes through libyaml's ``CSafeLoader`` when PyYAML
was built with it (its wheels are), else the pure-Python safe loader.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from datetime import date, datetime
from typing import Any

import yaml

from ._yaml_events import Unsupported, build_documents
from .errors import ValidationError

try:
    from yaml import CSafeLoader as _SafeLoader
except ImportError:  # PyYAML built without libyaml
    from yaml import SafeLoader as _SafeLoader  # type: ignore[assignment]


MAX_MANIFEST_BYTES = 256 * 1024 * 1024
"""Largest manifest (all documents together) read from one file or text."""
MAX_DOCUMENT_BYTES = 1024 * 1024
"""Largest single document; schema objects are small, a larger one is a mistake."""

MAX_INT_DIGITS = 20
"""Digits an integer may have before it is converted (every integer of the
schema fits in 64 bits: at most 20 digits)."""

INT_MIN = -(2**63)
"""Smallest integer a manifest may hold (int64)."""

INT_MAX = 2**64 - 1
"""Largest integer a manifest may hold (uint64)."""

MAX_DOCUMENT_VALUES = 100_000
"""Values (scalars, lists, mappings) one document may hold once YAML aliases
are expanded: a bound on alias bombs, far above any real schema object."""

LIBYAML = _SafeLoader.__name__ == "CSafeLoader"
"""True when YAML is parsed by libyaml."""

_SURROGATE_ESCAPE = re.compile(r"\\(?:u[dD][89a-fA-F]|U0000[dD][89a-fA-F])")

_YAML_ANCHOR = re.compile(r"&[^\s]")


class _OutOfRange(str):
    """An integer literal too long to convert; reported with its field path."""


class _Screen:
    """Notes, while a text is parsed, whether any value needs a closer look."""

    def __init__(self) -> None:
        self.suspect = False

    def bounded_int(self, literal: str) -> int | _OutOfRange:
        digits = len(literal.lstrip("+-"))
        if digits <= MAX_INT_DIGITS:
            value = int(literal)
            if INT_MIN <= value <= INT_MAX:
                return value
        self.suspect = True
        return _OutOfRange(literal)

    def number(self, literal: str) -> float:
        value = float(literal)
        if not math.isfinite(value):
            self.suspect = True
        return value

    def constant(self, literal: str) -> float:  # NaN, Infinity, -Infinity
        self.suspect = True
        return float(literal.replace("Infinity", "inf"))


class _ManifestLoader(_SafeLoader):
    """The safe loader: integers bounded before conversion, timestamps kept as
    ISO text (the fields parse them), anything not JSON flagged for a look."""

    def __init__(self, stream: str, screen: _Screen):
        super().__init__(stream)
        self.screen = screen


def _construct_int(loader: _ManifestLoader, node: yaml.ScalarNode) -> Any:
    text = str(node.value).replace("_", "")
    if len(text.lstrip("+-")) > MAX_INT_DIGITS + 2:  # room for a 0x/0o/0b prefix
        loader.screen.suspect = True
        return _OutOfRange(text)
    value = yaml.SafeLoader.construct_yaml_int(loader, node)
    if not INT_MIN <= value <= INT_MAX:
        loader.screen.suspect = True
    return value


def _construct_float(loader: _ManifestLoader, node: yaml.ScalarNode) -> Any:
    value = yaml.SafeLoader.construct_yaml_float(loader, node)
    if not math.isfinite(value):
        loader.screen.suspect = True
    return value


def _construct_timestamp(loader: _ManifestLoader, node: yaml.ScalarNode) -> Any:
    value = yaml.SafeLoader.construct_yaml_timestamp(loader, node)
    return value.isoformat()


def _construct_flagged(loader: _ManifestLoader, node: yaml.Node) -> Any:
    loader.screen.suspect = True
    return _FLAGGED[str(node.tag)](loader, node)

_FLAGGED = {tag: yaml.SafeLoader.yaml_constructors[tag] for tag in (
    "tag:yaml.org,2002:binary", "tag:yaml.org,2002:set", "tag:yaml.org,2002:omap",
    "tag:yaml.org,2002:pairs")}

_ManifestLoader.add_constructor("tag:yaml.org,2002:int", _construct_int)

_ManifestLoader.add_constructor("tag:yaml.org,2002:float", _construct_float)

_ManifestLoader.add_constructor("tag:yaml.org,2002:timestamp", _construct_timestamp)

for _tag in _FLAGGED:
    _ManifestLoader.add_constructor(_tag, _construct_flagged)


def parse_documents(text: str | bytes) -> list[dict[str, Any]]:
    """The documents of a manifest text as plain JSON values (not yet validated
    as resources), each a mapping.

    :raises ValidationError: for text that is not YAML/JSON, too large, nested
        too deeply, or holding a value no schema field can take (naming it).
    """
    if len(text) > MAX_MANIFEST_BYTES:
        raise ValidationError(f"manifest too large ({len(text)} bytes > {MAX_MANIFEST_BYTES})")
    if isinstance(text, bytes):
        try:
            text = text.decode()
        except UnicodeDecodeError as exc:
            raise ValidationError(f"manifest is not UTF-8 text ({exc.reason})") from None
    screen = _Screen()
    try:
        docs = _documents(text, screen)
    except RecursionError:
        raise ValidationError("manifest nested too deeply") from None
    for number, doc in enumerate(docs, 1):
        if not isinstance(doc, dict):
            raise ValidationError(
                "expected a mapping (kind, metadata and spec, or a BanyanDB document), "
                f"got {type(doc).__name__}",
                document=number,
            )
    if not docs:
        raise ValidationError("manifest holds no document")
    if screen.suspect or _SURROGATE_ESCAPE.search(text) or (
            not text.lstrip().startswith(("{", "[")) and _YAML_ANCHOR.search(text)):
        _screen_all(docs)
    return docs


def _screen_all(docs: list[dict[str, Any]]) -> None:
    for number, doc in enumerate(docs, 1):
        try:
            docs[number - 1] = _plain(doc, "", [MAX_DOCUMENT_VALUES])
        except RecursionError:
            raise ValidationError("document nested too deeply", document=number) from None
        except ValidationError as exc:
            raise ValidationError(exc.reason, exc.field, document=number) from None


def _documents(text: str, screen: _Screen) -> list[Any]:
    stripped = text.lstrip()
    is_json = stripped.startswith(("{", "["))
    if not is_json and len(text) > MAX_DOCUMENT_BYTES:
        # Check sizes before parsing: a huge YAML document is slow to parse.
        _check_sizes(len(part) for part in text.split("\n---"))
    if is_json:
        decoder = json.JSONDecoder(parse_int=screen.bounded_int, parse_float=screen.number,
                                   parse_constant=screen.constant)
        if len(text) > MAX_DOCUMENT_BYTES:
            listed = _json_list(text, decoder)
            if listed is not None:
                return listed
        try:
            data = decoder.decode(text)
        except json.JSONDecodeError as exc:
            raise ValidationError(f"invalid JSON at line {exc.lineno}: {exc.msg}") from None
        docs = data if isinstance(data, list) else [data]
        if len(text) > MAX_DOCUMENT_BYTES:
            _check_sizes(len(json.dumps(d, default=str)) for d in docs)
        return docs
    fast = _built_from_events(text, screen)
    if fast is not None:
        return fast
    try:
        loader = _ManifestLoader(text, screen)
        try:
            return [d for d in _load_all(loader) if d is not None]
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        raise ValidationError(f"invalid YAML: {_yaml_reason(exc)}") from None
    except (ValueError, TypeError, OverflowError) as exc:
        # A scalar its resolver accepted but the constructor cannot build
        # (a date like 2024-13-45, an unhashable key).
        raise ValidationError(f"invalid YAML value: {exc}") from None


_JSON_SPACE = re.compile(r"[ \t\n\r]*")


def _json_list(text: str, decoder: json.JSONDecoder) -> list[Any] | None:
    """The items of a large JSON list, each decoded on its own so that its size
    is the length of its own text (no encoding again to measure it); ``None``
    for any other text or any error, which the whole-text decode reports."""
    at = _after_space(text, 0)
    if not text.startswith("[", at):
        return None
    at = _after_space(text, at + 1)
    if text.startswith("]", at):
        return [] if _after_space(text, at + 1) == len(text) else None
    items = []
    sizes = []
    try:
        while True:
            item, end = decoder.raw_decode(text, at)
            items.append(item)
            sizes.append(end - at)
            at = _after_space(text, end)
            if text.startswith(",", at):
                at = _after_space(text, at + 1)
            elif text.startswith("]", at) and _after_space(text, at + 1) == len(text):
                break
            else:
                return None
    except json.JSONDecodeError:
        return None
    _check_sizes(sizes)
    return items


def _after_space(text: str, at: int) -> int:
    """The index of the first character from ``at`` that is not JSON whitespace."""
    match = _JSON_SPACE.match(text, at)
    return match.end() if match else at


def _built_from_events(text: str, screen: _Screen) -> list[Any] | None:
    """The documents of ``text`` built from the parser's events (see
    :mod:`schemacache._yaml_events`); ``None`` when the text needs the full
    loader — which also reports every error, with its own words."""
    loader = _ManifestLoader(text, screen)
    try:
        return [d for d in build_documents(loader) if d is not None]
    except (Unsupported, yaml.YAMLError, ValueError, TypeError, OverflowError):
        return None
    finally:
        loader.dispose()


def _load_all(loader: _ManifestLoader) -> Iterable[Any]:
    while loader.check_data():  # type: ignore[no-untyped-call]
        yield loader.get_data()  # type: ignore[no-untyped-call]


def _plain(value: Any, path: str, budget: list[int]) -> Any:
    """``value`` as plain JSON data; refuses what no field can take, naming it.

    :param budget: a one-item list counting down the values still allowed.
    """
    budget[0] -= 1
    if budget[0] < 0:
        raise ValidationError(f"document holds more than {MAX_DOCUMENT_VALUES} values "
                              "(YAML aliases expanded)")
    if isinstance(value, _OutOfRange):
        raise ValidationError(
            f"integer of {len(value.lstrip('+-'))} digits is out of range (64 bits at most)",
            field=path or None)
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        if not INT_MIN <= value <= INT_MAX:
            raise ValidationError("integer out of range (64 bits at most)", field=path or None)
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValidationError("not a finite number", field=path or None)
        return value
    if isinstance(value, str):
        _check_encodable(value, path)
        return value
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValidationError(f"mapping key {key!r} is not a string",
                                      field=path or None)
            _check_encodable(key, path)
            out[key] = _plain(item, f"{path}.{key}" if path else key, budget)
        return out
    if isinstance(value, list):
        return [_plain(item, f"{path}[{i}]", budget) for i, item in enumerate(value)]
    if isinstance(value, datetime | date):
        return value.isoformat()  # a YAML timestamp; fields parse the ISO text
    raise ValidationError(f"a {type(value).__name__} value is not allowed", field=path or None)


def _check_encodable(text: str, path: str) -> None:
    if text.isascii():
        return
    try:
        text.encode()
    except UnicodeEncodeError as exc:
        raise ValidationError(f"text cannot be encoded as UTF-8 ({exc.reason}, e.g. a lone "
                              "surrogate)", field=path or None) from None


def _check_sizes(sizes: Iterable[int]) -> None:
    for number, size in enumerate(sizes, 1):
        if size > MAX_DOCUMENT_BYTES:
            raise ValidationError(
                f"document too large ({size} bytes > {MAX_DOCUMENT_BYTES})", document=number
            )


def _yaml_reason(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    return f"{problem} at line {mark.line + 1}" if mark else problem
