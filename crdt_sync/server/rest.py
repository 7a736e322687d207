"""REST routes over the merged state (server layer); every route needs a token."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from ..store.base import Store
from .auth import Principal, authenticate, bearer_token
from .live import Hub


async def principal(request: Request) -> Principal:
    store: Store = request.app.state.store
    return await authenticate(store, bearer_token(request.headers.get("authorization")))


Authenticated = Annotated[Principal, Depends(principal)]
router = APIRouter()


@router.get("/api/sync/status", tags=["sync"])
async def sync_status(request: Request, who: Authenticated) -> dict[str, Any]:
    """The server's sync state: cursor and connected clients (the REST issue completes it)."""
    hub: Hub = request.app.state.hub
    now = time.time()
    return {
        "cursor": int(await hub.store.cursor()),
        "connections": len(hub.connections),
        "clients": [
            {
                "device": c.principal.name,
                "client_id": c.client_id or None,
                "endpoint": c.endpoint,
                "cursor": c.cursor,
                "last_sync": c.last_sync,
                "queue_depth": c.subscriber.queue.qsize(),
            }
            for c in sorted(hub.connections, key=lambda c: c.principal.name)
        ],
        "refused_connections": hub.admission.refused,
        "counters": dict(hub.engine.counters),
        "time": now,
    }
