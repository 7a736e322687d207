"""start_floor.py's floor server process: `python _floor_server.py DB PORT`.

Its own file, so the process imports only what the floor is meant to (uvicorn, its sans-I/O
websockets, pycrdt, sqlite3, aiosqlite, cbor2): run as `start_floor.py _floor` it also
imported start_floor's own modules (live_bench, argparse, statistics, tempfile), which no
server needs, and the floor stood higher than it is.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def floor_server(db: str, port: int) -> None:
    import asyncio
    import sqlite3

    import aiosqlite  # noqa: F401
    import cbor2  # noqa: F401
    import pycrdt  # noqa: F401
    import uvicorn

    sys.path.insert(0, str(HERE.parent))
    from crdt_sync.server.wsprotocol import LeanWebSocketProtocol  # what `serve` runs

    async def echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                await send({"type": message["type"] + ".complete"})
                if message["type"] == "lifespan.shutdown":
                    return
        if scope["type"] != "websocket":
            return
        await receive()
        await send({"type": "websocket.accept"})
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            await send({"type": "websocket.send", "bytes": message.get("bytes")})

    sqlite3.connect(db).execute("SELECT count(*) FROM sqlite_master").fetchone()
    config = uvicorn.Config(
        echo, port=port, log_level="warning", ws=LeanWebSocketProtocol, ws_per_message_deflate=False
    )
    asyncio.run(uvicorn.Server(config).serve())


if __name__ == "__main__":
    floor_server(sys.argv[1], int(sys.argv[2]))
