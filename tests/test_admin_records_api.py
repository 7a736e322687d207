"""The record routes behind the admin panel: history, the record at a point, restore, merged
text edits, and the list of deleted records."""

from __future__ import annotations

from typing import Any

import httpx

from .conftest import RunningServer
from .rest_helpers import assert_error, device


async def seq_of(admin: httpx.AsyncClient, doc: str) -> int:
    return int((await admin.get(f"/api/docs/{doc}")).json()["seq"])


async def push(server: RunningServer, collection: str, row: dict[str, Any]) -> None:
    async with device(server) as phone:
        answer = await phone.post(
            "/api/sync/outgoing",
            json={"changes": {collection: {"updated": [row]}}, "lastPulledAt": None},
        )
        assert answer.status_code == 200 and not answer.json().get("experimentalRejectedIds")


async def test_history_says_who_changed_what_from_what_to_what(server: RunningServer) -> None:
    async with server.client() as admin:
        await admin.post("/api/contacts", json={"id": "ada", "name": "Ada", "email": "a@x.org"})
        await push(server, "contacts", {"id": "ada", "name": "Ada L."})
        await admin.delete("/api/contacts/ada")
        steps = (await admin.get("/api/contacts/ada/history")).json()
    assert [s["origin"] for s in steps] == ["admin", "phone", "admin"]
    assert {"field": "email", "from": None, "to": "a@x.org"} in steps[0]["changes"]
    assert steps[1]["changes"] == [{"field": "name", "from": "Ada", "to": "Ada L."}]
    assert steps[2]["deletes"] is True and steps[0]["at"] <= steps[2]["at"]


async def test_the_record_at_any_point(server: RunningServer) -> None:
    async with server.client() as admin:
        await admin.post("/api/contacts", json={"id": "ada", "name": "Ada"})
        first = await seq_of(admin, "contacts/ada")
        await admin.patch("/api/contacts/ada", json={"name": "Ada L."})
        then = (await admin.get(f"/api/contacts/ada/at/{first}")).json()
        assert then["record"]["name"] == "Ada" and then["seq"] == first
        assert_error(await admin.get(f"/api/contacts/ada/at/{first - 1}"), 404, "record_not_found")
        assert_error(await admin.get("/api/contacts/nobody/at/1"), 404, "record_not_found")


async def test_restoring_a_field_is_a_new_write_every_device_gets(server: RunningServer) -> None:
    async with server.client() as admin, device(server) as phone:
        await admin.post("/api/contacts", json={"id": "ada", "name": "Ada", "phone": "1"})
        first = await seq_of(admin, "contacts/ada")
        await admin.patch("/api/contacts/ada", json={"name": "Typo", "phone": "2"})
        since = (await phone.get("/api/sync/initial")).json()["timestamp"]
        restored = await admin.post(
            "/api/contacts/ada/restore", json={"seq": first, "fields": ["name"]}
        )
        assert restored.status_code == 200, restored.text
        assert restored.json()["record"] == {
            **restored.json()["record"],
            "name": "Ada",
            "phone": "2",
        }
        pulled = (await phone.get(f"/api/sync/incremental?since={since}")).json()
        (row,) = pulled["changes"]["contacts"]["updated"]
        assert row["name"] == "Ada" and row["phone"] == "2"
        whole = await admin.post("/api/contacts/ada/restore", json={"seq": first})
        assert whole.json()["record"]["phone"] == "1"
        assert len((await admin.get("/api/contacts/ada/history")).json()) == 4


async def test_a_deleted_record_is_listed_and_restored_as_a_copy(server: RunningServer) -> None:
    async with server.client() as admin:
        await admin.post("/api/contacts", json={"id": "old", "name": "Old", "email": "o@x.org"})
        live = await seq_of(admin, "contacts/old")
        await admin.delete("/api/contacts/old")
        listed = (await admin.get("/api/contacts?deleted=true")).json()["items"]
        assert [r["id"] for r in listed] == ["old"]
        assert "old" not in [r["id"] for r in (await admin.get("/api/contacts")).json()["items"]]
        refused = await admin.post("/api/contacts/old/restore", json={"seq": live})
        assert "restore it with 'as'" in assert_error(refused, 404, "record_not_found")["message"]
        copy = await admin.post("/api/contacts/old/restore", json={"seq": live, "as": "old-2"})
        assert copy.status_code == 200, copy.text
        got = (await admin.get("/api/contacts/old-2")).json()
        assert got["name"] == "Old" and got["email"] == "o@x.org"


async def test_a_text_edit_merges_with_what_others_wrote_since_it_was_opened(
    server: RunningServer,
) -> None:
    async with server.client() as admin:
        await admin.post("/api/contacts", json={"id": "ada", "name": "Ada", "notes": "Hello world"})
        opened = await seq_of(admin, "contacts/ada")
        await push(server, "contacts", {"id": "ada", "notes": "Hello brave world"})
        merged = await admin.post(
            "/api/contacts/ada/text/notes", json={"base_seq": opened, "text": "Hello world! é"}
        )
        assert merged.status_code == 200, merged.text
        assert merged.json()["record"]["notes"] == "Hello brave world! é"
        assert (await admin.get("/api/contacts/ada")).json()["notes"] == "Hello brave world! é"


async def test_bad_text_edits_are_refused_and_change_nothing(server: RunningServer) -> None:
    async with server.client() as admin:
        await admin.post("/api/contacts", json={"id": "ada", "name": "Ada", "notes": "x"})
        opened = await seq_of(admin, "contacts/ada")
        url = "/api/contacts/ada/text/"
        assert_error(
            await admin.post(url + "name", json={"base_seq": opened, "text": "y"}),
            422,
            "schema_violation",
        )
        assert_error(
            await admin.post(url + "notes", json={"base_seq": 0, "text": "y"}),
            404,
            "record_not_found",
        )
        assert_error(
            await admin.post(url + "notes", json={"base_seq": opened, "text": "y", "x": 1}),
            400,
            "bad_request",
        )
        assert_error(
            await admin.post(url + "notes", json={"base_seq": opened, "text": "y" * 10_001}),
            422,
            "schema_violation",
        )
        async with device(server) as phone:
            assert_error(
                await phone.post(url + "notes", json={"base_seq": opened, "text": "y"}),
                403,
                "forbidden",
            )
        assert await seq_of(admin, "contacts/ada") == opened
        assert (await admin.get("/api/contacts/ada")).json()["notes"] == "x"


async def test_notes_first_written_by_the_form_and_a_device_at_once_both_survive(
    server: RunningServer,
) -> None:
    async with server.client() as admin:
        await admin.post("/api/contacts", json={"id": "ada", "name": "Ada"})
        opened = await seq_of(admin, "contacts/ada")  # no notes yet
        await push(server, "contacts", {"id": "ada", "notes": "Call back."})
        merged = await admin.post(
            "/api/contacts/ada/text/notes", json={"base_seq": opened, "text": "Sent the offer."}
        )
        assert merged.status_code == 200, merged.text
        assert merged.json()["record"]["notes"] == "Call back.\nSent the offer."
