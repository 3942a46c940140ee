"""Node settings defined once (NodeSettings / NodeConfig): the Node, the
``schemacache node`` command and ``python -m schemacache.node`` all read them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pydantic
import pytest
import typer
from rich.markup import escape

from schemacache.cli import app
from schemacache.node import Node
from schemacache.node.config import (
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_MAX_PENDING_KEYS,
    DEFAULT_RECONNECT_BASE,
    NodeConfig,
    NodeSettings,
)
from schemacache.node_command import flag_of
from schemacache.registry import open_registry


def _node_command() -> Any:
    group: Any = typer.main.get_command(app)
    return group.commands["node"]


def test_every_setting_has_a_default_and_help() -> None:
    for name, field in NodeConfig.model_fields.items():
        assert not field.is_required(), name
        assert field.description, name


def test_node_takes_its_settings_whole_or_by_field(tmp_path: Path) -> None:
    registry = open_registry("memory://")
    whole = Node(registry, NodeSettings(state_dir=str(tmp_path), workers=2, max_attempts=3))
    by_field = Node(registry, state_dir=tmp_path, workers=2, max_attempts=3)  # a Path too
    assert whole.settings == by_field.settings
    assert by_field.workers == 2
    assert by_field.retry.max_attempts == 3
    assert by_field.reconnect_base == DEFAULT_RECONNECT_BASE
    assert by_field.max_pending_keys == DEFAULT_MAX_PENDING_KEYS
    on_top = Node(registry, whole.settings, workers=4)
    assert (on_top.workers, on_top.retry.max_attempts) == (4, 3)


def test_a_node_drops_the_process_settings(tmp_path: Path) -> None:
    config = NodeConfig(state_dir=str(tmp_path), registry="memory://", listen="127.0.0.1:1",
                        workers=3)
    node = Node(open_registry("memory://"), config)
    assert type(node.settings) is NodeSettings
    assert node.settings.workers == 3


def test_unknown_or_invalid_settings_are_refused(tmp_path: Path) -> None:
    registry = open_registry("memory://")
    with pytest.raises(TypeError, match="wrokers"):
        Node(registry, state_dir=str(tmp_path), wrokers=2)
    with pytest.raises(pydantic.ValidationError, match="workers"):
        Node(registry, state_dir=str(tmp_path), workers=0)
    with pytest.raises(TypeError, match="listen"):
        Node(registry, state_dir=str(tmp_path), listen="127.0.0.1:0")  # a process setting


def test_the_node_command_has_one_option_per_setting_with_its_default_and_help() -> None:
    options = {p.name: p for p in _node_command().params}
    for name, field in NodeConfig.model_fields.items():
        option = options.pop(name)
        assert option.opts == [flag_of(name, field)]
        assert option.default == field.default, name
        assert option.help == escape(field.description or ""), name  # rich markup
    assert sorted(options) == ["log_level", "token_file"]
    assert options_env(_node_command(), "token") == "SCHEMACACHE_NODE_TOKEN"
    assert NodeConfig().max_attempts == DEFAULT_MAX_ATTEMPTS


def options_env(command: Any, name: str) -> str | None:
    option = next(p for p in command.params if p.name == name)
    return option.envvar  # type: ignore[no-any-return]


@pytest.mark.parametrize("entry", [["-m", "schemacache", "node"], ["-m", "schemacache.node"]])
def test_both_command_lines_refuse_a_bad_value_naming_its_flag(entry: list[str],
                                                               tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, *entry, "--registry", "memory://", "--state-dir", str(tmp_path),
         "--max-attempts", "0"], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2, result.stderr
    assert "invalid value for --max-attempts" in result.stderr
    assert not any(tmp_path.iterdir()), "nothing is written for a refused command line"


def test_python_m_schemacache_node_shows_the_same_options() -> None:
    result = subprocess.run([sys.executable, "-m", "schemacache.node", "--help"],
                            capture_output=True, text=True, timeout=60, check=False,
                            env={**os.environ, "COLUMNS": "200"})
    assert result.returncode == 0, result.stderr
    for name, field in NodeConfig.model_fields.items():
        assert flag_of(name, field) in result.stdout, name
