"""Where the etcd registry keeps what, and how etcd's KeyValues become resources.

Key layout under ``/<prefix>/``:

- ``schema/<key>`` — one resource as JSON (``updated_at`` set by the writer);
  ``create_revision``/``mod_revision`` always come from etcd's KeyValue, never
  from the stored JSON;
- ``schema-revision`` — the schema-revision mark, put by every schema write's
  transaction: its ``mod_revision`` is the last schema write's revision, which
  the cluster-wide revision cannot tell;
- ``nodes/<name>`` — a node registration, attached to an etcd lease, outside
  the schema range so schema watches never see it.
"""

from __future__ import annotations

import json
from typing import Any

from aetcd import rpc

from ..model import Resource, parse_key

__all__ = ["EtcdKeys", "bare_resource", "prefix_end"]


class EtcdKeys:
    """The key layout of one registry prefix.

    :param prefix: the registry's prefix, without slashes.
    """

    def __init__(self, prefix: str) -> None:
        root = f"/{prefix}/"
        self.schema_root = (root + "schema/").encode()
        self.nodes_root = (root + "nodes/").encode()
        self.schema_mark = (root + "schema-revision").encode()

    def schema_key(self, key: str) -> bytes:
        """The etcd key holding the resource ``key``."""
        return self.schema_root + key.encode()

    def decode(self, kv: Any) -> Resource:
        """The resource a schema KeyValue holds, with etcd's revisions."""
        data = json.loads(kv.value)
        meta = data["metadata"]
        meta["create_revision"] = kv.create_revision
        meta["mod_revision"] = kv.mod_revision
        return Resource.from_stored(data)

    def key_of(self, kv: Any) -> str:
        """The resource key of a schema KeyValue."""
        return bytes(kv.key[len(self.schema_root):]).decode()

    @staticmethod
    def range_op(key: bytes, range_end: bytes = b"", limit: int = 0) -> Any:
        """A transaction operation reading ``key`` (or ``[key, range_end)``)."""
        return rpc.RequestOp(
            request_range=rpc.RangeRequest(key=key, range_end=range_end, limit=limit)
        )

    def prefix_op(self, prefix: str, limit: int = 0) -> Any:
        """A transaction operation reading every resource whose key starts with ``prefix``."""
        start = self.schema_key(prefix)
        return self.range_op(start, prefix_end(start), limit)


def prefix_end(prefix: bytes) -> bytes:
    """The etcd ``range_end`` covering every key that starts with ``prefix``."""
    end = bytearray(prefix)
    for i in reversed(range(len(end))):
        if end[i] < 0xFF:
            end[i] += 1
            return bytes(end[: i + 1])
    return b"\0"


def bare_resource(key: str) -> Resource:
    """A stand-in for a deleted resource whose last version was compacted away."""
    kind, group, name = parse_key(key)
    return Resource.from_stored({"kind": kind, "metadata": {"group": group, "name": name}})
