"""``etcd://h:p[,h:p…][/prefix]`` — the schema registry kept in an etcd v3 cluster
(``etcds://[user@]…?ca=…&cert=…&key=…`` for TLS and RBAC: see :mod:`.etcd_conn`).

Key layout under ``/<prefix>/``:

- ``schema/<key>`` — one resource as JSON (``updated_at`` set by the writer);
  ``create_revision``/``mod_revision`` always come from etcd's KeyValue, never
  from the stored JSON;
- ``nodes/<name>`` — a node registration, attached to an etcd lease, outside
  the schema range so schema watches never see it.

Revisions are etcd's own.  Every write is one etcd transaction that compares
what the write was decided on: the key's ``mod_revision`` (compare-and-set),
the ``mod_revision`` of every referenced key, and — for deletes — that no key
under the dependents' prefixes changed since they were read.  A transaction
that lost only on those extra compares is retried from a fresh read.  A
multi-document apply and a cascade delete are one transaction each too, so
they are all-or-nothing; their size is bounded by etcd's ``--max-txn-ops``
(default 128 operations: written keys, and compares) and
``--max-request-bytes`` (default 1.5 MiB).  A larger one is refused with
:class:`TooLargeError` and writes nothing.

All endpoints form one gRPC target (``ipv4:h1:p1,h2:p2,…``); gRPC's pick-first
policy talks to the first reachable member and moves to the next when it
dies.  Reads are retried within :data:`DEFAULT_CALL_TIMEOUT`; a write whose
outcome is unknown raises :class:`RegistryUnavailableError` instead, since a
blind retry could apply it twice.  Watches re-subscribe from the last
revision they yielded + 1 after a connection error, so no event is lost or
repeated.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import grpc
from aetcd import rpc

from .._gc import gc_paused
from ..errors import (
    CompactedError,
    ConflictError,
    NotFoundError,
    RegistryAccessError,
    RegistryPermissionError,
    RegistryRewoundError,
    RegistryUnavailableError,
    SchemaCacheError,
    TooLargeError,
    ValidationError,
)
from ..kinds import references
from ..model import Event, EventType, Resource, parse_key
from .base import (
    DEFAULT_NODE_TTL,
    NodeInfo,
    NodeLease,
    Registry,
    WatchProgress,
)
from .etcd_conn import (
    DEFAULT_PORT,
    DEFAULT_PREFIX,
    EtcdAccess,
    EtcdConnection,
    split_endpoint,
)
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

__all__ = ["DEFAULT_PORT", "DEFAULT_PREFIX", "EtcdRegistry"]

DEFAULT_CALL_TIMEOUT = 5.0
"""Seconds one registry call may take (reads include their retries)."""
LIST_PAGE_SIZE = 5_000
"""Keys fetched per Range request of a listing (pages share one revision)."""
MAX_MESSAGE_BYTES = 256 * 1024 * 1024
"""Largest gRPC message accepted; a page of big resources can exceed gRPC's 4 MiB."""
MAX_TXN_ATTEMPTS = 50
"""Read-check-write rounds before a write gives up under contention."""
WATCH_BACKOFF_MIN = 0.05
"""First delay (seconds) before re-subscribing a broken watch."""
WATCH_BACKOFF_MAX = 2.0
"""Longest delay (seconds) between watch re-subscriptions."""
POINT_READS_PER_TXN = 100
"""Keys an apply reads as single ranges of one transaction; more are read as
whole prefixes at one revision (etcd refuses over ``--max-txn-ops`` per txn)."""
TXN_LIMITS_HINT = ("etcd takes at most --max-txn-ops operations (default 128) and "
                   "--max-request-bytes (default 1.5 MiB) per transaction; raise those "
                   "limits on every member, or write in smaller parts")
READ_BACKOFF_MIN = 0.05
READ_BACKOFF_MAX = 0.5

