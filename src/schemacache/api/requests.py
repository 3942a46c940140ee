"""Reading requests of the registry API: resource documents, manifests, precondition headers.

Each refusal is an :class:`~schemacache.api.errors.ApiError` (400, 412) or a
:class:`~schemacache.errors.ValidationError` (422) naming what is wrong.
"""

from __future__ import annotations

from ..documents import parse_documents
from ..errors import (
    NotFoundError,
    ValidationError,
)
from ..manifest import document_to_resource, parse_manifest, reject_duplicates
from ..model import Resource
from ..registry import Registry
from .errors import ApiError


def parse_document(body: bytes) -> Resource:
    """One resource document (JSON or YAML): 400 when malformed, 422 when invalid."""
    if not body.strip():
        raise ApiError(400, "malformed", "empty body: expected a resource document")
    if body.lstrip().startswith(b"["):
        raise ApiError(400, "malformed", "expected a mapping with kind, metadata and spec, "
                       "got list")
    try:
        docs = parse_documents(body)
    except ValidationError as exc:
        if exc.field is None:
            raise ApiError(400, "malformed", exc.reason) from None
        raise ValidationError(exc.reason, exc.field) from None
    if len(docs) != 1:
        raise ApiError(400, "malformed", f"expected one document, got {len(docs)}")
    return document_to_resource(docs[0])


def _parse_revision_header(name: str, value: str) -> int:
    raw = value.strip()
    if raw.startswith("W/"):
        raw = raw[2:]
    raw = raw.strip('"')
    # ASCII digits only: str.isdigit() also takes "²", which int() refuses.
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 19:
        raise ApiError(400, "malformed",
                       f"{name} must be a mod_revision (an integer), got {value!r}", field=name)
    return int(raw)


async def expected_revision(
    registry: Registry, key: str, if_match: str | None, if_none_match: str | None
) -> int | None:
    """The CAS revision the precondition headers ask for (``None`` = unconditional)."""
    if if_match is not None and if_none_match is not None:
        raise ApiError(400, "malformed", "use either If-Match or If-None-Match, not both")
    if if_none_match is not None:
        if if_none_match.strip() != "*":
            raise ApiError(400, "malformed", "only If-None-Match: * is supported",
                           field="If-None-Match")
        return 0
    if if_match is None:
        return None
    if if_match.strip() == "*":
        try:
            return (await registry.get(key)).mod_revision
        except NotFoundError:
            raise ApiError(412, "precondition_failed", f"{key} does not exist") from None
    return _parse_revision_header("If-Match", if_match)


def etag(revision: int) -> str:
    return f'"{revision}"'


async def refuse_delete_if_none_match(
    registry: Registry, key: str, if_match: str | None, if_none_match: str
) -> None:
    """``If-None-Match: *`` on a delete: "only if it does not exist" — which
    leaves nothing to delete; always refused, nothing written."""
    if if_match is not None:
        raise ApiError(400, "malformed", "use either If-Match or If-None-Match, not both")
    if if_none_match.strip() != "*":
        raise ApiError(400, "malformed", "only If-None-Match: * is supported",
                       field="If-None-Match")
    await registry.get(key)  # 404 when absent
    raise ApiError(412, "precondition_failed", f"{key} exists (If-None-Match: *)",
                   field="If-None-Match")


def parse_manifest_body(body: bytes) -> list[Resource]:
    try:
        resources = parse_manifest(body)
    except ValidationError as exc:
        if exc.field is None and exc.document is None:
            raise ApiError(400, "malformed", exc.reason) from None
        raise
    reject_duplicates(resources)
    return resources
