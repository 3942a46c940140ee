"""HTTPS end to end: ``serve`` and ``node`` with ``--tls-cert/--tls-key`` over an
``etcds://`` registry (TLS, client certificate, an RBAC user limited to its prefix,
expiring tokens), and the CLI verifying them with ``--cacert`` / ``SCHEMACACHE_CACERT``."""

from __future__ import annotations

import json
import ssl
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from schemacache import load_resources
from service_helpers import Proc, run_cli

pytestmark = [pytest.mark.etcd, pytest.mark.slow]

CONVERGE_TIMEOUT = 60.0


def test_https_serve_node_and_cli_over_etcds(secure_etcd: Any, secure_pki: Any,
                                             tmp_path: Path, examples_dir: Path) -> None:
    user, password, prefix = "https-app", f"pw-{uuid.uuid4().hex}", f"sec/h{uuid.uuid4().hex[:8]}"
    secure_etcd.add_user(user, password, prefix)
    url = secure_etcd.url(prefix, user=user)
    env = {"SCHEMACACHE_ETCD_PASSWORD": password}
    ca = str(secure_pki.ca)
    tls = ["--tls-cert", str(secure_pki.server.cert), "--tls-key", str(secure_pki.server.key)]
    procs = [Proc(["serve", "--registry", url, "--listen", "127.0.0.1:0", "--cacert", ca, *tls],
                  cwd=tmp_path, env=env)]
    try:
        api = procs[0].wait_url()
        assert api.startswith("https://")
        procs.append(Proc(["node", "--registry", url, "--name", "n1", "--state-dir",
                           str(tmp_path / "n1"), "--listen", "127.0.0.1:0", "--node-ttl", "5",
                           *tls], cwd=tmp_path, env=env))
        admin = procs[1].wait_url("admin")
        assert admin.startswith("https://")

        trust = ssl.create_default_context(cafile=ca)

        def registered() -> bool:
            nodes = httpx.get(f"{api}/v1/nodes", verify=trust, timeout=5).json()["nodes"]
            return [n["admin_url"] for n in nodes] == [admin]

        procs[1].wait_for(registered, timeout=CONVERGE_TIMEOUT, what="the https registration")

        ca_env = {"SCHEMACACHE_CACERT": ca}
        r = run_cli("apply", "-f", str(examples_dir), "--wait", "--timeout", "60",
                    server=api, env=ca_env)
        assert r.returncode == 0, r.stderr
        r = run_cli("status", "-o", "json", "--cacert", ca, server=api)
        assert r.returncode == 0, r.stderr
        cluster = json.loads(r.stdout)
        (entry,) = cluster["nodes"]
        assert entry["admin_url"] == admin and entry["status"]["state"] == "ready"
        assert entry["status"]["cache"]["digest"] == cluster["digest"]
        assert entry["status"]["cache"]["size"] == len(load_resources(examples_dir))
        r = run_cli("digest", "-o", "json", "--cacert", ca, server=api)
        assert json.loads(r.stdout)["digest"] == cluster["digest"]
        r = run_cli("delete", "group", "sw_stream", "--cascade", server=api, env=ca_env)
        assert r.returncode == 0, r.stderr
        r = run_cli("get", "all", "-o", "json", server=api, env=ca_env)
        assert r.returncode == 0 and "sw_stream" not in r.stdout

        # without the CA the CLI refuses the server's certificate: one line, exit 1
        r = run_cli("status", server=api)
        assert r.returncode == 1, r.stdout
        assert len(r.stderr.strip().splitlines()) == 1 and "--cacert" in r.stderr
        r = run_cli("get", "all", "--cacert", str(tmp_path / "missing.pem"), server=api)
        assert r.returncode == 1 and "cannot load CA certificate" in r.stderr
    finally:
        codes = [p.stop() for p in reversed(procs)]
    assert codes == [0] * len(procs), [p.output[-2000:] for p in procs]
    logs = "\n".join(p.output for p in procs)
    assert password not in logs
    assert f"{user}@" in logs  # the registry is named, with its user


def test_bad_tls_files_are_one_line_errors(tmp_path: Path, secure_pki: Any) -> None:
    missing = str(tmp_path / "nope.pem")
    r = run_cli("serve", "--registry", "memory://", "--tls-cert", missing,
                "--tls-key", str(secure_pki.server.key))
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1
    assert f"cannot use TLS certificate {missing}" in r.stderr
    r = run_cli("serve", "--registry", "memory://", "--tls-cert", str(secure_pki.server.cert))
    assert r.returncode == 1 and "--tls-key" in r.stderr
    r = run_cli("node", "--registry", "memory://", "--state-dir", str(tmp_path / "n"),
                "--tls-cert", str(secure_pki.server.cert), "--tls-key", str(secure_pki.ca))
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "cannot use TLS certificate" in r.stderr


def test_up_on_a_secured_etcd(secure_etcd: Any, tmp_path: Path) -> None:
    user, password, prefix = "up-app", f"pw-{uuid.uuid4().hex}", f"sec/u{uuid.uuid4().hex[:8]}"
    secure_etcd.add_user(user, password, prefix)
    up = Proc(["up", "--nodes", "1", "--data-dir", str(tmp_path / "var"), "--listen",
               "127.0.0.1:0", "--registry", secure_etcd.url(prefix, user=user)],
              cwd=tmp_path, env={"SCHEMACACHE_ETCD_PASSWORD": password})
    try:
        api = up.wait_url()

        def converged() -> bool:
            r = run_cli("status", "-o", "json", server=api)
            if r.returncode != 0:
                return False
            cluster = json.loads(r.stdout)
            return [(e.get("status") or {}).get("cache", {}).get("digest")
                    for e in cluster["nodes"]] == [cluster["digest"]]

        up.wait_for(converged, timeout=CONVERGE_TIMEOUT, what="the node to converge")
    finally:
        assert up.stop() == 0, up.output
    logs = [up.output] + [p.read_text() for p in (tmp_path / "var" / "nodes").glob("*.log")]
    assert len(logs) == 2 and not any(password in text for text in logs)
    assert not (tmp_path / "var" / "registry.db").exists()
