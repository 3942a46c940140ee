"""What the etcd registry writes: put, apply, delete and cascade delete.

Every write is one etcd transaction that compares what the write was decided
on: the key's ``mod_revision`` (compare-and-set), the ``mod_revision`` of every
referenced key, and — for deletes, and for a group whose catalog changes — that
no key under the dependents' prefixes changed since they were read.  A
transaction that lost only on those extra compares is retried from a fresh
read.  A multi-document apply and a cascade delete are one transaction each
too, so they are all-or-nothing; their size is bounded by etcd's
``--max-txn-ops`` (default 128 operations: written keys, and compares) and
``--max-request-bytes`` (default 1.5 MiB).  A larger one is refused with
:class:`TooLargeError` and writes nothing.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from aetcd import rpc

from ..errors import ConflictError, RegistryUnavailableError
from ..kinds import references
from ..model import Resource
from .etcd_calls import EtcdCalls
from .etcd_keys import EtcdKeys, prefix_end
from .etcd_reads import EtcdReads
from .etcd_txn import MAX_TXN_ATTEMPTS, EtcdTxns
from .rules import (
    ApplyResult,
    candidate_prefixes_closure,
    cascade_plan,
    check_group_update,
    check_references,
    dependent_candidates_prefixes,
    plan_apply,
    refuse_if_referenced,
)

__all__ = ["POINT_READS_PER_TXN", "EtcdWrites"]

POINT_READS_PER_TXN = 100
"""Keys an apply reads as single ranges of one transaction; more are read as
whole prefixes at one revision (etcd refuses over ``--max-txn-ops`` per txn)."""

_Doomed = Callable[[str, Iterable[Resource]], list[str]]
"""Given a key and its dependents: the keys its delete removes, or an error."""


class EtcdWrites:
    """Writes to one registry's keys.

    :param calls: the registry's calls to etcd.
    :param keys: the registry's key layout.
    :param reads: the registry's reads (an apply of many keys reads whole prefixes).
    """

    def __init__(self, calls: EtcdCalls, keys: EtcdKeys, reads: EtcdReads) -> None:
        self._keys = keys
        self._reads = reads
        self._txns = EtcdTxns(calls, keys)

    # --- put --------------------------------------------------------------------------

    async def put(self, resource: Resource, expected_revision: int | None = None) -> int:
        keys, txns = self._keys, self._txns
        key = resource.key
        ref_keys = list(dict.fromkeys(ref.key for ref in references(resource)))
        member_prefixes = dependent_candidates_prefixes(key) if resource.kind == "group" else []
        value = resource.with_revisions(0, 0, datetime.now(UTC)).to_json().encode()
        for _ in range(MAX_TXN_ATTEMPTS):
            ops = [keys.range_op(keys.schema_key(k)) for k in (key, *ref_keys)]
            ops += [keys.prefix_op(p, limit=1) for p in member_prefixes]
            ranges, read_rev = await txns.snapshot(ops)
            current_kv = ranges[0][0] if ranges[0] else None
            actual = current_kv.mod_revision if current_kv is not None else 0
            if expected_revision is not None and actual != expected_revision:
                raise ConflictError(key, expected_revision, actual)
            found = {keys.key_of(kvs[0]): kvs[0] for kvs in ranges[1:len(ref_keys) + 1] if kvs}
            refs = {k: keys.decode(kv) for k, kv in found.items()}
            check_references(resource, refs.get)
            current = keys.decode(current_kv) if current_kv is not None else None
            members = [keys.decode(kvs[0]) for kvs in ranges[len(ref_keys) + 1:] if kvs]
            check_group_update(resource, current, members.copy)
            compares = [txns.mod_is(key, actual)]
            compares += [txns.mod_is(k, kv.mod_revision) for k, kv in found.items()]
            if current is not None and current.spec.get("catalog") != resource.spec.get(
                "catalog"
            ):
                compares += [txns.unchanged_since(p, read_rev) for p in member_prefixes]
            resp = await txns.write(
                compares,
                [rpc.RequestOp(request_put=rpc.PutRequest(key=keys.schema_key(key),
                                                          value=value))],
                [keys.range_op(keys.schema_key(key))],
            )
            if resp.succeeded:
                return int(resp.header.revision)
            txns.raise_if_cas_lost(key, expected_revision, resp)
        raise RegistryUnavailableError(f"put {key}: too much contention, gave up")

    # --- apply ------------------------------------------------------------------------

    async def apply(self, resources: Sequence[Resource]) -> list[ApplyResult]:
        resources = list(resources)
        for _ in range(MAX_TXN_ATTEMPTS):
            snapshot, read_rev = await self._apply_snapshot(resources)
            members = await self._catalog_members(resources, snapshot, read_rev)
            steps = plan_apply(resources, snapshot.get, functools.partial(_members_of, members))
            writes = [s for s in steps if s.changed]
            if not writes:
                return [ApplyResult(s.resource.key, "unchanged", s.current_revision)
                        for s in steps]
            resp = await self._txns.write(
                self._apply_compares(resources, writes, snapshot, members, read_rev),
                [self._put_op(s.resource) for s in writes], [],
            )
            if resp.succeeded:
                rev = int(resp.header.revision)
                return [ApplyResult(s.resource.key, s.outcome,
                                    rev if s.changed else s.current_revision) for s in steps]
            # Something read changed since the snapshot: plan again from a fresh one.
        raise RegistryUnavailableError("apply: too much contention, gave up")

    async def _apply_snapshot(
        self, resources: list[Resource]
    ) -> tuple[dict[str, Resource], int]:
        """The manifest's keys and the keys they reference, as of one revision."""
        keys = {r.key for r in resources}
        keys |= {ref.key for r in resources for ref in references(r)}
        if len(keys) <= POINT_READS_PER_TXN:
            ranges, read_rev = await self._txns.snapshot(
                [self._keys.range_op(self._keys.schema_key(k)) for k in keys])
            kvs = [kv for found in ranges for kv in found]
        else:
            prefixes = sorted({k.rsplit("/", 1)[0] + "/" for k in keys})
            kvs, read_rev = await self._reads.read_prefixes(prefixes)
        found = {self._keys.key_of(kv): self._keys.decode(kv) for kv in kvs}
        return {k: r for k, r in found.items() if k in keys}, read_rev

    async def _catalog_members(
        self, resources: list[Resource], snapshot: dict[str, Resource], read_rev: int
    ) -> dict[str, list[Resource]]:
        """For each group whose catalog the apply changes: one member, if any, at ``read_rev``."""
        members: dict[str, list[Resource]] = {}
        for group in _catalog_changes(resources, snapshot):
            found: list[Resource] = []
            for prefix in dependent_candidates_prefixes(group.key):
                start = self._keys.schema_key(prefix)
                resp = await self._reads.range_at(start, prefix_end(start), limit=1,
                                                  revision=read_rev)
                found += [self._keys.decode(kv) for kv in resp.kvs]
            members[group.key] = found
        return members

    def _apply_compares(
        self, resources: list[Resource], writes: list[Any], snapshot: dict[str, Resource],
        members: dict[str, list[Resource]], read_rev: int,
    ) -> list[Any]:
        """What the apply was decided on: written keys, referenced keys, and the
        member prefixes of groups whose catalog changes."""
        txns = self._txns
        written = {s.resource.key for s in writes}
        compares = [txns.mod_is(s.resource.key, s.current.mod_revision if s.current else 0)
                    for s in writes]
        referenced = {ref.key for s in writes for ref in references(s.resource)} - written
        compares += [txns.mod_is(k, snapshot[k].mod_revision)
                     for k in sorted(referenced) if k in snapshot]
        for group_key in members:
            compares += [txns.unchanged_since(p, read_rev)
                         for p in dependent_candidates_prefixes(group_key)]
        return compares

    def _put_op(self, resource: Resource) -> Any:
        value = resource.with_revisions(0, 0, datetime.now(UTC)).to_json().encode()
        return rpc.RequestOp(request_put=rpc.PutRequest(key=self._keys.schema_key(resource.key),
                                                        value=value))

    # --- delete -----------------------------------------------------------------------

    async def delete(
        self, key: str, expected_revision: int | None = None, cascade: bool = False
    ) -> int:
        if cascade:
            return await self._delete(key, expected_revision,
                                      candidate_prefixes_closure(key), _with_dependents)
        return await self._delete(key, expected_revision,
                                  dependent_candidates_prefixes(key), _alone)

    async def _delete(
        self, key: str, expected: int | None, prefixes: list[str], doomed: _Doomed
    ) -> int:
        """``key``, and the dependents ``doomed`` names, deleted in one transaction
        that also proves no dependent appeared or changed since they were read."""
        keys, txns = self._keys, self._txns
        for _ in range(MAX_TXN_ATTEMPTS):
            ranges, read_rev = await txns.snapshot(
                [keys.range_op(keys.schema_key(key))] + [keys.prefix_op(p) for p in prefixes]
            )
            current = txns.current_or_raise(key, ranges[0], expected)
            gone = doomed(key, (keys.decode(kv) for kvs in ranges[1:] for kv in kvs))
            compares = [txns.mod_is(key, current.mod_revision)]
            compares += [txns.unchanged_since(p, read_rev) for p in prefixes]
            deletes = [rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(
                key=keys.schema_key(k))) for k in gone]
            resp = await txns.write(compares, deletes, [keys.range_op(keys.schema_key(key))])
            if resp.succeeded:
                return int(resp.header.revision)
            txns.raise_if_cas_lost(key, expected, resp)
        raise RegistryUnavailableError(f"delete {key}: too much contention, gave up")


def _alone(key: str, dependents: Iterable[Resource]) -> list[str]:
    """A plain delete: only ``key``, refused while anything depends on it."""
    refuse_if_referenced(key, dependents)
    return [key]


def _with_dependents(key: str, dependents: Iterable[Resource]) -> list[str]:
    """A cascade delete: everything depending on ``key``, dependents first, then ``key``."""
    return [*(d.key for d in cascade_plan(key, dependents)), key]


def _catalog_changes(resources: list[Resource], snapshot: dict[str, Resource]) -> list[Resource]:
    return [r for r in resources if r.kind == "group" and r.key in snapshot
            and snapshot[r.key].spec.get("catalog") != r.spec.get("catalog")]


def _members_of(members: dict[str, list[Resource]], group_key: str) -> list[Resource]:
    return members.get(group_key, [])
