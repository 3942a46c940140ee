"""``schemacache up`` (what ``make run`` runs) and ``schemacache demo`` (``make demo``)."""

from __future__ import annotations

import json
import re
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from service_helpers import Proc, children_of, pid_alive, run_cli

UP_NODES = 2
READY_TIMEOUT = 90.0
DEMO_BUDGET = 60.0
"""The demo must finish within this many seconds (its own measurement)."""


def _cluster_ready(url: str) -> dict[str, Any] | None:
    r = run_cli("status", "-o", "json", server=url)
    if r.returncode != 0:
        return None
    status = json.loads(r.stdout)
    nodes = status["nodes"]
    ok = len(nodes) == UP_NODES and all(
        (e.get("status") or {}).get("state") == "ready"
        and e["status"]["cache"]["digest"] == status["digest"] for e in nodes)
    return dict(status) if ok else None


def _run_up(data_dir: Path) -> tuple[Proc, str, dict[str, Any]]:
    up = Proc(["up", "--nodes", str(UP_NODES), "--data-dir", str(data_dir),
               "--listen", "127.0.0.1:0"], cwd=data_dir.parent)
    url = up.wait_url()
    status = up.wait_for(lambda: _cluster_ready(url), timeout=READY_TIMEOUT,
                         what="all nodes ready with the registry's digest")
    return up, url, status


def _stop_and_check(up: Proc) -> None:
    pids = children_of(up.pid)
    assert len(pids) >= UP_NODES, up.output
    assert up.stop(signal.SIGTERM) == 0, up.output
    left = [p for p in pids if pid_alive(p)]
    assert not left, f"children left behind: {left}\n{up.output}"
    assert "stopped" in up.output


@pytest.mark.slow
def test_up_then_status_then_restart_reuses_data(tmp_path: Path) -> None:
    data_dir = tmp_path / "var"
    up, url, status = _run_up(data_dir)
    try:
        assert status["revision"] > 0
        assert {e["name"] for e in status["nodes"]} == {"node-1", "node-2"}
        table = run_cli("status", server=url)
        assert table.returncode == 0
        assert table.stdout.count("ready") == UP_NODES
        digest = json.loads(run_cli("digest", "-o", "json", server=url).stdout)
        assert digest["digest"] == status["digest"] and digest["count"] > 0
    finally:
        _stop_and_check(up)
    assert (data_dir / "registry.db").exists()
    assert (data_dir / "nodes" / "node-1").is_dir()

    up, url, again = _run_up(data_dir)
    try:
        assert "reusing registry" in up.output
        assert again["revision"] == status["revision"]
        assert again["digest"] == status["digest"]
    finally:
        _stop_and_check(up)


@pytest.mark.slow
def test_demo_passes(tmp_path: Path) -> None:
    started = time.monotonic()
    r = run_cli("demo", cwd=tmp_path, timeout=180)
    elapsed = time.monotonic() - started
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-3000:]
    out = r.stdout
    assert "retries exhausted" in out
    assert "FIRING SchemaEventRetriesExhausted" in out
    assert "RESOLVED SchemaEventRetriesExhausted" in out
    assert "node-3 killed (SIGKILL)" in out
    assert "every node converged" in out
    assert len(re.findall(r"node-\d\W+[0-9a-f]{64}\W+yes", out)) == 3
    reported = float(re.search(r"demo finished in ([0-9.]+)s", out).group(1))  # type: ignore[union-attr]
    assert reported < DEMO_BUDGET, f"demo took {reported:.1f}s (wall {elapsed:.1f}s)"
