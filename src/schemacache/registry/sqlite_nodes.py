"""Node registrations in the SQLite registry: one row per node in ``nodes``,
with a wall-clock expiry.

Refreshing a registration moves its expiry on (and registers the node again
if it had expired), revoking removes the row at once, and a node that stops
refreshing disappears from :meth:`SqliteNodes.list_nodes` after its TTL.  The
rows never touch the revision counter nor the change log.
"""

from __future__ import annotations

import sqlite3
import time

from .base import DEFAULT_NODE_TTL, NodeInfo, NodeLease
from .sqlite_conn import SqliteConnections
from .sqlite_schema import write_transaction

__all__ = ["SqliteNodes"]


def _upsert_node(conn: sqlite3.Connection, info: NodeInfo, ttl: float) -> None:
    def body() -> None:
        now = time.time()
        # Expired rows are dropped here so the table does not grow with
        # every node that ever ran.
        conn.execute("DELETE FROM nodes WHERE expires_at <= ?", (now,))
        conn.execute(
            "INSERT OR REPLACE INTO nodes (name, admin_url, expires_at) VALUES (?, ?, ?)",
            (info.name, info.admin_url, now + ttl),
        )

    write_transaction(conn, body)


def _revoke_node(conn: sqlite3.Connection, info: NodeInfo) -> None:
    def body() -> None:
        conn.execute(
            "DELETE FROM nodes WHERE name = ? AND admin_url = ?", (info.name, info.admin_url)
        )

    write_transaction(conn, body)


def _list_nodes(conn: sqlite3.Connection) -> list[NodeInfo]:
    rows = conn.execute(
        "SELECT name, admin_url FROM nodes WHERE expires_at > ? ORDER BY name", (time.time(),)
    ).fetchall()
    return [NodeInfo(name=str(name), admin_url=str(url)) for name, url in rows]


class SqliteNodes:
    """Node registrations of one registry.

    :param conns: the registry's connections.
    """

    def __init__(self, conns: SqliteConnections) -> None:
        self._conns = conns

    async def register_node(
        self, name: str, admin_url: str, ttl: float = DEFAULT_NODE_TTL
    ) -> NodeLease:
        run = self._conns.run
        info = NodeInfo(name=name, admin_url=admin_url)
        await run(_upsert_node, info, ttl)

        async def refresh() -> None:
            await run(_upsert_node, info, ttl)

        async def revoke() -> None:
            await run(_revoke_node, info)

        return NodeLease(info=info, ttl=ttl, refresh=refresh, revoke=revoke)

    async def list_nodes(self) -> list[NodeInfo]:
        return await self._conns.read(_list_nodes)
