"""The admin change feed (SSE): fed by commits, resumable from its cursor, nothing missed."""

from __future__ import annotations

import asyncio
import json
import re
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from .conftest import RunningServer, ServerProcess, make_tokens, wait_for
from .rest_helpers import assert_error, device


@dataclass
class Event:
    name: str
    id: str | None
    data: Any


class Feed:
    """An open feed, read event by event."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.lines = response.aiter_lines()

    async def next(self, timeout: float = 10.0) -> Event:
        return await asyncio.wait_for(self._next(), timeout)

    async def _next(self) -> Event:
        name, event_id, data = "message", None, list[str]()
        async for line in self.lines:
            if line == "":
                if data:
                    return Event(name, event_id, json.loads("\n".join(data)))
                continue
            field, _, value = line.partition(": ")
            if field == "event":
                name = value
            elif field == "id":
                event_id = value
            elif field == "data":
                data.append(value)
        raise EOFError("the feed ended")

    async def changes(self, count: int) -> list[Event]:
        events = [await self.next() for _ in range(count)]
        assert [e.name for e in events] == ["change"] * count
        return events


@asynccontextmanager
async def open_feed(
    client: httpx.AsyncClient, query: str = "", headers: dict[str, str] | None = None
) -> AsyncIterator[Feed]:
    async with client.stream("GET", f"/api/admin/feed{query}", headers=headers) as response:
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        yield Feed(response)


async def test_a_device_write_reaches_the_feed_with_the_record(server: RunningServer) -> None:
    async with server.client() as admin, open_feed(admin) as feed:
        ready = await feed.next()
        assert ready.name == "ready"
        async with device(server) as phone:
            pushed = await phone.post(
                "/api/sync/outgoing",
                json={
                    "changes": {"contacts": {"created": [{"id": "zoe", "name": "Zoé <b>"}]}},
                    "lastPulledAt": None,
                },
            )
            assert pushed.status_code == 200, pushed.text
        (change,) = await feed.changes(1)
        assert change.data["doc"] == "contacts/zoe" and change.data["deleted"] is False
        assert change.data["record"]["name"] == "Zoé <b>"
        assert int(change.id or 0) == change.data["seq"] > ready.data["cursor"]


async def test_the_feed_resumes_from_its_cursor_with_nothing_missed(
    server: RunningServer,
) -> None:
    async with server.client() as admin:
        async with open_feed(admin) as feed:
            await feed.next()
            await admin.post("/api/contacts", json={"id": "a", "name": "A"})
            (first,) = await feed.changes(1)
        # While nobody listens: a new record, an edit made twice, a delete.
        await admin.post("/api/contacts", json={"id": "b", "name": "B"})
        await admin.patch("/api/contacts/a", json={"name": "A1"})
        await admin.patch("/api/contacts/a", json={"name": "A2"})
        await admin.post("/api/deals", json={"id": "d", "title": "D"})
        await admin.delete("/api/deals/d")
        async with open_feed(admin, headers={"Last-Event-ID": str(first.id)}) as feed:
            assert (await feed.next()).data["cursor"] == int(first.id or 0)
            changes = await feed.changes(3)
        seen = {c.data["doc"]: c.data for c in changes}
        assert seen["contacts/a"]["record"]["name"] == "A2"  # once, as it is now
        assert seen["contacts/b"]["record"]["name"] == "B"
        assert seen["deals/d"]["deleted"] is True
        assert [c.data["seq"] for c in changes] == sorted(c.data["seq"] for c in changes)


async def test_a_feed_can_watch_one_collection_or_one_record(server: RunningServer) -> None:
    async with server.client() as admin, open_feed(admin, "?doc=contacts/b") as feed:
        await feed.next()
        await admin.post("/api/contacts", json={"id": "a", "name": "A"})
        await admin.post("/api/deals", json={"id": "b", "title": "not me"})
        await admin.post("/api/contacts", json={"id": "b", "name": "B"})
        (change,) = await feed.changes(1)
        assert change.data["doc"] == "contacts/b"


async def test_bad_feed_requests_are_refused_and_the_server_stays_up(
    server: RunningServer,
) -> None:
    async with server.client() as admin, device(server) as phone:
        assert_error(await phone.get("/api/admin/feed"), 403, "forbidden")
        assert_error(await admin.get("/api/admin/feed?since=999"), 400, "bad_request")
        assert_error(await admin.get("/api/admin/feed?since=-1"), 400, "bad_request")
        assert_error(
            await admin.get("/api/admin/feed", headers={"Last-Event-ID": "x"}), 400, "bad_request"
        )
        assert_error(await admin.get("/api/admin/feed?collections=nope"), 404, "unknown_collection")
        assert_error(await admin.get("/api/admin/feed?doc=contacts"), 400, "bad_request")
        assert (await admin.get("/health")).status_code == 200


async def test_the_feed_is_in_the_openapi_document(server: RunningServer) -> None:
    async with server.client() as admin:
        paths = (await admin.get("/openapi.json")).json()["paths"]
    assert "text/event-stream" in paths["/api/admin/feed"]["get"]["responses"]["200"]["content"]


async def test_an_open_feed_does_not_keep_the_server_from_stopping(
    tmp_path: Path, server_process: Callable[..., ServerProcess]
) -> None:
    db = tmp_path / "server.db"
    admin_token, _ = await make_tokens(db)
    served = server_process(db)
    headers = {"Authorization": f"Bearer {admin_token}"}
    async with (
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{served.port}", headers=headers) as admin,
        open_feed(admin) as feed,
    ):
        assert (await feed.next()).name == "ready"
        served.process.send_signal(signal.SIGINT)
        await wait_for(lambda: served.process.poll() is not None, timeout=30)
    # uvicorn.Server.run re-raises the SIGINT it handled once shut down: 130, as for Ctrl-C.
    assert served.process.returncode in (0, 130)
    assert "Traceback" not in db.with_suffix(".log").read_text()


async def sign_in(client: httpx.AsyncClient, server: RunningServer) -> str:
    """Sign `client` in through the sign-in form, as a browser does; the page's CSRF token."""
    form = await client.get("/admin/sign-in")
    form_token = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert form_token
    signed = await client.post(
        "/admin/sign-in", data={"csrf": form_token[1], "token": server.admin_token}
    )
    assert signed.status_code == 303
    page = await client.get("/admin/contacts")
    csrf = re.search(r'name="csrf-token" content="([^"]+)"', page.text)
    assert csrf
    return csrf[1]


async def test_signing_out_ends_the_sessions_open_feed_at_once(server: RunningServer) -> None:
    async with httpx.AsyncClient(base_url=server.http, timeout=10.0) as client:
        csrf = await sign_in(client, server)
        async with open_feed(client) as feed:
            assert (await feed.next()).name == "ready"
            out = await client.post("/admin/sign-out", data={"csrf": csrf})
            assert out.status_code == 303
            try:
                event: Event | None = await feed.next(timeout=5)
            except EOFError:
                event = None
            assert event is None, "the feed went on after sign-out"
