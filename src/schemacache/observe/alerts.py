"""Alerts: logged always, and POSTed to an Alertmanager-compatible webhook if set.

An alert is identified by ``(alertname, key)``. :meth:`Alerter.fire` makes it
firing (or refreshes its annotations), :meth:`Alerter.resolve` ends it. With a
webhook, each state change becomes one POST of an Alertmanager v2 list::

    [{"labels": {"alertname", "node", "key", "severity", "instance"?},
      "annotations": {"summary", "last_error"},
      "startsAt": RFC 3339, "endsAt": RFC 3339, "generatorURL"?}]

A firing alert's ``endsAt`` lies :data:`ENDS_AT_RESENDS` re-send intervals
ahead (as Prometheus does for its own alerts): Alertmanager keeps it firing
across a few lost re-sends, and still ends it by itself should the node die.
A resolved alert's ``endsAt`` is the time it resolved.  ``instance`` is the
``host:port`` of ``generatorURL`` (the node's admin server), which is what
Prometheus labels the node's scrape target with, so an Alertmanager
inhibit rule can match a node's alert with the rule alert of that target.

Delivery never blocks the caller: notifications go to a bounded in-memory
queue drained by one background task (started by :meth:`Alerter.start`). Until
then they wait in the queue, so alerts fired during start-up are not lost. When
the queue is full the *oldest* notification is dropped, logged and counted
(``alerts_sent{outcome="dropped"}``): the newest state is worth more than a
stale one. A failed POST is retried with exponential backoff; after the last
attempt it is logged and counted (``outcome="error"``) and dropped. A firing
alert is re-sent every ``resend_interval`` seconds while it fires, so a
receiver that missed a notification catches up.

:meth:`Alerter.fire` and :meth:`Alerter.resolve` may be called from any thread;
calls from outside the event loop the alerter was started on are handed to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from typing import Any

import httpx

from .metrics import NodeMetrics
from .notification import AlertState, is_resolved, notification
from .webhook import (
    DEFAULT_DELIVERY_ATTEMPTS,
    DEFAULT_QUEUE_SIZE,
    DEFAULT_RETRY_BASE,
    DEFAULT_TIMEOUT,
    WebhookQueue,
    check_delivery,
)
from .webhook import OUTCOMES as OUTCOMES  # the labels of alerts_sent, defined here first

__all__ = ["DEFAULT_RESEND_INTERVAL", "ENDS_AT_RESENDS", "OUTCOMES", "SEVERITIES", "Alerter",
           "is_resolved"]

log = logging.getLogger(__name__)

DEFAULT_RESEND_INTERVAL = 60.0
"""Seconds between re-sends of a still-firing alert (well inside Alertmanager's
default ``resolve_timeout`` of 5 minutes)."""
ENDS_AT_RESENDS = 4
"""A firing alert's ``endsAt`` is this many re-send intervals ahead."""
CLOSE_GRACE = 2.0
"""Seconds :meth:`Alerter.close` lets pending notifications be delivered."""

SEVERITIES = {
    "SchemaEventRetriesExhausted": "warning",
    "SchemaRepairFailing": "critical",
    "SchemaRegistryUnreachable": "critical",
    "SchemaCacheLagging": "warning",
    "SchemaRegistryRewound": "critical",
    "SchemaStateStoreFailing": "critical",
}
"""Label ``severity`` of each alert a node sends; the Prometheus rules in
``deploy/prometheus/alerts.yml`` use the same (a test checks)."""
DEFAULT_SEVERITY = "warning"
"""Severity of an alert not in :data:`SEVERITIES`."""


