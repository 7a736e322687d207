"""The app factory: one FastAPI app, its store, engine and hub, all owned by the lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import uvicorn
from fastapi import FastAPI, Request, WebSocket
from starlette.routing import Match, WebSocketRoute
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocketState

from ..compactor import CompactionPolicy, Compactor
from ..engine import Engine, Limits
from ..errors import CrdtSyncError
from ..ids import DocId
from ..protocol.close import CloseCode
from ..schema import DEFAULT_SCHEMA, Schema
from ..store import Store, store_at
from .admission import Admission
from .errors import AnswerUnexpected, error_response, handle_crdt_sync_error, handle_unexpected
from .live import Hub
from .nodes import ThisNode, commit_news, heartbeat
from .wire import WEBSOCKET_PROTOCOL
from .yjs import Room, serve_yjs

LOG = logging.getLogger(__name__)
# uvicorn's websocket implementation over websockets' sans-I/O protocol: per connection
# ~7 KiB less memory than its default (legacy websockets) and no keepalive task of its own,
# with the same flow control, size limit and pings (benchmarks/README.md, live_bench (c));
# subclassed to keep ~5 KiB less per open connection still (wsprotocol.py), and to cut its
# per-message costs (wire.py: frames written directly, fewer read pauses).
WEBSOCKET_IMPLEMENTATION: type[asyncio.Protocol] = WEBSOCKET_PROTOCOL
# No permessage-deflate (uvicorn offers it by default; browsers and Node's ws ask for it):
# a compressed frame is made per connection, so a commit fanned out to 200 peers would be
# compressed 200 times instead of framed once, and each connection would hold ~40 KiB of
# zlib state. The Node servers (ws) do not compress either.
WEBSOCKET_COMPRESSION = False


@dataclass(frozen=True, slots=True)
class Settings:
    db_path: Path = Path("crdt-sync.db")
    store_url: str | None = None  # a PostgreSQL store (postgresql://...) instead of db_path
    bus_url: str | None = None  # Redis Streams between nodes (redis://...): see server/bus.py
    # PostgreSQL only (docs/NODES.md): how long a commit waits for the seq lock, and how long
    # a node's transaction may idle (the node stopped) before the server ends it.
    lock_timeout: float = 15.0
    idle_timeout: float = 5.0
    address: str = ""  # where this node serves (http://host:port), for /api/sync/status
    heartbeat_interval: float = 1.0  # a shared store's row for this node (server/nodes.py)
    schema: Schema = DEFAULT_SCHEMA
    limits: Limits = Limits()
    cache_size: int = 2048
    max_connections: int = 10_000
    # New websocket connections admitted per second, sustained (server/admission.py): above
    # what the server can join (~1,200/s on one core, a join ~1 ms of CPU), so the bucket
    # refuses storms, not a load it could serve (at 500/s it refused 2,220 of 5,000 joins
    # that it had the time for: benchmarks/README.md, live_bench (c)).
    admission_rate: float = 2000.0
    admission_burst: float = 1000.0
    revocation_interval: float = 1.0
    follow_interval: float = 0.5  # how often to look for updates other processes committed
    # Tune the process's garbage collector at startup: for a process that is the server
    # (`crdt-sync serve`), not for one that merely embeds an app (a test run, say).
    tune_gc: bool = False
    synchronous: str = "FULL"
    max_body_bytes: int = 16 << 20  # REST request bodies; larger ones are answered 413
    cors_origins: tuple[str, ...] = ()  # browser apps on these origins may call the API
    # Background compaction (compactor.py); None: off. `crdt-sync serve` turns it on with the
    # defaults unless told otherwise; an app embedded elsewhere (a test) opts in.
    compaction: CompactionPolicy | None = None


def create_app(settings: Settings = Settings()) -> FastAPI:
    """The whole server; run it with uvicorn. The store opens and closes with the lifespan."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        location = settings.store_url or settings.db_path
        node = app.state.node = ThisNode(settings.address)
        async with (
            store_at(
                location,
                synchronous=settings.synchronous,
                lock_timeout=settings.lock_timeout,
                idle_timeout=settings.idle_timeout,
            ) as store,
            compacting(store, settings.compaction) as compactor,
            commit_news(store, settings.bus_url, node) as bus,
        ):
            app.state.compactor = compactor
            app.state.bus = bus
            engine = Engine(
                store, settings.schema, cache_size=settings.cache_size, limits=settings.limits
            )
            admission = Admission(
                settings.max_connections, settings.admission_rate, settings.admission_burst
            )
            hub = Hub(store, engine, admission)
            app.state.store, app.state.engine, app.state.hub = store, engine, hub
            app.state.rooms = {}
            app.state.mux_rooms = {}  # /ws awareness, per document
            # Every append notices other processes' commits (`crdt-sync import`) too; following
            # bounds how long they wait when nobody writes here.
            jobs = [
                asyncio.create_task(
                    repeat(settings.revocation_interval, hub.sweep_revoked, "revocation sweep")
                ),
                asyncio.create_task(
                    repeat(
                        settings.revocation_interval,
                        lambda: app.state.admin_sessions.end_revoked(store),
                        "admin session revocation sweep",
                    )
                ),
                asyncio.create_task(
                    repeat(settings.follow_interval, store.follow, "following other processes")
                ),
            ]
            if settings.tune_gc:
                tune_garbage_collector()
            # Imported here: server.access and server.admin import each other, and only the
            # order create_app imports them in (admin first) resolves that.
            from .sync_ops import running as running_sync_admin

            try:
                async with (
                    heartbeat(
                        store, node, lambda: len(hub.connections), settings.heartbeat_interval
                    ),
                    running_sync_admin(app, hub),  # the admin's activity log, its jobs
                ):
                    yield
            finally:
                for job in jobs:
                    job.cancel()
                hub.close_all(CloseCode.GOING_AWAY, "server shutting down")
                for job in jobs:
                    with contextlib.suppress(asyncio.CancelledError):
                        await job
                await engine.settle()  # view repairs still queued, before the store closes

    # /docs and /redoc are api_docs.py's, with local assets instead of FastAPI's CDN ones.
    app = App(
        title="crdt-sync", version="0.1.0", lifespan=lifespan, docs_url=None, redoc_url=None
    )
    app.state.settings = settings
    app.add_exception_handler(CrdtSyncError, handle_crdt_sync_error)
    app.add_exception_handler(Exception, handle_unexpected)  # bugs in the middlewares
    app.add_middleware(AnswerUnexpected)  # first: inside CountErrors, which counts its 500s

    # Plain Starlette routes: FastAPI's websocket routes hold two AsyncExitStacks and more
    # for dependency injection, ~3 KiB per open connection, for nothing these handlers use.
    # The endpoints return their handler's coroutine instead of awaiting it: one coroutine
    # frame less held for each open connection's whole life.
    def yjs(websocket: WebSocket) -> Awaitable[None]:
        hub: Hub = websocket.app.state.hub
        rooms: dict[DocId, Room] = websocket.app.state.rooms
        params = websocket.path_params
        return serve_yjs(websocket, hub, rooms, f"{params['collection']}/{params['record_id']}")

    from .admin import install as install_admin
    from .api_docs import install as install_api_docs
    from .cors import allow_cross_origin
    from .mux import serve_mux
    from .rest import install as install_rest
    from .rest import router

    def ws(websocket: WebSocket) -> Awaitable[None]:
        state = websocket.app.state
        return serve_mux(websocket, state.hub, state.mux_rooms)

    app.add_direct_websocket_route("/yjs/{collection}/{record_id}", yjs)
    app.add_direct_websocket_route("/ws", ws)

    app.include_router(router)
    install_rest(app, settings)
    install_admin(app, settings.schema)
    install_api_docs(app)
    if settings.cors_origins:
        allow_cross_origin(app, settings.cors_origins)

    @app.get("/health", tags=["ops"])
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready", tags=["ops"])
    async def ready(request: Request) -> dict[str, object]:
        return {"status": "ready", "cursor": await request.app.state.store.cursor()}

    return app


