"""End to end: ``serve`` and ``node`` subprocesses, the CLI, a SQLite or etcd registry."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from schemacache import load_resources
from service_helpers import Proc, children_of, pid_alive, run_cli

NODES = 2
CONVERGE_TIMEOUT = 60.0


class Cluster:
    """A registry API and ``NODES`` nodes, all subprocesses."""

    def __init__(self, registry_url: str, tmp_path: Path, nodes: int = NODES,
                 node_args: tuple[str, ...] = (), node_env: dict[str, str] | None = None):
        self.registry_url = registry_url
        self.tmp_path = tmp_path
        self.nodes = nodes
        self.node_args = node_args
        self.node_env = node_env
        self.procs: list[Proc] = []
        self.url = ""

    def start(self) -> None:
        serve = Proc(["serve", "--registry", self.registry_url, "--listen", "127.0.0.1:0"],
                     cwd=self.tmp_path)
        self.procs.append(serve)
        self.url = serve.wait_url()
        for i in range(1, self.nodes + 1):
            self.procs.append(Proc([
                "node", "--registry", self.registry_url, "--name", f"node-{i}",
                "--state-dir", str(self.tmp_path / f"node-{i}"), "--listen", "127.0.0.1:0",
                "--repair-interval", "30", "--node-ttl", "5", *self.node_args,
            ], cwd=self.tmp_path, env=self.node_env))
        self.procs[0].wait_for(self._all_registered, timeout=CONVERGE_TIMEOUT,
                               what=f"{self.nodes} node registrations")

    def _all_registered(self) -> bool:
        for proc in self.procs[1:]:
            if not proc.alive():
                raise AssertionError(f"node exited with {proc.popen.returncode}:\n{proc.output}")
        try:
            nodes = httpx.get(f"{self.url}/v1/nodes", timeout=5).json()["nodes"]
        except httpx.HTTPError:
            return False
        return len(nodes) == self.nodes

    def stop(self) -> None:
        pids = [p.pid for p in self.procs]
        descendants = [c for p in pids for c in children_of(p)]
        codes = [p.stop() for p in reversed(self.procs)]
        left = [p for p in pids + descendants if pid_alive(p)]
        assert not left, f"processes left behind: {left}"
        assert codes == [0] * len(codes), (codes, [p.output[-2000:] for p in self.procs])


@pytest.fixture
def sqlite_cluster(tmp_path: Path) -> Iterator[Cluster]:
    cluster = Cluster(f"sqlite:///{tmp_path / 'registry.db'}", tmp_path)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def etcd_cluster(tmp_path: Path) -> Iterator[Cluster]:
    from etcd_server import EtcdCluster

    with EtcdCluster() as etcd:
        cluster = Cluster(etcd.url(f"e2e{uuid.uuid4().hex[:8]}"), tmp_path)
        try:
            cluster.start()
            yield cluster
        finally:
            cluster.stop()


def _status(url: str) -> dict[str, Any]:
    r = run_cli("status", "-o", "json", server=url)
    assert r.returncode == 0, r.stderr
    return dict(json.loads(r.stdout))


def _converged(url: str) -> dict[str, Any] | None:
    status = _status(url)
    nodes = status["nodes"]
    if len(nodes) != NODES:
        return None
    for entry in nodes:
        st = entry.get("status") or {}
        if st.get("state") != "ready" or (st.get("cache") or {}).get("digest") != status[
                "digest"]:
            return None
    return status


def _wait_converged(url: str) -> dict[str, Any]:
    deadline = time.monotonic() + CONVERGE_TIMEOUT
    while time.monotonic() < deadline:
        status = _converged(url)
        if status is not None:
            return status
        time.sleep(0.2)
    raise AssertionError(f"cluster did not converge: {_status(url)}")


def _scenario(cluster: Cluster, examples_dir: Path) -> None:
    expected = load_resources(examples_dir)
    r = run_cli("apply", "-f", str(examples_dir), "--wait", "--timeout", "60",
                server=cluster.url)
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert len(r.stdout.splitlines()) == len(expected)
    revision = httpx.get(f"{cluster.url}/v1/revision").json()["revision"]

    # --wait returned: every node has applied the write's revision already
    status = _status(cluster.url)
    assert {e["name"] for e in status["nodes"]} == {f"node-{i}" for i in range(1, NODES + 1)}
    for entry in status["nodes"]:
        st = entry["status"]
        assert st["applied_revision"] >= revision
        assert st["cache"]["size"] == len(expected)
    status = _wait_converged(cluster.url)

    r = run_cli("digest", "-o", "json", server=cluster.url)
    registry_digest = json.loads(r.stdout)
    assert registry_digest["digest"] == status["digest"]
    assert registry_digest["count"] == len(expected)
    for entry in status["nodes"]:
        assert entry["status"]["cache"]["digest"] == registry_digest["digest"]
        assert entry["status"]["failures"] == []

    r = run_cli("status", server=cluster.url)
    assert r.returncode == 0
    assert r.stdout.count("ready") == NODES

    r = run_cli("delete", "group", "sw_stream", "--cascade", server=cluster.url)
    assert r.returncode == 0, r.stderr
    after = _wait_converged(cluster.url)
    assert after["digest"] != status["digest"]
    left = json.loads(run_cli("get", "all", "-o", "json", server=cluster.url).stdout)
    assert not [d for d in left if d["metadata"].get("group") == "sw_stream"]
    for entry in after["nodes"]:
        assert entry["status"]["cache"]["size"] == len(left)


@pytest.mark.slow
def test_sqlite_cluster(sqlite_cluster: Cluster, examples_dir: Path) -> None:
    _scenario(sqlite_cluster, examples_dir)


@pytest.mark.slow
@pytest.mark.etcd
def test_etcd_cluster(etcd_cluster: Cluster, examples_dir: Path) -> None:
    _scenario(etcd_cluster, examples_dir)


@pytest.mark.slow
def test_wait_reports_handler_failures(tmp_path: Path, examples_dir: Path) -> None:
    from schemacache.testing import write_faults

    faults = tmp_path / "faults.json"
    key = "measure/sw_metric/service_cpm_minute"
    write_faults(faults, fail={key: "injected for the test"})
    cluster = Cluster(f"sqlite:///{tmp_path / 'registry.db'}", tmp_path, nodes=1,
                      node_args=("--handler", "schemacache.testing:FaultyHandler",
                                 "--max-attempts", "2", "--backoff-base", "0.01",
                                 "--backoff-cap", "0.05"),
                      node_env={"SCHEMACACHE_FAULTS": str(faults)})
    try:
        cluster.start()
        r = run_cli("apply", "-f", str(examples_dir), "--wait", "--timeout", "60",
                    server=cluster.url)
        assert r.returncode == 1, (r.stdout, r.stderr)
        assert f"node-1 {key}: " in r.stderr and "injected for the test" in r.stderr
        assert "Traceback" not in r.stderr
        r = run_cli("status", server=cluster.url)
        assert "degraded" in r.stdout

        write_faults(faults)
        r = httpx.post(f"{_admin_url(cluster.url)}/v1/repair", timeout=10)
        assert r.status_code == 202
        _wait_converged_n(cluster.url, 1)
        r = run_cli("apply", "-f", str(examples_dir), "--wait", "--timeout", "60",
                    server=cluster.url)
        assert r.returncode == 0, r.stderr
        assert all(line.endswith(" unchanged") for line in r.stdout.splitlines())
    finally:
        cluster.stop()


def _admin_url(url: str) -> str:
    [node] = httpx.get(f"{url}/v1/nodes", timeout=5).json()["nodes"]
    return str(node["admin_url"])


def _wait_converged_n(url: str, nodes: int) -> None:
    deadline = time.monotonic() + CONVERGE_TIMEOUT
    while time.monotonic() < deadline:
        status = _status(url)
        sts = [e.get("status") or {} for e in status["nodes"]]
        if len(sts) == nodes and all(
                st.get("state") == "ready" and not st.get("failures")
                and (st.get("cache") or {}).get("digest") == status["digest"] for st in sts):
            return
        time.sleep(0.2)
    raise AssertionError(f"did not converge: {_status(url)}")
