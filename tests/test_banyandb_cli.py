"""``get -o banyandb``, ``export DIR`` and ``apply -f DIR`` against real servers.

An export of a registry applied into an empty one reproduces every key and
spec, on every backend (memory, a SQLite file, a real etcd).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from conftest import registry_url
from service_helpers import Proc, run_cli

CORPUS = Path(__file__).parent / "banyandb_corpus"


@contextmanager
def _serve(url: str, cwd: Path) -> Iterator[str]:
    cwd.mkdir(parents=True, exist_ok=True)
    proc = Proc(["serve", "--registry", url, "--listen", "127.0.0.1:0"], cwd=cwd)
    try:
        yield proc.wait_url()
    finally:
        assert proc.stop() == 0, proc.output


def _contents(server: str) -> dict[str, tuple[str, Any]]:
    r = run_cli("get", "all", "-o", "json", server=server)
    assert r.returncode == 0, r.stderr
    return {f"{d['kind']}/{d['metadata'].get('group')}/{d['metadata']['name']}": d["spec"]
            for d in json.loads(r.stdout)}


@pytest.mark.parametrize("backend", ["memory", "sqlite", "etcd"])
def test_export_then_apply_reproduces_every_key_and_spec(
        backend: str, tmp_path: Path, request: pytest.FixtureRequest, examples_dir: Path) -> None:
    source_url = registry_url(backend, tmp_path / "a", request)
    target_url = registry_url(backend, tmp_path / "b", request)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with _serve(source_url, tmp_path / "a") as source, _serve(target_url, tmp_path / "b") as target:
        for manifest in (examples_dir, CORPUS):
            r = run_cli("apply", "-f", str(manifest), server=source)
            assert r.returncode == 0, r.stderr
        expected = _contents(source)
        assert len(expected) > len(list(CORPUS.rglob("*.json")))

        out = tmp_path / "export"
        r = run_cli("export", str(out), server=source)
        assert r.returncode == 0, r.stderr
        assert f"exported {len(expected)} resources" in r.stdout
        files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.json"))
        assert len(files) == len(expected)
        assert "groups/sw_metric.json" in files
        assert "measures/sw_metric/service_cpm_minute.json" in files

        r = run_cli("apply", "-f", str(out), server=target)
        assert r.returncode == 0, r.stderr
        assert all(line.endswith(" created") for line in r.stdout.splitlines()), r.stdout
        assert _contents(target) == expected


def test_get_banyandb_output_and_apply_kind(tmp_path: Path) -> None:
    with _serve("memory://", tmp_path) as server:
        r = run_cli("apply", "-f", str(CORPUS / "groups"), server=server)
        assert r.returncode == 0, r.stderr
        r = run_cli("get", "group", "sw_stream", "-o", "banyandb", server=server)
        assert r.returncode == 0, r.stderr
        doc = json.loads(r.stdout)
        assert doc["catalog"] == "CATALOG_STREAM"
        assert doc["resource_opts"]["ttl"] == {"unit": "UNIT_DAY", "num": 3}
        assert int(doc["metadata"]["mod_revision"]) > 0 and doc["updated_at"].endswith("Z")

        r = run_cli("get", "group", "-o", "banyandb", server=server)
        listed = json.loads(r.stdout)
        assert sorted(d["metadata"]["name"] for d in listed) == sorted(
            p.stem for p in (CORPUS / "groups").glob("*.json"))

        # A BanyanDB document outside a kind folder needs --kind.
        loose = tmp_path / "sw_log.json"
        loose.write_text((CORPUS / "streams" / "sw_log.json").read_text())
        r = run_cli("apply", "-f", str(loose), server=server)
        assert r.returncode == 1 and "--kind" in r.stderr
        r = run_cli("apply", "-f", str(loose), "--kind", "streams", server=server)
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == "stream/sw_stream/sw_log created"
        r = run_cli("apply", "-f", str(loose), "--kind", "nonsense", server=server)
        assert r.returncode == 2 and "unknown kind" in r.stderr

        out = tmp_path / "export"
        r = run_cli("export", str(out), server=server)
        assert r.returncode == 0, r.stderr
        r = run_cli("export", str(out), server=server)
        assert r.returncode == 1 and "not an empty directory" in r.stderr
