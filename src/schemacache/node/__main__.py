"""``python -m schemacache.node``: run one node (the flags of ``schemacache node``)."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from dataclasses import fields

from ..errors import SchemaCacheError
from .config import NODE_TOKEN_ENV, NodeConfig
from .runner import configure_logging, run_node

_HELP = {
    "registry": "registry URL (memory://, sqlite:///file.db, etcd://host:port[/prefix], "
                "etcds://[user@]host:port[/prefix]?ca=…&cert=…&key=…)",
    "name": "node name, unique in the cluster (default: host name + pid)",
    "state_dir": "directory of the node's durable state",
    "listen": "host:port of the admin HTTP server (port 0 = any free port)",
    "handler": "handler as module:attribute (default: none, cache only)",
    "max_attempts": "handler calls per (key, revision) from the event path",
    "backoff_base": "first retry delay bound, seconds",
    "backoff_cap": "largest retry delay bound, seconds",
    "handler_timeout": "seconds before a handler call counts as failed",
    "repair_interval": "seconds between periodic repairs (0 = off)",
    "workers": "concurrent handler calls",
    "alert_webhook": "Alertmanager-compatible URL alerts are POSTed to",
    "alert_resend_interval": "seconds between re-sends of a firing alert",
    "node_ttl": "lease of the node's registration, seconds",
    "repair_backoff_base": "first gap between repair attempts of a failed key, seconds",
    "repair_backoff_cap": "largest gap between repair attempts of a failed key, seconds",
    "unreachable_alert_after": "seconds disconnected before SchemaRegistryUnreachable fires",
    "tls_cert": "serve the admin API over HTTPS with this certificate file",
    "tls_key": "the HTTPS certificate's private key file",
    "token": "bearer token required on repair, cache and failures (env SCHEMACACHE_NODE_TOKEN)",
}


def parse_args(argv: Sequence[str] | None = None) -> tuple[NodeConfig, str]:
    """Map command-line flags onto a :class:`NodeConfig`; also returns the log level."""
    parser = argparse.ArgumentParser(prog="python -m schemacache.node",
                                     description="Run one schemacache node.")
    defaults = NodeConfig()
    for f in fields(NodeConfig):
        default = getattr(defaults, f.name)
        kind = type(default) if default is not None else str
        parser.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, type=kind,
                            default=default, help=f"{_HELP.get(f.name, f.name)} "
                                                  f"(default: {default})")
    parser.add_argument("--log-level", default="INFO", help="logging level (default: INFO)")
    ns = vars(parser.parse_args(argv))
    level = ns.pop("log_level")
    ns["token"] = ns["token"] or os.environ.get(NODE_TOKEN_ENV) or None
    return NodeConfig(**ns), level


def main(argv: Sequence[str] | None = None) -> int:
    config, level = parse_args(argv)
    configure_logging(level)
    try:
        asyncio.run(run_node(config))
    except KeyboardInterrupt:
        return 130
    except (SchemaCacheError, OSError, ValueError) as exc:  # a user can act on: one line
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
