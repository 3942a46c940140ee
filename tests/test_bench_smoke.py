"""Smoke test of the benchmark script: it runs, prints its table and writes JSON.

Timings are not asserted (they depend on the machine); only that the sections
ran and produced a figure and a verdict each.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
SMOKE_TIMEOUT = 120.0
"""Seconds the quick run may take before the test fails (it takes well under 60)."""


def test_quick_run_prints_table_and_writes_results(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "run.py"), "--quick", "--sections", "a,e",
         "--backends-a", "memory", "--poison-keys", "300", "--window", "1",
         "--output", str(out), "--log", str(tmp_path / "run.log")],
        cwd=tmp_path, capture_output=True, text=True, timeout=SMOKE_TIMEOUT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    header = next(line for line in proc.stdout.splitlines() if "measurement" in line)
    assert header.split() == ["measurement", "value", "target", "verdict"]
    rows = [line for line in proc.stdout.splitlines() if line[:2] in ("a ", "e ")]
    assert any("catch-up throughput, memory registry" in r and ("PASS" in r or "MISS" in r)
               for r in rows), proc.stdout
    assert any("poisoned/clean throughput, schemacache" in r for r in rows), proc.stdout

    report = json.loads(out.read_text())
    assert report["quick"] is True
    by_section: dict[str, list[dict[str, Any]]] = {}
    for r in report["results"]:
        by_section.setdefault(str(r["section"]), []).append(r)
    assert set(by_section) == {"a", "e"}
    for r in report["results"]:
        assert r["value"] is not None, r
        assert r["verdict"] in ("PASS", "MISS", "info"), r
    calls = {r["name"]: r["extra"]["calls_in_window"] for r in by_section["e"]
             if "calls per minute" in str(r["name"])}
    # The baseline spins on the poisoned key; schemacache stops at max_attempts (5).
    assert calls["poisoned-key handler calls per minute, schemacache"] <= 5
    assert calls["poisoned-key handler calls per minute, baseline"] > 5


def test_unknown_option_is_refused(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "run.py"), "--no-such-flag"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=SMOKE_TIMEOUT)
    assert proc.returncode == 2
    assert "--no-such-flag" in proc.stderr