_CHANNEL_OPTIONS: dict[str, Any] = {
    "grpc.max_receive_message_length": MAX_MESSAGE_BYTES,
    "grpc.max_send_message_length": MAX_MESSAGE_BYTES,
    # Reconnect quickly after a member dies: the default backoff starts at 1 s
    # and grows to 120 s, far too slow for a failover.
    "grpc.initial_reconnect_backoff_ms": 100,
    "grpc.min_reconnect_backoff_ms": 100,
    "grpc.max_reconnect_backoff_ms": 1000,
    # Detect a silently dead member during a long watch; etcd's default
    # enforcement refuses pings more often than every 5 s or without a stream.
    "grpc.keepalive_time_ms": 10_000,
    "grpc.keepalive_timeout_ms": 5_000,
    "grpc.keepalive_permit_without_calls": 0,
}

_TRANSIENT_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.UNKNOWN,
    }
)
# Codes whose cause the connection can name (a TLS failure, a missing permission).
_EXPLAINED_CODES = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
     grpc.StatusCode.PERMISSION_DENIED}
)
# etcd cancels a watch on a member that lost its leader only if asked to.
_REQUIRE_LEADER = ("hasleader", "true")
_PUT_EVENT = 0
_DELETE_EVENT = 1


_T = TypeVar("_T")
_List = list  # the registry's own ``list`` method shadows the builtin in its body


class _WatchBroken(Exception):
    """The server cancelled a watch for a reason worth re-subscribing after."""


