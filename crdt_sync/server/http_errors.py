"""The HTTP app's exception handlers and its outermost catch, answering in errors.py's shape."""

from __future__ import annotations

import logging

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import BadRequest, CrdtSyncError
from .errors import error_body, error_response

log = logging.getLogger("crdt_sync.server")


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