class Alerter:
    """Fires, de-duplicates, re-sends and resolves alerts of one node.

    :param node: the node's name (label ``node`` of every alert).
    :param webhook_url: Alertmanager-compatible URL to POST to (default ``None``:
        log only).
    :param resend_interval: seconds between re-sends of a firing alert (default
        :data:`DEFAULT_RESEND_INTERVAL`, 300 s).
    :param metrics: where ``schemacache_alerts_sent_total`` is counted (default
        ``None``: not counted).
    :param timeout: seconds per webhook POST (default :data:`DEFAULT_TIMEOUT`, 5 s).
    :param queue_size: notifications held before the oldest is dropped (default
        :data:`DEFAULT_QUEUE_SIZE`).
    :param delivery_attempts: POSTs per notification (default
        :data:`DEFAULT_DELIVERY_ATTEMPTS`).
    :param retry_base: backoff bound before the second POST, doubling after up
        to :data:`~schemacache.observe.webhook.DEFAULT_RETRY_CAP`, fully jittered (default
        :data:`DEFAULT_RETRY_BASE`, 0.5 s).
    :param generator_url: ``generatorURL`` of every alert, e.g. the node's admin
        URL, also giving label ``instance`` (default ``None``: both omitted); may
        be set later as an attribute: alerts already sent without it are then
        ended and sent again under their new labels.
    """

    def __init__(
        self,
        node: str,
        webhook_url: str | None = None,
        *,
        resend_interval: float = DEFAULT_RESEND_INTERVAL,
        metrics: NodeMetrics | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        delivery_attempts: int = DEFAULT_DELIVERY_ATTEMPTS,
        retry_base: float = DEFAULT_RETRY_BASE,
        generator_url: str | None = None,
    ):
        if resend_interval <= 0:
            raise ValueError("resend_interval must be > 0")
        check_delivery(queue_size, delivery_attempts)
        self._webhook = None if webhook_url is None else WebhookQueue(
            webhook_url, metrics=metrics, queue_size=queue_size,
            attempts=delivery_attempts, retry_base=retry_base)
        self.node = node
        self.webhook_url = webhook_url
        self.resend_interval = resend_interval
        self.metrics = metrics
        self.timeout = timeout
        self._generator_url = generator_url
        self._firing: dict[tuple[str, str], AlertState] = {}
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._lock = threading.Lock()
        self._closing = False

    # -- public -------------------------------------------------------------

    @property
    def generator_url(self) -> str | None:
        return self._generator_url

    @generator_url.setter
    def generator_url(self, url: str | None) -> None:
        self._call(self._set_generator_url, url)

    async def start(self) -> None:
        """Start delivering queued and future notifications in the background."""
        if self._task is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        if self._webhook is not None:
            self._webhook.closing = False
            # A fresh event, bound to this loop; the loop checks the queue first anyway.
            self._webhook.wakeup = asyncio.Event()
            self._task = asyncio.create_task(self._deliver_loop(self._webhook),
                                             name=f"alerts-{self.node}")

    async def close(self) -> None:
        """Stop delivery; pending notifications get :data:`CLOSE_GRACE` seconds."""
        task, self._task = self._task, None
        if task is None or self._webhook is None:
            return
        self._webhook.closing = True
        self._webhook.wakeup.set()
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout=CLOSE_GRACE)
        except TimeoutError:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        except asyncio.CancelledError:
            task.cancel()
            raise
        if self._webhook:
            log.warning("alerts: %d notification(s) not delivered at shutdown",
                        len(self._webhook))

    def fire(self, alertname: str, *, key: str = "", severity: str | None = None,
             summary: str = "", error: str = "") -> None:
        """Make an alert firing, or refresh the annotations of a firing one.

        Never blocks, never raises. A new alert is logged (WARNING) and sent; an
        already firing one is sent again only once ``resend_interval`` passed.

        :param alertname: e.g. ``SchemaEventRetriesExhausted``.
        :param key: the resource key concerned (default ``""``: node-wide).
        :param severity: label ``severity`` (default: the alert's entry in
            :data:`SEVERITIES`, else :data:`DEFAULT_SEVERITY`).
        :param summary: annotation ``summary`` (default ``""``).
        :param error: annotation ``last_error`` (default ``""``).
        """
        self._call(self._fire, alertname, key, severity, summary, error)

    def resolve(self, alertname: str, *, key: str = "") -> None:
        """End a firing alert: log it (INFO) and send it once with ``endsAt``.

        Resolving an alert that is not firing does nothing. Never blocks, never raises.

        :param alertname: the alert's name.
        :param key: the resource key it was fired for (default ``""``).
        """
        self._call(self._resolve, alertname, key)

    def active(self) -> list[dict[str, Any]]:
        """The firing alerts: ``labels``, ``annotations`` and ``startsAt`` each."""
        with self._lock:
            alerts = list(self._firing.values())
        return [notification(a, self.node, self._generator_url) for a in alerts]

    # -- state changes --------------------------------------------------------

    def _call(self, fn: Any, *args: Any) -> None:
        try:
            loop = self._loop
            if (loop is not None and threading.get_ident() != self._loop_thread
                    and not loop.is_closed()):
                loop.call_soon_threadsafe(fn, *args)
            else:
                fn(*args)
        except Exception:  # an alert must never break the caller
            log.exception("alerts: could not record alert %s", args[0] if args else "?")

    def _fire(self, alertname: str, key: str, severity: str | None, summary: str,
              error: str) -> None:
        severity = severity or SEVERITIES.get(alertname, DEFAULT_SEVERITY)
        now = time.monotonic()
        with self._lock:
            alert = self._firing.get((alertname, key))
            if alert is None:
                alert = AlertState(alertname, key, severity, summary, error, started=time.time())
                self._firing[(alertname, key)] = alert
                is_new = True
            else:
                alert.severity, alert.summary, alert.error = severity, summary, error
                is_new = False
            due = is_new or now - alert.last_sent >= self.resend_interval
            if due:
                alert.last_sent = now
        if is_new:
            log.warning("alert firing: %s node=%s key=%s severity=%s: %s%s", alertname,
                        self.node, key or "-", severity, summary, f" ({error})" if error else "")
        elif due:
            log.warning("alert still firing: %s node=%s key=%s: %s%s", alertname, self.node,
                        key or "-", summary, f" ({error})" if error else "")
        if due:
            self._enqueue(alertname, self._payload(alert))

    def _resolve(self, alertname: str, key: str) -> None:
        with self._lock:
            alert = self._firing.pop((alertname, key), None)
        if alert is None:
            return
        log.info("alert resolved: %s node=%s key=%s", alertname, self.node, key or "-")
        self._enqueue(alertname, self._payload(alert, ends=time.time()))

    def _set_generator_url(self, url: str | None) -> None:
        old = self._generator_url
        if url == old:
            return
        with self._lock:
            sent = [a for a in self._firing.values() if a.last_sent]
        # The label set is the alert's identity in Alertmanager: end the alerts
        # sent under the old one, then send them under the new one.
        for alert in sent:
            self._enqueue(alert.alertname, self._payload(alert, ends=time.time()))
        self._generator_url = url
        for alert in sent:
            self._enqueue(alert.alertname, self._payload(alert))

    def _payload(self, alert: AlertState, ends: float | None = None) -> dict[str, Any]:
        """The alert as sent: firing unless ``ends`` (Unix time) is given."""
        if ends is None:
            ends = time.time() + ENDS_AT_RESENDS * self.resend_interval
        return notification(alert, self.node, self._generator_url, ends)

    # -- delivery -------------------------------------------------------------

    def _enqueue(self, alertname: str, payload: dict[str, Any]) -> None:
        if self._webhook is not None:
            self._webhook.put(alertname, payload)

    def _next_resend_in(self) -> float:
        """Seconds until the earliest firing alert is due for a re-send."""
        with self._lock:
            if not self._firing:
                return self.resend_interval
            oldest = min(a.last_sent for a in self._firing.values())
        return max(0.0, oldest + self.resend_interval - time.monotonic())

    def _queue_due_resends(self) -> None:
        now = time.monotonic()
        due: list[AlertState] = []
        with self._lock:
            for alert in self._firing.values():
                if now - alert.last_sent >= self.resend_interval:
                    alert.last_sent = now
                    due.append(alert)
        for alert in due:
            log.warning("alert still firing: %s node=%s key=%s: %s", alert.alertname, self.node,
                        alert.key or "-", alert.summary)
            self._enqueue(alert.alertname, self._payload(alert))

    async def _deliver_loop(self, webhook: WebhookQueue) -> None:
        async with httpx.AsyncClient(timeout=self.timeout) as client:
            while True:
                self._queue_due_resends()
                await webhook.drain(client)
                if webhook.closing:
                    return
                webhook.wakeup.clear()
                # Sleep until the next notification arrives or a re-send is due.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._next_resend_in()):
                        await webhook.wakeup.wait()
