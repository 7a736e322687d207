"""The floor under live_bench's (r) and (b): websocket servers that do nothing but the wire.

    python benchmarks/wire_floor.py [--sides asgi,wire,websockets,node] [--runs 2]

Each side is a bare server with no CRDT, no store and no schema: it echoes every message
(the round-trip floor: 10 clients x 1,000 round trips, one 40-byte message each way) and,
told to, sends one 40-byte message to every other connection (the fan-out floor: 200
subscribers, 200 messages at 100/s, latency from send to each receive). Sides:

- asgi:       uvicorn's websockets-sansio implementation, a raw ASGI app (no Starlette):
              what one `websocket.send` costs in the stack `crdt-sync serve` ran before wire.py;
- wire:       the same with crdt_sync.server.wire (frames written directly, fewer read pauses);
- websockets: a plain `websockets.serve` (websockets' asyncio implementation, no ASGI);
- node:       Node's `ws` (what Hocuspocus and @y/websocket-server run on), as live_bench
              installed it for them (6.2.7 today), if present.

The clients are one Python process (websockets); the server's CPU is read from /proc.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ECHO, BROADCAST = 0x01, 0x02
PAYLOAD = bytes(38)
NODE_SERVER = r"""
const ws = require('ws');
const WebSocketServer = ws.WebSocketServer || ws.Server;  // ws 8 and ws 7
const port = Number(process.argv[process.argv.length - 1]);
const wss = new WebSocketServer({ port, host: '127.0.0.1' });
wss.on('connection', (conn) => {
  conn.on('message', (data) => {
    if (data[0] === 1) { conn.send(data); return; }
    for (const peer of wss.clients) if (peer !== conn) peer.send(data);
  });
});
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- servers -------------------------------------------------------------------------------


def serve(side: str, port: int) -> None:
    if side == "websockets":
        import websockets

        peers: set[Any] = set()

        async def handler(ws: Any) -> None:
            peers.add(ws)
            try:
                async for message in ws:
                    if message[0] == ECHO:
                        await ws.send(message)
                    else:
                        websockets.broadcast(peers - {ws}, message)
            finally:
                peers.discard(ws)

        async def main() -> None:
            async with websockets.serve(handler, "127.0.0.1", port, compression=None):
                await asyncio.Future()

        asyncio.run(main())
        return

    import uvicorn

    from crdt_sync.server.wire import EXTENSION, WireProtocol

    sends: dict[Any, Any] = {}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            return
        await receive()
        await send({"type": "websocket.accept"})
        wire = scope["extensions"].get(EXTENSION)
        one = (lambda p: wire.send_binary([p])) if wire is not None else None

        async def asgi_send(payload: bytes) -> None:
            await send({"type": "websocket.send", "bytes": payload})

        sends[send] = one or asgi_send
        try:
            while True:
                message = await receive()
                if message["type"] != "websocket.receive":
                    return
                data = message["bytes"]
                if data[0] == ECHO:
                    await sends[send](data)
                else:
                    for other, peer_send in list(sends.items()):
                        if other is not send:
                            await peer_send(data)
        finally:
            sends.pop(send, None)

    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        ws=WireProtocol if side == "wire" else "websockets-sansio",
        ws_per_message_deflate=False,
        lifespan="off",
    )


# --- clients -------------------------------------------------------------------------------


async def echo_load(url: str, clients: int = 10, trips: int = 1000) -> float:
    import websockets

    conns = [await websockets.connect(url, compression=None) for _ in range(clients)]
    message = bytes((ECHO,)) + PAYLOAD

    async def run(ws: Any) -> None:
        for _ in range(trips):
            await ws.send(message)
            await ws.recv()

    t0 = time.perf_counter()
    await asyncio.gather(*(run(ws) for ws in conns))
    seconds = time.perf_counter() - t0
    for ws in conns:
        await ws.close()
    return clients * trips / seconds


async def fanout_load(url: str, subscribers: int = 200, messages: int = 200) -> dict[str, Any]:
    import websockets

    writer = await websockets.connect(url, compression=None)
    subs = [await websockets.connect(url, compression=None) for _ in range(subscribers)]
    sent = [0] * messages
    latencies: list[float] = []

    async def read(ws: Any) -> None:
        for _ in range(messages):
            data = await ws.recv()
            latencies.append(time.perf_counter_ns() - sent[int.from_bytes(data[1:5], "big")])

    readers = [asyncio.create_task(read(ws)) for ws in subs]
    await asyncio.sleep(0.3)
    start = time.perf_counter()
    for i in range(messages):
        delay = start + i / 100.0 - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        sent[i] = time.perf_counter_ns()
        await writer.send(bytes((BROADCAST,)) + i.to_bytes(4, "big") + PAYLOAD[4:])
    await asyncio.wait_for(asyncio.gather(*readers), 60)
    for ws in [writer, *subs]:
        await ws.close()
    latencies.sort()
    return {
        "p50_ms": latencies[len(latencies) // 2] / 1e6,
        "p99_ms": latencies[int(len(latencies) * 0.99)] / 1e6,
        "deliveries": len(latencies),
    }


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(side: str, node_dir: Path | None) -> dict[str, Any]:
    port = free_port()
    if side == "node":
        assert node_dir is not None
        command = ["node", "-e", NODE_SERVER, str(port)]
        cwd: Path | None = node_dir
    else:
        command = [sys.executable, __file__, "_serve", side, str(port)]
        cwd = Path(__file__).resolve().parent.parent
    process = subprocess.Popen(command, cwd=cwd)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        url = f"ws://127.0.0.1:{port}/"
        cpu0 = cpu_seconds(process.pid)
        rate = asyncio.run(echo_load(url))
        cpu1 = cpu_seconds(process.pid)
        fan = asyncio.run(fanout_load(url))
        cpu2 = cpu_seconds(process.pid)
        return {
            "echo_per_s": rate,
            "echo_cpu_us": (cpu1 - cpu0) / 10_000 * 1e6,
            **fan,
            "fan_cpu_us_per_delivery": (cpu2 - cpu1) / fan["deliveries"] * 1e6,
        }
    finally:
        process.terminate()
        process.wait(10)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_serve":
        serve(sys.argv[2], int(sys.argv[3]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sides", default="asgi,wire,websockets,node")
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    found = sorted((Path.home() / ".cache" / "crdt-sync").glob("bench-node-*/node_modules/ws"))
    node_dir = found[-1].parent.parent if found else None
    sides = [s for s in args.sides.split(",") if s != "node" or node_dir is not None]
    results: dict[str, list[dict[str, Any]]] = {}
    for run in range(args.runs):
        for side in sides[run % len(sides) :] + sides[: run % len(sides)]:
            result = measure(side, node_dir)
            results.setdefault(side, []).append(result)
            print(side, json.dumps({k: round(v, 2) for k, v in result.items()}), flush=True)
    keys = ("echo_per_s", "echo_cpu_us", "p50_ms", "p99_ms", "fan_cpu_us_per_delivery")
    print(f"\n{'side':12}" + "".join(f"{k:>26}" for k in keys))
    for side, runs in results.items():
        print(
            f"{side:12}" + "".join(f"{statistics.median(r[k] for r in runs):26.2f}" for k in keys)
        )


if __name__ == "__main__":
    main()
