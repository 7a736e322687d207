"""Who is calling a REST route, and what they may do there (server layer).

Every REST route takes `Authenticated` (any live token) or `AdminOnly`; a device token may use
`/api/sync/*` and read `/api/docs`, everything else needs an admin token (403 otherwise).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from ..errors import BadRequest
from ..ids import Origin
from ..store.base import Store
from .auth import Principal, authenticate, bearer_token

CLIENT_ID_HEADER = "x-client-id"


async def principal(request: Request) -> Principal:
    store: Store = request.app.state.store
    return await authenticate(store, bearer_token(request.headers.get("authorization")))


async def admin(request: Request) -> Principal:
    who = await principal(request)
    who.require_admin(f"{request.method} {request.url.path}")
    return who


Authenticated = Annotated[Principal, Depends(principal)]
AdminOnly = Annotated[Principal, Depends(admin)]


def device_origin(request: Request, who: Principal) -> Origin:
    """Who a write comes from, and who a pull is for: the `X-Client-Id` header, else the token.

    The same origin is stored as a record's `created_by`, so a device that pulls the records it
    pushed itself gets them under `updated`, never `created`.
    """
    client_id = request.headers.get(CLIENT_ID_HEADER)
    if client_id is None:
        return Origin(who.name)
    if not 1 <= len(client_id) <= 128 or not client_id.isprintable():
        raise BadRequest("X-Client-Id must be 1-128 printable characters")
    return Origin(client_id)
