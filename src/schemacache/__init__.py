"""schemacache — self-healing, versioned schema caches for distributed databases.

The public API::

    from schemacache import open_registry, Node, Resource, load_resources
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import (
    CompactedError,
    ConflictError,
    NotFoundError,
    PermanentError,
    ReferencedError,
    RegistryAccessError,
    RegistryAuthError,
    RegistryPermissionError,
    RegistryRewoundError,
    RegistryTlsError,
    RegistryUnavailableError,
    SchemaCacheError,
    TemporaryError,
    ValidationError,
)
from .manifest import load_resources
from .model import Event, EventType, Metadata, Resource, digest, make_key, parse_key
from .registry import NodeInfo, Registry, open_registry

if TYPE_CHECKING:
    from .node import Node, RetryPolicy

__version__ = "0.1.0"

__all__ = [
    "CompactedError",
    "ConflictError",
    "Event",
    "EventType",
    "Metadata",
    "Node",
    "NodeInfo",
    "NotFoundError",
    "PermanentError",
    "ReferencedError",
    "Registry",
    "RegistryAccessError",
    "RegistryAuthError",
    "RegistryPermissionError",
    "RegistryRewoundError",
    "RegistryTlsError",
    "RegistryUnavailableError",
    "Resource",
    "RetryPolicy",
    "SchemaCacheError",
    "TemporaryError",
    "ValidationError",
    "digest",
    "load_resources",
    "make_key",
    "open_registry",
    "parse_key",
]


def __getattr__(name: str) -> Any:
    # The node pulls in more modules; load it only when asked for.
    if name in ("Node", "RetryPolicy"):
        from . import node

        return getattr(node, name)
    raise AttributeError(name)
