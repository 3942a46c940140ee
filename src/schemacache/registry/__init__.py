"""Registry backends and :func:`open_registry`."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from ..errors import ValidationError
from .base import (
    DEFAULT_HISTORY,
    DEFAULT_NODE_TTL,
    NodeInfo,
    NodeLease,
    Registry,
    WatchProgress,
)

__all__ = ["DEFAULT_HISTORY", "DEFAULT_NODE_TTL", "NodeInfo", "NodeLease", "Registry",
           "WatchProgress", "open_registry"]


def open_registry(url: str) -> Registry:
    """Open a registry by URL.

    - ``memory://`` — in-process (``?history=N`` revisions of history kept);
    - ``sqlite:///relative.db`` or ``sqlite:////absolute.db`` — embedded, durable,
      shared between processes (``?history=N``);
    - ``etcd://host:port[,host:port…][/prefix]`` — an etcd v3 cluster.

    The returned registry connects lazily; close it with ``await reg.close()``
    or use it as an async context manager.
    """
    parts = urlsplit(url)
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    scheme = parts.scheme.lower()
    if scheme == "memory":
        from .memory import MemoryRegistry

        return MemoryRegistry(history=int(query.get("history", DEFAULT_HISTORY)))
    if scheme == "sqlite":
        from .sqlite import SqliteRegistry

        path = url.split("://", 1)[1].split("?", 1)[0]
        if not path.startswith("/") or len(path) < 2:
            raise ValidationError(f"bad sqlite URL {url!r}: use sqlite:///relative.db or "
                                  "sqlite:////absolute.db", field="registry")
        return SqliteRegistry(path[1:], history=int(query.get("history", DEFAULT_HISTORY)))
    if scheme == "etcd":
        from .etcd import EtcdRegistry

        endpoints = [e for e in parts.netloc.split(",") if e]
        if not endpoints:
            raise ValidationError(f"bad etcd URL {url!r}: no endpoints", field="registry")
        return EtcdRegistry(endpoints, prefix=parts.path.strip("/") or "schemacache")
    raise ValidationError(
        f"unknown registry URL {url!r} (use memory://, sqlite:///file.db or etcd://host:port)",
        field="registry",
    )
