"""An async client of the registry HTTP API (what the CLI talks through).

Every non-2xx answer becomes a :class:`ClientError` carrying the server's
``{error, message, field}``; a server that cannot be reached becomes one too
(``error="unreachable"``), so callers handle one exception type.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Iterable
from types import TracebackType
from typing import Any

import httpx

from .model import Resource

DEFAULT_SERVER = "http://127.0.0.1:8080"
"""Where the registry API listens unless told otherwise."""

DEFAULT_TIMEOUT = 30.0
"""Seconds per request."""

CACERT_ENV = "SCHEMACACHE_CACERT"
"""Environment variable naming the CA certificate that verifies ``https://`` servers."""


def tls_verify(cacert: str | None = None) -> ssl.SSLContext | bool:
    """What ``httpx`` verifies ``https://`` servers with: ``cacert`` (a PEM file of CA
    certificates), else the file named by :data:`CACERT_ENV`, else the system's roots.

    :raises ClientError: the file cannot be read or holds no certificate.
    """
    path = cacert or os.environ.get(CACERT_ENV) or None
    if path is None:
        return True
    try:
        return ssl.create_default_context(cafile=path)
    except (OSError, ssl.SSLError) as exc:
        raise ClientError(0, "tls", f"cannot load CA certificate {path}: "
                                    f"{getattr(exc, 'strerror', None) or exc}") from None
APPLY_TIMEOUT = 600.0
"""Seconds an apply may take: one request carries a whole manifest, of any size."""

NODE_TOKEN_HEADER = "X-Schemacache-Node-Token"
"""Request header of ``GET /v1/cluster`` carrying the nodes' admin token."""


class ClientError(Exception):
    """A request failed.

    :param status: HTTP status (``0`` when the server could not be reached).
    :param error: the server's short error code.
    :param message: the server's message.
    :param field: the offending field, when the server named one.
    """

    def __init__(self, status: int, error: str, message: str, field: str | None = None):
        self.status = status
        self.error = error
        self.message = message
        self.field = field
        super().__init__(self.render())

    def render(self) -> str:
        where = f" (field {self.field})" if self.field else ""
        prefix = f"{self.status} " if self.status else ""
        return f"{prefix}{self.error}: {self.message}{where}"


class RegistryClient:
    """The registry API at ``server``.

    :param server: base URL (default :data:`DEFAULT_SERVER`).
    :param token: bearer token sent with every request (default ``None``).
    :param timeout: seconds per request (default :data:`DEFAULT_TIMEOUT`).
    :param cacert: CA certificate file verifying an ``https://`` server (default: the
        file named by :data:`CACERT_ENV`, else the system's roots).
    """

    def __init__(self, server: str = DEFAULT_SERVER, token: str | None = None,
                 timeout: float = DEFAULT_TIMEOUT, cacert: str | None = None):
        self.server = server.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.AsyncClient(base_url=self.server, headers=headers, timeout=timeout,
                                       verify=tls_verify(cacert))

    async def __aenter__(self) -> RegistryClient:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    # --- calls ------------------------------------------------------------------

    async def apply(self, resources: Iterable[Resource]) -> dict[str, Any]:
        """``POST /v1/apply``: ``{"results": [{key, action, revision}], "revision"}``."""
        # Each resource's own JSON (pydantic's encoder): faster than to_dict + dumps.
        return await self.apply_json(r.to_json() for r in resources)

    async def apply_json(self, documents: Iterable[str]) -> dict[str, Any]:
        """:meth:`apply` of documents already encoded as JSON objects (each
        resource's :meth:`~schemacache.Resource.to_json`); the server validates
        them all the same."""
        body = "[" + ",".join(documents) + "]"
        return await self._call("POST", "/v1/apply", content=body,
                                headers={"content-type": "application/json"},
                                timeout=APPLY_TIMEOUT)

    async def put(self, resource: Resource, expected_revision: int | None = None) -> dict[str, Any]:
        """``PUT /v1/schemas/{key}``: ``{"key", "revision"}`` (``expected_revision`` as
        in :meth:`Registry.put`)."""
        headers = {"content-type": "application/json"}
        if expected_revision == 0:
            headers["If-None-Match"] = "*"
        elif expected_revision is not None:
            headers["If-Match"] = str(expected_revision)
        return await self._call("PUT", f"/v1/schemas/{resource.key}",
                                content=resource.to_json(), headers=headers)

    async def get(self, key: str) -> dict[str, Any]:
        """``GET /v1/schemas/{key}``: the resource envelope."""
        return await self._call("GET", f"/v1/schemas/{key}")

    async def list_resources(self, kind: str | None = None,
                             group: str | None = None) -> dict[str, Any]:
        """``GET /v1/schemas``: ``{"items": [...], "revision"}``."""
        params = {k: v for k, v in (("kind", kind), ("group", group)) if v is not None}
        return await self._call("GET", "/v1/schemas", params=params)

    async def delete(self, key: str, cascade: bool = False,
                     expected_revision: int | None = None) -> dict[str, Any]:
        """``DELETE /v1/schemas/{key}``: ``{"key", "revision"}``."""
        headers = {} if expected_revision is None else {"If-Match": str(expected_revision)}
        params = {"cascade": "true"} if cascade else {}
        return await self._call("DELETE", f"/v1/schemas/{key}", params=params, headers=headers)

    async def digest(self) -> dict[str, Any]:
        """``GET /v1/digest``: ``{"digest", "revision", "count"}``."""
        return await self._call("GET", "/v1/digest")

    async def revision(self) -> int:
        return int((await self._call("GET", "/v1/revision"))["revision"])

    async def nodes(self) -> list[dict[str, Any]]:
        """``GET /v1/nodes``: the live node registrations."""
        return list((await self._call("GET", "/v1/nodes"))["nodes"])

    async def cluster(self, node_token: str | None = None) -> dict[str, Any]:
        """``GET /v1/cluster``: ``{"revision", "digest", "nodes": [{name, admin_url,
        status, error}]}``.

        :param node_token: the nodes' admin token, for the server to send them in
            place of its own (default ``None``: the server's own, if any).
        """
        headers = {NODE_TOKEN_HEADER: node_token} if node_token else {}
        return await self._call("GET", "/v1/cluster", headers=headers)

    async def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.TimeoutException:
            raise ClientError(0, "timeout", f"{self.server} did not answer in time") from None
        except httpx.HTTPError as exc:
            hint = (f" (pass --cacert or set {CACERT_ENV} to the CA that signed it)"
                    if "CERTIFICATE_VERIFY_FAILED" in str(exc) else "")
            raise ClientError(0, "unreachable", f"cannot reach {self.server}: "
                                                f"{exc or type(exc).__name__}{hint}") from None
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.is_success and isinstance(body, dict):
            return body
        if isinstance(body, dict) and "message" in body:
            raise ClientError(response.status_code, str(body.get("error", "error")),
                              str(body["message"]), body.get("field"))
        raise ClientError(response.status_code, "error",
                          response.text[:200] or response.reason_phrase)
