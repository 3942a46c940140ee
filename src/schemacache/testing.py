"""Fault injection for demos and tests: a handler that fails on command.

Run a node with ``--handler schemacache.testing:FaultyHandler`` and point the
environment variable ``SCHEMACACHE_FAULTS`` at a JSON file::

    {"fail": {"measure/sw_metric/service_cpm_minute": "injected fault"},
     "permanent": {"stream/sw_stream/log": "cannot ever work"}}

Keys under ``fail`` raise a retryable :class:`TemporaryError`, keys under
``permanent`` a :class:`PermanentError`; keys may be shell-style patterns
(``measure/sw_metric/*``).  The file is read again on every call, so a fault
is injected or cleared while the node runs by rewriting it (write a temporary
file and rename it over, so a reader never sees half a file).
"""

from __future__ import annotations

import fnmatch
import json
import logging
import os
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request, Response

from .api.http import UvicornServer
from .errors import PermanentError, TemporaryError
from .model import Resource
from .observe.alerts import is_resolved

log = logging.getLogger(__name__)

FAULTS_ENV = "SCHEMACACHE_FAULTS"
"""Environment variable naming the fault file."""


def write_faults(path: str | Path, fail: dict[str, str] | None = None,
                 permanent: dict[str, str] | None = None) -> None:
    """Atomically (re)write a fault file.

    :param path: the file the handler reads (``SCHEMACACHE_FAULTS``).
    :param fail: key or pattern → message of a retryable failure (default none).
    :param permanent: key or pattern → message of a permanent failure (default none).
    """
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"fail": fail or {}, "permanent": permanent or {}}))
    tmp.replace(target)


class FaultyHandler:
    """A handler that records what it applied and fails for the keys in the fault file.

    :param faults_path: the fault file (default: ``$SCHEMACACHE_FAULTS``; none = never fail).
    """

    def __init__(self, faults_path: str | Path | None = None):
        env = os.environ.get(FAULTS_ENV)
        self.faults_path: Path | None = (Path(faults_path) if faults_path is not None
                                         else Path(env) if env else None)
        self.applied: dict[str, int] = {}
        """key → mod_revision of the version applied last."""
        self.deleted: list[str] = []
        """Keys deleted, in call order."""
        self.calls: Counter[str] = Counter()
        """Handler calls per key (failed ones included)."""
        self.failures: Counter[str] = Counter()
        """Injected failures per key."""

    async def apply(self, resource: Resource) -> None:
        self._call(resource.key)
        self.applied[resource.key] = resource.mod_revision

    async def delete(self, resource: Resource) -> None:
        self._call(resource.key)
        self.applied.pop(resource.key, None)
        self.deleted.append(resource.key)

    def _call(self, key: str) -> None:
        self.calls[key] += 1
        faults = self._read()
        for section, error in (("permanent", PermanentError), ("fail", TemporaryError)):
            message = _match(faults.get(section), key)
            if message is not None:
                self.failures[key] += 1
                log.warning("injected %s fault for %s (call %d): %s", section, key,
                            self.calls[key], message)
                raise error(message)

    def _read(self) -> dict[str, Any]:
        if self.faults_path is None:
            return {}
        try:
            data = json.loads(self.faults_path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError):
            # a broken fault file injects nothing rather than failing every key
            return {}
        return data if isinstance(data, dict) else {}


def _match(section: Any, key: str) -> str | None:
    if not isinstance(section, dict):
        return None
    if key in section:
        return str(section[key])
    for pattern, message in section.items():
        if fnmatch.fnmatchcase(key, str(pattern)):
            return str(message)
    return None


class AlertReceiver:
    """An Alertmanager-style webhook receiver on loopback that keeps what it gets.

    Used by the demo and by tests to see the alerts a node sends.

    :param listen: ``host:port`` to bind (default ``127.0.0.1:0``, any free port).
    :param on_alert: called with each alert as it arrives (default: nothing).
    :param fail_first: answer HTTP 500 to this many requests first, to exercise
        the sender's retries (default 0).
    """

    def __init__(self, listen: str = "127.0.0.1:0",
                 on_alert: Callable[[dict[str, Any]], None] | None = None,
                 fail_first: int = 0):
        self.received: list[dict[str, Any]] = []
        self.posts: list[list[dict[str, Any]]] = []
        self.requests = 0
        self.fail_first = fail_first
        self.url = ""
        app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

        @app.post("/alerts")
        async def alerts(request: Request) -> Response:
            self.requests += 1
            if self.requests <= self.fail_first:
                return Response(status_code=500)
            payload = await request.json()
            body = [a for a in (payload if isinstance(payload, list) else [payload])
                    if isinstance(a, dict)]
            self.posts.append(body)
            for alert in body:
                alert["_received"] = time.monotonic()
                alert["_received_at"] = time.time()
                self.received.append(alert)
                if on_alert is not None:
                    on_alert(alert)
            return Response(status_code=200)

        self._server = UvicornServer(app, listen)

    async def start(self) -> str:
        """Start serving; returns the webhook URL (also in :attr:`url`)."""
        base = await self._server.start()
        self.url = base.rstrip("/") + "/alerts"
        return self.url

    async def stop(self) -> None:
        await self._server.stop()

    async def __aenter__(self) -> AlertReceiver:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def matching(self, alertname: str | None = None,
                 resolved: bool | None = None) -> list[dict[str, Any]]:
        """Alerts received, optionally only those named ``alertname`` and only
        resolved (``endsAt`` reached when received) or firing ones."""
        return [a for a in self.received
                if (alertname is None or a.get("labels", {}).get("alertname") == alertname)
                and (resolved is None
                     or is_resolved(a, at=a.get("_received_at")) == resolved)]
