"""One table from exception classes to answers at the edge: HTTP status, or close code.

A DocumentError on a websocket is an error message and the connection stays up; anything
not in the table is a bug: logged with its traceback, answered 500 / 1011 without details
(http_errors.py: the HTTP app's handlers). No Starlette at import: the record doors (live.py,
doors.py) import this on `crdt-sync serve`'s way to its first record synced.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import (
    AuthError,
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

if TYPE_CHECKING:
    from starlette.responses import JSONResponse

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
    from starlette.responses import JSONResponse  # see the module's docstring

    if details is None and isinstance(error, DocumentError) and error.doc_id:
        details = {"doc": error.doc_id}
    return JSONResponse(
        error_body(error.code, error.message, details), status_code=http_status(error)
    )
