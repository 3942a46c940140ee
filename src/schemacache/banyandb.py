"""BanyanDB's own schema documents: read them as resources, write resources as them.

A BanyanDB document is the proto message itself as protojson writes it:
``metadata`` (``group``, ``name``, ``id``, ``create_revision``,
``mod_revision``), the message's fields, and ``updated_at``/``created_at`` at top
level; no ``kind`` and no ``spec``.  Reading follows protojson's rules (snake_case
or lowerCamelCase names, enum values by full name, short name or number,
unknown fields rejected with their path); writing follows its defaults
(snake_case names, full enum names, 64-bit integers as strings, zero values
left out).  The kind comes from the caller: ``--kind``, a ``kind`` field, or
the folder the file is in (see :data:`FOLDERS`).

What the registry owns is read and then dropped, as BanyanDB's own registry
overwrites it: ``create_revision``, ``mod_revision``, ``updated_at``,
``created_at`` and ``id`` (written back as BanyanDB derives an index rule's id,
the CRC-32 of its group and name).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pydantic
from pydantic import AwareDatetime, BaseModel, TypeAdapter
from pydantic.alias_generators import to_camel

from . import kinds
from .errors import ValidationError
from .model import GROUP_KIND, Resource
from .protojson import read_message, timestamp, write_message
from .validation import from_pydantic

FOLDERS: dict[str, str] = {
    "group": "groups",
    "stream": "streams",
    "measure": "measures",
    "trace": "traces",
    "index_rule": "index_rules",
    "index_rule_binding": "index_rule_bindings",
    "topn_aggregation": "topn_aggregations",
    "property": "properties",
}
"""The folder BanyanDB's test suites keep each kind's documents in, by kind."""

MESSAGES: dict[str, str] = {
    "group": "Group",
    "stream": "Stream",
    "measure": "Measure",
    "trace": "Trace",
    "index_rule": "IndexRule",
    "index_rule_binding": "IndexRuleBinding",
    "topn_aggregation": "TopNAggregation",
    "property": "Property",
}
"""The proto message of each kind."""

MESSAGE_MODELS: dict[str, type[BaseModel]] = {
    "Metadata": kinds.ProtoMetadata,
    "IntervalRule": kinds.IntervalRule,
    "LifecycleStage": kinds.LifecycleStage,
    "ResourceOpts": kinds.ResourceOpts,
    "SamplerPlugin": kinds.SamplerPlugin,
    "Plugin": kinds.Plugin,
    "StageRule": kinds.StageRule,
    "TracePipelineConfig": kinds.TracePipelineConfig,
    "Group": kinds.GroupSpec,
    "TagFamilySpec": kinds.TagFamilySpec,
    "TagSpec": kinds.TagSpec,
    "Stream": kinds.StreamSpec,
    "Entity": kinds.Entity,
    "ShardingKey": kinds.ShardingKey,
    "FieldSpec": kinds.FieldSpec,
    "Measure": kinds.MeasureSpec,
    "TopNAggregation": kinds.TopNAggregationSpec,
    "IndexRule": kinds.IndexRuleSpec,
    "Subject": kinds.Subject,
    "IndexRuleBinding": kinds.IndexRuleBindingSpec,
    "Property": kinds.PropertySpec,
    "TraceTagSpec": kinds.TraceTagSpec,
    "Trace": kinds.TraceSpec,
    "Condition.MatchOption": kinds.MatchOption,
    "Condition": kinds.Condition,
    "Criteria": kinds.Criteria,
    "LogicalExpression": kinds.LogicalExpression,
    "QueryOrder": kinds.QueryOrder,
    "TagValue": kinds.TagValue,
    "Str": kinds.Str,
    "StrArray": kinds.StrArray,
    "Int": kinds.Int,
    "IntArray": kinds.IntArray,
}
"""The model of each proto message (a kind's message: its spec model; the
:data:`ENVELOPE_FIELDS` are handled here, outside the spec)."""

ENVELOPE_FIELDS = ("metadata", "updated_at", "created_at")
"""Fields of every top-level message that are not part of the resource's spec."""

ID_KINDS = frozenset({"index_rule"})
"""Kinds whose documents carry a ``metadata.id`` (BanyanDB refuses an index rule without)."""

MANIFEST_KEYS = frozenset({"kind", "metadata", "spec"})

_TIMESTAMP = TypeAdapter(AwareDatetime)


