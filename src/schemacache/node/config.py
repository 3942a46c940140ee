"""Every setting of a node, once: its default, its help text and its command-line flag.

:class:`NodeSettings` is what a :class:`~schemacache.node.Node` runs by;
:class:`NodeConfig` adds what the ``schemacache node`` process needs around it
(registry URL, admin server, handler). The ``node`` command is generated from
:class:`NodeConfig`'s fields (:mod:`schemacache.node_command`), so a setting
added here is a flag there, with the same default and help.

A field's flag is ``--`` plus its name with dashes; ``json_schema_extra`` may
name another (``"cli"``) and an environment variable (``"envvar"``).
"""

from __future__ import annotations

import os
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from ..observe.alerts import DEFAULT_RESEND_INTERVAL

DEFAULT_MAX_ATTEMPTS = 5
DEFAULT_BACKOFF_BASE = 0.1
DEFAULT_BACKOFF_CAP = 30.0
DEFAULT_HANDLER_TIMEOUT = 30.0
DEFAULT_REPAIR_INTERVAL = 600.0
DEFAULT_REPAIR_BACKOFF_BASE = 5.0
DEFAULT_REPAIR_BACKOFF_CAP = 300.0
DEFAULT_WORKERS = 8
DEFAULT_LISTEN = "127.0.0.1:0"
DEFAULT_REGISTRY = "sqlite:///var/registry.db"
DEFAULT_STATE_DIR = "./var/node"
DEFAULT_NODE_TTL = 10.0
DEFAULT_ALERT_RESEND_INTERVAL = DEFAULT_RESEND_INTERVAL
DEFAULT_UNREACHABLE_ALERT_AFTER = 30.0
DEFAULT_RECONNECT_BASE = 0.8
DEFAULT_RECONNECT_CAP = 30.0
DEFAULT_LAG_ALERT_REVISIONS = 1000
DEFAULT_LAG_ALERT_AFTER = 120.0
DEFAULT_MONITOR_INTERVAL = 1.0
DEFAULT_MAX_PENDING_KEYS = 10_000
DEFAULT_TLS_CERT: str | None = None
DEFAULT_TLS_KEY: str | None = None
NODE_TOKEN_ENV = "SCHEMACACHE_NODE_TOKEN"
"""Environment variable holding the node admin token."""


def _setting(default: Any, help: str, **extra: Any) -> Any:
    """A field with its default, its help text and (in ``extra``) constraints or CLI hints."""
    cli: dict[str, Any] = {k: extra.pop(k) for k in ("cli", "envvar") if k in extra}
    return Field(default, description=help, json_schema_extra=cli or None, **extra)


def _path_text(value: Any) -> Any:
    """A path given as :class:`os.PathLike` (``tmp_path / "n1"``), as text."""
    return os.fspath(value) if isinstance(value, os.PathLike) else value


