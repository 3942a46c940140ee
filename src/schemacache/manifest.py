"""Reading manifests: multi-document YAML or JSON into validated resources.

Two entry points that never guess what they were given:
:func:`load_resources` reads a file or a directory, :func:`parse_manifest`
parses manifest text.  Every way a manifest can be bad ends in
:class:`~schemacache.ValidationError` naming the document and the field.

Hostile input is stopped in :mod:`schemacache.documents`, before any model
sees it.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import re
import sys
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

from . import banyandb
from ._gc import gc_paused
from .documents import (  # noqa: F401  (limits users found here first)
    LIBYAML,
    MAX_DOCUMENT_BYTES,
    MAX_INT_DIGITS,
    MAX_MANIFEST_BYTES,
    parse_documents,
)
from .errors import ValidationError
from .model import Resource

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")

PARALLEL_MIN_BYTES = 512 * 1024
"""YAML text from which :func:`load_resources` parses and validates with one
process per CPU (libyaml builds its values in Python: 10,000 measures take
seconds on one core)."""

MAX_PARSE_WORKERS = 8
"""Most processes :func:`load_resources` parses with."""

_DOCUMENT_START = re.compile(r"^---(?=\s|$)", re.MULTILINE)


# Text that may yield a lone surrogate (a \u escape of one) or a shared YAML
# node (an anchor): only then is every value of a document visited.


class EncodedResource(NamedTuple):
    """A validated resource as what a client sends: its key and its JSON.

    :param key: the resource's key.
    :param json: the resource as JSON (as :meth:`Resource.to_json` writes it).
    """

    key: str
    json: str


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
    resources: list[Resource] = _load(Path(path), kind, encode=False)
    reject_duplicates(resources)
    return resources


def load_encoded(path: str | os.PathLike[str], kind: str | None = None) -> list[EncodedResource]:
    """:func:`load_resources`, each resource as its key and JSON: what ``apply``
    sends, and much cheaper than a model to pass back from a parsing process.

    :param path: a file or a directory, as :func:`load_resources` takes.
    :param kind: as :func:`load_resources` takes (default ``None``).
    :raises ValidationError: as :func:`load_resources` raises.
    """
    encoded: list[EncodedResource] = _load(Path(path), kind, encode=True)
    reject_duplicate_keys(e.key for e in encoded)
    return encoded


def _load(root: Path, kind: str | None, encode: bool) -> list[Any]:
    out: list[Any] = []
    for origin, text in _read_sources(root):
        folder_kind = banyandb.kind_from_path(Path(origin), root if root.is_dir() else None)
        try:
            out.extend(_parse_large(text, kind, folder_kind, encode))
        except ValidationError as exc:
            raise ValidationError(exc.reason, exc.field, exc.document, source=origin) from None
    return out


def reject_duplicates(resources: list[Resource]) -> None:
    """Raise :class:`ValidationError` if two documents define the same key."""
    reject_duplicate_keys(res.key for res in resources)


def reject_duplicate_keys(keys: Iterable[str]) -> None:
    """Raise :class:`ValidationError` naming the second document (1-based) of a
    key that ``keys`` (the documents' keys, in order) holds twice."""
    seen: dict[str, int] = {}
    for number, key in enumerate(keys, 1):
        if key in seen:
            raise ValidationError(f"{key} is defined twice (also document {seen[key]})",
                                  field="metadata.name", document=number)
        seen[key] = number


def encode(resources: Iterable[Resource]) -> list[EncodedResource]:
    """Each resource as its key and JSON (see :class:`EncodedResource`)."""
    return [EncodedResource(r.key, r.to_json()) for r in resources]


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


def _parse_large(text: str, kind: str | None, folder_kind: str | None,
                 encoded: bool = False) -> list[Any]:
    """:func:`parse_manifest`, on several processes when the YAML text is large.

    The text is cut at document markers (``---`` at the start of a line, which
    YAML forbids inside a value); each part is parsed and validated on its own
    process, and the parts are joined in order.  On any error the whole text is
    parsed again on this process, so the error names the same document and
    line as a plain :func:`parse_manifest` would.

    :param encoded: return :class:`EncodedResource` items, not resources
        (default ``False``).
    """
    workers = min(os.cpu_count() or 1, MAX_PARSE_WORKERS)
    if (workers < 2 or len(text) < PARALLEL_MIN_BYTES or text.lstrip().startswith(("{", "["))
            or text.lstrip().startswith("%")):
        return _parse_whole(text, kind, folder_kind, encoded)
    parts = _split_documents(text, workers * 4)
    context = multiprocessing.get_context("fork" if sys.platform == "linux" else None)
    count = len(parts)
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        outcomes = list(pool.map(_parse_part, parts, [kind] * count, [folder_kind] * count,
                                 [encoded] * count))
    resources: list[Any] = []
    for outcome in outcomes:
        if outcome is None:
            return _parse_whole(text, kind, folder_kind, encoded)  # names the error
        resources.extend(outcome)
    if not resources:
        raise ValidationError("manifest holds no document")
    return resources


def _parse_whole(text: str, kind: str | None, folder_kind: str | None,
                 encoded: bool) -> list[Any]:
    resources = parse_manifest(text, kind=kind, folder_kind=folder_kind)
    return encode(resources) if encoded else resources


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


def _parse_part(text: str, kind: str | None, folder_kind: str | None,
                encoded: bool) -> list[Any] | None:
    """One part of a large manifest (on a worker process); ``None`` on any error."""
    try:
        if not text.strip().strip("-").strip():
            return []
        return _parse_whole(text, kind, folder_kind, encoded)
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
