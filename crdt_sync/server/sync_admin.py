"""The sync management API for admins (server layer): what the sync is doing, and its tokens.

    GET    /api/admin/sync/overview   cursor, log size, compaction debt, connections
    GET    /api/admin/sync/clients    every open websocket client, and REST devices seen
                                      (sync_watch.py and sync_ops.py have the rest)
    GET    /api/admin/tokens          every token (never the token itself)
    POST   /api/admin/tokens          a new token, returned once
    DELETE /api/admin/tokens/{name}   revoke; that token's open sockets close at once

Everything here reads the hub, telemetry and store; the only write is to the token table,
which is not record data (records are written by the engine alone).
"""

from __future__ import annotations

import time

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, Field

from ..errors import AuthError, BadRequest
from .access import AdminOnly
from .auth import create_token
from .live import Hub
from .telemetry import Telemetry

router = APIRouter(prefix="/api/admin", tags=["admin: sync"])


class Overview(BaseModel):
    cursor: int
    log_entries: int
    compaction_debt: int
    connections: dict[str, int]
    rest_devices: int
    uptime: float


class LiveClient(BaseModel):
    id: str = Field(description="the connection's id: DELETE /api/admin/sync/clients/{id}")
    token: str = Field(description="the token's name")
    role: str
    transport: str = Field(description="'ws' (multiplexed) or 'yjs' (y-websocket)")
    client_id: str
    connected_since: float
    cursor: int | None = Field(description="log cursor sent to it (/ws only)")
    behind: int | None = Field(description="log entries it has not been sent yet (/ws only)")
    last_sync: float | None
    outbox: int = Field(description="frames waiting in its outgoing queue")


class RestDevice(BaseModel):
    token: str
    client_id: str | None
    cursor: int
    behind: int
    last_pull: float
    pulls: int


class Clients(BaseModel):
    cursor: int
    live: list[LiveClient]
    rest: list[RestDevice]


class TokenInfo(BaseModel):
    name: str
    role: str
    created_at: float
    revoked_at: float | None


class NewToken(BaseModel):
    name: str
    role: str = "device"


class CreatedToken(BaseModel):
    name: str
    role: str
    token: str = Field(description="shown this once; only its hash is stored")


class Revoked(BaseModel):
    name: str
    closed_connections: int


def _hub(request: Request) -> Hub:
    hub: Hub = request.app.state.hub
    return hub


@router.get("/sync/overview", response_model=Overview)
async def overview(request: Request, who: AdminOnly) -> Overview:
    hub = _hub(request)
    telemetry: Telemetry = request.app.state.telemetry
    stats = await hub.store.statistics()
    connections: dict[str, int] = {}
    for connection in hub.connections:
        connections[connection.endpoint] = connections.get(connection.endpoint, 0) + 1
    return Overview(
        cursor=int(stats.cursor),
        log_entries=stats.log_entries,
        compaction_debt=stats.compaction_debt,
        connections=connections,
        rest_devices=len(telemetry.devices),
        uptime=time.time() - telemetry.started_at,
    )


@router.get("/sync/clients", response_model=Clients)
async def clients(request: Request, who: AdminOnly) -> Clients:
    hub = _hub(request)
    telemetry: Telemetry = request.app.state.telemetry
    cursor = int(await hub.store.cursor())
    live = []
    for c in sorted(hub.connections, key=lambda c: c.connected_at):
        tracked = c.endpoint == "ws"  # a /yjs room is kept current by the server, no cursor
        live.append(
            LiveClient(
                id=c.id,
                token=c.principal.name,
                role=str(c.principal.role),
                transport=c.endpoint,
                client_id=c.client_id,
                connected_since=c.connected_at,
                cursor=c.cursor if tracked else None,
                behind=max(0, cursor - c.cursor) if tracked else None,
                last_sync=c.last_sync,
                outbox=c.subscriber.queue.qsize(),
            )
        )
    rest = [
        RestDevice(
            token=d.device,
            client_id=d.client_id,
            cursor=d.cursor,
            behind=max(0, cursor - d.cursor),
            last_pull=d.last_sync,
            pulls=d.pulls,
        )
        for d in reversed(telemetry.devices.values())  # most recently seen first
    ]
    return Clients(cursor=cursor, live=live, rest=rest)


@router.get("/tokens", response_model=list[TokenInfo])
async def list_tokens(request: Request, who: AdminOnly) -> list[TokenInfo]:
    rows = await _hub(request).store.list_tokens()
    return [
        TokenInfo(name=r.name, role=r.role, created_at=r.created_at, revoked_at=r.revoked_at)
        for r in rows
    ]


@router.post("/tokens", response_model=CreatedToken, status_code=201)
async def add_token(request: Request, body: NewToken, who: AdminOnly) -> CreatedToken:
    try:
        token = await create_token(_hub(request).store, name=body.name, role=body.role)
    except AuthError as exc:  # a bad name or role is the caller's input, not their credentials
        raise BadRequest(exc.message) from None
    request.app.state.activity.note(
        "token", f"{who.name} created {body.role} token {body.name!r}", device=body.name
    )
    return CreatedToken(name=body.name, role=body.role, token=token)


@router.delete("/tokens/{name}", response_model=Revoked)
async def revoke_token(request: Request, name: str, who: AdminOnly) -> Revoked:
    hub = _hub(request)
    if not await hub.store.revoke_token(name):
        raise HTTPException(404, f"no live token named {name!r}")
    # Close the revoked token's sockets and admin sessions now rather than at the next sweep.
    closed = 0
    for token_hash in {c.principal.token_hash for c in hub.connections}:
        if await hub.store.find_token(token_hash) is None:
            closed += hub.close_token(token_hash, "token revoked")
    await request.app.state.admin_sessions.end_revoked(hub.store)
    request.app.state.activity.note(
        "token", f"{who.name} revoked token {name!r}: {closed} sockets closed", device=name
    )
    return Revoked(name=name, closed_connections=closed)
