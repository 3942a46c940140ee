"""Reading manifests: multi-document YAML or JSON into validated resources.

Two entry points that never guess what they were given:
:func:`load_resources` reads a file or a directory, :func:`parse_manifest`
parses manifest text.  Every way a manifest can be bad ends in
:class:`~schemacache.ValidationError` naming the document and the field.

Hostile input is stopped here, before any model sees it: integers are bounded
before conversion (:data:`MAX_INT_DIGITS` digits, then 64 bits), strings that
cannot be encoded as UTF-8 (lone surrogates) and values that are not JSON
(non-finite floats, binary, sets, non-string keys) are refused naming their
field.  YAML goes through libyaml's ``CSafeLoader`` when PyYAML was built with
it (its wheels are), else the pure-Python safe loader.
"""

from __future__ import annotations

import itertools
import json
import math
import multiprocessing
import os
import re
import sys
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from datetime import date, datetime
from pathlib import Path
from typing import Any

import yaml

from . import banyandb
from ._gc import gc_paused
from .errors import ValidationError
from .model import Resource

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

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")

PARALLEL_MIN_BYTES = 512 * 1024
"""YAML text from which :func:`load_resources` parses and validates with one
process per CPU (libyaml builds its values in Python: 10,000 measures take
seconds on one core)."""

MAX_PARSE_WORKERS = 8
"""Most processes :func:`load_resources` parses with."""

_DOCUMENT_START = re.compile(r"^---(?=\s|$)", re.MULTILINE)

LIBYAML = _SafeLoader.__name__ == "CSafeLoader"
"""True when YAML is parsed by libyaml."""


# Text that may yield a lone surrogate (a \u escape of one) or a shared YAML
# node (an anchor): only then is every value of a document visited.
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


def load_resources(path: str | os.PathLike[str], kind: str | None = None) -> list[Resource]:
    """Read and validate every resource of a manifest file or directory.

    :param path: a file, or a directory (every ``*.yaml``, ``*.yml`` and
        ``*.json`` in it, recursively, sorted).  Always a path: manifest text
        goes to :func:`parse_manifest`.
    :param kind: the kind of documents that name none (default ``None``); a
        document naming another kind is refused.  Without it, a BanyanDB document
        takes its kind from its folder (``measures/``, ``index_rules/``, …).
    :returns: the resources in document order.
    :raises ValidationError: naming the file, the document (1-based), the
        field path and the reason — also for a file that cannot be read.
    """
    root = Path(path)
    resources: list[Resource] = []
    for origin, text in _read_sources(root):
        folder_kind = banyandb.kind_from_path(Path(origin), root if root.is_dir() else None)
        try:
            resources.extend(_parse_large(text, kind, folder_kind))
        except ValidationError as exc:
            raise ValidationError(exc.reason, exc.field, exc.document, source=origin) from None
    reject_duplicates(resources)
    return resources


def reject_duplicates(resources: list[Resource]) -> None:
    """Raise :class:`ValidationError` if two documents define the same key."""
    seen: dict[str, int] = {}
    for number, res in enumerate(resources, 1):
        if res.key in seen:
            raise ValidationError(f"{res.key} is defined twice (also document {seen[res.key]})",
                                  field="metadata.name", document=number)
        seen[res.key] = number


def parse_manifest(text: str | bytes, kind: str | None = None,
                   folder_kind: str | None = None) -> list[Resource]:
    """Validate the documents of one manifest text (YAML documents separated by
    ``---``, a JSON object, or a JSON list of objects).

    :param kind: the kind of documents that name none (default ``None``).
    :param folder_kind: the kind the file's folder names, for BanyanDB documents
        that name none (default ``None``).
    :raises ValidationError: naming the document (1-based), the field and the reason.
    """
    out = []
    # Bulk allocation of long-lived objects: collections would only rescan them.
    with gc_paused():
        for number, doc in enumerate(parse_documents(text), 1):
            try:
                out.append(document_to_resource(doc, kind=kind, folder_kind=folder_kind))
            except ValidationError as exc:
                raise ValidationError(exc.reason, exc.field, document=number) from None
    return out