class NodeSettings(BaseModel):
    """How one node behaves; every field has a default (see each field's help)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str | None = _setting(None, "node name, unique in the cluster (default: host name + pid)")
    state_dir: Annotated[str, BeforeValidator(_path_text)] = _setting(
        DEFAULT_STATE_DIR, "directory of the node's durable state")
    max_attempts: int = _setting(DEFAULT_MAX_ATTEMPTS,
                                 "handler calls per (key, revision) from the event path", ge=1)
    backoff_base: float = _setting(DEFAULT_BACKOFF_BASE, "first retry delay bound, seconds", ge=0)
    backoff_cap: float = _setting(DEFAULT_BACKOFF_CAP, "largest retry delay bound, seconds", ge=0)
    handler_timeout: float = _setting(DEFAULT_HANDLER_TIMEOUT,
                                      "seconds before a handler call counts as failed", gt=0)
    repair_interval: float = _setting(DEFAULT_REPAIR_INTERVAL,
                                      "seconds between periodic repairs, ±10 % (0 = off)", ge=0)
    repair_backoff_base: float = _setting(
        DEFAULT_REPAIR_BACKOFF_BASE,
        "first gap between repair attempts of a failed key, seconds", ge=0)
    repair_backoff_cap: float = _setting(
        DEFAULT_REPAIR_BACKOFF_CAP,
        "largest gap between repair attempts of a failed key, seconds", ge=0)
    workers: int = _setting(DEFAULT_WORKERS, "concurrent handler calls", ge=1)
    alert_webhook: str | None = _setting(
        None, "Alertmanager-compatible URL alerts are POSTed to (default: log only)")
    alert_resend_interval: float = _setting(DEFAULT_ALERT_RESEND_INTERVAL,
                                            "seconds between re-sends of a firing alert", gt=0)
    node_ttl: float = _setting(DEFAULT_NODE_TTL, "lease of the node's registration, seconds",
                               ge=0.1)
    unreachable_alert_after: float = _setting(
        DEFAULT_UNREACHABLE_ALERT_AFTER,
        "seconds disconnected before SchemaRegistryUnreachable fires", ge=0)
    reconnect_base: float = _setting(DEFAULT_RECONNECT_BASE,
                                     "first reconnect delay bound, seconds", ge=0)
    reconnect_cap: float = _setting(DEFAULT_RECONNECT_CAP,
                                    "largest reconnect delay bound, seconds", ge=0)
    lag_alert_revisions: int = _setting(DEFAULT_LAG_ALERT_REVISIONS,
                                        "revisions behind that count as lagging", ge=1)
    lag_alert_after: float = _setting(DEFAULT_LAG_ALERT_AFTER,
                                      "seconds of lagging before SchemaCacheLagging fires", ge=0)
    monitor_interval: float = _setting(
        DEFAULT_MONITOR_INTERVAL,
        "seconds between gauge refreshes, revision probes and alert checks", gt=0)
    max_pending_keys: int = _setting(DEFAULT_MAX_PENDING_KEYS,
                                     "queued keys before the watch waits (backpressure)", ge=1)

    def with_overrides(self, overrides: dict[str, Any]) -> NodeSettings:
        """A copy with ``overrides`` applied and validated (unknown names refused).

        Raises :class:`TypeError` naming an unknown setting, as a keyword would.
        """
        if not overrides:
            return self
        unknown = sorted(set(overrides) - set(type(self).model_fields))
        if unknown:
            raise TypeError(f"unknown node setting(s): {', '.join(unknown)}")
        return type(self).model_validate({**self.model_dump(exclude_unset=True), **overrides})

    def node_settings(self) -> NodeSettings:
        """Only the node's own settings (a :class:`NodeConfig` drops its process fields)."""
        return NodeSettings.model_validate(self.model_dump(include=set(NodeSettings.model_fields)))


class NodeConfig(NodeSettings):
    """How to run one node process (``schemacache node``): the node's settings and
    what surrounds it."""

    registry: str = _setting(
        DEFAULT_REGISTRY,
        "registry URL (memory://, sqlite:///file.db, etcd://host:port[/prefix], "
        "etcds://[user@]host:port[/prefix]?ca=…&cert=…&key=…)")
    listen: str = _setting(DEFAULT_LISTEN,
                           "host:port of the admin HTTP server (port 0 = any free port)")
    handler: str | None = _setting(None, "handler as module:attribute (default: none, cache only)")
    tls_cert: str | None = _setting(
        DEFAULT_TLS_CERT, "serve the admin API over HTTPS with this certificate (PEM; "
        "with --tls-key); the node then registers an https:// admin URL")
    tls_key: str | None = _setting(DEFAULT_TLS_KEY, "private key (PEM) of --tls-cert")
    token: str | None = _setting(
        None, "bearer token required on repair, cache and failures (default: open; "
        "refused with a non-loopback --listen)", envvar=NODE_TOKEN_ENV)
