"""Node registrations in etcd: one key per node under ``/<prefix>/nodes/``,
attached to an etcd lease.

The key lives as long as the lease: refreshing keeps the lease alive (and
registers again if it expired meanwhile), revoking removes the key at once, and
a node that stops refreshing disappears after its TTL (whole seconds, at least
one).  The keys lie outside the schema range, so schema watches never see them;
their writes do raise etcd's cluster-wide revision.
"""

from __future__ import annotations

import json
import math
from typing import Any

import grpc
from aetcd import rpc

from ..errors import RegistryUnavailableError, SchemaCacheError
from .base import DEFAULT_NODE_TTL, NodeInfo, NodeLease
from .etcd_calls import EtcdCalls, Metadata
from .etcd_keys import EtcdKeys, prefix_end

__all__ = ["EtcdNodes"]


class EtcdNodes:
    """Node registrations of one registry.

    :param calls: the registry's calls to etcd.
    :param keys: the registry's key layout.
    """

    def __init__(self, calls: EtcdCalls, keys: EtcdKeys) -> None:
        self._calls = calls
        self._keys = keys

    async def register_node(
        self, name: str, admin_url: str, ttl: float = DEFAULT_NODE_TTL
    ) -> NodeLease:
        unary = self._calls.unary
        info = NodeInfo(name=name, admin_url=admin_url)
        key = self._keys.nodes_root + name.encode()
        value = json.dumps(info.to_dict()).encode()
        lease_ttl = max(1, math.ceil(ttl))
        lease_id = [0]

        async def grant_and_put() -> None:
            grant = await unary("leasestub.LeaseGrant", rpc.LeaseGrantRequest(TTL=lease_ttl))
            lease_id[0] = grant.ID
            await unary("kvstub.Put", rpc.PutRequest(key=key, value=value, lease=grant.ID))

        async def refresh() -> None:
            if await self._keepalive(lease_id[0]) <= 0:
                await grant_and_put()  # the lease expired: register again

        async def revoke() -> None:
            try:
                await unary("leasestub.LeaseRevoke", rpc.LeaseRevokeRequest(ID=lease_id[0]))
            except RegistryUnavailableError:
                raise
            except SchemaCacheError:
                pass  # the lease had already expired: nothing left to remove

        await grant_and_put()
        return NodeLease(info=info, ttl=ttl, refresh=refresh, revoke=revoke)

    async def _keepalive(self, lease_id: int) -> int:
        """Renew a lease once; its remaining TTL (``<= 0`` when it has expired)."""
        client = await self._calls.connect()

        async def read_once(metadata: Metadata) -> Any:
            call = client.leasestub.LeaseKeepAlive(
                iter([rpc.LeaseKeepAliveRequest(ID=lease_id)]),
                timeout=self._calls.timeout, metadata=metadata, wait_for_ready=True,
            )
            try:
                return await call.read()
            finally:
                call.cancel()

        reply = await self._calls.with_token(client, read_once)
        if reply is grpc.aio.EOF:
            return 0
        return int(reply.TTL)

    async def list_nodes(self) -> list[NodeInfo]:
        nodes_root = self._keys.nodes_root
        resp = await self._calls.read(
            "kvstub.Range", rpc.RangeRequest(key=nodes_root, range_end=prefix_end(nodes_root)),
        )
        nodes = [json.loads(kv.value) for kv in resp.kvs]
        return sorted((NodeInfo(name=n["name"], admin_url=n["admin_url"]) for n in nodes),
                      key=lambda n: n.name)
