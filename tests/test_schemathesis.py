"""Property-based fuzzing of the registry API's OpenAPI document: no 5xx, ever."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from service_helpers import Proc, cli_env

MAX_EXAMPLES = 25
"""Test cases per operation and phase: enough to hit every error path, under a minute."""


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    proc = Proc(["serve", "--registry", f"sqlite:///{tmp_path / 'registry.db'}",
                 "--listen", "127.0.0.1:0"], cwd=tmp_path)
    try:
        yield proc.wait_url()
    finally:
        proc.stop()


def _schemathesis() -> list[str]:
    exe = Path(sys.executable).parent / "schemathesis"
    if exe.exists():
        return [str(exe)]
    found = shutil.which("schemathesis")
    assert found, "schemathesis is a dev dependency"
    return [found]


def test_no_server_error(server: str, tmp_path: Path) -> None:
    result = subprocess.run(
        [*_schemathesis(), "run", f"{server}/openapi.json",
         "--checks", "not_a_server_error", "--max-examples", str(MAX_EXAMPLES),
         "--generation-database", "none", "--no-color", "--request-timeout", "10",
         "--report-dir", str(tmp_path / "report")],
        capture_output=True, text=True, cwd=tmp_path, env=cli_env(), timeout=240, check=False,
    )
    summary = result.stdout[-4000:]
    assert result.returncode == 0, summary + result.stderr[-2000:]
    assert "9 passed" in summary or "passed" in summary, summary
    assert "generated" in summary, summary
