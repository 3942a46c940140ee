"""Apply a set of resources to a registry, like ``kubectl apply``."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from .errors import NotFoundError
from .kinds import apply_order
from .model import Resource
from .registry import Registry

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
    alone (``unchanged``), so re-applying a manifest writes nothing.
    """
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
