"""``etcd://h:p[,h:p…][/prefix]`` — the schema registry kept in an etcd v3 cluster
(``etcds://[user@]…?ca=…&cert=…&key=…`` for TLS and RBAC: see :mod:`.etcd_conn`).

Revisions are etcd's own.  :class:`EtcdRegistry` is the public face; each
concern lives in a module of its own, all sharing one :class:`EtcdCalls` (the
connection) and one :class:`EtcdKeys` (the key layout):

- :mod:`.etcd_keys` — the key layout under ``/<prefix>/`` (``schema/<key>``,
  the ``schema-revision`` mark, ``nodes/<name>``) and decoding KeyValues;
- :mod:`.etcd_calls` — one gRPC target for all endpoints (fail-over between
  members), errors mapped to schemacache's, reads retried within
  :data:`DEFAULT_CALL_TIMEOUT`, a write whose outcome is unknown raising
  :class:`RegistryUnavailableError` instead, since a blind retry could apply
  it twice;
- :mod:`.etcd_reads` — get, listings at one revision, revisions, compaction;
- :mod:`.etcd_txn` and :mod:`.etcd_writes` — every write one transaction that
  compares what it was decided on and puts the schema-revision mark; applies
  and cascade deletes all-or-nothing, bounded by etcd's ``--max-txn-ops`` and
  ``--max-request-bytes`` (a larger one is refused with :class:`TooLargeError`
  and writes nothing);
- :mod:`.etcd_watch` — watches that re-subscribe from the last revision they
  yielded + 1 after a connection error, so no event is lost or repeated;
- :mod:`.etcd_nodes` — node registrations attached to etcd leases.
"""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterator, Sequence

from ..errors import ValidationError
from ..model import Event, Resource
from .base import DEFAULT_NODE_TTL, NodeInfo, NodeLease, Registry, WatchProgress
from .etcd_calls import DEFAULT_CALL_TIMEOUT, EtcdCalls
from .etcd_conn import DEFAULT_PORT, DEFAULT_PREFIX, EtcdAccess, EtcdConnection, split_endpoint
from .etcd_keys import EtcdKeys
from .etcd_nodes import EtcdNodes
from .etcd_reads import EtcdReads
from .etcd_watch import EtcdWatch
from .etcd_writes import EtcdWrites
from .rules import ApplyResult

__all__ = ["DEFAULT_CALL_TIMEOUT", "DEFAULT_PORT", "DEFAULT_PREFIX", "EtcdRegistry"]


class EtcdRegistry(Registry):
    """A registry stored in etcd.

    etcd's revision is cluster-wide (``shared_revision``): node registrations,
    their expiry and other applications' keys raise it too.

    :param endpoints: ``host:port`` of the cluster's members (port default
        :data:`DEFAULT_PORT`).
    :param prefix: key prefix of this registry (default :data:`DEFAULT_PREFIX`);
        several registries can share one cluster under different prefixes.
    :param timeout: seconds per call (default :data:`DEFAULT_CALL_TIMEOUT`).
    :param access: TLS and credentials (default ``None``: plaintext, no user); when
        given, its endpoints and prefix are used instead of the first two arguments.
    """

    shared_revision = True

    def __init__(
        self,
        endpoints: builtins.list[str],
        prefix: str = DEFAULT_PREFIX,
        timeout: float = DEFAULT_CALL_TIMEOUT,
        access: EtcdAccess | None = None,
    ) -> None:
        if access is None:
            if not endpoints:
                raise ValidationError("no etcd endpoints", field="registry")
            access = EtcdAccess(endpoints=tuple(split_endpoint(e) for e in endpoints),
                                prefix=prefix.strip("/") or DEFAULT_PREFIX)
        self.url = access.url
        self._calls = EtcdCalls(access, timeout)
        keys = EtcdKeys(access.prefix)
        self._reads = EtcdReads(self._calls, keys)
        self._writes = EtcdWrites(self._calls, keys, self._reads)
        self._watches = EtcdWatch(self._calls, keys, self._reads.revision)
        self._nodes = EtcdNodes(self._calls, keys)

    @property
    def _client(self) -> EtcdConnection | None:
        """The open connection (``None`` before the first call and after close)."""
        return self._calls.client

    # --- reads ------------------------------------------------------------------------

    async def get(self, key: str) -> Resource:
        return await self._reads.get(key)

    async def list(self, prefix: str = "") -> tuple[builtins.list[Resource], int]:
        return await self._reads.list(prefix)

    async def revision(self) -> int:
        return await self._reads.revision()

    async def revisions(self) -> tuple[int, int | None]:
        return await self._reads.revisions()

    async def check_resume(self, start_revision: int, mark: str | None = None) -> None:
        await self._reads.check_resume(start_revision, mark)

    async def cluster_id(self) -> str:
        return await self._reads.cluster_id()

    async def compact(self, revision: int) -> None:
        await self._reads.compact(revision)

    # --- writes -----------------------------------------------------------------------

    async def put(self, resource: Resource, expected_revision: int | None = None) -> int:
        return await self._writes.put(resource, expected_revision)

    async def apply(self, resources: Sequence[Resource]) -> builtins.list[ApplyResult]:
        return await self._writes.apply(resources)

    async def delete(
        self, key: str, expected_revision: int | None = None, cascade: bool = False
    ) -> int:
        return await self._writes.delete(key, expected_revision, cascade)

    # --- changes ----------------------------------------------------------------------

    def watch(
        self, prefix: str = "", start_revision: int | None = None
    ) -> AsyncIterator[Event]:
        return self._watches.watch(prefix, start_revision, progress=False)  # type: ignore[return-value]

    def watch_progress(
        self, prefix: str = "", start_revision: int | None = None
    ) -> AsyncIterator[Event | WatchProgress]:
        """As :meth:`watch`, and also yields etcd's watch progress notifications.

        The watch asks for them (``progress_notify``); etcd sends one when the
        watcher has caught up and saw no event for its progress interval
        (``--experimental-watch-progress-notify-interval``, default 10 min),
        through the watcher's own channel, after every event it covers.
        Progress requested on the stream (``WatchProgressRequest``) is not
        used: before etcd 3.5.8 its answer can overtake pending events.
        """
        return self._watches.watch(prefix, start_revision, progress=True)

    def watch_batches(
        self, prefix: str = "", start_revision: int | None = None
    ) -> AsyncIterator[builtins.list[Event] | WatchProgress]:
        """As :meth:`watch_progress`, the events of each etcd watch response in one list."""
        return self._watches.batches(prefix, start_revision, progress=True)

    # --- node registrations -----------------------------------------------------------

    async def register_node(
        self, name: str, admin_url: str, ttl: float = DEFAULT_NODE_TTL
    ) -> NodeLease:
        return await self._nodes.register_node(name, admin_url, ttl)

    async def list_nodes(self) -> builtins.list[NodeInfo]:
        return await self._nodes.list_nodes()

    # --- lifecycle --------------------------------------------------------------------

    async def close(self) -> None:
        await self._calls.close()
