"""Reading manifests: multi-document YAML or JSON into validated resources."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from . import banyandb
from .errors import ValidationError
from .model import Resource

MAX_MANIFEST_BYTES = 8 * 1024 * 1024
"""Largest manifest (all documents together) :func:`load_resources` reads."""

MAX_DOCUMENT_BYTES = 1024 * 1024
"""Largest single document; schema objects are small, a larger one is a mistake."""

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")


def load_resources(source: str | Path, kind: str | None = None) -> list[Resource]:
    """Read and validate every resource of a manifest.

    :param source: a path to a file or a directory (every ``*.yaml``, ``*.yml``
        and ``*.json`` in it, sorted), or the manifest text itself.
    :param kind: the kind of documents that name none (default ``None``); a
        document naming another kind is refused.  Without it, a BanyanDB document
        takes its kind from its folder (``measures/``, ``index_rules/``, …).
    :returns: the resources in document order.
    :raises ValidationError: naming the document (1-based), the field path and
        the reason; nothing is returned when any document is invalid.
    """
    resources: list[Resource] = []
    for origin, text in _read_sources(source):
        folder_kind = None
        if origin:
            root = Path(source)
            folder_kind = banyandb.kind_from_path(Path(origin), root if root.is_dir() else None)
        try:
            resources.extend(parse_manifest(text, kind=kind, folder_kind=folder_kind))
        except ValidationError as exc:
            if origin:
                raise ValidationError(exc.reason, exc.field, exc.document, source=origin) from None
            raise
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
    """Validate the documents of one manifest text (see :func:`load_resources`).

    :param kind: the kind of documents that name none (default ``None``).
    :param folder_kind: the kind the file's folder names, for BanyanDB documents
        that name none (default ``None``).
    """
    if len(text) > MAX_MANIFEST_BYTES:
        raise ValidationError(f"manifest too large ({len(text)} bytes > {MAX_MANIFEST_BYTES})")
    if isinstance(text, bytes):
        try:
            text = text.decode()
        except UnicodeDecodeError as exc:
            raise ValidationError(f"manifest is not UTF-8 text ({exc.reason})") from None
    out = []
    for number, doc in enumerate(_documents(text), 1):
        try:
            out.append(banyandb.to_resource(doc, kind=kind, folder_kind=folder_kind))
        except ValidationError as exc:
            raise ValidationError(exc.reason, exc.field, document=number) from None
    return out


def _documents(text: str) -> list[Any]:
    stripped = text.lstrip()
    is_json = stripped.startswith(("{", "["))
    if not is_json and len(text) > MAX_DOCUMENT_BYTES:
        # Check sizes before parsing: a huge YAML document is slow to parse.
        _check_sizes(len(part) for part in text.split("\n---"))
    if is_json:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValidationError(f"invalid JSON at line {exc.lineno}: {exc.msg}") from None
        docs = data if isinstance(data, list) else [data]
        if len(text) > MAX_DOCUMENT_BYTES:
            _check_sizes(len(json.dumps(d)) for d in docs)
    else:
        try:
            docs = [d for d in yaml.safe_load_all(text) if d is not None]
        except yaml.YAMLError as exc:
            raise ValidationError(f"invalid YAML: {_yaml_reason(exc)}") from None
    for number, doc in enumerate(docs, 1):
        if not isinstance(doc, dict):
            raise ValidationError(
                "expected a mapping (kind, metadata and spec, or a BanyanDB document), "
                f"got {type(doc).__name__}",
                document=number,
            )
    if not docs:
        raise ValidationError("manifest holds no document")
    return docs


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


def _read_sources(source: str | Path) -> list[tuple[str, str]]:
    if isinstance(source, Path) or (
        isinstance(source, str) and source and "\n" not in source and len(source) < 4096
        and Path(source).exists()
    ):
        path = Path(source)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.suffix in MANIFEST_SUFFIXES)
            if not files:
                raise ValidationError(f"{path}: no *.yaml, *.yml or *.json file")
            return [(str(p), _read_file(p)) for p in files]
        return [(str(path), _read_file(path))]
    return [("", str(source))]


def _read_file(path: Path) -> str:
    size = path.stat().st_size
    if size > MAX_MANIFEST_BYTES:
        raise ValidationError(f"{path}: too large ({size} bytes > {MAX_MANIFEST_BYTES})")
    return path.read_text()
