"""The client commands of the CLI against a real ``schemacache serve`` subprocess."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from schemacache import load_resources, open_registry
from service_helpers import Proc, run_cli

TOKEN = "cli-token"


@dataclass
class Server:
    url: str
    db: Path


def _start(tmp_path: Path, *extra: str) -> tuple[Proc, Server]:
    db = tmp_path / "registry.db"
    proc = Proc(["serve", "--registry", f"sqlite:///{db}", "--listen", "127.0.0.1:0", *extra],
                cwd=tmp_path)
    return proc, Server(proc.wait_url(), db)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    proc, srv = _start(tmp_path)
    try:
        yield srv
    finally:
        assert proc.stop() == 0, proc.output


def _one_line_error(stderr: str) -> None:
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), stderr


def test_apply_get_delete_digest(server: Server, examples_dir: Path) -> None:
    expected = load_resources(examples_dir)
    r = run_cli("apply", "-f", str(examples_dir), server=server.url)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == len(expected)
    assert "measure/sw_metric/service_cpm_minute created" in lines
    assert lines[0].startswith("group/")

    r = run_cli("apply", "-f", str(examples_dir), server=server.url)
    assert r.returncode == 0
    assert all(line.endswith(" unchanged") for line in r.stdout.splitlines())

    r = run_cli("get", "measure", server=server.url)
    assert r.returncode == 0
    assert "service_cpm_minute" in r.stdout and "sw_metric" in r.stdout
    assert "group" not in {line.split()[0] for line in r.stdout.splitlines()[1:]}

    r = run_cli("get", "measure", "sw_metric/service_cpm_minute", "-o", "json", server=server.url)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["metadata"]["name"] == "service_cpm_minute"
    r = run_cli("get", "group", "sw_metric", "-o", "yaml", server=server.url)
    assert yaml.safe_load(r.stdout)["spec"]["catalog"] == "MEASURE"
    r = run_cli("get", "all", "-o", "json", server=server.url)
    assert len(json.loads(r.stdout)) == len(expected)
    r = run_cli("get", "measures", server=server.url)
    assert r.returncode == 0
    assert "no resources found (known kinds:" in r.stderr

    r = run_cli("digest", "-o", "json", server=server.url)
    assert r.returncode == 0
    api = httpx.get(f"{server.url}/v1/digest").json()
    assert json.loads(r.stdout) == api
    r = run_cli("digest", server=server.url)
    assert r.stdout.split()[0] == api["digest"]

    r = run_cli("delete", "group", "sw_metric", server=server.url)
    assert r.returncode == 1
    _one_line_error(r.stderr)
    assert "referenced" in r.stderr and "--cascade" in r.stderr
    r = run_cli("delete", "group", "sw_metric", "--cascade", server=server.url)
    assert r.returncode == 0, r.stderr
    assert "group/sw_metric deleted" in r.stdout
    r = run_cli("get", "group", "sw_metric", server=server.url)
    assert r.returncode == 1
    _one_line_error(r.stderr)
    assert "not found" in r.stderr
    r = run_cli("delete", "measure", "sw_stream/nope", server=server.url)
    assert r.returncode == 1


def test_apply_from_stdin(server: Server, examples_dir: Path) -> None:
    text = (examples_dir / "00-groups.yaml").read_text()
    r = run_cli("apply", "-f", "-", input=text, server=server.url)
    assert r.returncode == 0, r.stderr
    assert "group/sw_metric created" in r.stdout
    r = run_cli("get", "group", "-o", "json", server=server.url)
    assert {d["metadata"]["name"] for d in json.loads(r.stdout)} >= {"sw_metric", "sw_stream"}


def test_invalid_manifest_is_refused_locally(server: Server, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: group\nmetadata: {name: g}\nspec: {catalog: NOPE}\n")
    r = run_cli("apply", "-f", str(bad), server=server.url)
    assert r.returncode == 1
    _one_line_error(r.stderr)
    assert "spec.catalog" in r.stderr
    assert httpx.get(f"{server.url}/v1/revision").json()["revision"] == 0
    r = run_cli("apply", "-f", str(tmp_path / "missing.yaml"), server=server.url)
    assert r.returncode == 1
    _one_line_error(r.stderr)


def test_usage_errors_exit_2(server: Server) -> None:
    assert run_cli("get", server=server.url).returncode == 2
    assert run_cli("get", "measure", "a/b/c", server=server.url).returncode == 2
    assert run_cli("delete", "measure", "no-slash", server=server.url).returncode == 2
    assert run_cli("get", "group", "-o", "xml", server=server.url).returncode == 2
    assert run_cli("nope").returncode == 2


def test_unreachable_server_exit_1() -> None:
    r = run_cli("digest", server="http://127.0.0.1:9")
    assert r.returncode == 1
    _one_line_error(r.stderr)
    assert "cannot reach" in r.stderr


async def test_wait_times_out_naming_the_node(server: Server, examples_dir: Path) -> None:
    registry = open_registry(f"sqlite:///{server.db}")
    lease = await registry.register_node("ghost", "http://127.0.0.1:9", ttl=60)
    try:
        r = run_cli("apply", "-f", str(examples_dir / "00-groups.yaml"), "--wait",
                    "--timeout", "1", server=server.url)
        assert r.returncode == 3, (r.stdout, r.stderr)
        assert "ghost" in r.stderr
        r = run_cli("status", server=server.url)
        assert r.returncode == 0
        assert "ghost" in r.stdout and "unreachable" in r.stdout
    finally:
        await lease.revoke()
        await registry.close()
    r = run_cli("apply", "-f", str(examples_dir / "00-groups.yaml"), "--wait",
                "--timeout", "5", server=server.url)
    assert r.returncode == 0, r.stderr


def test_token_on_writes(tmp_path: Path, examples_dir: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    proc, srv = _start(tmp_path, "--token-file", str(token_file))
    try:
        groups = str(examples_dir / "00-groups.yaml")
        r = run_cli("apply", "-f", groups, server=srv.url)
        assert r.returncode == 1
        assert "401" in r.stderr
        r = run_cli("apply", "-f", groups, "--token", "wrong", server=srv.url)
        assert r.returncode == 1
        assert "403" in r.stderr
        r = run_cli("apply", "-f", groups, server=srv.url, env={"SCHEMACACHE_TOKEN": TOKEN})
        assert r.returncode == 0, r.stderr
        assert run_cli("get", "group", server=srv.url).returncode == 0
    finally:
        assert proc.stop() == 0


def test_serve_refuses_public_address_without_token(tmp_path: Path) -> None:
    r = run_cli("serve", "--registry", f"sqlite:///{tmp_path / 'r.db'}", "--listen",
                "0.0.0.0:0", timeout=30)
    assert r.returncode == 2
    assert "token" in r.stderr
    assert not (tmp_path / "r.db").exists()


def test_serve_on_a_taken_address_says_so(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = run_cli("serve", "--registry", f"sqlite:///{tmp_path / 'r.db'}", "--listen",
                    f"127.0.0.1:{port}", timeout=30)
    assert r.returncode == 1, r.stderr
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in r.stderr
    assert "--listen" in r.stderr and "Traceback" not in r.stderr
