"""Apply a set of resources to a registry, like ``kubectl apply``."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from .errors import NotFoundError, ValidationError
from .kinds import apply_order, references
from .model import Resource
from .registry import Registry
from .registry.base import check_references

Outcome = Literal["created", "updated", "unchanged"]


@dataclass(frozen=True)
class ApplyResult:
    """What :func:`apply_resources` did to one key.

    :param key: the key.
    :param outcome: ``created``, ``updated`` or ``unchanged`` (no write made).
    :param revision: the key's mod_revision after the apply.
    """

    key: str
    outcome: Outcome
    revision: int


async def apply_resources(registry: Registry, resources: Iterable[Resource]) -> list[ApplyResult]:
    """Create or update each resource, prerequisites first.

    Each write is a compare-and-set against the version read just before, so a
    concurrent change raises :class:`~schemacache.ConflictError` instead of
    being overwritten.  A resource whose content equals the stored one is left
    alone (``unchanged``), so re-applying a manifest writes nothing.  References
    are checked against the manifest and the registry before the first write,
    so a manifest with a dangling reference writes nothing at all.
    """
    resources = list(resources)
    await check_manifest_references(registry, resources)
    results = []
    for resource in apply_order(resources):
        try:
            current: Resource | None = await registry.get(resource.key)
        except NotFoundError:
            current = None
        if current is not None and current.same_content(resource):
            results.append(ApplyResult(resource.key, "unchanged", current.mod_revision))
            continue
        expected = current.mod_revision if current is not None else 0
        revision = await registry.put(resource, expected_revision=expected)
        results.append(ApplyResult(resource.key, "updated" if current else "created", revision))
    return results


async def check_manifest_references(registry: Registry, resources: list[Resource]) -> None:
    """Raise :class:`ValidationError` (naming the document) if a reference resolves
    neither in ``resources`` nor in the registry."""
    in_manifest = {r.key: r for r in resources}
    wanted = {ref.key for r in resources for ref in references(r)} - set(in_manifest)
    current: dict[str, Resource] = {}
    for key in sorted(wanted):
        with contextlib.suppress(NotFoundError):
            current[key] = await registry.get(key)
    for number, resource in enumerate(resources, 1):
        try:
            check_references(resource, lambda k: in_manifest.get(k) or current.get(k))
        except ValidationError as exc:
            raise ValidationError(f"{resource.key} {exc.reason}", exc.field,
                                  document=number) from None
