"""Every policy number of a node, with its default, in one place.

The CLI's ``schemacache node`` flags map one-to-one onto :class:`NodeConfig`.
"""

from __future__ import annotations

from dataclasses import dataclass

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
DEFAULT_NODE_TTL = 10.0
DEFAULT_ALERT_RESEND_INTERVAL = DEFAULT_RESEND_INTERVAL
DEFAULT_UNREACHABLE_ALERT_AFTER = 30.0
DEFAULT_TLS_CERT: str | None = None
DEFAULT_TLS_KEY: str | None = None
NODE_TOKEN_ENV = "SCHEMACACHE_NODE_TOKEN"
"""Environment variable holding the node admin token."""


@dataclass
class NodeConfig:
    """How to run one node (``schemacache node``).

    :param registry: registry URL (default :data:`DEFAULT_REGISTRY`).
    :param name: node name, unique in the cluster (default: host name + pid).
    :param state_dir: directory of the node's durable state (``state.db``).
    :param listen: ``host:port`` of the admin HTTP server (port 0 = any free port).
    :param handler: ``module:attribute`` of the handler (``None`` = cache only).
    :param max_attempts: handler calls per (key, revision) from the event path.
    :param backoff_base: first retry delay bound, seconds.
    :param backoff_cap: largest retry delay bound, seconds.
    :param handler_timeout: a handler call longer than this is a failed attempt.
    :param repair_interval: seconds between periodic repairs (±10 % jitter; 0 = off).
    :param workers: concurrent handler calls.
    :param alert_webhook: Alertmanager-compatible URL alerts are POSTed to.
    :param alert_resend_interval: seconds between re-sends of a still-firing alert.
    :param node_ttl: lease of the node's registration in the registry.
    :param repair_backoff_base: first gap between repair attempts of a failed key.
    :param repair_backoff_cap: largest gap between repair attempts of a failed key.
    :param unreachable_alert_after: seconds disconnected from the registry before
        ``SchemaRegistryUnreachable`` fires.
    :param tls_cert: serve the admin API over HTTPS with this certificate file (with
        ``tls_key``); the node then registers an ``https://`` admin URL.
    :param tls_key: the certificate's private key file.
    :param token: bearer token the admin API requires on repair, cache and
        failures (``None``: open; refused with a non-loopback ``listen``).
    """

    registry: str = DEFAULT_REGISTRY
    name: str | None = None
    state_dir: str = "./var/node"
    listen: str = DEFAULT_LISTEN
    handler: str | None = None
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    backoff_base: float = DEFAULT_BACKOFF_BASE
    backoff_cap: float = DEFAULT_BACKOFF_CAP
    handler_timeout: float = DEFAULT_HANDLER_TIMEOUT
    repair_interval: float = DEFAULT_REPAIR_INTERVAL
    workers: int = DEFAULT_WORKERS
    alert_webhook: str | None = None
    alert_resend_interval: float = DEFAULT_ALERT_RESEND_INTERVAL
    node_ttl: float = DEFAULT_NODE_TTL
    repair_backoff_base: float = DEFAULT_REPAIR_BACKOFF_BASE
    repair_backoff_cap: float = DEFAULT_REPAIR_BACKOFF_CAP
    unreachable_alert_after: float = DEFAULT_UNREACHABLE_ALERT_AFTER
    tls_cert: str | None = DEFAULT_TLS_CERT
    tls_key: str | None = DEFAULT_TLS_KEY
    token: str | None = None
