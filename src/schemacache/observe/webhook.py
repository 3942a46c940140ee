"""Delivery of alert notifications to an Alertmanager-compatible webhook.

A bounded in-memory queue, drained by the alerter's one background task: when
the queue is full the *oldest* notification is dropped, logged and counted
(``alerts_sent{outcome="dropped"}``), as the newest state is worth more than a
stale one. A failed POST is retried with exponential backoff; after the last
attempt it is logged, counted (``outcome="error"``) and dropped.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any

import httpx

from ..backoff import compute_backoff
from .metrics import NodeMetrics

log = logging.getLogger("schemacache.observe.alerts")

DEFAULT_TIMEOUT = 5.0
"""Seconds one webhook POST may take."""
DEFAULT_QUEUE_SIZE = 1000
"""Notifications held for delivery before the oldest is dropped."""
DEFAULT_DELIVERY_ATTEMPTS = 3
"""POSTs per notification before it is given up."""
DEFAULT_RETRY_BASE = 0.5
"""Delay bound before the second POST of a notification; doubles for each further one."""
DEFAULT_RETRY_CAP = 30.0
"""Largest backoff between two POSTs of one notification, seconds."""

OUTCOME_OK = "ok"
OUTCOME_ERROR = "error"
OUTCOME_DROPPED = "dropped"
OUTCOMES = (OUTCOME_OK, OUTCOME_ERROR, OUTCOME_DROPPED)
"""Label ``outcome`` of ``schemacache_alerts_sent_total``."""


def check_webhook_url(url: str) -> None:
    """Raise :class:`ValueError` unless ``url`` is an absolute http(s) URL."""
    try:
        parsed = httpx.URL(url)
    except Exception as exc:
        raise ValueError(f"alert webhook {url!r} is not a valid URL: {exc}") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ValueError(f"alert webhook {url!r} is not an http(s) URL")


def check_delivery(queue_size: int, attempts: int) -> None:
    """Raise :class:`ValueError` unless both limits are at least 1."""
    if queue_size < 1 or attempts < 1:
        raise ValueError("queue_size and delivery_attempts must be >= 1")


class WebhookQueue:
    """Notifications waiting for one webhook, and how each is POSTed.

    :param url: the webhook (checked by :func:`check_webhook_url`).
    :param metrics: where ``schemacache_alerts_sent_total`` is counted (default
        ``None``: not counted).
    :param queue_size: notifications held before the oldest is dropped (default
        :data:`DEFAULT_QUEUE_SIZE`).
    :param attempts: POSTs per notification (default :data:`DEFAULT_DELIVERY_ATTEMPTS`).
    :param retry_base: backoff bound before the second POST, doubling after up
        to :data:`DEFAULT_RETRY_CAP`, fully jittered (default
        :data:`DEFAULT_RETRY_BASE`, 0.5 s).
    """

    def __init__(self, url: str, *, metrics: NodeMetrics | None = None,
                 queue_size: int = DEFAULT_QUEUE_SIZE,
                 attempts: int = DEFAULT_DELIVERY_ATTEMPTS,
                 retry_base: float = DEFAULT_RETRY_BASE):
        check_delivery(queue_size, attempts)
        check_webhook_url(url)
        self.url = url
        self.metrics = metrics
        self.closing = False
        """Set at shutdown: failed POSTs are then not retried."""
        self._queue_size = queue_size
        self._attempts = attempts
        self._retry_base = retry_base
        self._queue: deque[tuple[str, dict[str, Any]]] = deque()
        self.wakeup = asyncio.Event()
        """Set when a notification is queued."""

    def __len__(self) -> int:
        return len(self._queue)

    def put(self, alertname: str, payload: dict[str, Any]) -> None:
        """Queue one notification (an Alertmanager alert); drops the oldest when full."""
        if len(self._queue) >= self._queue_size:
            dropped, _ = self._queue.popleft()
            log.warning("alerts: delivery queue full (%d), dropped oldest %s notification",
                        self._queue_size, dropped)
            self._count(dropped, OUTCOME_DROPPED)
        self._queue.append((alertname, payload))
        self.wakeup.set()

    async def drain(self, client: httpx.AsyncClient) -> None:
        """POST every queued notification, in order, each with its retries."""
        while self._queue:
            alertname, payload = self._queue.popleft()
            await self._deliver(client, alertname, payload)

    def _count(self, alertname: str, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.alerts_sent.labels(alertname=alertname, outcome=outcome).inc()

    async def _deliver(self, client: httpx.AsyncClient, alertname: str,
                       payload: dict[str, Any]) -> None:
        error = ""
        for attempt in range(1, self._attempts + 1):
            try:
                response = await client.post(self.url, json=[payload])
                if response.status_code < 300:
                    self._count(alertname, OUTCOME_OK)
                    return
                error = f"HTTP {response.status_code}"
            except Exception as exc:  # whatever goes wrong, the delivery task must live on
                error = f"{type(exc).__name__}: {exc}"
            # At shutdown there is no time for backoff: report and move on.
            if attempt < self._attempts and not self.closing:
                log.info("alerts: POST %s of %s failed (%s), attempt %d/%d", self.url,
                         alertname, error, attempt, self._attempts)
                await asyncio.sleep(compute_backoff(attempt, base=self._retry_base,
                                                    cap=DEFAULT_RETRY_CAP))
            else:
                break
        log.warning("alerts: could not deliver %s to %s: %s", alertname, self.url, error)
        self._count(alertname, OUTCOME_ERROR)
