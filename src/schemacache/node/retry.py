"""Retry policy: how many handler calls one event version gets, and how far apart."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

from .config import DEFAULT_BACKOFF_BASE, DEFAULT_BACKOFF_CAP, DEFAULT_MAX_ATTEMPTS

Jitter = Literal["full", "none"]


def backoff_bound(attempt: int, base: float, cap: float) -> float:
    """Upper bound of the delay after failed attempt ``attempt`` (1-based):
    ``min(cap, base * 2**(attempt-1))``."""
    exponent = max(0, attempt - 1)
    # Large exponents overflow floats long after the cap is reached.
    if exponent > 60:
        return cap
    return min(cap, base * (2.0**exponent))


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
        return backoff_bound(attempt, self.base, self.cap)

    def delay(self, attempt: int) -> float:
        """The delay before the attempt following failed attempt ``attempt`` (1-based)."""
        upper = self.bound(attempt)
        if self.jitter == "none":
            return upper
        return random.uniform(0.0, upper)
