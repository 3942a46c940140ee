"""Registry backends and :func:`open_registry`."""

from __future__ import annotations

import os
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

# gRPC's core logs every failed TLS handshake on stderr at INFO level, several
# times a second; the etcd registry reports such failures itself, in one line.
# gRPC reads this when it is first imported, which the etcd backend does later.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

__all__ = ["DEFAULT_HISTORY", "DEFAULT_NODE_TTL", "NodeInfo", "NodeLease", "Registry",
           "WatchProgress", "open_registry"]


def open_registry(url: str) -> Registry:
    """Open a registry by URL.

    - ``memory://`` — in-process (``?history=N`` revisions of history kept);
    - ``sqlite:///relative.db`` or ``sqlite:////absolute.db`` — embedded, durable,
      shared between processes (``?history=N``);
    - ``etcd://host:port[,host:port…][/prefix]`` — an etcd v3 cluster;
    - ``etcds://[USER@]host:port[,host:port…][/prefix][?ca=PATH&cert=PATH&key=PATH]``
      — the same over TLS (``ca`` verifies the members, ``cert``/``key`` is a client
      certificate); a user's password comes from ``SCHEMACACHE_ETCD_PASSWORD`` or
      ``?password_file=PATH``, never from the URL (``etcd://USER@…`` works too).

    The returned registry connects lazily; close it with ``await reg.close()``
    or use it as an async context manager.
    """
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise ValidationError(f"bad registry URL: {exc}", field="registry") from None
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
    if scheme in ("etcd", "etcds"):
        from .etcd import EtcdRegistry
        from .etcd_conn import parse_etcd_url

        access = parse_etcd_url(url)
        return EtcdRegistry([], access=access)
    raise ValidationError(
        f"unknown registry URL {redact_url(url)!r} (use memory://, sqlite:///file.db, "
        "etcd://host:port or etcds://host:port)",
        field="registry",
    )


def redact_url(url: str) -> str:
    """``url`` with any password in its user part replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()
