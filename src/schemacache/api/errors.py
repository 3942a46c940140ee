"""Errors of the registry API: every one a JSON ``ErrorBody`` with a status that says what to do."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import (
    ConflictError,
    NotFoundError,
    ReferencedError,
    RegistryAccessError,
    RegistryUnavailableError,
    SchemaCacheError,
    TooLargeError,
    ValidationError,
)
from .models import ErrorBody

log = logging.getLogger("schemacache.api.server")

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": text}
    for code, text in (
        (400, "malformed request"),
        (401, "token required"),
        (403, "wrong token"),
        (404, "not found"),
        (409, "conflict"),
        (412, "precondition failed"),
        (413, "body too large"),
        (422, "invalid schema"),
        (503, "registry unavailable"),
    )
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {c: _ERRORS[c] for c in codes}


class ApiError(Exception):
    """An error turned into a JSON response.

    :param status: HTTP status.
    :param error: short error code.
    :param message: human-readable message.
    :param field: offending field, if any.
    """

    def __init__(self, status: int, error: str, message: str, field: str | None = None):
        self.status = status
        self.error = error
        self.message = message
        self.field = field
        super().__init__(message)


def error_response(status: int, error: str, message: str, field: str | None = None,
                    headers: dict[str, str] | None = None) -> JSONResponse:
    body: dict[str, Any] = {"error": error, "message": message}
    if field is not None:
        body["field"] = field
    return JSONResponse(body, status_code=status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    async def api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return error_response(exc.status, exc.error, exc.message, exc.field, headers=headers)

    async def validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ValidationError)
        if exc.field == "key":
            return error_response(400, "malformed", str(exc), exc.field)
        return error_response(422, "invalid", str(exc), exc.field)

    async def not_found(request: Request, exc: Exception) -> Response:
        return error_response(404, "not_found", str(exc))

    async def conflict(request: Request, exc: Exception) -> Response:
        code = "referenced" if isinstance(exc, ReferencedError) else "conflict"
        return error_response(409, code, str(exc))

    async def unavailable(request: Request, exc: Exception) -> Response:
        # The reason names files and addresses: the log gets it, the client not.
        log.warning("%s %s: registry unavailable: %s", request.method, request.url.path, exc)
        if isinstance(exc, RegistryAccessError):
            return error_response(503, "unavailable",
                                   "registry unavailable to this server until an operator "
                                   "acts (details in the server log)")
        return error_response(503, "unavailable",
                               "registry unavailable; try again later (details in the "
                               "server log)", headers={"Retry-After": "1"})

    async def too_large(request: Request, exc: Exception) -> Response:
        return error_response(413, "too_large", str(exc))

    async def request_validation(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        first = exc.errors()[0] if exc.errors() else {}
        loc = ".".join(str(p) for p in first.get("loc", ()))
        return error_response(400, "malformed", f"{loc}: {first.get('msg', 'invalid request')}",
                               loc or None)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        return error_response(exc.status_code, _HTTP_CODES.get(exc.status_code, "error"),
                               str(exc.detail),
                               headers=dict(exc.headers) if exc.headers else None)

    async def internal(request: Request, exc: Exception) -> Response:
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return error_response(500, "internal", "internal error (details in the server log)")

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(Exception, internal)
    app.add_exception_handler(ValidationError, validation_error)
    app.add_exception_handler(NotFoundError, not_found)
    app.add_exception_handler(ConflictError, conflict)
    app.add_exception_handler(RegistryUnavailableError, unavailable)
    # Any other registry failure (a store that cannot be written, …) is the
    # registry being unavailable to this request, not a bug of the request.
    app.add_exception_handler(SchemaCacheError, unavailable)
    app.add_exception_handler(TooLargeError, too_large)
    app.add_exception_handler(RequestValidationError, request_validation)
    app.add_exception_handler(StarletteHTTPException, http_error)

_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 401: "unauthorized",
               403: "forbidden"}
