"""One alert as Alertmanager's v2 API carries it, and the state it is built from."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx


@dataclass
class AlertState:
    """A firing alert as the alerter tracks it.

    :param alertname: label ``alertname``.
    :param key: label ``key`` (``""``: node-wide).
    :param severity: label ``severity``.
    :param summary: annotation ``summary``.
    :param error: annotation ``last_error``.
    :param started: Unix time it began firing (``startsAt``).
    :param last_sent: monotonic time it was last queued for delivery (default 0: never).
    """

    alertname: str
    key: str
    severity: str
    summary: str
    error: str
    started: float
    last_sent: float = field(default=0.0)


def rfc3339(ts: float) -> str:
    """Unix time as RFC 3339 in UTC with milliseconds, as Alertmanager writes it."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


def is_resolved(alert: dict[str, Any], at: float | None = None) -> bool:
    """Whether an alert as sent (a webhook payload item) has ended by ``at``.

    :param at: Unix time (default: now).
    """
    ends = alert.get("endsAt")
    if not ends:
        return False
    when = datetime.fromisoformat(str(ends)).timestamp()
    return when <= (time.time() if at is None else at)


def instance_of(url: str | None) -> str | None:
    """``host:port`` of a URL, as Prometheus names a target scraped there."""
    if not url:
        return None
    parsed = httpx.URL(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    host = f"[{parsed.host}]" if ":" in parsed.host else parsed.host
    return f"{host}:{port}"


def notification(alert: AlertState, node: str, generator_url: str | None,
                 ends: float | None = None) -> dict[str, Any]:
    """The alert as Alertmanager reads it.

    :param node: label ``node``.
    :param generator_url: ``generatorURL``, also giving label ``instance`` (``None``:
        both left out).
    :param ends: Unix time for ``endsAt`` (default ``None``: no ``endsAt`` nor
        ``generatorURL``, the form of :meth:`Alerter.active`).
    """
    labels = {"alertname": alert.alertname, "node": node, "key": alert.key,
              "severity": alert.severity}
    instance = instance_of(generator_url)
    if instance is not None:
        labels["instance"] = instance
    payload: dict[str, Any] = {
        "labels": labels,
        "annotations": {"summary": alert.summary, "last_error": alert.error},
        "startsAt": rfc3339(alert.started),
    }
    if ends is not None:
        payload["endsAt"] = rfc3339(ends)
        if generator_url:
            payload["generatorURL"] = generator_url
    return payload
