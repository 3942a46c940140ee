"""The one backoff function: exponential growth, a cap, full jitter.

Every delay between two tries in schemacache comes from :func:`compute_backoff`:
a handler call's retry, a failed key's repair, a watch reconnect, a failed
repair listing and an alert POST.
"""

from __future__ import annotations

import random

DEFAULT_BASE = 0.1
"""Delay bound after the first failed attempt, seconds."""
DEFAULT_CAP = 30.0
"""Largest delay bound, seconds."""
_MAX_EXPONENT = 60
"""Beyond it 2**n overflows floats, long after any cap is reached."""


def compute_backoff(attempt: int, *, base: float = DEFAULT_BASE, cap: float = DEFAULT_CAP,
                    jitter: bool = True) -> float:
    """The delay after failed attempt ``attempt`` (1-based).

    The bound is ``min(cap, base * 2**(attempt-1))``.

    :param attempt: how many attempts failed so far (values below 1 count as 1).
    :param base: bound after the first failure, seconds (default :data:`DEFAULT_BASE`).
    :param cap: largest bound, seconds (default :data:`DEFAULT_CAP`).
    :param jitter: ``True`` (default) draws the delay uniformly from ``[0, bound]``
        ("full jitter": retries of many clients spread out); ``False`` returns the bound.
    """
    exponent = max(0, attempt - 1)
    bound = cap if exponent > _MAX_EXPONENT else min(cap, base * (2.0**exponent))
    return random.uniform(0.0, bound) if jitter else bound
