"""How the etcd registry calls etcd: one connection per event loop, calls with
their errors mapped to schemacache's, reads retried, writes never.

All endpoints form one gRPC target (``ipv4:h1:p1,h2:p2,…``); gRPC's pick-first
policy talks to the first reachable member and moves to the next when it
dies.  Reads are retried within the call timeout; a write whose outcome is
unknown raises :class:`RegistryUnavailableError` instead, since a blind retry
could apply it twice.  A call whose auth token expired is repeated once with a
new token.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc

from ..errors import (
    CompactedError,
    RegistryAccessError,
    RegistryUnavailableError,
    SchemaCacheError,
    TooLargeError,
)
from .etcd_conn import EtcdAccess, EtcdConnection

__all__ = ["DEFAULT_CALL_TIMEOUT", "EtcdCalls", "Metadata"]

DEFAULT_CALL_TIMEOUT = 5.0
"""Seconds one registry call may take (reads include their retries)."""
MAX_MESSAGE_BYTES = 256 * 1024 * 1024
"""Largest gRPC message accepted; a page of big resources can exceed gRPC's 4 MiB."""
TXN_LIMITS_HINT = ("etcd takes at most --max-txn-ops operations (default 128) and "
                   "--max-request-bytes (default 1.5 MiB) per transaction; raise those "
                   "limits on every member, or write in smaller parts")
"""What a refused, too large transaction's error tells the user to do."""
READ_BACKOFF_MIN = 0.05
"""First delay (seconds) before retrying a read that found no member."""
READ_BACKOFF_MAX = 0.5
"""Longest delay (seconds) between two tries of a read."""

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

_T = TypeVar("_T")
Metadata = tuple[tuple[str, str], ...]
"""gRPC call metadata (the auth token, when there is a user)."""


class EtcdCalls:
    """The calls of one registry to its etcd cluster.

    :param access: endpoints, prefix, TLS and credentials.
    :param timeout: seconds per call (default :data:`DEFAULT_CALL_TIMEOUT`).
    """

    def __init__(self, access: EtcdAccess, timeout: float = DEFAULT_CALL_TIMEOUT) -> None:
        self.access = access
        self.url = access.url
        self.timeout = timeout
        self.client: EtcdConnection | None = None
        self.closed = False
        self.streams: set[Any] = set()
        """Open streaming calls (watches), cancelled by :meth:`close`."""
        self._client_loop: asyncio.AbstractEventLoop | None = None
        self._connect_lock = asyncio.Lock()

    async def connect(self) -> EtcdConnection:
        """The connection of the running event loop, opened on first use."""
        if self.closed:
            raise RegistryUnavailableError("registry is closed")
        loop = asyncio.get_running_loop()
        if self.client is not None and self._client_loop is not loop:
            # A gRPC channel serves the event loop it was made on; that one has
            # ended (``asyncio.run`` called again): connect afresh on this one.
            self.client = None
            self._connect_lock = asyncio.Lock()
        if self.client is not None:
            return self.client
        async with self._connect_lock:
            if self.client is None:
                client = EtcdConnection(self.access, self.timeout, _CHANNEL_OPTIONS)
                await client.open()
                self.client = client
                self._client_loop = loop
        return self.client

    def metadata(self) -> Metadata:
        """The metadata every call sends: the current auth token, if any."""
        return self.client.metadata if self.client is not None else ()

    async def unary(self, method: str, request: Any, grpc_timeout: float | None = None) -> Any:
        """One unary call on the KV/Lease stubs; errors mapped to schemacache errors.

        :param method: ``stub.Rpc``, e.g. ``kvstub.Txn``.
        :param request: the request message.
        :param grpc_timeout: seconds the call may take (default: the call timeout).
        """
        client = await self.connect()
        stub_name, _, rpc_name = method.partition(".")
        call = getattr(getattr(client, stub_name), rpc_name)
        timeout = self.timeout if grpc_timeout is None else grpc_timeout
        return await self.with_token(client, lambda metadata: call(
            request, timeout=timeout, metadata=metadata, wait_for_ready=True))

    async def with_token(
        self, client: EtcdConnection, call: Callable[[Metadata], Awaitable[_T]]
    ) -> _T:
        """``call(metadata)``, repeated once with a new token if etcd rejected the
        first one; gRPC errors mapped to schemacache errors."""
        for attempt in (1, 2):
            metadata = self.metadata()
            try:
                return await call(metadata)
            except grpc.aio.AioRpcError as exc:
                if attempt == 1 and client.token_rejected(exc):
                    await client.renew_token(metadata)
                    continue
                raise await self._map_error(exc) from exc
        raise AssertionError("unreachable")

    async def read(self, method: str, request: Any) -> Any:
        """A read (see :meth:`unary`), retried on transient errors until the call
        timeout runs out."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        delay = READ_BACKOFF_MIN
        while True:
            remaining = deadline - loop.time()
            try:
                return await self.unary(method, request, grpc_timeout=max(remaining, 0.01))
            except RegistryAccessError:
                raise  # refused, not unreachable: asking again changes nothing
            except RegistryUnavailableError:
                if self.closed or loop.time() + delay >= deadline:
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
        if self.client is not None and code in _EXPLAINED_CODES:
            return await self.client.explain(exc)
        if code in _TRANSIENT_CODES:
            return RegistryUnavailableError(f"etcd {self.url}: {code.name}: {details}")
        return SchemaCacheError(f"etcd {self.url}: {code.name}: {details}")

    async def close(self) -> None:
        """Refuse further calls, cancel open streams and close the connection."""
        if self.closed:
            return
        self.closed = True
        for call in list(self.streams):
            call.cancel()
        client, self.client = self.client, None
        if client is not None:
            with contextlib.suppress(Exception):
                await client.close()
