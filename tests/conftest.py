"""Shared fixtures: a real server (uvicorn on 127.0.0.1, a free port) over a real SQLite file."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn

from crdt_sync.server.app import (
    WEBSOCKET_COMPRESSION,
    WEBSOCKET_IMPLEMENTATION,
    Settings,
    create_app,
)
from crdt_sync.server.auth import create_token
from crdt_sync.store import SQLiteStore


async def wait_for(condition: Callable[[], Awaitable[bool] | bool], timeout: float = 10.0) -> None:
    """Await until `condition()` is true; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if isinstance(result, Awaitable):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.01)


def free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@dataclass
class RunningServer:
    port: int
    db_path: Path
    admin_token: str
    device_token: str
    app: object
    server: uvicorn.Server | None  # None: a node process (tests/doors.py)
    store_url: str | None = None  # a node's PostgreSQL store, instead of db_path

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ws(self, path: str, token: str | None = None) -> str:
        token = self.device_token if token is None else token
        sep = "&" if "?" in path else "?"
        return (
            f"ws://127.0.0.1:{self.port}{path}{sep}token={token}"
            if token
            else (f"ws://127.0.0.1:{self.port}{path}")
        )

    def client(self, token: str | None = None) -> httpx.AsyncClient:
        token = self.admin_token if token is None else token
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.AsyncClient(base_url=self.http, headers=headers, timeout=10.0)


async def make_tokens(db_path: Path) -> tuple[str, str]:
    async with SQLiteStore(db_path) as store:
        return (
            await create_token(store, name="admin", role="admin"),
            await create_token(store, name="phone", role="device"),
        )


@pytest.fixture
async def server_factory(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[RunningServer]]]:
    """Start servers in this event loop; each is stopped when the test ends."""
    started: list[tuple[uvicorn.Server, asyncio.Task[None]]] = []

    async def start(db_path: Path | None = None, **settings: object) -> RunningServer:
        db_path = db_path or tmp_path / "server.db"
        admin, device = await make_tokens(db_path)
        app = create_app(Settings(db_path=db_path, **settings))  # type: ignore[arg-type]
        sock = free_socket()
        config = uvicorn.Config(
            app,
            log_level="warning",
            ws=WEBSOCKET_IMPLEMENTATION,  # what `crdt-sync serve` runs
            ws_per_message_deflate=WEBSOCKET_COMPRESSION,
            ws_max_size=1 << 20,
            lifespan="on",
        )
        server = uvicorn.Server(config)
        task = asyncio.create_task(server.serve(sockets=[sock]))
        started.append((server, task))
        await wait_for(lambda: server.started or task.done())
        return RunningServer(sock.getsockname()[1], db_path, admin, device, app, server)

    yield start
    for server, task in started:
        server.should_exit = True
    for server, task in started:
        await asyncio.wait_for(task, 15)


@pytest.fixture
async def server(server_factory: Callable[..., Awaitable[RunningServer]]) -> RunningServer:
    return await server_factory()


@dataclass
class ServerProcess:
    port: int
    db_path: Path
    process: subprocess.Popen[bytes]

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)


def spawn_server(
    db_path: Path, port: int | None = None, options: tuple[str, ...] = ()
) -> ServerProcess:
    """`crdt-sync serve [options]` as a real subprocess, for tests that kill it."""
    if port is None:
        with free_socket() as sock:
            port = sock.getsockname()[1]
    # stderr goes to a file: an unread pipe fills up and blocks the server on its next log line.
    log = open(db_path.with_suffix(".log"), "ab")  # noqa: SIM115 - closed with the process
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "crdt_sync",
            "serve",
            "--db",
            str(db_path),
            "--port",
            str(port),
            "--log-level",
            "warning",
            *options,
        ],
        stdout=subprocess.DEVNULL,
        stderr=log,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    log.close()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(
                f"server exited: {db_path.with_suffix('.log').read_text()[-2000:]}"
            )
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=0.5).status_code == 200:
                return ServerProcess(port, db_path, process)
        except httpx.HTTPError:
            time.sleep(0.05)
    process.kill()
    raise AssertionError("server did not start within 20 s")


@pytest.fixture
def server_process(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    spawned: list[ServerProcess] = []

    def start(db_path: Path | None = None, port: int | None = None) -> ServerProcess:
        proc = spawn_server(db_path or tmp_path / "server.db", port)
        spawned.append(proc)
        return proc

    yield start
    for proc in spawned:
        if proc.process.poll() is None:
            proc.process.kill()
            proc.process.wait(10)


# The browser harness's fixtures (tests/browser.py), for the admin panel's tests, and one
# server or three nodes for the interop tests (tests/doors.py).
from .browser import admin_browser, admin_browser_factory, browser  # noqa: F401
from .doors import doors  # noqa: F401
