"""The sync management API: overview, connected clients, tokens created/listed/revoked."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path

import websockets
from websockets.exceptions import ConnectionClosed

from crdt_sync.store.archive import ArchiveReader, verify_archive

from .conftest import RunningServer, wait_for
from .peers import mux_peer, yjs_peer
from .rest_helpers import assert_error, device


async def test_overview_reports_cursor_log_and_connections(server: RunningServer) -> None:
    async with server.client() as admin:
        for i in range(3):
            (
                await admin.post("/api/contacts", json={"id": f"c{i}", "name": "A"})
            ).raise_for_status()
        async with mux_peer(server.ws("/ws"), client="tablet"):
            answer = (await admin.get("/api/admin/sync/overview")).json()
    assert answer["cursor"] >= 3
    assert answer["log_entries"] >= 3
    assert answer["connections"] == {"ws": 1}


async def test_clients_lists_each_transport_with_its_lag(server: RunningServer) -> None:
    async with server.client() as admin:
        (await admin.post("/api/contacts", json={"id": "c1", "name": "Ann"})).raise_for_status()
        async with device(server, "laptop") as rest:
            (await rest.get("/api/sync/initial")).raise_for_status()
        (await admin.post("/api/contacts", json={"id": "c2", "name": "Bob"})).raise_for_status()
        async with (
            mux_peer(server.ws("/ws"), client="tablet"),
            yjs_peer(server.ws("/yjs/contacts/c1")),
        ):
            answer = (await admin.get("/api/admin/sync/clients")).json()
    by_transport = {c["transport"]: c for c in answer["live"]}
    assert set(by_transport) == {"ws", "yjs"}
    ws = by_transport["ws"]
    assert (ws["token"], ws["role"], ws["client_id"]) == ("phone", "device", "tablet")
    assert ws["behind"] == 0 and ws["cursor"] == answer["cursor"]
    assert by_transport["yjs"]["behind"] is None
    [laptop] = answer["rest"]
    assert (laptop["token"], laptop["client_id"], laptop["behind"]) == ("phone", "laptop", 1)


async def test_a_device_token_may_not_use_the_admin_api(server: RunningServer) -> None:
    async with server.client(server.device_token) as phone:
        assert_error(await phone.get("/api/admin/sync/clients"), 403, "forbidden")
        assert_error(await phone.post("/api/admin/tokens", json={"name": "x"}), 403, "forbidden")
    async with server.client("") as nobody:
        assert_error(await nobody.get("/api/admin/tokens"), 401, "unauthorized")


async def test_a_created_token_is_returned_once_and_works(server: RunningServer) -> None:
    async with server.client() as admin:
        created = await admin.post("/api/admin/tokens", json={"name": "kiosk"})
        assert created.status_code == 201
        token = created.json()["token"]
        listed = (await admin.get("/api/admin/tokens")).json()
    assert all("token" not in row for row in listed)
    [kiosk_row] = [r for r in listed if r["name"] == "kiosk"]
    assert (kiosk_row["role"], kiosk_row["revoked_at"]) == ("device", None)
    async with server.client(token) as kiosk:
        assert (await kiosk.get("/api/sync/initial")).status_code == 200


async def test_bad_token_requests_are_refused_and_change_nothing(server: RunningServer) -> None:
    async with server.client() as admin:
        before = (await admin.get("/api/admin/tokens")).json()
        assert_error(await admin.post("/api/admin/tokens", json={"name": ""}), 400, "bad_request")
        bad_role = await admin.post("/api/admin/tokens", json={"name": "x", "role": "root"})
        assert_error(bad_role, 400, "bad_request")
        assert_error(await admin.delete("/api/admin/tokens/nobody"), 404, "not_found")
        assert (await admin.get("/api/admin/tokens")).json() == before
        assert (await admin.get("/health")).status_code == 200


async def test_revoking_a_token_closes_its_sockets_at_once_and_refuses_it_after(
    server_factory: object,
) -> None:
    # A long sweep interval: the close must come from the revocation itself.
    server: RunningServer = await server_factory(revocation_interval=3600.0)  # type: ignore[operator]
    async with server.client() as admin:
        token = (await admin.post("/api/admin/tokens", json={"name": "tab"})).json()["token"]
        async with websockets.connect(server.ws("/yjs/contacts/c1", token)) as socket:

            async def connected() -> bool:
                live = (await admin.get("/api/admin/sync/clients")).json()["live"]
                return [c["token"] for c in live] == ["tab"]

            await wait_for(connected)
            revoked = (await admin.delete("/api/admin/tokens/tab")).json()
            assert revoked == {"name": "tab", "closed_connections": 1}
            try:
                await asyncio.wait_for(socket.wait_closed(), 5)
            except ConnectionClosed:
                pass
            assert socket.close_code == 4401
        listed = {r["name"]: r for r in (await admin.get("/api/admin/tokens")).json()}
        assert listed["tab"]["revoked_at"] is not None
    async with server.client(token) as tab:
        assert_error(await tab.get("/api/sync/initial"), 401, "unauthorized")


# -- refused writes, activity, rates ------------------------------------------------------


async def test_refused_writes_list_reason_origin_and_values_from_every_door(
    server: RunningServer,
) -> None:
    async with server.client() as admin:
        (await admin.post("/api/deals", json={"id": "d1", "title": "Big"})).raise_for_status()
        refused_patch = await admin.patch("/api/deals/d1", json={"amount": -5})
        assert refused_patch.status_code == 422
        async with mux_peer(server.ws("/ws"), client="tablet") as peer:
            cseq = await peer.edit("deals/d2", title="Small", stage="sold")
            await wait_for(lambda: any(e.cseq == cseq for e in peer.errors))
        answer = (await admin.get("/api/admin/sync/refusals")).json()
        assert (await admin.get("/api/deals/d1")).json()["amount"] is None  # nothing written
    assert answer["total"] == 2
    newest, oldest = answer["refusals"]
    assert (oldest["doc"], oldest["origin"], oldest["code"]) == (
        "deals/d1",
        "admin",
        "schema_violation",
    )
    assert "amount" in oldest["reason"] and oldest["values"] == {"amount": -5}
    assert (newest["doc"], newest["origin"], newest["code"]) == (
        "deals/d2",
        "tablet",
        "schema_violation",
    )
    assert "stage" in newest["reason"]
    assert newest["values"] == {"stage": "sold", "title": "Small"}
    assert newest["number"] == oldest["number"] + 1
    async with server.client() as admin:
        newer = (await admin.get(f"/api/admin/sync/refusals?after={newest['number']}")).json()
    assert newer["refusals"] == []


async def test_activity_log_filters_by_record_device_and_kind(server: RunningServer) -> None:
    async with server.client() as admin:
        async with mux_peer(server.ws("/ws"), client="tablet") as peer:
            await peer.wait_ack(await peer.edit("contacts/c1", name="Ann"))
            await peer.wait_ack(await peer.edit("contacts/c2", name="Bob"))
        (await admin.post("/api/contacts", json={"id": "c3", "name": "Cy"})).raise_for_status()

        async def entries(query: str) -> list[dict[str, object]]:
            answer = await admin.get(f"/api/admin/sync/activity?{query}")
            assert answer.status_code == 200, answer.text
            found: list[dict[str, object]] = answer.json()["entries"]
            return found

        await wait_for(lambda: _has_disconnect(entries("kind=disconnect")))
        updates = await entries("kind=update")
        assert [(e["doc"], e["device"]) for e in updates] == [
            ("contacts/c1", "tablet"),
            ("contacts/c2", "tablet"),
            ("contacts/c3", "admin"),
        ]
        assert all(isinstance(e["seq"], int) for e in updates)
        assert [e["doc"] for e in await entries("record=contacts/c2")] == ["contacts/c2"]
        tablet = await entries("device=tablet")
        # A /ws client names itself after connecting: its connect event has the token's name.
        assert [e["kind"] for e in tablet] == ["update", "update", "disconnect"]
        phone = await entries("device=phone&kind=connect&kind=disconnect")
        assert [(e["kind"], e["token"]) for e in phone] == [
            ("connect", "phone"),
            ("disconnect", "phone"),
        ]
        both = await entries("kind=connect&kind=disconnect")
        assert {e["kind"] for e in both} == {"connect", "disconnect"}
        first = (await admin.get("/api/admin/sync/activity?after=0&limit=2")).json()
        rest = (await admin.get(f"/api/admin/sync/activity?after={first['next']}")).json()
        numbers = [e["number"] for e in first["entries"] + rest["entries"]]
        assert numbers == sorted(set(numbers)) and len(numbers) == len(tablet) + 2
        assert_error(await admin.get("/api/admin/sync/activity?kind=nap"), 400, "bad_request")
        assert_error(await admin.get("/api/admin/sync/activity?after=-1"), 400, "bad_request")


async def _has_disconnect(found: Awaitable[list[dict[str, object]]]) -> bool:
    return bool(await found)


async def test_activity_stream_sends_updates_live_and_resumes_after_the_last_seen(
    server: RunningServer,
) -> None:
    async with server.client() as admin:
        async with admin.stream(
            "GET", "/api/admin/sync/activity/stream?kind=update", timeout=10
        ) as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            events = _server_sent_events(stream.aiter_lines())
            for i in range(3):
                created = await admin.post("/api/contacts", json={"id": f"c{i}", "name": "A"})
                created.raise_for_status()
            seen = [await asyncio.wait_for(anext(events), 10) for _ in range(3)]
        assert [json.loads(e["data"])["doc"] for e in seen] == [f"contacts/c{i}" for i in range(3)]
        assert {e["event"] for e in seen} == {"activity"}
        (await admin.post("/api/contacts", json={"id": "late", "name": "L"})).raise_for_status()
        headers = {"Last-Event-ID": seen[1]["id"]}
        async with admin.stream(
            "GET", "/api/admin/sync/activity/stream?kind=update", headers=headers, timeout=10
        ) as stream:
            events = _server_sent_events(stream.aiter_lines())
            resumed = [await asyncio.wait_for(anext(events), 10) for _ in range(2)]
        assert [json.loads(e["data"])["doc"] for e in resumed] == ["contacts/c2", "contacts/late"]
        bad = await admin.get(
            "/api/admin/sync/activity/stream", headers={"Last-Event-ID": "yesterday"}
        )
        assert_error(bad, 400, "bad_request")


async def _server_sent_events(lines: AsyncIterator[str]) -> AsyncIterator[dict[str, str]]:
    """Each event with data, as {field: value}; comments and id-only events skipped."""
    event: dict[str, str] = {}
    async for line in lines:
        if not line:
            if "data" in event:
                yield event
            event = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(": ")
            event[name] = value


async def test_rates_sample_the_servers_own_counters(server: RunningServer) -> None:
    async with server.client() as admin:
        async with mux_peer(server.ws("/ws"), client="tablet") as peer:
            for i in range(20):
                await peer.wait_ack(await peer.edit(f"contacts/r{i}", name="R"))

            async def sampled() -> bool:
                samples = (await admin.get("/api/admin/sync/rates?seconds=60")).json()["samples"]
                return sum(s["updates_per_s"] for s in samples) > 0 and samples[-1][
                    "connections"
                ] == {"ws": 1}

            await wait_for(sampled, timeout=10)
        answer = (await admin.get("/api/admin/sync/rates")).json()
    assert answer["interval"] == 1.0
    times = [s["at"] for s in answer["samples"]]
    assert times == sorted(times)
    # The samples add up to exactly the writes made (rates divide them by each sample's own
    # elapsed time, which a loaded machine stretches past the interval).
    assert sum(s["updates"] for s in answer["samples"]) == 20


# -- operations -----------------------------------------------------------------------------


async def test_disconnecting_one_client_closes_only_its_socket(server: RunningServer) -> None:
    async with (
        server.client() as admin,
        websockets.connect(server.ws("/yjs/contacts/c1")) as first,
        websockets.connect(server.ws("/yjs/contacts/c1")) as second,
    ):

        async def both() -> list[dict[str, str]]:
            live: list[dict[str, str]] = (await admin.get("/api/admin/sync/clients")).json()["live"]
            return live

        await wait_for(lambda: _count(both(), 2))
        oldest, newest = await both()
        answer = await admin.delete(f"/api/admin/sync/clients/{oldest['id']}")
        assert answer.json() == {
            "id": oldest["id"],
            "token": "phone",
            "transport": "yjs",
            "client_id": oldest["client_id"],
        }
        try:
            await asyncio.wait_for(first.wait_closed(), 5)
        except ConnectionClosed:
            pass
        assert (first.close_code, first.close_reason) == (1001, "disconnected by an admin")
        await wait_for(lambda: _count(both(), 1))
        assert [c["id"] for c in await both()] == [newest["id"]]
        assert second.close_code is None
        assert_error(
            await admin.delete(f"/api/admin/sync/clients/{oldest['id']}"), 404, "not_found"
        )


async def _count(found: Awaitable[list[dict[str, str]]], expected: int) -> bool:
    return len(await found) == expected


async def test_compacting_a_record_is_a_job_whose_progress_can_be_followed(
    server: RunningServer,
) -> None:
    async with server.client() as admin:
        (await admin.post("/api/contacts", json={"id": "c1", "name": "A"})).raise_for_status()
        for i in range(5):
            (await admin.patch("/api/contacts/c1", json={"phone": str(i)})).raise_for_status()
        before = (await admin.get("/api/admin/sync/overview")).json()
        started = await admin.post("/api/admin/sync/compactions", json={"doc": "contacts/c1"})
        assert started.status_code == 202
        job = started.json()
        assert (job["kind"], job["doc"]) == ("compaction", "contacts/c1")

        async def finished() -> bool:
            answer = await admin.get(f"/api/admin/sync/compactions/{job['id']}")
            job.update(answer.json())
            return job["state"] != "running"

        await wait_for(finished)
        assert (job["state"], job["done"], job["total"]) == ("done", 1, 1)
        assert job["report"]["updates_before"] == 6 and job["report"]["updates_after"] == 1
        after = (await admin.get("/api/admin/sync/overview")).json()
        assert after["log_entries"] == before["log_entries"] - 5
        assert (await admin.get("/api/contacts/c1")).json()["phone"] == "4"
        listed = (await admin.get("/api/admin/sync/compactions")).json()
        assert [j["id"] for j in listed] == [job["id"]]


async def test_compacting_the_whole_store_reports_progress_per_record(
    server: RunningServer,
) -> None:
    async with server.client() as admin:
        for i in range(4):
            doc = f"c{i}"
            (await admin.post("/api/contacts", json={"id": doc, "name": "A"})).raise_for_status()
            (await admin.patch(f"/api/contacts/{doc}", json={"phone": "1"})).raise_for_status()
        job = (await admin.post("/api/admin/sync/compactions", json={})).json()
        assert job["doc"] is None

        async def finished() -> bool:
            job.update((await admin.get(f"/api/admin/sync/compactions/{job['id']}")).json())
            return job["state"] != "running"

        await wait_for(finished)
        assert (job["state"], job["done"], job["total"]) == ("done", 4, 4)
        assert job["report"]["documents"] == 4
        assert (await admin.get("/api/admin/sync/overview")).json()["compaction_debt"] == 0


async def test_bad_compaction_requests_are_refused_and_change_nothing(
    server: RunningServer,
) -> None:
    async with server.client() as admin:
        (await admin.post("/api/contacts", json={"id": "c1", "name": "A"})).raise_for_status()
        (await admin.patch("/api/contacts/c1", json={"phone": "1"})).raise_for_status()
        before = (await admin.get("/api/admin/sync/overview")).json()
        missing = await admin.post("/api/admin/sync/compactions", json={"doc": "contacts/nobody"})
        assert_error(missing, 404, "record_not_found")
        malformed = await admin.post("/api/admin/sync/compactions", json={"doc": "no slash"})
        assert_error(malformed, 422, "schema_violation")
        wrong_type = await admin.post("/api/admin/sync/compactions", json={"doc": 7})
        assert_error(wrong_type, 400, "bad_request")
        assert_error(await admin.get("/api/admin/sync/compactions/j999"), 404, "not_found")
        assert (await admin.get("/api/admin/sync/compactions")).json() == []
        assert (await admin.get("/api/admin/sync/overview")).json()["log_entries"] == before[
            "log_entries"
        ]
    async with server.client(server.device_token) as phone:
        assert_error(await phone.post("/api/admin/sync/compactions", json={}), 403, "forbidden")
        assert_error(await phone.post("/api/admin/sync/check"), 403, "forbidden")
        assert_error(await phone.get("/api/admin/sync/export"), 403, "forbidden")
        assert_error(await phone.delete("/api/admin/sync/clients/c1"), 403, "forbidden")
        assert_error(await phone.get("/api/admin/sync/activity"), 403, "forbidden")


async def test_the_store_check_runs_from_the_api(server: RunningServer) -> None:
    async with server.client() as admin:
        for i in range(3):
            (
                await admin.post("/api/contacts", json={"id": f"c{i}", "name": "A"})
            ).raise_for_status()
        answer = await admin.post("/api/admin/sync/check")
    result = answer.json()
    assert answer.status_code == 200, answer.text
    assert result["ok"] is True and result["sqlite"] == []
    assert (result["records"], result["log_rows"]) == (3, 3)
    assert result["orphans"] == {"count": 0, "examples": []}


async def test_the_store_check_finds_a_damaged_chain(server: RunningServer) -> None:
    async with server.client() as admin:
        (await admin.post("/api/contacts", json={"id": "c1", "name": "A"})).raise_for_status()
        (await admin.patch("/api/contacts/c1", json={"phone": "1"})).raise_for_status()
        # Damage the file as a bad disk might: a log row pointing at no earlier row.
        with sqlite3.connect(server.db_path) as db:
            db.execute("UPDATE updates SET prev_seq = 999 WHERE prev_seq IS NOT NULL")
        result = (await admin.post("/api/admin/sync/check")).json()
        assert (await admin.get("/health")).status_code == 200
    assert result["ok"] is False
    assert result["broken_links"]["count"] == 1


async def test_export_downloads_an_archive_of_every_record(
    server: RunningServer, tmp_path: Path
) -> None:
    async with server.client() as admin:
        for i in range(3):
            (
                await admin.post("/api/contacts", json={"id": f"c{i}", "name": "A"})
            ).raise_for_status()
        (await admin.delete("/api/contacts/c2")).raise_for_status()
        answer = await admin.get("/api/admin/sync/export")
    assert answer.status_code == 200
    assert "attachment" in answer.headers["content-disposition"]
    archive = tmp_path / "download.cbor"
    archive.write_bytes(answer.content)
    summary = verify_archive(archive)
    assert summary.documents == 3
    with ArchiveReader(archive) as reader:
        documents = {d.doc_id: d for d in reader.documents()}
    assert set(documents) == {"contacts/c0", "contacts/c1", "contacts/c2"}
    assert documents["contacts/c2"].is_deleted
    assert not list(tmp_path.parent.glob("crdt-sync-export-*/*"))  # nothing left in tmp
