"""The live nodes of a registry and their status, for ``GET /v1/cluster`` and the console."""

from __future__ import annotations

import httpx

from ..registry import NodeInfo, Registry
from .models import ClusterNode

CLUSTER_STATUS_TIMEOUT = 2.0
"""Seconds to wait for one node's ``/v1/status`` in ``GET /v1/cluster``."""


async def live_nodes(registry: Registry) -> list[NodeInfo]:
    """The nodes registered in ``registry`` whose lease is alive."""
    return await registry.list_nodes()


async def node_status(client: httpx.AsyncClient, name: str, admin_url: str) -> ClusterNode:
    """One node's ``/v1/status``, or the reason it could not be read (never raises)."""
    try:
        response = await client.get(f"{admin_url.rstrip('/')}/v1/status")
        response.raise_for_status()
        status = response.json()
        if not isinstance(status, dict):
            raise ValueError("status is not a JSON object")
    except (httpx.HTTPError, ValueError) as exc:
        reason = str(exc) or type(exc).__name__
        return ClusterNode(name=name, admin_url=admin_url, error=reason)
    return ClusterNode(name=name, admin_url=admin_url, status=status)
