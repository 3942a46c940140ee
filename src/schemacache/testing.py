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
from collections import Counter
from pathlib import Path
from typing import Any

from .errors import PermanentError, TemporaryError
from .model import Resource

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
