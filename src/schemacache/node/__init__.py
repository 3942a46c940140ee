"""The node: a self-healing schema cache (see :class:`Node`).

Names load on first use: the command line imports ``schemacache.node.config``
for its defaults and must not pay for the whole node on every client command.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .cache import NodeCache
    from .config import NodeConfig
    from .failures import FailureRecord
    from .handler import Handler, load_handler
    from .node import Node
    from .retry import RetryPolicy
    from .runner import run_node

__all__ = ["FailureRecord", "Handler", "Node", "NodeCache", "NodeConfig", "RetryPolicy",
           "load_handler", "run_node"]

_HOMES = {"FailureRecord": "failures", "Handler": "handler", "Node": "node",
          "NodeCache": "cache", "NodeConfig": "config", "RetryPolicy": "retry",
          "load_handler": "handler", "run_node": "runner"}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(name)
    return getattr(importlib.import_module(f".{home}", __name__), name)
