"""The node: a self-healing schema cache (see :class:`Node`)."""

from __future__ import annotations

from typing import Any

from .cache import NodeCache
from .config import NodeConfig
from .handler import Handler, load_handler
from .node import Node
from .retry import RetryPolicy
from .state import FailureRecord

__all__ = ["FailureRecord", "Handler", "Node", "NodeCache", "NodeConfig", "RetryPolicy",
           "load_handler", "run_node"]


def __getattr__(name: str) -> Any:
    # The runner pulls in the HTTP stack; load it only when asked for.
    if name == "run_node":
        from .runner import run_node

        return run_node
    raise AttributeError(name)
