"""Retry timing: the policy of the event path and the stateful limiter that applies it.

A :class:`RetryLimiter` (client-go's ``RateLimiter``) counts the failed attempts
of each key at one revision and answers how long the key waits before its next
attempt -- or ``None`` once its attempts are used up.  The node keeps two: one
for handler calls from the event path, one for repair attempts of failed keys.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

from ..backoff import compute_backoff
from .config import DEFAULT_BACKOFF_BASE, DEFAULT_BACKOFF_CAP, DEFAULT_MAX_ATTEMPTS

Jitter = Literal["full", "none"]


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries with exponential backoff and full jitter.

    :param max_attempts: handler calls per (key, revision) from the event path
        (default :data:`~schemacache.node.config.DEFAULT_MAX_ATTEMPTS`, 5).
    :param base: delay bound after the first failed attempt, seconds (default 0.1).
    :param cap: largest delay bound, seconds (default 30.0).
    :param jitter: ``"full"`` draws the delay uniformly from ``[0, bound]``;
        ``"none"`` always waits the bound (default ``"full"``).
    """

    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    base: float = DEFAULT_BACKOFF_BASE
    cap: float = DEFAULT_BACKOFF_CAP
    jitter: Jitter = "full"

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        if self.base < 0 or self.cap < 0:
            raise ValueError("base and cap must be >= 0")
        if self.jitter not in ("full", "none"):
            raise ValueError("jitter must be 'full' or 'none'")

    def bound(self, attempt: int) -> float:
        """The largest delay after failed attempt ``attempt`` (1-based)."""
        return compute_backoff(attempt, base=self.base, cap=self.cap, jitter=False)

    def delay(self, attempt: int) -> float:
        """The delay before the attempt following failed attempt ``attempt`` (1-based)."""
        return compute_backoff(attempt, base=self.base, cap=self.cap,
                               jitter=self.jitter == "full")


@dataclass(slots=True)
class _Failing:
    revision: int
    count: int
    first_failed: float  # wall clock


class RetryLimiter:
    """Failed attempts per key, and the wait before each next one.

    A key's count belongs to one revision: a failure at another revision starts
    the count again.

    :param policy: attempts and backoff (``policy.max_attempts`` failures exhaust
        a key, unless ``exhaustible`` is false).
    :param exhaustible: whether a key can run out of attempts (default ``True``;
        the repair limiter never gives up on a key).
    """

    def __init__(self, policy: RetryPolicy, *, exhaustible: bool = True):
        self.policy = policy
        self.exhaustible = exhaustible
        self._failing: dict[str, _Failing] = {}
        self.counting = self._failing.keys()
        """The keys with failures counted (a live view: telling whether there
        is anything to forget costs no call, once per handled key)."""

    def when(self, key: str, revision: int, *, delay: float | None = None) -> float | None:
        """Count one failed attempt of ``key`` at ``revision``; the seconds to wait
        before the next attempt, or ``None`` when the key's attempts are used up.

        :param delay: a wait asked for by the failure itself (a handler's
            ``TemporaryError(delay=…)``), used instead of the backoff, capped by
            the policy's cap (default ``None``: the backoff).
        """
        entry = self._failing.get(key)
        if entry is None or entry.revision != revision:
            entry = self._failing[key] = _Failing(revision, 0, time.time())
        entry.count += 1
        if self.exhaustible and entry.count >= self.policy.max_attempts:
            return None
        if delay is not None:
            return min(max(0.0, delay), self.policy.cap)
        return self.policy.delay(entry.count)

    def forget(self, key: str) -> None:
        """Start ``key``'s count afresh (it succeeded, or is no longer tried)."""
        self._failing.pop(key, None)

    def attempts(self, key: str, revision: int | None = None) -> int:
        """Failed attempts of ``key`` so far (at ``revision``, when given)."""
        entry = self._failing.get(key)
        if entry is None or (revision is not None and entry.revision != revision):
            return 0
        return entry.count

    def first_failed(self, key: str) -> float | None:
        """Wall-clock time of ``key``'s first counted failure, if any."""
        entry = self._failing.get(key)
        return entry.first_failed if entry is not None else None

    def revision(self, key: str) -> int | None:
        """The revision ``key``'s count belongs to, if it has one."""
        entry = self._failing.get(key)
        return entry.revision if entry is not None else None

    def forget_above(self, revision: int) -> list[str]:
        """Forget every key counting at a revision above ``revision``; those keys."""
        keys = [k for k, e in self._failing.items() if e.revision > revision]
        for key in keys:
            del self._failing[key]
        return keys

    def keys(self) -> list[str]:
        """Every key with a count."""
        return list(self._failing)

    def clear(self) -> None:
        """Forget every key."""
        self._failing.clear()

    def __len__(self) -> int:
        return len(self._failing)

    def __contains__(self, key: object) -> bool:
        return key in self._failing
