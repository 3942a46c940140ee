"""Dependency parking: keys that wait for other keys, and who references whom.

A measure waits for its group before it is applied; a group waits for the
measures on it before it is deleted.  A waiting key is *parked* (it burns no
attempts) and woken when a key it waits for is done.  The dependents index
maps each key to the applied keys that reference it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from prometheus_client import Gauge

from .queue import PRIO_LIVE


class Dependencies:
    """Parked keys, their waiters, and the dependents index.

    :param blocked_gauge: gauge set to the number of parked keys.
    """

    def __init__(self, blocked_gauge: Gauge):
        self._gauge = blocked_gauge
        self._parked: dict[str, tuple[list[str], int]] = {}
        self._waiters: dict[str, set[str]] = {}
        self.awaited = self._waiters.keys()
        """Keys some parked key waits for (a live view, for checks made once
        per settled key)."""
        self._dependents: dict[str, set[str]] = {}

    # --- parking ------------------------------------------------------------

    def park(self, key: str, blockers: list[str], prio: int) -> None:
        """``key`` waits for ``blockers``; it goes back to the queue at ``prio``."""
        self.unpark(key)
        self._parked[key] = (blockers, prio)
        for b in blockers:
            self._waiters.setdefault(b, set()).add(key)
        self._gauge.set(len(self._parked))

    def unpark(self, key: str) -> None:
        """``key`` waits for nothing any more."""
        entry = self._parked.pop(key, None)
        if entry is None:
            return
        for b in entry[0]:
            waiting = self._waiters.get(b)
            if waiting is not None:
                waiting.discard(key)
                if not waiting:
                    del self._waiters[b]
        self._gauge.set(len(self._parked))

    def blockers(self, key: str) -> list[str] | None:
        """What a parked ``key`` waits for; ``None`` if it is not parked."""
        entry = self._parked.get(key)
        return entry[0] if entry is not None else None

    def waiters(self, key: str) -> list[tuple[str, int]]:
        """Keys parked behind ``key``, with the priority each goes back at."""
        waiting = self._waiters.get(key)
        if not waiting:
            return []  # the common case: once per settled key
        woken = []
        for waiter in list(waiting):
            entry = self._parked.get(waiter)
            woken.append((waiter, entry[1] if entry else PRIO_LIVE))
        return woken

    def is_parked(self, key: str) -> bool:
        return key in self._parked

    def parked_keys(self) -> set[str]:
        return set(self._parked)

    def blocked(self) -> list[dict[str, Any]]:
        """Parked keys and what they wait for, by key."""
        return [{"key": k, "blocked_by": list(v[0])} for k, v in sorted(self._parked.items())]

    # --- dependents index -----------------------------------------------------

    def index(self, key: str, old_prerequisites: Iterable[str],
              new_prerequisites: Iterable[str]) -> None:
        """Move ``key`` in the dependents index from ``old_prerequisites`` (what
        its previous applied version referenced) to ``new_prerequisites``."""
        for ref in old_prerequisites:
            deps = self._dependents.get(ref)
            if deps is not None:
                deps.discard(key)
                if not deps:
                    del self._dependents[ref]
        for ref in new_prerequisites:
            self._dependents.setdefault(ref, set()).add(key)

    def dependents(self, key: str) -> set[str]:
        """Keys whose applied version references ``key``."""
        return self._dependents.get(key, set())