def _parse_large(text: str, kind: str | None, folder_kind: str | None) -> list[Resource]:
    """:func:`parse_manifest`, on several processes when the YAML text is large.

    The text is cut at document markers (``---`` at the start of a line, which
    YAML forbids inside a value); each part is parsed and validated on its own
    process, and the parts are joined in order.  On any error the whole text is
    parsed again on this process, so the error names the same document and
    line as a plain :func:`parse_manifest` would.
    """
    workers = min(os.cpu_count() or 1, MAX_PARSE_WORKERS)
    if (workers < 2 or len(text) < PARALLEL_MIN_BYTES or text.lstrip().startswith(("{", "["))
            or text.lstrip().startswith("%")):
        return parse_manifest(text, kind=kind, folder_kind=folder_kind)
    parts = _split_documents(text, workers * 4)
    context = multiprocessing.get_context("fork" if sys.platform == "linux" else None)
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        outcomes = list(pool.map(_parse_part, parts, [kind] * len(parts),
                                 [folder_kind] * len(parts)))
    resources: list[Resource] = []
    for outcome in outcomes:
        if outcome is None:
            return parse_manifest(text, kind=kind, folder_kind=folder_kind)  # names the error
        resources.extend(outcome)
    if not resources:
        raise ValidationError("manifest holds no document")
    return resources


def _split_documents(text: str, count: int) -> list[str]:
    """``text`` cut at document markers into about ``count`` parts."""
    starts = [m.start() for m in _DOCUMENT_START.finditer(text)]
    size = max(1, len(text) // count)
    cuts = [0]
    for start in starts:
        if start - cuts[-1] >= size:
            cuts.append(start)
    cuts.append(len(text))
    return [text[a:b] for a, b in itertools.pairwise(cuts)]


def _parse_part(text: str, kind: str | None, folder_kind: str | None) -> list[Resource] | None:
    """One part of a large manifest (on a worker process); ``None`` on any error."""
    try:
        if not text.strip().strip("-").strip():
            return []
        return parse_manifest(text, kind=kind, folder_kind=folder_kind)
    except ValidationError as exc:
        if exc.reason == "manifest holds no document":
            return []
        return None
    except Exception:  # let the sequential parse report it
        return None


def document_to_resource(doc: dict[str, Any], kind: str | None = None,
                         folder_kind: str | None = None) -> Resource:
    """One parsed document (see :func:`parse_documents`) as a validated resource:
    a schemacache manifest or a BanyanDB document (see :mod:`schemacache.banyandb`)."""
    return banyandb.to_resource(doc, kind=kind, folder_kind=folder_kind)


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
        try:
            data = json.loads(text, parse_int=screen.bounded_int, parse_float=screen.number,
                              parse_constant=screen.constant)
        except json.JSONDecodeError as exc:
            raise ValidationError(f"invalid JSON at line {exc.lineno}: {exc.msg}") from None
        docs = data if isinstance(data, list) else [data]
        if len(text) > MAX_DOCUMENT_BYTES:
            _check_sizes(len(json.dumps(d, default=str)) for d in docs)
        return docs
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


def _read_sources(path: Path) -> list[tuple[str, str]]:
    try:
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.suffix in MANIFEST_SUFFIXES)
            if not files:
                raise ValidationError(f"{path}: no *.yaml, *.yml or *.json file")
            return [(str(p), _read_file(p)) for p in files]
        return [(str(path), _read_file(path))]
    except OSError as exc:
        raise ValidationError(f"{path}: cannot read ({exc.strerror or exc})") from None


def _read_file(path: Path) -> str:
    size = path.stat().st_size
    if size > MAX_MANIFEST_BYTES:
        raise ValidationError(f"{path}: too large ({size} bytes > {MAX_MANIFEST_BYTES})")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ValidationError(f"{path}: not UTF-8 text ({exc.reason})") from None
