"""The app factory: one FastAPI app; its store, engine and hub owned by its lifespan, or shared.

`create_app(settings)` is the whole server, for uvicorn: its lifespan runs `runtime.running`.
`crdt-sync serve` opens the record doors first and builds the app after, on the runtime it
already runs (`create_app(settings, runtime)`, front.py).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from starlette.routing import WebSocketRoute
from starlette.types import Receive, Scope, Send

from ..errors import CrdtSyncError
from .doors import MUX_PATH, YJS_PATH, Door, door_of, mux_door, serve_door, yjs_door
from .front import WEBSOCKET_COMPRESSION, WEBSOCKET_IMPLEMENTATION, Server
from .http_errors import AnswerUnexpected, handle_crdt_sync_error, handle_unexpected
from .runtime import Runtime, Settings, repeat, running, tune_garbage_collector

__all__ = ["WEBSOCKET_COMPRESSION", "WEBSOCKET_IMPLEMENTATION", "Server", "Settings", "create_app"]


def create_app(settings: Settings = Settings(), runtime: Runtime | None = None) -> App:
    """The whole server; run it with uvicorn.

    Without `runtime`, the store opens and closes with the app's lifespan. With one (already
    running: `crdt-sync serve`, front.py), the app serves from it and its lifespan runs only
    the HTTP side's share (the admin's sweeps, activity log and jobs).
    """

    @contextlib.asynccontextmanager
    async def lifespan(app: App) -> AsyncIterator[None]:
        if runtime is not None:
            async with serving_http(app, settings, runtime):
                yield
            return
        async with running(settings) as own:
            app.adopt(own)
            if settings.tune_gc:
                tune_garbage_collector()
            async with serving_http(app, settings, own):
                yield

    # /docs and /redoc are api_docs.py's, with local assets instead of FastAPI's CDN ones.
    app = App(title="crdt-sync", version="0.1.0", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.settings = settings
    if runtime is not None:
        app.adopt(runtime)
    app.add_exception_handler(CrdtSyncError, handle_crdt_sync_error)
    app.add_exception_handler(Exception, handle_unexpected)  # bugs in the middlewares
    app.add_middleware(AnswerUnexpected)  # first: inside CountErrors, which counts its 500s

    from .admin import install as install_admin
    from .api_docs import install as install_api_docs
    from .cors import allow_cross_origin
    from .rest import install as install_rest
    from .rest import router

    app.add_record_doors()
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


@contextlib.asynccontextmanager
async def serving_http(app: App, settings: Settings, runtime: Runtime) -> AsyncIterator[None]:
    """The HTTP side's share of the server's lifespan, on a running runtime."""
    sweep = asyncio.create_task(
        repeat(
            settings.revocation_interval,
            lambda: app.state.admin_sessions.end_revoked(runtime.store),
            "admin session revocation sweep",
        )
    )
    # Imported here: server.access and server.admin import each other, and only the
    # order create_app imports them in (admin first) resolves that.
    from .sync_ops import running as running_sync_admin

    try:
        async with running_sync_admin(app, runtime.hub):  # the admin's activity log, its jobs
            yield
    finally:
        sweep.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sweep


class App(FastAPI):
    """FastAPI, with the record doors (doors.py) called straight from the ASGI scope.

    A scope that matches one skips the middleware stack and the router; the routes stay in
    the router too (the docs list them), which serves any scope the doors miss.
    """

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.runtime: Runtime | None = None

    def adopt(self, runtime: Runtime) -> None:
        """Serve from `runtime`: its parts become `app.state.*`, as the handlers read them."""
        self.runtime = runtime
        state = self.state
        state.node, state.compactor, state.bus = runtime.node, runtime.compactor, runtime.bus
        state.store, state.engine, state.hub = runtime.store, runtime.engine, runtime.hub
        state.rooms, state.mux_rooms = runtime.rooms, runtime.mux_rooms

    def add_record_doors(self) -> None:
        # Plain Starlette routes to ASGI apps: FastAPI's websocket routes hold two
        # AsyncExitStacks and more for dependency injection, ~3 KiB per open connection, for
        # nothing these handlers use.
        self.router.routes.append(WebSocketRoute(YJS_PATH, RoutedDoor(yjs_door), name="yjs"))
        self.router.routes.append(WebSocketRoute(MUX_PATH, RoutedDoor(mux_door), name="ws"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        found = door_of(scope)
        if found is not None and self.runtime is not None:
            door, params = found
            await serve_door(door, params, self.runtime, scope, receive, send, self)
            return
        await super().__call__(scope, receive, send)


class RoutedDoor:
    """A record door as the router's ASGI app, for the scopes `door_of` leaves to the router
    (one with a root path): the same connection as `App.__call__` serves."""

    def __init__(self, door: Door) -> None:
        self.door = door

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        app: App = scope["app"]
        assert app.runtime is not None  # the router serves only once the lifespan started
        await serve_door(self.door, scope["path_params"], app.runtime, scope, receive, send, app)
