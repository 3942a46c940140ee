"""How the etcd registry watches its schema keys.

One etcd watch stream per subscription, with ``prev_kv`` (a delete's event
names the version it removed) and ``hasleader`` metadata (a member that lost
its leader cancels the watch instead of going silent).  After a connection
error, a member's death or a server-side cancel, the watch subscribes again
from the last revision it yielded + 1, so no event is lost or repeated; a
compacted start revision raises :class:`CompactedError`.  A watch refused for
an expired token is created again with a new token; one refused again right
after, or refused without a user, raises a permission error.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from aetcd import rpc

from ..errors import CompactedError, RegistryAccessError, RegistryUnavailableError
from ..model import Event, EventType
from .base import WatchProgress
from .etcd_calls import EtcdCalls, Metadata
from .etcd_keys import EtcdKeys, bare_resource, prefix_end

__all__ = ["WATCH_BACKOFF_MAX", "WATCH_BACKOFF_MIN", "EtcdWatch"]

WATCH_BACKOFF_MIN = 0.05
"""First delay (seconds) before re-subscribing a broken watch."""
WATCH_BACKOFF_MAX = 2.0
"""Longest delay (seconds) between watch re-subscriptions."""

# etcd cancels a watch on a member that lost its leader only if asked to.
_REQUIRE_LEADER = ("hasleader", "true")
_DELETE_EVENT = 1


class _WatchBroken(Exception):
    """The server cancelled a watch for a reason worth re-subscribing after."""


class _WatchDenied(Exception):
    """The server refused to create a watch: no permission, or an expired token
    (etcd 3.5 reports both as "permission denied").

    :param reason: the server's cancel reason.
    :param metadata: the auth metadata the watch was created with.
    """

    def __init__(self, reason: str, metadata: Metadata):
        super().__init__(reason)
        self.metadata = metadata


class EtcdWatch:
    """Watches of one registry's schema keys.

    :param calls: the registry's calls to etcd (its open streams are closed with it).
    :param keys: the registry's key layout.
    :param revision: the registry's current revision (where a watch without a
        start revision starts, + 1).
    """

    def __init__(
        self, calls: EtcdCalls, keys: EtcdKeys, revision: Callable[[], Awaitable[int]]
    ) -> None:
        self._calls = calls
        self._keys = keys
        self._revision = revision

    async def watch(
        self, prefix: str, start_revision: int | None, progress: bool
    ) -> AsyncIterator[Event | WatchProgress]:
        """The events under ``prefix`` from ``start_revision`` (``None``: from now),
        and with ``progress`` etcd's progress notifications, until the registry closes."""
        async with contextlib.aclosing(self.batches(prefix, start_revision, progress)) as items:
            async for item in items:
                if isinstance(item, WatchProgress):
                    yield item
                else:
                    for event in item:
                        yield event

    async def batches(
        self, prefix: str, start_revision: int | None, progress: bool
    ) -> AsyncGenerator[list[Event] | WatchProgress, None]:
        """As :meth:`watch`, the events of each etcd watch response in one list."""
        calls = self._calls
        next_rev = await self._revision() + 1 if start_revision is None else start_revision
        start = self._keys.schema_key(prefix)
        end = prefix_end(start)
        delay = WATCH_BACKOFF_MIN
        # A watch refused right after its token was renewed is refused for good
        # reason; one refused after a watch had run is an expired token.
        renewed = False
        created: list[bool] = []  # set by the stream once etcd accepted the watch
        while not calls.closed:
            if created:
                renewed = False
            created.clear()
            try:
                async for item in self._stream(start, end, next_rev, progress, created):
                    if isinstance(item, WatchProgress):
                        yield item
                        next_rev = item.revision + 1
                        continue
                    yield item
                    next_rev = item[-1].revision + 1
                    delay = WATCH_BACKOFF_MIN
            except _WatchDenied as exc:
                client = await calls.connect()
                if (renewed and not created) or calls.access.user is None:
                    raise client.permission_error(str(exc), f"watch {prefix!r}") from None
                await client.renew_token(exc.metadata)  # then watch again at once
                renewed = True
                continue
            except RegistryAccessError:
                raise  # the caller must hear of it: re-watching will not fix it
            except (grpc.aio.AioRpcError, _WatchBroken, RegistryUnavailableError):
                if calls.closed:
                    return
            except asyncio.CancelledError:
                if calls.closed:
                    return  # close() cancelled the stream under us
                raise
            if calls.closed:
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, WATCH_BACKOFF_MAX)

    async def _stream(
        self, start: bytes, end: bytes, start_revision: int, progress: bool,
        created: list[bool],
    ) -> AsyncIterator[list[Event] | WatchProgress]:
        """One etcd watch stream from ``start_revision``; yields each response's
        events, and with ``progress`` its progress notifications.  Appends to
        ``created`` once etcd has accepted the watch."""
        client = await self._calls.connect()
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

        token = self._calls.metadata()
        call = client.watchstub.Watch(
            requests(), metadata=(*token, _REQUIRE_LEADER), wait_for_ready=True
        )
        self._calls.streams.add(call)
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
            self._calls.streams.discard(call)
            call.cancel()

    def _event(self, ev: Any) -> Event:
        keys = self._keys
        key = keys.key_of(ev.kv)
        if ev.type == _DELETE_EVENT:
            resource = keys.decode(ev.prev_kv) if ev.prev_kv.key else bare_resource(key)
            return Event(type=EventType.DELETE, key=key, revision=ev.kv.mod_revision,
                         resource=resource)
        return Event(type=EventType.PUT, key=key, revision=ev.kv.mod_revision,
                     resource=keys.decode(ev.kv))
