"""One table from exception classes to answers at the edge: HTTP status, or close code.

A DocumentError on a websocket is an error message and the connection stays up; anything
not in the table is a bug: logged with its traceback, answered 500 / 1011 without details.
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import (
    AuthError,
    BadRequest,
    ConfigError,
    CrdtSyncError,
    DocumentError,
    Forbidden,
    InvalidUpdate,
    LimitExceeded,
    NameTaken,
    ProtocolError,
    RecordExists,
    RecordNotFound,
    SchemaViolation,
    StoreError,
    UnknownCollection,
)
from ..protocol.close import CloseCode

log = logging.getLogger("crdt_sync.server")

# Most specific first: the first class that matches wins.
_HTTP_STATUS: tuple[tuple[type[CrdtSyncError], int], ...] = (
    (Forbidden, 403),
    (AuthError, 401),
    (RecordNotFound, 404),
    (RecordExists, 409),
    (NameTaken, 409),
    (UnknownCollection, 404),
    (SchemaViolation, 422),
    (InvalidUpdate, 400),
    (DocumentError, 422),
    (ProtocolError, 400),
    (LimitExceeded, 413),
    (ConfigError, 500),
    (StoreError, 503),
)

_CLOSE_CODE: tuple[tuple[type[CrdtSyncError], CloseCode], ...] = (
    (Forbidden, CloseCode.FORBIDDEN),
    (AuthError, CloseCode.UNAUTHORIZED),
    (ProtocolError, CloseCode.BAD_REQUEST),
    (DocumentError, CloseCode.BAD_REQUEST),
    (LimitExceeded, CloseCode.TRY_AGAIN_LATER),
    (StoreError, CloseCode.TRY_AGAIN_LATER),
)


def http_status(error: CrdtSyncError) -> int:
    for cls, status in _HTTP_STATUS:
        if isinstance(error, cls):
            return status
    return 500


def close_code(error: CrdtSyncError) -> CloseCode:
    for cls, code in _CLOSE_CODE:
        if isinstance(error, cls):
            return code
    return CloseCode.INTERNAL_ERROR


def close_reason(message: str) -> str:
    """A websocket close reason is at most 123 bytes of UTF-8."""
    data = message.encode()
    if len(data) <= 123:
        return message
    return data[:120].decode(errors="ignore") + "..."


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details}}


def error_response(error: CrdtSyncError, details: Any = None) -> JSONResponse:
    if details is None and isinstance(error, DocumentError) and error.doc_id:
        details = {"doc": error.doc_id}
    return JSONResponse(
        error_body(error.code, error.message, details), status_code=http_status(error)
    )


async def handle_crdt_sync_error(request: Request, error: Exception) -> JSONResponse:
    if not isinstance(error, CrdtSyncError):  # registered for this class only
        raise error
    return error_response(error)


async def handle_unexpected(request: Request, error: Exception) -> JSONResponse:
    log.exception("unexpected error on %s %s", request.method, request.url.path, exc_info=error)
    return internal_error_response()


def internal_error_response() -> JSONResponse:
    # Close: after a bug, whatever the connection still holds (an unread body) is suspect.
    return JSONResponse(
        error_body("internal_error", "internal server error"),
        status_code=500,
        headers={"Connection": "close"},
    )


class AnswerUnexpected:
    """ASGI middleware: a bug that escapes a route is answered 500 in the error shape, with
    `Connection: close`, and its traceback logged once.

    Starlette's own handler for Exception (the outermost middleware) re-raises after
    answering, and uvicorn then drops the kept-alive connection without a word: the client's
    next, valid request on it failed too. Add it inside every middleware that counts answers.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watching_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watching_send)
        except ClientDisconnect:
            pass  # the client left mid-body: nobody to answer, and not a bug
        except Exception as exc:
            if started:
                raise  # half an answer is out: only dropping the connection can say so
            log.error("unexpected error on %s %s", scope["method"], scope["path"], exc_info=exc)
            await internal_error_response()(scope, receive, send)


async def handle_http_exception(request: Request, error: Exception) -> JSONResponse:
    """Starlette's own answers (no such route, method not allowed) in the one error shape."""
    status = getattr(error, "status_code", 500)
    code = {404: "not_found", 405: "method_not_allowed", 409: "conflict"}.get(status, "http_error")
    if status == 404:
        message = f"no route {request.method} {request.url.path}"
    elif status == 405:
        message = f"{request.method} is not allowed on {request.url.path}"
    else:
        message = str(getattr(error, "detail", "")) or "request refused"
    headers = getattr(error, "headers", None)
    return JSONResponse(error_body(code, message), status_code=status, headers=headers)


async def handle_validation_error(request: Request, error: Exception) -> JSONResponse:
    """A query or path parameter of the wrong type or out of range: 400, naming the parameter."""
    problems = [
        {"where": ".".join(str(part) for part in problem.get("loc", ())), "problem": problem["msg"]}
        for problem in getattr(error, "errors", list)()
    ]
    first = problems[0] if problems else {"where": "request", "problem": "invalid"}
    message = f"{first['where']}: {first['problem']}"
    return JSONResponse(error_body(BadRequest.code, message, problems), status_code=400)
