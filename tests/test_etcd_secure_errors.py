"""Each way of failing to get into a secured etcd gives one line naming the cause and
the endpoint, exit code 1, no traceback and never the password."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from conftest import secure_cluster
from service_helpers import cli_env

pytestmark = pytest.mark.etcd

CLI_DEADLINE = 60.0
"""Seconds one refused ``serve`` may take (it waits out one call timeout at most)."""


@dataclass(frozen=True)
class Case:
    name: str
    url: str
    expect: str
    env: dict[str, str] | None = None


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, secure_pki: Any) -> Iterator[dict[str, Any]]:
    """The secured etcd (auth on, a user limited to /ok/), a plaintext etcd, a
    TLS etcd whose certificate has expired, and certificates nobody trusts."""
    from etcd_server import EtcdCluster, EtcdTls
    from pki import Pki

    tmp = tmp_path_factory.mktemp("errors")
    stranger = Pki(tmp / "stranger", name="some other CA")
    stale = secure_pki.issue("stale-server", ips=["127.0.0.1"], expired=True)
    tls_stale = EtcdTls(ca=secure_pki.ca, cert=stale.cert, key=stale.key, verify_health=False)
    password = f"pw-{uuid.uuid4().hex}"
    with secure_cluster(secure_pki) as secure, EtcdCluster() as plain, \
            EtcdCluster(tls=tls_stale) as expired:
        secure.enable_auth(uuid.uuid4().hex)
        secure.add_user("app", password, prefix="ok")
        secure.add_user("other", password, prefix="elsewhere")
        yield {"secure": secure, "plain": plain, "expired": expired, "pki": secure_pki,
               "stranger": stranger, "password": password, "tmp": tmp,
               "expired_client": secure_pki.issue("expired-client", expired=True)}


def _cases(w: dict[str, Any]) -> list[Case]:
    pki, stranger, tmp = w["pki"], w["stranger"], w["tmp"]
    ep = w["secure"].endpoints[0]
    good_client = f"cert={pki.client.cert}&key={pki.client.key}"
    intruder = stranger.issue("intruder")
    old = w["expired_client"]
    wrong = tmp / "wrong.password"
    wrong.write_text("not-the-password\n")
    env = {"SCHEMACACHE_ETCD_PASSWORD": w["password"]}
    return [
        Case("wrong password", f"etcds://app@{ep}/ok?ca={pki.ca}&{good_client}"
             f"&password_file={wrong}", "authentication failed for user 'app'"),
        Case("unknown user", f"etcds://nobody@{ep}/ok?ca={pki.ca}&{good_client}",
             "authentication failed for user 'nobody'", env),
        Case("permission denied", f"etcds://other@{ep}/ok?ca={pki.ca}&{good_client}",
             "permission denied", env),
        Case("plain etcd:// against a TLS port", f"etcd://{ep}/ok",
             "use etcds://"),
        Case("TLS against a plain port", f"etcds://{w['plain'].endpoints[0]}/ok?ca={pki.ca}",
             "use etcd://"),
        Case("no client certificate", f"etcds://app@{ep}/ok?ca={pki.ca}",
             "rejected the client certificate", env),
        Case("client certificate from an unknown CA",
             f"etcds://app@{ep}/ok?ca={pki.ca}&cert={intruder.cert}&key={intruder.key}",
             "rejected the client certificate", env),
        Case("expired client certificate",
             f"etcds://app@{ep}/ok?ca={pki.ca}&cert={old.cert}&key={old.key}",
             "rejected the client certificate", env),
        Case("server certificate from another CA",
             f"etcds://app@{ep}/ok?ca={stranger.ca}&{good_client}",
             "not trusted by ca=", env),
        Case("server certificate for another name",
             f"etcds://app@{ep}/ok?ca={pki.ca}&{good_client}&server_name=db.example.org",
             "does not name db.example.org", env),
        Case("expired server certificate",
             f"etcds://{w['expired'].endpoints[0]}/ok?ca={pki.ca}",
             "certificate has expired"),
    ]


async def _serve(case: Case, cwd: Path) -> tuple[Case, int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "schemacache", "serve", "--registry", case.url,
        "--listen", "127.0.0.1:0", cwd=cwd, env=cli_env(case.env),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        start_new_session=True)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), CLI_DEADLINE)
    finally:
        if proc.returncode is None:
            os.kill(proc.pid, 9)
            await proc.wait()
    return case, int(proc.returncode or 0), (out + err).decode()


async def test_each_refusal_is_one_line_naming_cause_and_endpoint(
        world: dict[str, Any], tmp_path: Path) -> None:
    cases = _cases(world)
    results = await asyncio.gather(*(_serve(c, tmp_path) for c in cases))
    problems = []
    for case, code, output in results:
        lines = [line for line in output.splitlines() if line.strip()]
        endpoint = case.url.split("://", 1)[1].split("/", 1)[0].split("@")[-1]
        ok = (code == 1 and len(lines) == 1 and case.expect in lines[0]
              and endpoint in lines[0] and "Traceback" not in output
              and world["password"] not in output)
        if not ok:
            problems.append(f"{case.name}: exit {code}, output:\n{output}")
    assert not problems, "\n\n".join(problems)

