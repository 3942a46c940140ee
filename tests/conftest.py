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


def registry_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
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
