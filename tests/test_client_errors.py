"""Bad answers, bad tokens, no server: clear errors, the status says why, local data untouched."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from pycrdt import Doc
from websockets.asyncio.server import ServerConnection, serve

from crdt_sync.client import Replica, SyncState
from crdt_sync.errors import AuthError, ConnectionFailed, Forbidden, ProtocolError
from crdt_sync.ids import DocId
from crdt_sync.protocol import Ack, CaughtUp, SyncUpdate, Welcome, encode_frame
from crdt_sync.record import Records
from crdt_sync.schema import DEFAULT_SCHEMA

from .client_helpers import replica_on
from .conftest import RunningServer, free_socket, wait_for

Script = Callable[[ServerConnection], Awaitable[None]]


@asynccontextmanager
async def fake_server(script: Script) -> AsyncIterator[str]:
    """A websocket server at /ws that reads the hello, then follows `script`."""

    async def handler(connection: ServerConnection) -> None:
        await connection.recv()  # the hello
        await script(connection)

    sock = free_socket()
    async with serve(handler, sock=sock):
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


def update_for(record_id: str, name: str) -> bytes:
    return Records(DEFAULT_SCHEMA).patch(
        DocId(f"contacts/{record_id}"), Doc(), {"name": name}, creating=True
    )


@asynccontextmanager
async def failing_sync(
    tmp_path: Path, script: Script, error: type[Exception], match: str
) -> AsyncIterator[Replica]:
    """A replica with one queued change whose sync against `script` fails with `error`."""
    async with (
        fake_server(script) as url,
        replica_on(url, tmp_path / "phone.db", "cs_x") as replica,
    ):
        await replica.create("contacts", {"name": "Ada"}, id="ada")
        with pytest.raises(error, match=match):
            await replica.sync()
        assert replica.status.state is SyncState.ERROR
        assert match in (replica.status.last_error or "")
        assert replica.status.pending == 1  # the queue is untouched
        assert (await replica.get("contacts", "ada") or {})["name"] == "Ada"
        yield replica


async def test_a_frame_that_is_not_cbor_is_a_protocol_error(tmp_path: Path) -> None:
    async def script(connection: ServerConnection) -> None:
        await connection.send(b"\xff\x00 not cbor")
        await connection.wait_closed()

    async with failing_sync(tmp_path, script, ProtocolError, "not valid CBOR"):
        pass


async def test_an_update_that_does_not_decode_is_refused_and_the_cursor_stays(
    tmp_path: Path,
) -> None:
    async def script(connection: ServerConnection) -> None:
        await connection.send(encode_frame(Welcome(5, "liar")))
        await connection.send(encode_frame(SyncUpdate(DocId("contacts/x"), b"\x07garbage", seq=1)))
        await connection.wait_closed()

    async with failing_sync(tmp_path, script, ProtocolError, "does not decode") as replica:
        assert replica.status.cursor == 0 and await replica.get("contacts", "x") is None


async def test_an_ack_for_a_write_never_sent_is_a_protocol_error(tmp_path: Path) -> None:
    async def script(connection: ServerConnection) -> None:
        await connection.send(encode_frame(Welcome(0, "liar")))
        await connection.send(encode_frame(CaughtUp(0)))
        await connection.send(encode_frame(Ack(DocId("contacts/ada"), 999, 1)))
        await connection.wait_closed()

    async with failing_sync(tmp_path, script, ProtocolError, "not in flight"):
        pass


async def test_a_connection_lost_mid_catch_up_keeps_what_arrived_with_its_cursor(
    tmp_path: Path,
) -> None:
    async def script(connection: ServerConnection) -> None:
        await connection.send(encode_frame(Welcome(10, "flaky")))
        for seq in (1, 2, 3):
            await connection.send(
                encode_frame(
                    SyncUpdate(
                        DocId(f"contacts/c{seq}"), update_for(f"c{seq}", f"C {seq}"), seq=seq
                    )
                )
            )
        connection.transport.abort()  # no close frame: the network went away

    async with failing_sync(tmp_path, script, ConnectionFailed, "connection lost") as replica:
        assert replica.status.cursor == 3
        assert [v["id"] for v in await replica.query("contacts")] == ["ada", "c1", "c2", "c3"]


async def test_a_refused_token_stops_live_sync_instead_of_hammering(
    server: RunningServer, tmp_path: Path
) -> None:
    async with replica_on(server, tmp_path / "phone.db", "cs_wrong") as replica:
        with pytest.raises(AuthError, match="4401"):
            await replica.sync()
        async with replica.live():
            await replica.wait_status(lambda s: s.state is SyncState.ERROR, 10)
            await wait_for(lambda: replica._live_task is not None and replica._live_task.done())
        assert "4401" in (replica.status.last_error or "")


async def test_an_unreachable_server_is_a_connection_failure(tmp_path: Path) -> None:
    with free_socket() as sock:
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"  # bound, never listening
        async with replica_on(url, tmp_path / "phone.db", "cs_token") as replica:
            await replica.create("contacts", {"name": "Ada"}, id="ada")
            with pytest.raises(ConnectionFailed, match="cannot connect"):
                await replica.sync()
            assert replica.status.state is SyncState.ERROR
            assert replica.status.pending == 1


async def test_live_sync_retries_with_backoff_until_the_server_answers(
    server: RunningServer, tmp_path: Path
) -> None:
    """Live mode against a dead address keeps trying; the status shows each failed attempt."""
    with free_socket() as sock:
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        async with replica_on(url, tmp_path / "phone.db", "cs_token") as replica:
            attempts = 0

            async def count() -> None:
                nonlocal attempts
                async for status in replica.watch():
                    attempts += status.state is SyncState.CONNECTING

            counting = asyncio.create_task(count())
            async with replica.live():
                await wait_for(lambda: attempts >= 3)
            counting.cancel()
            assert replica.backoff.attempts >= 2


@asynccontextmanager
async def closing_server(code: int) -> AsyncIterator[tuple[str, list[int]]]:
    """A server that closes every /ws connection with `code` after the hello; counts them.

    Our own server closes a well-behaved client with none of these codes, so a stand-in
    says them; what is under test is what the replica does about each."""
    connections: list[int] = []

    async def close_with_code(connection: ServerConnection) -> None:
        connections.append(code)
        await connection.close(code, "said by the test server")

    async with fake_server(close_with_code) as url:
        yield url, connections


@pytest.mark.parametrize(
    ("code", "error"),
    [(4400, ProtocolError), (4401, AuthError), (4403, Forbidden), (1008, Forbidden)],
)
async def test_a_close_code_that_says_do_not_retry_stops_live_sync_with_its_reason(
    tmp_path: Path, code: int, error: type[Exception]
) -> None:
    async with (
        closing_server(code) as (url, connections),
        replica_on(url, tmp_path / "phone.db", "cs_x") as replica,
    ):
        await replica.create("contacts", {"name": "Ada"}, id="ada")
        async with replica.live():
            with pytest.raises(error, match=rf"closed by the server with {code} \(said by"):
                await replica.wait_synced(timeout=10)
            with pytest.raises(error, match=str(code)):  # a watcher that comes later, too
                async for _ in replica.watch():
                    pass
            with pytest.raises(error, match=str(code)):
                await replica.sync()
            assert replica._live_task is not None and replica._live_task.done()
            assert replica.status.state is SyncState.ERROR
        assert connections == [code]  # tried once, never again
        assert str(code) in (replica.status.last_error or "")
        assert replica.status.pending == 1  # nothing lost: the change waits for a new token


@pytest.mark.parametrize("code", [1001, 1011, 1013, 4408])
async def test_a_close_code_that_says_reconnect_is_retried(tmp_path: Path, code: int) -> None:
    async with (
        closing_server(code) as (url, connections),
        replica_on(url, tmp_path / "phone.db", "cs_x") as replica,
        replica.live(),
    ):
        await wait_for(lambda: len(connections) >= 3)
        assert replica._live_task is not None and not replica._live_task.done()


async def test_a_live_replica_stops_with_the_reason_when_its_token_is_revoked(
    server: RunningServer, tmp_path: Path
) -> None:
    async with replica_on(server, tmp_path / "phone.db", server.device_token) as replica:
        await replica.create("contacts", {"name": "Ada"}, id="ada")
        async with replica.live():
            await replica.wait_synced(timeout=10)
            async with server.client() as admin:
                revoked = await admin.delete("/api/admin/tokens/phone")
                assert revoked.status_code == 200, revoked.text
            with pytest.raises(
                AuthError, match=r"closed by the server with 4401 \(token revoked\)"
            ):
                async with asyncio.timeout(10):
                    async for _ in replica.watch():
                        pass
            await replica.create("contacts", {"name": "Bob"}, id="bob")  # offline work goes on
            assert replica._live_task is not None and replica._live_task.done()
            assert replica.status.state is SyncState.ERROR
        assert replica.status.pending == 1
    async with server.client() as admin:
        assert (await admin.get("/api/contacts/bob")).status_code == 404
