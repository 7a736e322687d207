"""The record doors, `/yjs/{collection}/{id}` and `/ws`, served straight from the ASGI scope.

Long-lived connections skip the middleware stack and the router: through them every open
websocket held a dozen coroutine frames and closures for its whole life (~8 KiB, a quarter
of what an open connection cost: benchmarks/README.md, live_bench (c)), for middlewares
that all pass websocket scopes through untouched (error pages, CORS, counts, body limits
are HTTP's). No FastAPI here: `crdt-sync serve` opens these doors before its HTTP app is
built (front.py), and the app (app.py) serves them the same way.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from starlette.types import Receive, Scope, Send

from ..errors import CrdtSyncError
from .asgi_websocket import AsgiWebSocket, SocketState
from .errors import error_response
from .yjs import serve_yjs

if TYPE_CHECKING:
    from .runtime import Runtime

# The paths Starlette's router compiles for "/yjs/{collection}/{record_id}" and "/ws"; the
# HTTP app also lists these routes (its docs, and scopes with a root path, go through it).
YJS_PATH = "/yjs/{collection}/{record_id}"
MUX_PATH = "/ws"
_YJS = re.compile(r"^/yjs/(?P<collection>[^/]+)/(?P<record_id>[^/]+)$")


def yjs_door(websocket: AsgiWebSocket, runtime: Runtime) -> Awaitable[None]:
    # The endpoints return their handler's coroutine instead of awaiting it: one coroutine
    # frame less held for each open connection's whole life.
    params = websocket.path_params
    doc_path = f"{params['collection']}/{params['record_id']}"
    return serve_yjs(websocket, runtime.hub, runtime.rooms, doc_path)


def mux_door(websocket: AsgiWebSocket, runtime: Runtime) -> Awaitable[None]:
    # Imported by the first /ws connection (or the HTTP app's build, whichever comes first):
    # its frames, events and PeerSession are ~10 ms of frozen dataclasses that a restart's
    # /yjs clients do not need (benchmarks/README.md, live_bench (l)).
    from .mux import serve_mux

    return serve_mux(websocket, runtime.hub, runtime.mux_rooms)


Door = Callable[[AsgiWebSocket, "Runtime"], Awaitable[None]]


def door_of(scope: Scope) -> tuple[Door, dict[str, str]] | None:
    """The record door a websocket scope asks for, with its path parameters; None: not one."""
    if scope["type"] != "websocket" or scope.get("root_path"):
        return None
    path: str = scope["path"]
    if path == MUX_PATH:
        return mux_door, {}
    match = _YJS.match(path)
    if match is None:
        return None
    return yjs_door, match.groupdict()


async def serve_door(
    door: Door,
    params: dict[str, str],
    runtime: Runtime,
    scope: Scope,
    receive: Receive,
    send: Send,
    app: Any,
) -> None:
    """Serve one connection at `door` (`app` becomes `scope["app"]`)."""
    scope["path_params"] = params
    scope["app"] = app
    websocket = AsgiWebSocket(scope, receive, send)
    try:
        await door(websocket, runtime)
    except CrdtSyncError as exc:
        # What the HTTP stack's exception handler does: refused before the upgrade (the
        # store failing while the token is looked up, say), the handshake gets the error
        # answer.
        if websocket.application_state is not SocketState.CONNECTING:
            raise
        await error_response(exc)(scope, receive, send)