def _squash(name: str) -> str:
    return name.lower().replace("_", "").replace("-", "")


_KIND_NAMES: dict[str, str] = {}
for _kind, _folder in FOLDERS.items():
    for _alias in (_kind, _folder, MESSAGES[_kind]):
        _KIND_NAMES[_squash(_alias)] = _kind


def kind_from_name(name: str) -> str | None:
    """The kind a name stands for: ``measure``, ``measures``, ``Measure``, ``index-rules``, …

    :param name: a kind, a BanyanDB folder name or a proto message name.
    :returns: the kind, or ``None`` when the name is none of these (generic kinds
        registered with :func:`schemacache.kinds.register_kind` map to themselves).
    """
    if name in kinds.KINDS:
        return name
    return _KIND_NAMES.get(_squash(name))


def kind_from_path(path: Path, root: Path | None = None) -> str | None:
    """The kind a file's folder names: the top-most folder named after a kind.

    :param path: the file.
    :param root: the directory the file was found in (default ``None``: only the
        file's own folder counts).  Folders between ``root`` and the file count
        from the top, so ``measures/<group>/<name>.json`` is a measure even in a
        group named ``streams``.
    """
    candidates: list[str] = [path.stem]
    if root is None:
        candidates.insert(0, path.parent.name)
    else:
        candidates[:0] = [root.name, *path.relative_to(root).parts[:-1]]
    for name in candidates:
        kind = kind_from_name(name)
        if kind is not None:
            return kind
    return None


def is_manifest(doc: dict[str, Any]) -> bool:
    """Whether a document is a schemacache manifest (``kind``/``metadata``/``spec``)."""
    return "spec" in doc or set(doc) <= MANIFEST_KEYS


def to_resource(doc: dict[str, Any], kind: str | None = None,
                folder_kind: str | None = None) -> Resource:
    """Validate one document, a schemacache manifest or a BanyanDB message, as a resource.

    :param doc: the parsed document.
    :param kind: the kind the caller names (``--kind``; default ``None``); a
        document's own ``kind`` must agree with it.
    :param folder_kind: the kind the file's folder names (default ``None``); used
        when neither ``kind`` nor the document names one.
    :raises ValidationError: naming the field path.
    """
    named = doc.get("kind")
    if named is not None and not isinstance(named, str):
        raise ValidationError("expected a kind name", field="kind")
    if is_manifest(doc):
        if kind is not None and named is not None and named != kind:
            raise ValidationError(f"the document is a {named}, not a {kind}", field="kind")
        if named is None and (kind or folder_kind):
            doc = {**doc, "kind": kind or folder_kind}
        return Resource.parse(doc)
    resolved = _document_kind(named, kind, folder_kind)
    body = {k: v for k, v in doc.items() if k != "kind"}
    return from_document(body, resolved)


def _document_kind(named: str | None, kind: str | None, folder_kind: str | None) -> str:
    own = None
    if named is not None:
        own = kind_from_name(named)
        if own is None:
            kinds.kind_info(named)  # raises, naming the known kinds
    if kind is not None and own is not None and own != kind:
        raise ValidationError(f"the document is a {own}, not a {kind}", field="kind")
    resolved = kind or own or folder_kind
    if resolved is None:
        raise ValidationError(
            "a BanyanDB document needs a kind: pass --kind, add a kind field, or keep the file "
            f"in a folder named {', '.join(FOLDERS.values())}", field="kind")
    return resolved


def from_document(doc: dict[str, Any], kind: str) -> Resource:
    """A resource from one BanyanDB document of ``kind``.

    :raises ValidationError: naming the field path as the document spells it
        (``tag_families[0].tags[1].type``, ``metadata.name``).
    """
    info = kinds.kind_info(kind)
    body = dict(doc)
    meta = _pop(body, "metadata")
    for name in ("updated_at", "created_at"):
        stamp = _pop(body, name)
        if stamp is not None:
            _check_timestamp(stamp, name)
    metadata = _metadata(meta, grouped=info.grouped)
    if info.spec_model is not None:
        body = read_message(body, info.spec_model)
    try:
        return Resource.parse({"kind": kind, "metadata": metadata, "spec": body})
    except ValidationError as exc:
        field = exc.field
        if field is not None and field.startswith("spec."):
            field = field[len("spec."):]
        raise ValidationError(exc.reason, field) from None


