"""The parts every etcd registry write is built from: a snapshot read in one
transaction, the compares that prove what the write was decided on, and the
write transaction itself, which also puts the schema-revision mark.

A write transaction compares the ``mod_revision`` of every key it was decided
on (an absent key compares as 0) and that no key under a prefix changed since
the snapshot's revision.  When it loses, :meth:`EtcdTxns.raise_if_cas_lost`
tells a lost compare-and-set (a :class:`ConflictError` for the caller) from a
lost extra compare (the caller reads again and retries, at most
:data:`MAX_TXN_ATTEMPTS` times).
"""

from __future__ import annotations

from typing import Any

from aetcd import rpc

from ..errors import ConflictError, NotFoundError
from ..model import Resource
from .etcd_calls import EtcdCalls
from .etcd_keys import EtcdKeys, prefix_end

__all__ = ["MAX_TXN_ATTEMPTS", "EtcdTxns"]

MAX_TXN_ATTEMPTS = 50
"""Read-check-write rounds before a write gives up under contention."""


class EtcdTxns:
    """Transactions on one registry's keys.

    :param calls: the registry's calls to etcd.
    :param keys: the registry's key layout.
    """

    def __init__(self, calls: EtcdCalls, keys: EtcdKeys) -> None:
        self._calls = calls
        self._keys = keys

    async def snapshot(self, ops: list[Any]) -> tuple[list[list[Any]], int]:
        """Several ranges read in one transaction: their KeyValues and the revision."""
        resp = await self._calls.read("kvstub.Txn", rpc.TxnRequest(success=ops))
        return [list(r.response_range.kvs) for r in resp.responses], resp.header.revision

    async def write(self, compares: list[Any], success: list[Any], failure: list[Any]) -> Any:
        """One write transaction; on success it also puts the schema-revision mark."""
        mark = rpc.RequestOp(request_put=rpc.PutRequest(key=self._keys.schema_mark))
        return await self._calls.unary(
            "kvstub.Txn",
            rpc.TxnRequest(compare=compares, success=[*success, mark], failure=failure),
        )

    def mod_is(self, key: str, mod_revision: int) -> Any:
        """Compare: resource ``key`` was last written at ``mod_revision``."""
        # An absent key compares as mod_revision 0, so this also means "absent".
        return rpc.Compare(
            result=rpc.Compare.EQUAL, target=rpc.Compare.MOD, key=self._keys.schema_key(key),
            mod_revision=mod_revision,
        )

    def unchanged_since(self, prefix: str, revision: int) -> Any:
        """Compare: no key under ``prefix`` was written after ``revision``."""
        start = self._keys.schema_key(prefix)
        return rpc.Compare(
            result=rpc.Compare.LESS, target=rpc.Compare.MOD, key=start,
            range_end=prefix_end(start), mod_revision=revision + 1,
        )

    def current_or_raise(self, key: str, kvs: list[Any], expected: int | None) -> Resource:
        """The resource ``kvs`` holds; NotFoundError or ConflictError when it is
        absent or not at revision ``expected`` (``None``: any)."""
        if not kvs:
            if expected is None:
                raise NotFoundError(key)
            raise ConflictError(key, expected, 0)
        current = self._keys.decode(kvs[0])
        if expected is not None and current.mod_revision != expected:
            raise ConflictError(key, expected, current.mod_revision)
        return current

    @staticmethod
    def raise_if_cas_lost(key: str, expected: int | None, resp: Any) -> None:
        """After a failed write txn: ConflictError if the key itself moved away from
        ``expected``; otherwise (a reference or dependent changed) the caller retries."""
        if expected is None:
            return
        kvs = resp.responses[0].response_range.kvs
        actual = kvs[0].mod_revision if kvs else 0
        if actual != expected:
            raise ConflictError(key, expected, actual)
