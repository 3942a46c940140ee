"""Apply a set of resources to a registry, like ``kubectl apply``."""

from __future__ import annotations

from collections.abc import Iterable

from .model import Resource
from .registry import Registry
from .registry.rules import ApplyResult, Outcome

__all__ = ["ApplyResult", "Outcome", "apply_resources"]


async def apply_resources(registry: Registry, resources: Iterable[Resource]) -> list[ApplyResult]:
    """Create or update each resource, prerequisites first, all or nothing.

    Every rule (validation, references, catalog changes, duplicate keys) is
    checked against one snapshot of the registry before the first write, and
    the writes are one transaction (see :meth:`Registry.apply`): an error names
    the document (1-based) and leaves the registry unchanged.  A resource whose
    content equals the stored one is left alone (``unchanged``), so re-applying
    a manifest writes nothing.
    """
    return await registry.apply(list(resources))
