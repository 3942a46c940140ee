"""The registry contract over ``etcds://``: TLS, client certificates, and an RBAC
user whose role covers only the test's prefix, with auth tokens expiring every
:data:`conftest.TOKEN_TTL` seconds (several times per test)."""

from __future__ import annotations

import pytest

from test_registry_contract import *  # noqa: F403  (the contract suite, collected again here)

pytestmark = pytest.mark.etcd


@pytest.fixture
def backend() -> str:
    return "etcds"
