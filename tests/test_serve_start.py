"""`crdt-sync serve` starting: the record doors serve first, HTTP waits for its app, never refused."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import uvicorn
import websockets

from crdt_sync.server.front import WEBSOCKET_IMPLEMENTATION, Front
from crdt_sync.server.runtime import Settings

from .conftest import free_socket, make_tokens, wait_for
from .peers import mux_peer, record_of, yjs_peer


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _spawn_serve(db_path: Path, port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "crdt_sync", "serve", "--db", str(db_path), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


async def _started_serve(db_path: Path, port: int) -> subprocess.Popen[bytes]:
    process = _spawn_serve(db_path, port)
    deadline = time.monotonic() + 20
    while not _listening(port):  # the first moment the port accepts: the app may not be built
        assert process.poll() is None and time.monotonic() < deadline, "serve did not listen"
        await asyncio.sleep(0.005)
    return process


@contextlib.asynccontextmanager
async def _served(front: Front, log_level: str = "warning") -> AsyncIterator[int]:
    """`front` under uvicorn in this process, on a free port (yielded) until the block ends."""
    sock = free_socket()
    config = uvicorn.Config(front, log_level=log_level, ws=WEBSOCKET_IMPLEMENTATION)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        await wait_for(lambda: server.started)
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 15)


async def _syncs_over_both_doors(port: int, device: str) -> None:
    """An edit acked on /ws is what a stock client joining on /yjs gets."""
    base = f"ws://127.0.0.1:{port}"
    async with mux_peer(f"{base}/ws?token={device}", client="phone") as peer:
        await peer.wait_ack(await peer.edit("contacts/ada", name="Ada"))
    async with yjs_peer(f"{base}/yjs/contacts/ada?token={device}") as doc:
        assert record_of(doc)["name"] == "Ada"


@pytest.mark.parametrize("first", ["/health", "/ready", "/api/contacts", "/no/such/route"])
async def test_http_requests_from_the_first_moment_get_the_apps_answer(
    tmp_path: Path, first: str
) -> None:
    """What comes while the HTTP app is built waits for it: no 503, no 404 for a real route."""
    db_path = tmp_path / "server.db"
    admin, _ = await make_tokens(db_path)
    with free_socket() as sock:
        port = sock.getsockname()[1]
    process = await _started_serve(db_path, port)
    try:
        headers = {"Authorization": f"Bearer {admin}"}
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=20) as http:
            answer = await http.get(first, headers=headers)
            assert answer.status_code == (404 if first == "/no/such/route" else 200)
            if first == "/no/such/route":
                assert answer.json()["error"]["code"] == "not_found"
            assert (await http.get("/health")).json() == {"status": "ok"}
    finally:
        process.terminate()
        process.wait(20)


async def test_a_record_syncs_over_both_doors_from_the_first_moment(tmp_path: Path) -> None:
    db_path = tmp_path / "server.db"
    _, device = await make_tokens(db_path)
    with free_socket() as sock:
        port = sock.getsockname()[1]
    process = await _started_serve(db_path, port)
    try:
        await _syncs_over_both_doors(port, device)
    finally:
        process.terminate()
        process.wait(20)


async def test_the_front_serves_doors_and_http_from_one_runtime(tmp_path: Path) -> None:
    """In process: the HTTP app serves from the store, engine and hub the doors use."""
    db_path = tmp_path / "server.db"
    admin, device = await make_tokens(db_path)
    front = Front(Settings(db_path=db_path))
    async with _served(front) as port:
        url = f"ws://127.0.0.1:{port}/yjs/contacts/ada?token={device}"
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=20) as http:
            headers = {"Authorization": f"Bearer {admin}"}
            created = await http.post(
                "/api/contacts", json={"id": "ada", "name": "Ada"}, headers=headers
            )
            assert created.status_code == 201, created.text
            async with yjs_peer(url) as doc:
                assert record_of(doc)["name"] == "Ada"
                assert front.http_app is not None and front.runtime is not None
                state = front.http_app.state
                assert state.hub is front.runtime.hub and state.store is front.runtime.store
                assert len(front.runtime.hub.connections) == 1
    with pytest.raises((OSError, websockets.InvalidHandshake)):
        async with websockets.connect(url, open_timeout=2):
            pass


async def test_the_http_app_is_built_a_moment_after_the_doors_open_without_any_request(
    tmp_path: Path,
) -> None:
    """The build waits BUILD_DELAY for a first HTTP request (one starts it at once: the
    tests above send theirs the moment the port accepts), then starts anyway, so an idle
    server's app is ready and its jobs run whoever asks first."""
    from crdt_sync.server.front import BUILD_DELAY

    db_path = tmp_path / "server.db"
    _, device = await make_tokens(db_path)
    front = Front(Settings(db_path=db_path))
    async with _served(front) as port:
        async with yjs_peer(f"ws://127.0.0.1:{port}/yjs/contacts/ada?token={device}"):
            assert front.runtime is not None
        deadline = asyncio.get_running_loop().time() + BUILD_DELAY + 20
        while front.http_app is None:
            assert asyncio.get_running_loop().time() < deadline, "the HTTP app was never built"
            await asyncio.sleep(0.02)