WebSocketEndpoint = Callable[[WebSocket], Awaitable[None]]


class App(FastAPI):
    """FastAPI, with the long-lived websocket endpoints called straight from the ASGI scope.

    Through the middleware stack and the router, every open websocket holds a dozen
    coroutine frames and closures for its whole life (~8 KiB, a quarter of what an open
    connection costs: benchmarks/README.md, live_bench (c)), for middlewares that all pass
    websocket scopes through untouched (error pages, CORS, counts, body limits are HTTP's).
    So a scope that matches one of these routes skips them; the routes stay in the router
    too (the same matching, and the docs list them), which serves any scope this misses.
    """

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.direct_websockets: list[tuple[WebSocketRoute, WebSocketEndpoint]] = []

    def add_direct_websocket_route(self, path: str, endpoint: WebSocketEndpoint) -> None:
        self.router.add_websocket_route(path, endpoint)
        route = self.router.routes[-1]
        assert isinstance(route, WebSocketRoute)
        self.direct_websockets.append((route, endpoint))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and not self.root_path:
            for route, endpoint in self.direct_websockets:
                match, child_scope = route.matches(scope)
                if match is not Match.FULL:
                    continue
                scope.update(child_scope)
                scope["app"] = self
                websocket = WebSocket(scope, receive, send)
                try:
                    await endpoint(websocket)
                except CrdtSyncError as exc:
                    # What the stack's exception handler does: refused before the upgrade
                    # (the store failing while the token is looked up, say), the handshake
                    # gets the error answer.
                    if websocket.application_state is not WebSocketState.CONNECTING:
                        raise
                    await error_response(exc)(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


def compacting(
    store: Store, policy: CompactionPolicy | None
) -> contextlib.AbstractAsyncContextManager[Compactor | None]:
    """The background compactor, or nothing when compaction is off."""
    return Compactor(store, policy) if policy is not None else contextlib.nullcontext(None)


class Server(uvicorn.Server):
    """uvicorn's server; asked to stop, it first ends the app's admin change feeds (streams
    that would otherwise hold the graceful shutdown until every browser tab closed)."""

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        feeds = getattr(getattr(self.config.app, "state", None), "admin_feeds", None)
        if feeds is not None:
            feeds.stop()
        super().handle_exit(sig, frame)


async def repeat(interval: float, job: Callable[[], Awaitable[object]], what: str) -> None:
    """Run `job` every `interval` seconds until cancelled.

    A CrdtSyncError (a busy or failing disk) is logged, naming `what`; the next round tries again.
    """
    while True:
        await asyncio.sleep(interval)
        try:
            await job()
        except CrdtSyncError as exc:
            LOG.warning("%s failed; retrying: %s", what, exc)


def tune_garbage_collector() -> None:
    """Let the cyclic collector stop scanning what lives as long as the server does.

    Each update allocates a few dozen short-lived objects (frames, futures waiting on a
    commit); with the default thresholds the collector ran ~450 times per 3,000 updates and
    took ~20% of the event loop's time, mostly rescanning objects made at startup. Those are
    frozen (never scanned again) and young collections run every 10,000 allocations.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)