_ENVELOPE_CAMEL = {name: to_camel(name) for name in ENVELOPE_FIELDS}


def _pop(body: dict[str, Any], name: str) -> Any:
    camel = _ENVELOPE_CAMEL[name]
    if name in body and camel != name and camel in body:
        raise ValidationError(f"given twice, as {name} and {camel}", field=name)
    value = body.pop(name, None)
    return body.pop(camel, value)


def _check_timestamp(value: Any, field: str) -> None:
    try:
        _TIMESTAMP.validate_python(value)
    except pydantic.ValidationError:
        raise ValidationError(f"expected an RFC 3339 timestamp, got {value!r}",
                              field=field) from None


def _metadata(meta: Any, grouped: bool) -> dict[str, Any]:
    """The resource's metadata from a document's: group and name (the rest is the registry's)."""
    if meta is None:
        raise ValidationError("field required", field="metadata")
    try:
        parsed = kinds.ProtoMetadata.model_validate(
            read_message(meta, kinds.ProtoMetadata, "metadata"))
    except pydantic.ValidationError as exc:
        raise from_pydantic(exc, prefix="metadata") from None
    if not parsed.name:
        raise ValidationError("field required", field="metadata.name")
    if not grouped and parsed.group:
        raise ValidationError("a group's metadata names no group", field="metadata.group")
    return {"group": parsed.group or None, "name": parsed.name}


# ---------------------------------------------------------------- writing


def to_document(resource: Resource) -> dict[str, Any]:
    """The BanyanDB document of a resource, as BanyanDB's protojson writes it.

    Metadata first, then the message's fields, then ``updated_at``; enum values by
    full name, 64-bit integers as strings, zero values left out.
    """
    info = kinds.kind_info(resource.kind)
    meta: dict[str, Any] = {}
    if resource.metadata.group:
        meta["group"] = resource.metadata.group
    meta["name"] = resource.metadata.name
    if resource.kind in ID_KINDS:
        meta["id"] = object_id(resource)
    if resource.metadata.create_revision:
        meta["create_revision"] = str(resource.metadata.create_revision)
    if resource.metadata.mod_revision:
        meta["mod_revision"] = str(resource.metadata.mod_revision)
    doc: dict[str, Any] = {"metadata": meta}
    if info.spec_model is None:
        doc.update(resource.spec)
    else:
        doc.update(write_message(resource.spec, info.spec_model))
    if resource.metadata.updated_at is not None:
        doc["updated_at"] = timestamp(resource.metadata.updated_at)
    return doc


def object_id(resource: Resource) -> int:
    """The id BanyanDB gives an object created without one: CRC-32 (IEEE) of group + name."""
    return zlib.crc32(f"{resource.metadata.group or ''}{resource.metadata.name}".encode())


def document_path(resource: Resource) -> Path:
    """Where :func:`export` puts a resource: ``<folder>/[<group>/]<name>.json``."""
    folder = FOLDERS.get(resource.kind, resource.kind)
    if resource.kind == GROUP_KIND or not resource.metadata.group:
        return Path(folder) / f"{resource.metadata.name}.json"
    return Path(folder) / resource.metadata.group / f"{resource.metadata.name}.json"


def dumps(doc: Any) -> str:
    """A document (or a list of them) as pretty JSON text, ending with a newline."""
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def export(resources: Iterable[Resource], directory: str | Path) -> list[Path]:
    """Write resources as BanyanDB documents in BanyanDB's folder layout, one file each.

    The files are written into a temporary sibling directory that is renamed to
    ``directory`` at the end, so a failed or interrupted export leaves no
    half-written tree where a later ``apply -f`` would find it.

    :param resources: what to write (typically a whole registry listing).
    :param directory: the target directory: new, or empty.
    :returns: the files written, relative to ``directory``, in the order given.
    :raises FileExistsError: ``directory`` exists and is not empty (an older
        export there could bring back objects deleted since).
    :raises ValidationError: a resource cannot be written (nothing is left behind).
    """
    root = Path(directory)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise FileExistsError(f"{root} exists and is not an empty directory; "
                              "export into a new or empty one")
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    try:
        written = []
        for resource in resources:
            relative = document_path(resource)
            target = staging / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(dumps(to_document(resource)))
            written.append(relative)
        staging.chmod(0o777 & ~_umask())
        os.replace(staging, root)  # replaces an empty directory, refuses a filled one
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return written


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
