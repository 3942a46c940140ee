"""Shared fixtures: registries of every backend, on real files and a real etcd."""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from schemacache import Registry, open_registry

BACKENDS = ["memory", "sqlite", "etcd"]


@pytest.fixture(scope="session")
def etcd_server() -> Iterator[Any]:
    """One real etcd member for the whole session (each test uses its own key prefix)."""
    from etcd_server import EtcdCluster

    with EtcdCluster() as server:
        yield server


TOKEN_TTL = 2
"""Seconds an auth token of the secured etcd lives: several expire in every test."""


@pytest.fixture(scope="session")
def secure_pki(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A CA with a server certificate for 127.0.0.1 and a client certificate."""
    from pki import Pki

    pki = Pki(tmp_path_factory.mktemp("pki"))
    pki.server = pki.issue("server", ips=["127.0.0.1"])  # type: ignore[attr-defined]
    pki.client = pki.issue("client")  # type: ignore[attr-defined]
    return pki


def secure_cluster(pki: Any, size: int = 1) -> Any:
    """An etcd cluster (not started) serving TLS only, requiring client certificates
    signed by ``pki``, and issuing JWT auth tokens that expire after :data:`TOKEN_TTL`."""
    from etcd_server import EtcdCluster, EtcdTls, jwt_token_args

    tls = EtcdTls(ca=pki.ca, cert=pki.server.cert, key=pki.server.key,
                  client_cert=pki.client.cert, client_key=pki.client.key,
                  client_cert_auth=True)
    keys = pki.jwt_keys()
    return EtcdCluster(size=size, tls=tls,
                       extra_args=jwt_token_args(keys.cert, keys.key, TOKEN_TTL))


@pytest.fixture(scope="session")
def secure_etcd(secure_pki: Any) -> Iterator[Any]:
    """One etcd member with TLS, client-certificate auth and RBAC on (tests log in
    as users limited to their own prefix: ``secure_etcd.rbac_url(prefix)``)."""
    with secure_cluster(secure_pki) as server:
        server.enable_auth(uuid.uuid4().hex)
        yield server


def registry_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if backend == "etcds":
        secure = request.getfixturevalue("secure_etcd")
        return str(secure.rbac_url(f"sec/t{uuid.uuid4().hex[:12]}"))
    if backend == "memory":
        return "memory://"
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'registry.db'}"
    server = request.getfixturevalue("etcd_server")
    return str(server.url(f"t{uuid.uuid4().hex[:12]}"))


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def registry(backend: str, tmp_path: Path,
                   request: pytest.FixtureRequest) -> AsyncIterator[Registry]:
    reg = open_registry(registry_url(backend, tmp_path, request))
    try:
        yield reg
    finally:
        await reg.close()


@pytest.fixture
def examples_dir() -> Path:
    return Path(__file__).parent.parent / "examples"


def pytest_report_header() -> str:
    return f"schemacache tests, pid {os.getpid()}"
