"""`crdt-sync serve`'s ASGI app: the record doors open at once, the HTTP app is built after.

After a restart, the clients that come back first are live ones (`/yjs`, `/ws`), and those
doors need the store, the engine and the hub, not FastAPI: importing FastAPI and pydantic and
building every REST and admin route took ~0.5 s of the ~0.9 s from the process's start to
its first record synced (benchmarks/README.md, live_bench (l)). So the front owns the
server's lifespan (`runtime.running`: one owner for the store, the engine and the hub),
serves the record doors as soon as the store is open, and builds the HTTP app right after,
in a thread, while the doors serve. An HTTP request (or another websocket) that comes before
the app is ready waits for it: never a 404 or 503 during startup; `/health` and `/ready`
answer once the app is ready.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import traceback
from collections.abc import AsyncIterator
from types import FrameType
from typing import TYPE_CHECKING

import uvicorn
from starlette.types import Receive, Scope, Send

from .doors import door_of, serve_door
from .runtime import Runtime, Settings, running, tune_garbage_collector
from .wire import WEBSOCKET_PROTOCOL

if TYPE_CHECKING:
    from ..store import Store
    from .app import App

LOG = logging.getLogger("crdt_sync.server")
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
# While the HTTP app is built in its thread, the event loop's thread gets the interpreter
# back within this many seconds whenever it has work (the default, 5 ms, would hold each of
# a join's loop steps up to that long behind the build's imports).
BUILD_SWITCH_INTERVAL = 0.0005
# The build starts once the record doors have had no join for this many seconds, or at the
# first request that needs the app if one comes sooner: begun at once, its imports held the
# interpreter during a restart's first joins (~10 ms of the first record synced), and begun
# in the middle of the reconnect storm that follows a restart, its ~0.4 s of CPU was the
# storm's (live_bench (l): 5,000 records rejoined in ~3.7 s).
BUILD_DELAY = 0.2
# ... but no later than this after the doors open, however long the joins keep coming.
BUILD_MAX_DELAY = 10.0


class Front:
    """The ASGI app `crdt-sync serve` runs: record doors first, everything else via `http_app`."""

    def __init__(self, settings: Settings, store: Store | None = None) -> None:
        self.settings = settings
        self.store = store  # open already (its owner closes it); None: the lifespan opens one
        self.runtime: Runtime | None = None
        self.http_app: App | None = None
        self._built: asyncio.Future[App] | None = None
        self._wanted: asyncio.Event | None = None  # set by the first request for the app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        runtime = self.runtime
        found = door_of(scope)
        if found is not None and runtime is not None:
            door, params = found
            await serve_door(door, params, runtime, scope, receive, send, self)
            return
        app = self.http_app
        if app is None:
            # uvicorn serves only after the lifespan started
            assert self._built is not None and self._wanted is not None
            self._wanted.set()
            app = await asyncio.shield(self._built)
        await app(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        """The ASGI lifespan protocol, as Starlette's router speaks it."""
        await receive()  # lifespan.startup
        started = False
        try:
            async with running(self.settings, self.store) as runtime, self._serving_http(runtime):
                await send({"type": "lifespan.startup.complete"})
                started = True
                await receive()  # lifespan.shutdown
        except BaseException:
            failed = "lifespan.shutdown.failed" if started else "lifespan.startup.failed"
            await send({"type": failed, "message": traceback.format_exc()})
            raise
        await send({"type": "lifespan.shutdown.complete"})

    @contextlib.asynccontextmanager
    async def _serving_http(self, runtime: Runtime) -> AsyncIterator[None]:
        """The record doors serve from `runtime` now; the HTTP app serves once built, and
        its share of the lifespan ends before the runtime closes."""
        self.runtime = runtime
        built = self._built = asyncio.get_running_loop().create_future()
        self._wanted = asyncio.Event()
        async with contextlib.AsyncExitStack() as stack:
            build = asyncio.create_task(self._build(runtime, stack, built))
            try:
                yield
            finally:
                if not built.done():  # stopped before the app was ready: nobody waits on
                    built.cancel()
                if not build.done():
                    build.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await build

    async def _build(
        self, runtime: Runtime, stack: contextlib.AsyncExitStack, built: asyncio.Future[App]
    ) -> None:
        await self._until_wanted_or_quiet(runtime)
        interval = sys.getswitchinterval()
        sys.setswitchinterval(BUILD_SWITCH_INTERVAL)
        try:
            app = await asyncio.to_thread(_build_http_app, self.settings, runtime)
        except Exception as exc:  # a bug: the HTTP requests waiting for the app get a 500
            LOG.exception("the HTTP app could not be built; HTTP requests are answered 500")
            built.set_exception(exc)
            return
        finally:
            sys.setswitchinterval(interval)
            if self.settings.tune_gc:  # what lives as long as the server exists by now
                tune_garbage_collector()
        try:
            await stack.enter_async_context(app.router.lifespan_context(app))
        except Exception as exc:  # its share of the lifespan (the admin's jobs) failed to start
            # Resolved either way: a request waiting for the app must not wait forever.
            LOG.exception("the HTTP app could not start; HTTP requests are answered 500")
            built.set_exception(exc)
            return
        self.http_app = app
        built.set_result(app)

    async def _until_wanted_or_quiet(self, runtime: Runtime) -> None:
        """Until a request wants the HTTP app, or BUILD_DELAY passed without a join at the
        record doors (BUILD_MAX_DELAY at most)."""
        assert self._wanted is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + BUILD_MAX_DELAY
        joins = -1
        while joins != runtime.hub.joins and loop.time() < deadline:
            joins = runtime.hub.joins
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._wanted.wait(), min(BUILD_DELAY, max(0.0, deadline - loop.time()))
                )
                return


def _build_http_app(settings: Settings, runtime: Runtime) -> App:
    # The /ws door's modules first: doors.mux_door imports them on the event loop only if
    # a /ws client comes before this thread has, so its first clients wait no longer than
    # they did when the doors imported mux up front (benchmarks/README.md, live_bench (l)).
    from . import mux  # noqa: F401
    from .app import create_app

    return create_app(settings, runtime)


class Server(uvicorn.Server):
    """uvicorn's server; asked to stop, it first ends the app's admin change feeds (streams
    that would otherwise hold the graceful shutdown until every browser tab closed)."""

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        app = getattr(self.config.app, "http_app", None) or self.config.app  # front.py's
        feeds = getattr(getattr(app, "state", None), "admin_feeds", None)
        if feeds is not None:
            feeds.stop()
        super().handle_exit(sig, frame)
