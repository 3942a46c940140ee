"""Every command documents itself: ``--help`` renders for each one."""

from __future__ import annotations

import importlib.metadata

import pytest
from typer.testing import CliRunner

from schemacache.cli import app

COMMANDS = ["serve", "node", "up", "demo", "apply", "get", "export", "delete", "status", "digest"]


@pytest.mark.parametrize("command", COMMANDS)
def test_help_renders(command: str) -> None:
    result = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "120"})
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_top_level_help_lists_every_command() -> None:
    result = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "120"})
    assert result.exit_code == 0
    for command in COMMANDS:
        assert command in result.output


@pytest.mark.parametrize("flag", ["--version", "-V"])
def test_version_is_the_installed_distributions(flag: str) -> None:
    result = CliRunner().invoke(app, [flag])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"schemacache {importlib.metadata.version('schemacache')}"
