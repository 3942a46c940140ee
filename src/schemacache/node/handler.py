"""Handlers: what a node calls to act on a schema change.

A handler is any object with ``apply(resource)`` and ``delete(resource)``,
coroutine functions or plain ones (plain ones run in a worker thread so they
cannot stall the event loop).
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import types
from collections.abc import Awaitable, Callable, Coroutine, Generator, Sequence
from typing import Any, Protocol, runtime_checkable

from ..model import Resource


@runtime_checkable
class Handler(Protocol):
    """Acts on schema changes; must be idempotent (calls are at-least-once)."""

    def apply(self, resource: Resource) -> Any:
        """Create or update ``resource`` (may be ``async``)."""
        ...

    def delete(self, resource: Resource) -> Any:
        """Remove ``resource`` (its last version; may be ``async``)."""
        ...


def load_handler(spec: str) -> Handler:
    """Load ``module:attribute``; a class or factory is called with no arguments.

    :raises ValueError: on a malformed spec or an object that is no handler.
    """
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"bad handler {spec!r}: expected module:attribute")
    module = importlib.import_module(module_name)
    obj: Any = module
    for part in attr.split("."):
        obj = getattr(obj, part)
    if inspect.isclass(obj) or (callable(obj) and not _is_handler(obj)):
        obj = obj()
    if not _is_handler(obj):
        raise ValueError(f"handler {spec!r} has no apply(resource) and delete(resource)")
    return obj  # type: ignore[no-any-return]


def _is_handler(obj: Any) -> bool:
    return callable(getattr(obj, "apply", None)) and callable(getattr(obj, "delete", None))


class HandlerCaller:
    """Calls one handler operation with a timeout, async or in a thread.

    :param handler: the handler (``None`` = no handler: every call succeeds at once).
    :param timeout: seconds a call may take before it counts as failed.
    """

    def __init__(self, handler: Handler | None, timeout: float):
        self.handler = handler
        self.timeout = timeout
        self._fns: dict[str, tuple[Callable[[Resource], Any], bool]] = {}
        if handler is not None:
            for op in ("apply", "delete"):
                fn = getattr(handler, op)
                self._fns[op] = (fn, inspect.iscoroutinefunction(fn))

    @property
    def active(self) -> bool:
        return self.handler is not None

    def start(self, op: str, resource: Resource) -> Awaitable[None] | None:
        """Start ``op`` (``apply`` or ``delete``) and run it as far as it goes
        without waiting: ``None`` when it finished (raising what the handler
        raised), else an awaitable that finishes it (raising what the handler
        raised, or :class:`TimeoutError`).

        Most calls of an ``async`` handler finish without ever waiting (a cache
        update, a no-op), and a timer per call then costs more than the call:
        the coroutine's first step runs here, and only one that suspends is
        resumed under the timeout (a step that never yields cannot be
        interrupted by a timer anyway).  A catching-up node calls this tens of
        thousands of times a second, so a call that finishes at once costs no
        coroutine of its own.
        """
        entry = self._fns.get(op)
        if entry is None:
            return None
        fn, is_async = entry
        if not is_async:
            return self._in_thread(fn, resource)
        coro = fn(resource)
        if type(coro) is not types.CoroutineType:
            return self._under_timeout(coro)  # a non-coroutine awaitable
        try:
            first = coro.send(None)
        except StopIteration:
            return None
        return self._under_timeout(_resume(coro, first))

    async def call(self, op: str, resource: Resource) -> None:
        """Run ``op`` to its end (see :meth:`start`)."""
        pending = self.start(op, resource)
        if pending is not None:
            await pending

    async def _under_timeout(self, awaitable: Awaitable[Any]) -> None:
        # asyncio.timeout, unlike wait_for, needs no extra task per call.
        async with asyncio.timeout(self.timeout):
            await awaitable

    async def _in_thread(self, fn: Callable[[Resource], Any], resource: Resource) -> None:
        async with asyncio.timeout(self.timeout):
            result = await asyncio.to_thread(fn, resource)
            if inspect.isawaitable(result):  # a plain function that returned a coroutine
                await result

    async def replay(self, applies: Sequence[Resource],
                     deletes: Sequence[Resource] = ()) -> dict[str, BaseException]:
        """Apply ``applies``, then delete ``deletes``, in the order given (state
        rebuild after a restart); returns the errors by key.  A plain handler
        gets the whole work in one thread.

        :param applies: resources to apply.
        :param deletes: resources to delete (default none).
        """
        errors: dict[str, BaseException] = {}
        work = [("apply", r) for r in applies] + [("delete", r) for r in deletes]
        if not self._fns or not work:
            return errors
        if any(is_async for _, is_async in self._fns.values()):
            for op, r in work:
                try:
                    await self.call(op, r)
                except Exception as exc:
                    errors[r.key] = exc
            return errors

        def run_all() -> None:
            for op, r in work:
                try:
                    self._fns[op][0](r)
                except Exception as exc:
                    errors[r.key] = exc

        await asyncio.to_thread(run_all)
        return errors


@types.coroutine
def _resume(coro: Coroutine[Any, Any, Any], first: Any) -> Generator[Any, Any, Any]:
    """Go on driving ``coro`` after its first step yielded ``first`` (what
    ``yield from`` does, for a coroutine that is already running)."""
    value = first
    while True:
        try:
            sent = yield value
        except GeneratorExit:
            coro.close()
            raise
        except BaseException as exc:  # cancellation (the timeout) goes to the handler
            try:
                value = coro.throw(exc)
            except StopIteration as stop:
                return stop.value
        else:
            try:
                value = coro.send(sent)
            except StopIteration as stop:
                return stop.value