class _WatchDenied(Exception):
    """The server refused to create a watch: no permission, or an expired token
    (etcd 3.5 reports both as "permission denied").

    :param reason: the server's cancel reason.
    :param metadata: the auth metadata the watch was created with.
    """

    def __init__(self, reason: str, metadata: tuple[tuple[str, str], ...]):
        super().__init__(reason)
        self.metadata = metadata


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
        endpoints: list[str],
        prefix: str = DEFAULT_PREFIX,
        timeout: float = DEFAULT_CALL_TIMEOUT,
        access: EtcdAccess | None = None,
    ) -> None:
        if access is None:
            if not endpoints:
                raise ValidationError("no etcd endpoints", field="registry")
            access = EtcdAccess(endpoints=tuple(split_endpoint(e) for e in endpoints),
                                prefix=prefix.strip("/") or DEFAULT_PREFIX)
        self._access = access
        self._prefix = access.prefix
        self.url = access.url
        self._timeout = timeout
        root = f"/{self._prefix}/"
        self._schema_root = (root + "schema/").encode()
        self._nodes_root = (root + "nodes/").encode()
        # Put by every schema write's transaction: its mod_revision is the last
        # schema write's revision, which the cluster-wide revision cannot tell.
        self._schema_mark = (root + "schema-revision").encode()
        self._client: EtcdConnection | None = None
        self._client_loop: asyncio.AbstractEventLoop | None = None
        self._connect_lock = asyncio.Lock()
        self._closed = False
        self._watch_calls: set[Any] = set()

    # --- connection -----------------------------------------------------------

    async def _connect(self) -> EtcdConnection:
        if self._closed:
            raise RegistryUnavailableError("registry is closed")
        loop = asyncio.get_running_loop()
        if self._client is not None and self._client_loop is not loop:
            # A gRPC channel serves the event loop it was made on; that one has
            # ended (``asyncio.run`` called again): connect afresh on this one.
            self._client = None
            self._connect_lock = asyncio.Lock()
        if self._client is not None:
            return self._client
        async with self._connect_lock:
            if self._client is None:
                client = EtcdConnection(self._access, self._timeout, _CHANNEL_OPTIONS)
                await client.open()
                self._client = client
                self._client_loop = loop
        return self._client

    def _metadata(self, extra: tuple[tuple[str, str], ...] = ()) -> tuple[tuple[str, str], ...]:
        base = self._client.metadata if self._client is not None else ()
        return base + extra

    async def _unary(self, method: str, request: Any, grpc_timeout: float | None = None) -> Any:
        """One unary call on the KV/Lease stubs; errors mapped to schemacache errors.
        A call whose auth token expired is repeated once with a new token."""
        client = await self._connect()
        stub_name, _, rpc_name = method.partition(".")
        call = getattr(getattr(client, stub_name), rpc_name)
        timeout = self._timeout if grpc_timeout is None else grpc_timeout
        return await self._with_token(client, lambda metadata: call(
            request, timeout=timeout, metadata=metadata, wait_for_ready=True))

    async def _with_token(
        self, client: EtcdConnection,
        call: Callable[[tuple[tuple[str, str], ...]], Awaitable[_T]],
    ) -> _T:
        """``call(metadata)``, repeated once with a new token if etcd rejected the
        first one; gRPC errors mapped to schemacache errors."""
        for attempt in (1, 2):
            metadata = self._metadata()
            try:
                return await call(metadata)
            except grpc.aio.AioRpcError as exc:
                if attempt == 1 and client.token_rejected(exc):
                    await client.renew_token(metadata)
                    continue
                raise await self._map_error(exc) from exc
        raise AssertionError("unreachable")

    async def _read(self, method: str, request: Any) -> Any:
        """A read, retried on transient errors until the call timeout runs out."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout
        delay = READ_BACKOFF_MIN
        while True:
            remaining = deadline - loop.time()
            try:
                return await self._unary(method, request, grpc_timeout=max(remaining, 0.01))
            except RegistryAccessError:
                raise  # refused, not unreachable: asking again changes nothing
            except RegistryUnavailableError:
                if self._closed or loop.time() + delay >= deadline:
                    raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, READ_BACKOFF_MAX)

    async def _map_error(self, exc: grpc.aio.AioRpcError) -> Exception:
        code, details = exc.code(), exc.details() or ""
        if code == grpc.StatusCode.OUT_OF_RANGE and "compacted" in details:
            return CompactedError(0)
        if "request is too large" in details or "too many operations" in details:
            return TooLargeError(f"write too large for one etcd transaction ({details}): "
                                 f"{TXN_LIMITS_HINT}; nothing was written")
        if self._client is not None and code in _EXPLAINED_CODES:
            return await self._client.explain(exc)
        if code in _TRANSIENT_CODES:
            return RegistryUnavailableError(f"etcd {self.url}: {code.name}: {details}")
        return SchemaCacheError(f"etcd {self.url}: {code.name}: {details}")

    # --- keys -------------------------------------------------------------------

    def _skey(self, key: str) -> bytes:
        return self._schema_root + key.encode()

    def _decode(self, kv: Any) -> Resource:
        data = json.loads(kv.value)
        meta = data["metadata"]
        meta["create_revision"] = kv.create_revision
        meta["mod_revision"] = kv.mod_revision
        return Resource.from_stored(data)

    def _key_of(self, kv: Any) -> str:
        return bytes(kv.key[len(self._schema_root):]).decode()

    def _range_op(self, key: bytes, range_end: bytes = b"", limit: int = 0) -> Any:
        return rpc.RequestOp(
            request_range=rpc.RangeRequest(key=key, range_end=range_end, limit=limit)
        )

    def _prefix_op(self, prefix: str, limit: int = 0) -> Any:
        start = self._skey(prefix)
        return self._range_op(start, _prefix_end(start), limit)

    def _unchanged_since(self, prefix: str, revision: int) -> Any:
        """Compare: no key under ``prefix`` was written after ``revision``."""
        start = self._skey(prefix)
        return rpc.Compare(
            result=rpc.Compare.LESS, target=rpc.Compare.MOD, key=start,
            range_end=_prefix_end(start), mod_revision=revision + 1,
        )

    def _mod_is(self, key: str, mod_revision: int) -> Any:
        # An absent key compares as mod_revision 0, so this also means "absent".
        return rpc.Compare(
            result=rpc.Compare.EQUAL, target=rpc.Compare.MOD, key=self._skey(key),
            mod_revision=mod_revision,
        )

    async def _snapshot(self, ops: list[Any]) -> tuple[list[list[Any]], int]:
        """Several ranges read in one transaction: their KeyValues and the revision."""
        resp = await self._read("kvstub.Txn", rpc.TxnRequest(success=ops))
        return [list(r.response_range.kvs) for r in resp.responses], resp.header.revision

    # --- reads --------------------------------------------------------------------

    async def get(self, key: str) -> Resource:
        resp = await self._read("kvstub.Range", rpc.RangeRequest(key=self._skey(key)))
        if not resp.kvs:
            raise NotFoundError(key)
        return self._decode(resp.kvs[0])

    async def list(self, prefix: str = "") -> tuple[list[Resource], int]:
        for _ in range(MAX_TXN_ATTEMPTS):
            try:
                return await self._list_at_one_revision(prefix)
            except CompactedError:
                continue  # compacted between two pages: start again at the newest revision
        raise RegistryUnavailableError(f"listing {prefix!r} kept racing compaction")

    async def _list_at_one_revision(self, prefix: str) -> tuple[_List[Resource], int]:
        start = self._skey(prefix)
        end = _prefix_end(start)
        revision = 0
        items: _List[Resource] = []
        while True:
            resp = await self._read(
                "kvstub.Range",
                rpc.RangeRequest(key=start, range_end=end, limit=LIST_PAGE_SIZE,
                                 revision=revision),
            )
            if revision == 0:
                revision = resp.header.revision
            with gc_paused():
                items.extend(self._decode(kv) for kv in resp.kvs)
            if not resp.more or not resp.kvs:
                return items, revision
            start = bytes(resp.kvs[-1].key) + b"\0"

    async def revision(self) -> int:
        resp = await self._read("kvstub.Range",
                                rpc.RangeRequest(key=self._schema_root, count_only=True))
        return int(resp.header.revision)

    async def revisions(self) -> tuple[int, int | None]:
        resp = await self._read("kvstub.Range", rpc.RangeRequest(key=self._schema_mark))
        schema = int(resp.kvs[0].mod_revision) if resp.kvs else None
        return int(resp.header.revision), schema

    async def check_resume(self, start_revision: int, mark: str | None = None) -> None:
        current = await self.revision()
        if start_revision - 1 > current:
            raise RegistryRewoundError(current, start_revision - 1)
        if start_revision <= current:
            # A read at a compacted revision fails as a watch from it would.
            await self._read("kvstub.Range", rpc.RangeRequest(
                key=self._schema_root, count_only=True, revision=start_revision))

    async def cluster_id(self) -> str:
        resp = await self._read("kvstub.Range",
                                rpc.RangeRequest(key=self._schema_root, count_only=True))
        return f"{resp.header.cluster_id:016x}"

    # --- writes ---------------------------------------------------------------------

    async def put(self, resource: Resource, expected_revision: int | None = None) -> int:
        key = resource.key
        ref_keys = list(dict.fromkeys(ref.key for ref in references(resource)))
        member_prefixes = dependent_candidates_prefixes(key) if resource.kind == "group" else []
        value = resource.with_revisions(0, 0, datetime.now(UTC)).to_json().encode()
        for _ in range(MAX_TXN_ATTEMPTS):
            ops = [self._range_op(self._skey(k)) for k in (key, *ref_keys)]
            ops += [self._prefix_op(p, limit=1) for p in member_prefixes]
            ranges, read_rev = await self._snapshot(ops)
            current_kv = ranges[0][0] if ranges[0] else None
            actual = current_kv.mod_revision if current_kv is not None else 0
            if expected_revision is not None and actual != expected_revision:
                raise ConflictError(key, expected_revision, actual)
            found = {self._key_of(kvs[0]): kvs[0] for kvs in ranges[1:len(ref_keys) + 1] if kvs}
            refs = {k: self._decode(kv) for k, kv in found.items()}
            check_references(resource, refs.get)
            current = self._decode(current_kv) if current_kv is not None else None
            members = [self._decode(kvs[0]) for kvs in ranges[len(ref_keys) + 1:] if kvs]
            check_group_update(resource, current, members.copy)
            compares = [self._mod_is(key, actual)]
            compares += [self._mod_is(k, kv.mod_revision) for k, kv in found.items()]
            if current is not None and current.spec.get("catalog") != resource.spec.get(
                "catalog"
            ):
                compares += [self._unchanged_since(p, read_rev) for p in member_prefixes]
            resp = await self._write_txn(
                compares,
                [rpc.RequestOp(request_put=rpc.PutRequest(key=self._skey(key), value=value))],
                [self._range_op(self._skey(key))],
            )
            if resp.succeeded:
                return int(resp.header.revision)
            self._raise_if_cas_lost(key, expected_revision, resp)
        raise RegistryUnavailableError(f"put {key}: too much contention, gave up")

    async def apply(self, resources: Sequence[Resource]) -> _List[ApplyResult]:
        resources = list(resources)
        for _ in range(MAX_TXN_ATTEMPTS):
            snapshot, read_rev = await self._apply_snapshot(resources)
            members = await self._catalog_members(resources, snapshot, read_rev)
            steps = plan_apply(resources, snapshot.get, functools.partial(_members_of, members))
            writes = [s for s in steps if s.changed]
            if not writes:
                return [ApplyResult(s.resource.key, "unchanged", s.current_revision)
                        for s in steps]
            resp = await self._write_txn(
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
        self, resources: _List[Resource]
    ) -> tuple[dict[str, Resource], int]:
        """The manifest's keys and the keys they reference, as of one revision."""
        keys = {r.key for r in resources}
        keys |= {ref.key for r in resources for ref in references(r)}
        if len(keys) <= POINT_READS_PER_TXN:
            ranges, read_rev = await self._snapshot([self._range_op(self._skey(k)) for k in keys])
            kvs = [kv for found in ranges for kv in found]
        else:
            prefixes = sorted({k.rsplit("/", 1)[0] + "/" for k in keys})
            kvs, read_rev = await self._read_prefixes(prefixes)
        found = {self._key_of(kv): self._decode(kv) for kv in kvs}
        return {k: r for k, r in found.items() if k in keys}, read_rev

    async def _read_prefixes(self, prefixes: _List[str]) -> tuple[_List[Any], int]:
        """Every KeyValue under ``prefixes``, all read at one revision."""
        revision = 0
        kvs: _List[Any] = []
        for prefix in prefixes:
            start = self._skey(prefix)
            end = _prefix_end(start)
            while True:
                resp = await self._read("kvstub.Range", rpc.RangeRequest(
                    key=start, range_end=end, limit=LIST_PAGE_SIZE, revision=revision))
                revision = revision or int(resp.header.revision)
                kvs.extend(resp.kvs)
                if not resp.more or not resp.kvs:
                    break
                start = bytes(resp.kvs[-1].key) + b"\0"
        return kvs, revision

    async def _catalog_members(
        self, resources: _List[Resource], snapshot: dict[str, Resource], read_rev: int
    ) -> dict[str, _List[Resource]]:
        """For each group whose catalog the apply changes: one member, if any, at ``read_rev``."""
        members: dict[str, _List[Resource]] = {}
        for group in self._catalog_changes(resources, snapshot):
            found: _List[Resource] = []
            for prefix in dependent_candidates_prefixes(group.key):
                start = self._skey(prefix)
                resp = await self._read("kvstub.Range", rpc.RangeRequest(
                    key=start, range_end=_prefix_end(start), limit=1, revision=read_rev))
                found += [self._decode(kv) for kv in resp.kvs]
            members[group.key] = found
        return members

    @staticmethod
    def _catalog_changes(
        resources: _List[Resource], snapshot: dict[str, Resource]
    ) -> _List[Resource]:
        return [r for r in resources if r.kind == "group" and r.key in snapshot
                and snapshot[r.key].spec.get("catalog") != r.spec.get("catalog")]

    def _apply_compares(
        self, resources: _List[Resource], writes: _List[Any], snapshot: dict[str, Resource],
        members: dict[str, _List[Resource]], read_rev: int,
    ) -> _List[Any]:
        """What the apply was decided on: written keys, referenced keys, and the
        member prefixes of groups whose catalog changes."""
        written = {s.resource.key for s in writes}
        compares = [self._mod_is(s.resource.key, s.current.mod_revision if s.current else 0)
                    for s in writes]
        referenced = {ref.key for s in writes for ref in references(s.resource)} - written
        compares += [self._mod_is(k, snapshot[k].mod_revision)
                     for k in sorted(referenced) if k in snapshot]
        for group_key in members:
            compares += [self._unchanged_since(p, read_rev)
                         for p in dependent_candidates_prefixes(group_key)]
        return compares

    def _put_op(self, resource: Resource) -> Any:
        value = resource.with_revisions(0, 0, datetime.now(UTC)).to_json().encode()
        return rpc.RequestOp(request_put=rpc.PutRequest(key=self._skey(resource.key),
                                                        value=value))

    async def delete(
        self, key: str, expected_revision: int | None = None, cascade: bool = False
    ) -> int:
        if cascade:
            return await self._cascade_delete(key, expected_revision)
        return await self._delete_one(key, expected_revision)

    async def _cascade_delete(self, key: str, expected: int | None) -> int:
        """``key`` and everything depending on it, deleted in one transaction that
        also proves no dependent appeared or changed since they were read."""
        prefixes = candidate_prefixes_closure(key)
        for _ in range(MAX_TXN_ATTEMPTS):
            ranges, read_rev = await self._snapshot(
                [self._range_op(self._skey(key))] + [self._prefix_op(p) for p in prefixes]
            )
            current = self._current_or_raise(key, ranges[0], expected)
            plan = cascade_plan(key, (self._decode(kv) for kvs in ranges[1:] for kv in kvs))
            compares = [self._mod_is(key, current.mod_revision)]
            compares += [self._unchanged_since(p, read_rev) for p in prefixes]
            deletes = [rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(
                key=self._skey(k))) for k in [*(d.key for d in plan), key]]
            resp = await self._write_txn(compares, deletes, [self._range_op(self._skey(key))])
            if resp.succeeded:
                return int(resp.header.revision)
            self._raise_if_cas_lost(key, expected, resp)
        raise RegistryUnavailableError(f"delete {key}: too much contention, gave up")

    def _current_or_raise(self, key: str, kvs: _List[Any], expected: int | None) -> Resource:
        if not kvs:
            if expected is None:
                raise NotFoundError(key)
            raise ConflictError(key, expected, 0)
        current = self._decode(kvs[0])
        if expected is not None and current.mod_revision != expected:
            raise ConflictError(key, expected, current.mod_revision)
        return current

    async def _delete_one(self, key: str, expected: int | None) -> int:
        """Delete one key in a transaction that also proves no new dependent appeared."""
        prefixes = dependent_candidates_prefixes(key)
        for _ in range(MAX_TXN_ATTEMPTS):
            ranges, read_rev = await self._snapshot(
                [self._range_op(self._skey(key))] + [self._prefix_op(p) for p in prefixes]
            )
            current = self._current_or_raise(key, ranges[0], expected)
            refuse_if_referenced(key, (self._decode(kv) for kvs in ranges[1:] for kv in kvs))
            compares = [self._mod_is(key, current.mod_revision)]
            compares += [self._unchanged_since(p, read_rev) for p in prefixes]
            resp = await self._write_txn(
                compares,
                [rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=self._skey(key)))],
                [self._range_op(self._skey(key))],
            )
            if resp.succeeded:
                return int(resp.header.revision)
            self._raise_if_cas_lost(key, expected, resp)
        raise RegistryUnavailableError(f"delete {key}: too much contention, gave up")

    async def _write_txn(
        self, compares: _List[Any], success: _List[Any], failure: _List[Any]
    ) -> Any:
        mark = rpc.RequestOp(request_put=rpc.PutRequest(key=self._schema_mark))
        return await self._unary(
            "kvstub.Txn",
            rpc.TxnRequest(compare=compares, success=[*success, mark], failure=failure),
        )

    @staticmethod
    def _raise_if_cas_lost(key: str, expected: int | None, resp: Any) -> None:
        """After a failed write txn: ConflictError if the key itself moved away from
        ``expected``; otherwise (a reference or dependent changed) the caller retries."""
        if expected is None:
            return
        kvs = resp.responses[0].response_range.kvs
        actual = kvs[0].mod_revision if kvs else 0
        if actual != expected:
            raise ConflictError(key, expected, actual)

    async def compact(self, revision: int) -> None:
        revision = min(revision, await self.revision())
        if revision <= 0:
            return
        try:
            await self._unary(
                "kvstub.Compact", rpc.CompactionRequest(revision=revision, physical=True)
            )
        except CompactedError:
            pass  # already compacted at or past this revision
        except RegistryPermissionError as exc:
            raise RegistryPermissionError(
                f"etcd {self.url}: permission denied to compact: compaction acts on the "
                f"whole cluster, not one prefix; it needs the root role ({exc})") from None

    # --- changes ----------------------------------------------------------------------

    def watch(
        self, prefix: str = "", start_revision: int | None = None
    ) -> AsyncIterator[Event]:
        return self._watch(prefix, start_revision, progress=False)  # type: ignore[return-value]

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
        return self._watch(prefix, start_revision, progress=True)

    async def _watch(
        self, prefix: str, start_revision: int | None, progress: bool
    ) -> AsyncIterator[Event | WatchProgress]:
        next_rev = await self.revision() + 1 if start_revision is None else start_revision
        start = self._skey(prefix)
        end = _prefix_end(start)
        delay = WATCH_BACKOFF_MIN
        # A watch refused right after its token was renewed is refused for good
        # reason; one refused after a watch had run is an expired token.
        renewed = False
        created: _List[bool] = []  # set by the stream once etcd accepted the watch
        while not self._closed:
            if created:
                renewed = False
            created.clear()
            try:
                async for item in self._watch_stream(start, end, next_rev, progress,
                                                     created):
                    if isinstance(item, WatchProgress):
                        yield item
                        next_rev = item.revision + 1
                        continue
                    for event in item:
                        yield event
                    next_rev = item[-1].revision + 1
                    delay = WATCH_BACKOFF_MIN
            except _WatchDenied as exc:
                client = await self._connect()
                if (renewed and not created) or self._access.user is None:
                    raise client.permission_error(str(exc), f"watch {prefix!r}") from None
                await client.renew_token(exc.metadata)  # then watch again at once
                renewed = True
                continue
            except RegistryAccessError:
                raise  # the caller must hear of it: re-watching will not fix it
            except (grpc.aio.AioRpcError, _WatchBroken, RegistryUnavailableError):
                if self._closed:
                    return
            except asyncio.CancelledError:
                if self._closed:
                    return  # close() cancelled the stream under us
                raise
            if self._closed:
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, WATCH_BACKOFF_MAX)

    async def _watch_stream(
        self, start: bytes, end: bytes, start_revision: int, progress: bool,
        created: _List[bool],
    ) -> AsyncIterator[_List[Event] | WatchProgress]:
        """One etcd watch stream from ``start_revision``; yields each response's
        events, and with ``progress`` its progress notifications.  Appends to
        ``created`` once etcd has accepted the watch."""
        client = await self._connect()
        done = asyncio.Event()
        create = rpc.WatchRequest(
            create_request=rpc.WatchCreateRequest(
                key=start, range_end=end, start_revision=start_revision, prev_kv=True,
                progress_notify=progress,
            )
        )

        async def requests() -> AsyncIterator[Any]:
            yield create
            await done.wait()  # keep the request side open for the stream's lifetime

        token = self._metadata()
        call = client.watchstub.Watch(
            requests(), metadata=(*token, _REQUIRE_LEADER), wait_for_ready=True
        )
        self._watch_calls.add(call)
        watch_id: int | None = None
        try:
            async for resp in call:
                if resp.compact_revision:
                    raise CompactedError(resp.compact_revision, start_revision)
                if resp.canceled:
                    reason = resp.cancel_reason or "watch cancelled by the server"
                    if "permission denied" in reason or client.token_rejected(reason):
                        raise _WatchDenied(reason, token)
                    raise _WatchBroken(reason)
                if resp.created:
                    # The creation answer's revision says nothing about events.
                    watch_id = resp.watch_id
                    created.append(True)
                elif resp.events:
                    yield [self._event(ev) for ev in resp.events]
                elif (progress and resp.watch_id == watch_id
                      and resp.header.revision >= start_revision):
                    # Addressed to this watcher (not a stream-wide -1 answer),
                    # so it came through the watcher's ordered channel.
                    yield WatchProgress(int(resp.header.revision))
            raise _WatchBroken("watch stream ended")
        finally:
            done.set()
            self._watch_calls.discard(call)
            call.cancel()

    def _event(self, ev: Any) -> Event:
        key = self._key_of(ev.kv)
        if ev.type == _DELETE_EVENT:
            resource = self._decode(ev.prev_kv) if ev.prev_kv.key else _bare_resource(key)
            return Event(type=EventType.DELETE, key=key, revision=ev.kv.mod_revision,
                         resource=resource)
        return Event(type=EventType.PUT, key=key, revision=ev.kv.mod_revision,
                     resource=self._decode(ev.kv))

    # --- node registrations ---------------------------------------------------------

    async def register_node(
        self, name: str, admin_url: str, ttl: float = DEFAULT_NODE_TTL
    ) -> NodeLease:
        info = NodeInfo(name=name, admin_url=admin_url)
        key = self._nodes_root + name.encode()
        value = json.dumps(info.to_dict()).encode()
        lease_ttl = max(1, math.ceil(ttl))
        lease_id = [0]

        async def grant_and_put() -> None:
            grant = await self._unary("leasestub.LeaseGrant", rpc.LeaseGrantRequest(TTL=lease_ttl))
            lease_id[0] = grant.ID
            await self._unary("kvstub.Put", rpc.PutRequest(key=key, value=value, lease=grant.ID))

        async def refresh() -> None:
            if await self._keepalive(lease_id[0]) <= 0:
                await grant_and_put()  # the lease expired: register again

        async def revoke() -> None:
            try:
                await self._unary("leasestub.LeaseRevoke", rpc.LeaseRevokeRequest(ID=lease_id[0]))
            except RegistryUnavailableError:
                raise
            except SchemaCacheError:
                pass  # the lease had already expired: nothing left to remove

        await grant_and_put()
        return NodeLease(info=info, ttl=ttl, refresh=refresh, revoke=revoke)

    async def _keepalive(self, lease_id: int) -> int:
        """Renew a lease once; its remaining TTL (``<= 0`` when it has expired)."""
        client = await self._connect()

        async def read_once(metadata: tuple[tuple[str, str], ...]) -> Any:
            call = client.leasestub.LeaseKeepAlive(
                iter([rpc.LeaseKeepAliveRequest(ID=lease_id)]),
                timeout=self._timeout, metadata=metadata, wait_for_ready=True,
            )
            try:
                return await call.read()
            finally:
                call.cancel()

        reply = await self._with_token(client, read_once)
        if reply is grpc.aio.EOF:
            return 0
        return int(reply.TTL)

    async def list_nodes(self) -> _List[NodeInfo]:
        resp = await self._read(
            "kvstub.Range",
            rpc.RangeRequest(key=self._nodes_root, range_end=_prefix_end(self._nodes_root)),
        )
        nodes = [json.loads(kv.value) for kv in resp.kvs]
        return sorted((NodeInfo(name=n["name"], admin_url=n["admin_url"]) for n in nodes),
                      key=lambda n: n.name)

    # --- lifecycle ----------------------------------------------------------------------

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for call in list(self._watch_calls):
            call.cancel()
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                await client.close()


# ------------------------------------------------------------------------- helpers


def _members_of(members: dict[str, list[Resource]], group_key: str) -> list[Resource]:
    return members.get(group_key, [])


def _prefix_end(prefix: bytes) -> bytes:
    """The etcd ``range_end`` covering every key that starts with ``prefix``."""
    end = bytearray(prefix)
    for i in reversed(range(len(end))):
        if end[i] < 0xFF:
            end[i] += 1
            return bytes(end[: i + 1])
    return b"\0"


def _bare_resource(key: str) -> Resource:
    """A stand-in for a deleted resource whose last version was compacted away."""
    kind, group, name = parse_key(key)
    return Resource.from_stored({"kind": kind, "metadata": {"group": group, "name": name}})
