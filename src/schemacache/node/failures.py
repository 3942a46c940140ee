"""The failure log: keys whose handler calls for one revision were used up.

Each record is written through to durable state, counted in the
``schemacache_failed_keys`` gauge and raised as a ``SchemaEventRetriesExhausted``
alert (re-sent on each failed repair attempt, resolved when the key converges).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ..observe.alerts import Alerter
from ..observe.metrics import NodeMetrics
from .text import safe

if TYPE_CHECKING:
    from .state import StateStore

log = logging.getLogger(__name__)

ALERT_EXHAUSTED = "SchemaEventRetriesExhausted"


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


@dataclass
class FailureRecord:
    """A key whose handler calls for one revision were exhausted.

    :param key: the key.
    :param revision: the revision (desired version) that failed.
    :param attempts: handler calls spent on it (event path and repair).
    :param first_failed: Unix time of the first failed call.
    :param last_failed: Unix time of the last failed call.
    :param last_error: text of the last error.
    """

    key: str
    revision: int
    attempts: int
    first_failed: float
    last_failed: float
    last_error: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "revision": self.revision,
            "attempts": self.attempts,
            "first_failed": _iso(self.first_failed),
            "last_failed": _iso(self.last_failed),
            "last_error": self.last_error,
        }


class FailureLog:
    """Failure records by key, written through to ``store``.

    :param store: durable state (``put_failure`` / ``delete_failure``).
    :param metrics: node metrics (``failed_keys``, ``retries_exhausted``).
    :param alerter: alert sink.
    """

    def __init__(self, *, store: StateStore, metrics: NodeMetrics, alerter: Alerter):
        self._store = store
        self._metrics = metrics
        self._alerter = alerter
        self._records: dict[str, FailureRecord] = {}
        self.keys = self._records.keys()
        """The failed keys (a live view, for checks made once per event)."""

    def load(self, records: dict[str, FailureRecord]) -> None:
        """Adopt records read from durable state (not written back)."""
        self._records.update(records)
        self._metrics.failed_keys.set(len(self._records))

    def get(self, key: str) -> FailureRecord | None:
        return self._records.get(key)

    def failed_at(self, key: str, revision: int) -> bool:
        """Whether ``key`` is recorded as failed at ``revision``."""
        record = self._records.get(key)
        return record is not None and record.revision == revision

    def __contains__(self, key: object) -> bool:
        return key in self._records

    def __len__(self) -> int:
        return len(self._records)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._records))

    def items(self) -> list[tuple[str, FailureRecord]]:
        """Every key and its record."""
        return list(self._records.items())

    def above(self, revision: int) -> list[str]:
        """Keys recorded at a revision above ``revision``."""
        return [k for k, r in self._records.items() if r.revision > revision]

    def exhausted(self, key: str, kind: str, revision: int, *, attempts: int,
                  first_failed: float, error: str, permanent: bool) -> FailureRecord:
        """Record that ``key``'s attempts at ``revision`` are used up, and alert."""
        now = time.time()
        record = FailureRecord(key, revision, attempts, first_failed, now, error)
        self._records[key] = record
        self._store.put_failure(record)
        self._metrics.retries_exhausted.labels(kind=kind).inc()
        self._metrics.failed_keys.set(len(self._records))
        why = "permanent error" if permanent else f"{attempts} attempts"
        log.warning("%s revision %d failed (%s): %s", safe(key), revision, why, error)
        self._alerter.fire(ALERT_EXHAUSTED, key=key,
                           summary=f"{key} revision {revision} failed after {why}", error=error)
        return record

    def repair_failed(self, key: str, error: str) -> FailureRecord:
        """Count one more failed (repair) attempt of a recorded key, and alert again."""
        record = self._records[key]
        record.attempts += 1
        record.last_failed = time.time()
        record.last_error = error
        self._store.put_failure(record)
        self._alerter.fire(ALERT_EXHAUSTED, key=key,
                           summary=f"{key} revision {record.revision} still failing "
                                   f"after {record.attempts} attempts",
                           error=error)
        return record

    def clear(self, key: str) -> bool:
        """``key`` converged: drop its record and resolve its alert; whether it had one."""
        if self._records.pop(key, None) is None:
            return False
        self._store.delete_failure(key)
        self._metrics.failed_keys.set(len(self._records))
        self._alerter.resolve(ALERT_EXHAUSTED, key=key)
        log.info("%s converged; failure record cleared", safe(key))
        return True

    def to_list(self) -> list[dict[str, Any]]:
        """Every record as a dict, by key."""
        return [self._records[k].to_dict() for k in sorted(self._records)]
