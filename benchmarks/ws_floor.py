"""The floor under live_bench (c): RSS per open websocket of a bare ASGI echo app under uvicorn.

    python benchmarks/ws_floor.py [--count 5000] [--ws websockets-sansio|lean] [--loop asyncio|uvloop]

No Starlette, no crdt-sync: an app that accepts and echoes every frame back, served by uvicorn
with the options `crdt-sync serve` uses, in this process; the load is `_live_load.py`'s
`open_records` in another (its clients' step 1 comes back as the server's, their answer as
the step 2 that syncs them). `--ws lean` is crdt-sync's subclass of uvicorn's protocol
(crdt_sync/server/wsprotocol.py). Prints (RSS with `--count` open - RSS before) / count.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import uvicorn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from crdt_sync.server.listen import bind  # noqa: E402
from crdt_sync.server.wsprotocol import LeanWebSocketProtocol  # noqa: E402
from live_bench import run_load  # noqa: E402


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--ws", default="websockets-sansio", choices=["websockets-sansio", "lean"])
    parser.add_argument("--loop", default="asyncio", choices=["asyncio", "uvloop"])
    args = parser.parse_args()
    sock = bind("127.0.0.1", 0)
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        echo,
        log_level="warning",
        loop=args.loop,
        ws=LeanWebSocketProtocol if args.ws == "lean" else args.ws,
        ws_max_size=2 << 20,
        ws_ping_interval=20.0,
        ws_ping_timeout=20.0,
    )
    server = uvicorn.Server(config)
    process = psutil.Process()
    rss: dict[str, int] = {}

    def on_event(name: str, payload: dict[str, Any]) -> None:
        if name in ("warm", "open"):
            time.sleep(1.0)
            rss[name] = process.memory_info().rss

    def load() -> None:
        time.sleep(2)  # uvicorn is serving by then
        params = {
            "workload": "open_records",
            "base": f"ws://127.0.0.1:{port}/yjs",
            "token": "",
            "collection": "contacts",
            "run": "floor",
            "dialect": "y-websocket",
            "prefix": "f",
            "count": args.count,
            "concurrency": 64,
            "timeout": 120,
        }
        try:
            result = run_load(sys.executable, params, 300, on_event)
            print(f"opened {result['opened']} in {result['open_s']:.1f} s", flush=True)
        finally:
            server.should_exit = True

    threading.Thread(target=load, daemon=True).start()
    server.run(sockets=[sock])
    per = (rss["open"] - rss["warm"]) / args.count / 1024
    print(f"{args.ws} ({args.loop}): {per:.2f} KiB RSS per open websocket at {args.count}")


if __name__ == "__main__":
    main()
