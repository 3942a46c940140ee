"""The request-size limit of the registry API, as ASGI middleware.

A body over the limit is answered 413 before any of it reaches a route; up to
:data:`DRAIN_LIMIT` bytes of it are read and dropped first, so the client sees
the answer rather than a reset connection.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from .errors import error_response

DEFAULT_MAX_BODY = 1024 * 1024
"""Largest request body accepted, in bytes (1 MiB)."""

DEFAULT_MAX_APPLY_BODY = 256 * 1024 * 1024
"""Largest ``POST /v1/apply`` body, in bytes (256 MiB: a manifest of a few
hundred thousand resources, applied all or nothing in one request)."""

APPLY_PATH = "/v1/apply"
"""The one route allowed :data:`DEFAULT_MAX_APPLY_BODY`."""

DRAIN_LIMIT = 64 * 1024 * 1024
"""Bytes of an oversized body read and dropped before answering 413 (then the
connection is closed)."""

_Scope = MutableMapping[str, Any]
_Message = MutableMapping[str, Any]
_Receive = Callable[[], Awaitable[_Message]]
_Send = Callable[[_Message], Awaitable[None]]


class BodyLimit:
    """Refuse bodies over ``max_body`` bytes (declared or actually streamed) with 413.

    The body is buffered (it is at most ``max_body`` bytes) and replayed to the
    app, so an oversized chunked upload is refused before any handler runs.
    ``POST /v1/apply`` has a limit of its own, ``max_apply_body``.
    """

    def __init__(self, app: Callable[[_Scope, _Receive, _Send], Awaitable[None]], max_body: int,
                 max_apply_body: int = DEFAULT_MAX_APPLY_BODY):
        self.app = app
        self.max_body = max_body
        self.max_apply_body = max_apply_body

    async def __call__(self, scope: _Scope, receive: _Receive, send: _Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_apply_body if scope.get("path") == APPLY_PATH else self.max_body
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            if not (declared.isdigit() and len(declared) <= 19):
                await error_response(400, "malformed", "bad Content-Length",
                                      "Content-Length")(scope, receive, send)
                return
            if int(declared) > limit:
                await self._refuse(scope, receive, send, limit)
                return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                # the client went away; let the app see the disconnect
                await self.app(scope, _replay([message], receive), send)
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await self._refuse(scope, receive, send, limit)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        await self.app(scope, _replay([body], receive), send)

    async def _refuse(self, scope: _Scope, receive: _Receive, send: _Send, limit: int) -> None:
        # Read (and drop) what the client is still sending: closing on unread data
        # resets the connection and the client never sees the 413.
        drained = 0
        while drained <= DRAIN_LIMIT:
            message = await receive()
            if message["type"] != "http.request":
                break
            drained += len(message.get("body", b""))
            if not message.get("more_body", False):
                break
        response = error_response(
            413, "too_large", f"request body over the limit of {limit} bytes",
            headers={"Connection": "close"},
        )
        await response(scope, receive, send)


def _replay(messages: list[_Message], receive: _Receive) -> _Receive:
    pending = list(messages)

    async def _receive() -> _Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return _receive
