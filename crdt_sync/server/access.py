"""Who is calling a REST route, and what they may do there (server layer).

Every REST route takes `Authenticated` (any live token) or `AdminOnly`; a device token may use
`/api/sync/*` and read `/api/docs`, everything else needs an admin token (403 otherwise).
The admin panel calls the same routes with its session cookie instead of a bearer token
(`admin/sessions.py`); a cookie-borne request that may write must carry the session's CSRF
token in `X-CSRF-Token`.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from ..errors import AuthError, BadRequest, Forbidden
from ..ids import Origin
from ..store.base import Store
from .admin.sessions import CSRF_HEADER, SAFE_METHODS, SESSION_COOKIE, Session, Sessions
from .auth import Principal, Role, authenticate, bearer_token

CLIENT_ID_HEADER = "x-client-id"

# Declares the bearer scheme in /openapi.json, on every route that takes a token, so Swagger's
# "Authorize" works; the token itself is read below (a session cookie may stand in for it).
BEARER = HTTPBearer(
    auto_error=False,
    scheme_name="token",
    description="A crdt-sync token (`crdt-sync token create`): admin, or device for /api/sync.",
)
Bearer = Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)]


async def principal(request: Request) -> Principal:
    store: Store = request.app.state.store
    if _by_session(request):
        return await session_principal(request, require_csrf=request.method not in SAFE_METHODS)
    return await authenticate(store, bearer_token(request.headers.get("authorization")))


async def session_principal(request: Request, *, require_csrf: bool) -> Principal:
    """The admin signed in with the request's session cookie.

    Raises:
        AuthError: no session, an ended one, or its token was revoked (the session ends too).
        Forbidden: `require_csrf` and the request lacks the session's CSRF token.
    """
    session = current_session(request)
    if session is None:
        raise AuthError("not signed in, or the session ended: sign in again at /admin")
    store: Store = request.app.state.store
    row = await store.find_token(session.token_hash)
    if row is None:
        sessions(request).end(session)
        raise AuthError("the token this session signed in with was revoked")
    if require_csrf and not session.is_csrf(request.headers.get(CSRF_HEADER)):
        raise Forbidden(f"a request with the session cookie needs its CSRF token in {CSRF_HEADER}")
    return Principal(row.name, Role(row.role), session.token_hash)


def sessions(request: Request) -> Sessions:
    found: Sessions = request.app.state.admin_sessions
    return found


def current_session(request: Request) -> Session | None:
    return sessions(request).get(request.cookies.get(SESSION_COOKIE))


async def authenticated(request: Request, _declared: Bearer) -> Principal:
    return await principal(request)


async def admin(request: Request, _declared: Bearer) -> Principal:
    who = await principal(request)
    who.require_admin(f"{request.method} {request.url.path}")
    return who


Authenticated = Annotated[Principal, Depends(authenticated)]
AdminOnly = Annotated[Principal, Depends(admin)]


def device_origin(request: Request, who: Principal) -> Origin:
    """Who a write comes from, and who a pull is for: the `X-Client-Id` header, else the token.

    The same origin is stored as a record's `created_by`, so a device that pulls the records it
    pushed itself gets them under `updated`, never `created`.
    """
    door = "admin" if _by_session(request) else "rest"
    client_id = request.headers.get(CLIENT_ID_HEADER)
    if client_id is None:
        return Origin(who.name, door=door, token=who.name)
    if not 1 <= len(client_id) <= 128 or not client_id.isprintable():
        raise BadRequest("X-Client-Id must be 1-128 printable characters")
    return Origin(client_id, door=door, token=who.name)


def _by_session(request: Request) -> bool:
    """The admin panel's cookie stands for the token: no bearer token came with it."""
    has_bearer = bearer_token(request.headers.get("authorization")) is not None
    return not has_bearer and SESSION_COOKIE in request.cookies