async def test_the_http_app_waits_while_record_joins_keep_coming(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a restart the devices rejoin first: while the doors keep getting joins, the
    build waits (BUILD_MAX_DELAY at most), then starts once BUILD_DELAY passes without one."""
    from crdt_sync.server import front as front_module

    delay = 0.4
    monkeypatch.setattr(front_module, "BUILD_DELAY", delay)
    monkeypatch.setattr(front_module, "BUILD_MAX_DELAY", 60.0)
    started: list[float] = []
    real_build = front_module._build_http_app

    def observed_build(settings: Settings, runtime: object) -> object:
        started.append(time.monotonic())
        return real_build(settings, runtime)  # type: ignore[arg-type]

    monkeypatch.setattr(front_module, "_build_http_app", observed_build)
    db_path = tmp_path / "server.db"
    _, device = await make_tokens(db_path)
    front = Front(Settings(db_path=db_path))
    async with _served(front) as port:
        url = f"ws://127.0.0.1:{port}/yjs/contacts/ada?token={device}"
        storm_ends = time.monotonic() + 4 * delay
        while time.monotonic() < storm_ends:  # a join every 0.1 s, bounded: four delays long
            async with yjs_peer(url):
                pass
            await asyncio.sleep(0.1)
        quiet_from = time.monotonic()
        assert started == [], "the build began while the joins kept coming"
        await wait_for(lambda: front.http_app is not None, timeout=30)
        assert len(started) == 1 and started[0] >= quiet_from - 0.15


async def test_the_http_app_is_built_by_its_deadline_however_long_the_joins_go_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from crdt_sync.server import front as front_module

    monkeypatch.setattr(front_module, "BUILD_DELAY", 0.4)
    monkeypatch.setattr(front_module, "BUILD_MAX_DELAY", 1.0)
    db_path = tmp_path / "server.db"
    _, device = await make_tokens(db_path)
    front = Front(Settings(db_path=db_path))
    async with _served(front) as port:
        url = f"ws://127.0.0.1:{port}/yjs/contacts/ada?token={device}"
        storm_ends = time.monotonic() + 30
        while front.http_app is None:
            assert time.monotonic() < storm_ends, "the build waited past BUILD_MAX_DELAY"
            async with yjs_peer(url):
                pass
            await asyncio.sleep(0.1)


async def test_connections_made_before_the_http_app_are_in_its_activity_log(
    tmp_path: Path,
) -> None:
    """The sync page's log starts with the HTTP app; a device that joined before (a restart's
    rejoins come first) is listed as connected, and its disconnect follows."""
    db_path = tmp_path / "server.db"
    admin, device = await make_tokens(db_path)
    front = Front(Settings(db_path=db_path))
    async with _served(front) as port:
        url = f"ws://127.0.0.1:{port}/yjs/contacts/ada?token={device}"
        async with yjs_peer(url):
            assert front.http_app is None  # no request yet, and the join was just now
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=20) as http:
                headers = {"Authorization": f"Bearer {admin}"}

                async def kinds() -> list[str]:
                    answer = await http.get("/api/admin/sync/activity?after=0", headers=headers)
                    assert answer.status_code == 200, answer.text
                    return [e["kind"] for e in answer.json()["entries"]]

                assert "connect" in await kinds()
        await wait_for(lambda: not front.runtime or not front.runtime.hub.connections)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=20) as http:
            answer = await http.get(
                "/api/admin/sync/activity?after=0", headers={"Authorization": f"Bearer {admin}"}
            )
            found = [e["kind"] for e in answer.json()["entries"]]
            assert found.index("connect") < found.index("disconnect"), found


@pytest.mark.parametrize("fails", ["build", "lifespan"])
async def test_an_http_app_that_fails_to_start_answers_500_and_the_doors_still_serve(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fails: str
) -> None:
    """A bug in building the HTTP app, or in starting its share of the lifespan, must not
    leave requests waiting forever for an app that will never come."""
    import crdt_sync.server.front as front_module

    db_path = tmp_path / "server.db"
    _, device = await make_tokens(db_path)
    built = front_module._build_http_app

    def failing_build(settings: Settings, runtime: object) -> object:
        if fails == "build":
            raise RuntimeError("injected: the HTTP app could not be built")
        app = built(settings, runtime)  # type: ignore[arg-type]

        @contextlib.asynccontextmanager
        async def broken(app: object) -> AsyncIterator[None]:
            raise RuntimeError("injected: the HTTP side could not start")
            yield

        app.router.lifespan_context = broken
        return app

    monkeypatch.setattr(front_module, "_build_http_app", failing_build)
    async with _served(Front(Settings(db_path=db_path)), log_level="critical") as port:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=20) as http:
            answer = await asyncio.wait_for(http.get("/health"), 10)
            assert answer.status_code == 500
        await _syncs_over_both_doors(port, device)


def test_importing_the_front_imports_no_starlette_beyond_its_types() -> None:
    """The record doors' way to a first record synced: Starlette's requests, responses and
    websockets (with python_multipart, http.cookies, http.client: ~8 ms) are the HTTP app's,
    built after the doors open (asgi_websocket.py)."""
    probe = (
        "import json, sys, crdt_sync.server.front; "
        "print(json.dumps(sorted(m for m in sys.modules "
        "if m.partition('.')[0] in {'starlette', 'fastapi', 'python_multipart'})))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert json.loads(done.stdout) == ["starlette", "starlette.types"]
