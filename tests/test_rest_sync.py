"""REST sync views in the WatermelonDB shape, over the real server and a real SQLite file."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import cbor2
import httpx
from pycrdt import Doc, Map

from .client_helpers import stored
from .conftest import RunningServer
from .rest_helpers import assert_error, cursor_of, device, ids
from .watermelon import WatermelonDevice


async def seed(server: RunningServer, collection: str, rows: list[dict[str, Any]]) -> None:
    async with server.client() as admin:
        for row in rows:
            (await admin.post(f"/api/{collection}", json=row)).raise_for_status()


# Pulls


async def test_initial_on_an_empty_server_has_a_positive_number_timestamp(
    server: RunningServer,
) -> None:
    async with device(server) as http:
        answer = (await http.get("/api/sync/initial")).json()
    assert answer["timestamp"] == 1 and answer["next"] is None
    assert answer["changes"] == {
        name: {"created": [], "updated": [], "deleted": []}
        for name in ("contacts", "deals", "tasks")
    }


async def test_pulled_records_are_flat_with_unset_fields_null_and_no_watermelon_columns(
    server: RunningServer,
) -> None:
    await seed(server, "deals", [{"id": "d1", "title": "Big", "amount": 10}])
    async with device(server) as http:
        initial = (await http.get("/api/sync/initial", params={"collections": "deals"})).json()
    assert list(initial["changes"]) == ["deals"]
    assert initial["changes"]["deals"]["created"] == [
        {
            "id": "d1",
            "title": "Big",
            "amount": 10,
            "currency": None,
            "stage": None,
            "contact_id": None,
            "close_date": None,
            "notes": None,
        }
    ]


async def test_initial_pages_share_one_timestamp_and_changes_meanwhile_come_with_the_next_pull(
    server: RunningServer,
) -> None:
    await seed(server, "contacts", [{"id": f"c{i:02}", "name": f"n{i}"} for i in range(25)])
    async with device(server) as http, server.client() as admin:
        first = (await http.get("/api/sync/initial", params={"limit": 10})).json()
        # While the device pages: one new record, one edit and one delete beyond the first page.
        (await admin.post("/api/contacts", json={"id": "c99", "name": "late"})).raise_for_status()
        (await admin.patch("/api/contacts/c20", json={"name": "edited"})).raise_for_status()
        (await admin.delete("/api/contacts/c21")).raise_for_status()
        pages = [first]
        while pages[-1]["next"] is not None:
            pages.append(
                (
                    await http.get(
                        "/api/sync/initial", params={"limit": 10, "page": pages[-1]["next"]}
                    )
                ).json()
            )
        assert {page["timestamp"] for page in pages} == {first["timestamp"]}
        served = [r["id"] for page in pages for r in page["changes"]["contacts"]["created"]]
        assert len(served) == len(set(served))
        assert "c99" not in served and "c21" not in served
        assert set(served) | {"c21"} == {f"c{i:02}" for i in range(25)}
        later = (
            await http.get("/api/sync/incremental", params={"since": first["timestamp"]})
        ).json()
    assert ids(later, "contacts", "created") == ["c99"]
    assert ids(later, "contacts", "updated") == ["c20"]
    assert ids(later, "contacts", "deleted") == ["c21"]
    assert later["timestamp"] > first["timestamp"]


async def test_incremental_pages_when_large_and_every_change_comes_exactly_once(
    server: RunningServer,
) -> None:
    async with device(server) as http:
        start = (await http.get("/api/sync/initial")).json()["timestamp"]
    await seed(server, "tasks", [{"id": f"t{i}", "title": f"task {i}"} for i in range(23)])
    seen: list[str] = []
    since, pulls = start, 0
    async with device(server) as http:
        while True:
            answer = (
                await http.get("/api/sync/incremental", params={"since": since, "limit": 10})
            ).json()
            seen += ids(answer, "tasks", "created")
            since, pulls = answer["timestamp"], pulls + 1
            if answer["next"] is None:
                break
            assert answer["next"] == answer["timestamp"]
    assert sorted(seen) == sorted(f"t{i}" for i in range(23)) and pulls == 3
    assert since == await cursor_of(server) + 1


async def test_a_since_this_server_did_not_issue_is_refused_with_a_message(
    server: RunningServer,
) -> None:
    await seed(server, "contacts", [{"id": "a", "name": "A"}])
    current = await cursor_of(server) + 1
    async with device(server) as http:
        for since in ["", "abc", "-1", "0", "1.5", str(current + 1), "1e3", "2024-01-01"]:
            response = await http.get("/api/sync/incremental", params={"since": since})
            error = assert_error(response, 400, "bad_request")
            assert "since" in error["message"]
        assert_error(await http.get("/api/sync/incremental"), 400, "bad_request")
        ok = await http.get("/api/sync/incremental", params={"since": current})
        assert ok.status_code == 200 and ok.json()["timestamp"] == current


async def test_pull_refuses_unknown_collections_bad_pages_and_bad_limits(
    server: RunningServer,
) -> None:
    async with device(server) as http:
        error = assert_error(
            await http.get("/api/sync/initial", params={"collections": "invoices"}),
            404,
            "unknown_collection",
        )
        assert "invoices" in error["message"]
        assert_error(
            await http.get(
                "/api/sync/incremental", params={"since": 1, "collections": "contacts,nope"}
            ),
            404,
            "unknown_collection",
        )
        assert_error(
            await http.get("/api/sync/initial", params={"page": "garbage!"}), 400, "bad_request"
        )
        assert_error(
            await http.get("/api/sync/initial", params={"limit": "ten"}), 400, "bad_request"
        )
        assert_error(await http.get("/api/sync/initial", params={"limit": 0}), 400, "bad_request")
    async with httpx.AsyncClient(base_url=server.http) as anonymous:
        assert_error(await anonymous.get("/api/sync/initial"), 401, "unauthorized")
    async with server.client("not-a-token") as wrong:
        assert_error(await wrong.get("/api/sync/initial"), 401, "unauthorized")


# The WatermelonDB round trip


async def test_watermelon_round_trip_pull_push_pull(server: RunningServer) -> None:
    await seed(
        server,
        "contacts",
        [{"id": "ada", "name": "Ada", "email": "ada@old.example"}, {"id": "bob", "name": "Bob"}],
    )
    async with device(server, "phone-1") as http, device(server, "tablet-2") as other_http:
        phone = WatermelonDevice(http)
        await phone.pull()
        assert phone.row("contacts", "ada")["_status"] == "synced"  # type: ignore[index]
        phone.create(
            "contacts", "zed", name="Zed", email=None, phone="+1", company=None, notes=None
        )
        phone.update("contacts", "ada", email="ada@new.example")
        phone.destroy("contacts", "bob")
        pushed = phone.changes()["contacts"]
        assert pushed["updated"][0]["_changed"] == "email"  # as synchronize() sends it
        answer = await phone.push()
        assert answer["experimentalRejectedIds"] == {}
        actions = {(a["id"], a["action"]) for a in answer["applied"]}
        assert actions == {("zed", "created"), ("ada", "updated"), ("bob", "deleted")}

        again = await phone.pull()
        # Its own creation comes back under `updated`, so WatermelonDB logs no error.
        assert ids(again, "contacts", "created") == []
        assert ids(again, "contacts", "updated") == ["ada", "zed"]
        assert ids(again, "contacts", "deleted") == ["bob"]

        tablet = WatermelonDevice(other_http)
        await tablet.pull()
    assert tablet.row("contacts", "zed") == {
        "id": "zed",
        "name": "Zed",
        "email": None,
        "phone": "+1",
        "company": None,
        "notes": None,
        "_status": "synced",
        "_changed": "",
    }
    assert tablet.row("contacts", "ada")["email"] == "ada@new.example"  # type: ignore[index]
    assert tablet.row("contacts", "bob") is None
    assert (await stored(server, "contacts/bob", with_deleted=True))["_deleted"] is True  # type: ignore[index]


async def test_two_devices_changing_different_fields_of_one_record_both_keep_their_change(
    server: RunningServer,
) -> None:
    await seed(server, "deals", [{"id": "d1", "title": "Deal", "amount": 100, "stage": "lead"}])
    async with device(server, "a") as http_a, device(server, "b") as http_b:
        alice, bob = WatermelonDevice(http_a), WatermelonDevice(http_b)
        await alice.pull()
        await bob.pull()
        alice.update("deals", "d1", amount=250)
        bob.update("deals", "d1", stage="won")
        # Both push full rows: each still carries the other's old value of the other field.
        await alice.push()
        await bob.push()
        await alice.pull()
        await bob.pull()
    expected = {"title": "Deal", "amount": 250, "stage": "won"}
    for replica in (alice, bob):
        row = replica.row("deals", "d1")
        assert row is not None and {k: row[k] for k in expected} == expected
    assert {k: (await stored(server, "deals/d1"))[k] for k in expected} == expected  # type: ignore[index]


async def test_send_created_as_updated_creates_and_create_of_an_existing_id_updates(
    server: RunningServer,
) -> None:
    await seed(server, "contacts", [{"id": "old", "name": "Old", "phone": "1"}])
    async with device(server, "phone") as http:
        phone = WatermelonDevice(http, send_created_as_updated=True)
        await phone.pull()
        phone.create("contacts", "new", name="New")
        answer = await phone.push()
        assert [(a["id"], a["action"]) for a in answer["applied"]] == [("new", "created")]
        body = {
            "changes": {
                "contacts": {
                    "created": [
                        {
                            "id": "old",
                            "name": "Old",
                            "company": "ACME",
                            "_status": "created",
                            "_changed": "",
                        }
                    ],
                    "updated": [],
                    "deleted": ["never-existed"],
                }
            },
            "lastPulledAt": phone.last_pulled_at,
        }
        answer = (await http.post("/api/sync/outgoing", json=body)).json()
    assert [(a["id"], a["action"]) for a in answer["applied"]] == [
        ("old", "updated"),
        ("never-existed", "unchanged"),
    ]
    assert (await stored(server, "contacts/new"))["name"] == "New"  # type: ignore[index]
    old = await stored(server, "contacts/old")
    assert old is not None and old["company"] == "ACME" and old["phone"] == "1"
    assert await stored(server, "contacts/never-existed") is None


async def test_a_row_that_breaks_the_schema_is_refused_alone_and_the_rest_applies(
    server: RunningServer,
) -> None:
    before = await cursor_of(server)
    body = {
        "changes": {
            "deals": {
                "created": [
                    {
                        "id": "ok1",
                        "title": "Fine",
                        "amount": 5,
                        "_status": "created",
                        "_changed": "",
                    },
                    {
                        "id": "bad",
                        "title": "Bad",
                        "amount": "ten",
                        "_status": "created",
                        "_changed": "",
                    },
                    {"id": "ok2", "title": "Also fine", "_status": "created", "_changed": ""},
                    {"id": "no title", "title": "bad id", "_status": "created", "_changed": ""},
                    {
                        "id": "extra",
                        "title": "x",
                        "colour": "red",
                        "_status": "created",
                        "_changed": "",
                    },
                ],
                "updated": [],
                "deleted": [],
            },
            "invoices": {
                "created": [{"id": "i1", "total": 3, "_status": "created", "_changed": ""}],
                "updated": [],
                "deleted": [],
            },
        },
        "lastPulledAt": 1,
    }
    async with device(server, "phone") as http:
        answer = (await http.post("/api/sync/outgoing", json=body)).json()
    assert answer["experimentalRejectedIds"] == {
        "deals": ["bad", "no title", "extra"],
        "invoices": ["i1"],
    }
    reasons = {r["id"]: (r["code"], r["message"]) for r in answer["rejected"]}
    assert reasons["bad"][0] == "schema_violation" and "amount" in reasons["bad"][1]
    assert reasons["extra"][0] == "schema_violation" and "colour" in reasons["extra"][1]
    assert reasons["i1"][0] == "unknown_collection"
    assert [a["id"] for a in answer["applied"]] == ["ok1", "ok2"]
    assert answer["cursor"] == before + 2 == await cursor_of(server)
    assert await stored(server, "deals/bad") is None
    assert await stored(server, "deals/extra") is None


async def test_a_retried_push_applies_once_and_returns_the_first_answer(
    server: RunningServer,
) -> None:
    def body(name: str) -> dict[str, Any]:
        row = {"id": "r1", "name": name, "_status": "created", "_changed": ""}
        return {
            "changes": {"contacts": {"created": [row], "updated": [], "deleted": []}},
            "lastPulledAt": None,
        }

    async with device(server, "phone") as http:
        headers = {"Idempotency-Key": "push-1"}
        first = await http.post("/api/sync/outgoing", json=body("Ann"), headers=headers)
        cursor = await cursor_of(server)
        again = await http.post("/api/sync/outgoing", json=body("Ann"), headers=headers)
        assert again.json() == first.json() and again.headers["Idempotent-Replayed"] == "true"
        assert await cursor_of(server) == cursor
        # Concurrent retries of one batch_id: one applies, the others replay its answer.
        retries = await asyncio.gather(
            *[
                http.post("/api/sync/outgoing", json={**body("Bea"), "batch_id": "b-7"})
                for _ in range(4)
            ]
        )
    answers = [r.json() for r in retries]
    assert all(a == answers[0] for a in answers)
    assert await cursor_of(server) == cursor + 1
    assert (await stored(server, "contacts/r1"))["name"] == "Bea"  # type: ignore[index]


async def test_crdt_updates_apply_from_base64_json_and_from_a_cbor_body(
    server: RunningServer,
) -> None:
    def update_setting(**fields: Any) -> bytes:
        doc = Doc()
        record = doc.get("record", type=Map)
        with doc.transaction():
            for key, value in fields.items():
                record[key] = value
        return doc.get_update()

    as_json = {
        "updates": [
            {"doc": "contacts/j1", "update": base64.b64encode(update_setting(name="Jay")).decode()}
        ]
    }
    as_cbor = cbor2.dumps(
        {
            "updates": [
                {"doc": "contacts/c1", "update": update_setting(name="Cee")},
                {"doc": "deals/x", "update": update_setting(amount=-1.0)},
            ]
        }
    )
    async with device(server, "crdt-client") as http:
        one = (await http.post("/api/sync/outgoing", json=as_json)).json()
        two = (
            await http.post(
                "/api/sync/outgoing", content=as_cbor, headers={"Content-Type": "application/cbor"}
            )
        ).json()
    assert [(a["id"], a["action"]) for a in one["applied"]] == [("j1", "created")]
    assert [(a["id"], a["action"]) for a in two["applied"]] == [("c1", "created")]
    assert two["experimentalRejectedIds"] == {"deals": ["x"]}
    assert (await stored(server, "contacts/c1"))["name"] == "Cee"  # type: ignore[index]
    assert await stored(server, "deals/x") is None


async def test_a_malformed_push_is_refused_whole_and_changes_nothing(
    server_factory: Any,
) -> None:
    server: RunningServer = await server_factory(max_body_bytes=4096)
    good_row = {"id": "g", "name": "Good", "_status": "created", "_changed": ""}
    bad_bodies: list[tuple[bytes, str, int, str]] = [
        (b"{not json", "application/json", 400, "bad_request"),
        (
            b'{"changes": {"contacts": {"created": [{"id": "x", "name": NaN}]}}}',
            "application/json",
            400,
            "bad_request",
        ),
        (b"[]", "application/json", 400, "bad_request"),
        (b"\xff\xfe", "application/json", 400, "bad_request"),
        (b"", "application/json", 400, "bad_request"),
        (b'{"changes": []}', "application/json", 400, "bad_request"),
        (b'{"changes": {"contacts": {"created": ["x"]}}}', "application/json", 400, "bad_request"),
        (
            b'{"changes": {"contacts": {"created": [{"name": "no id"}]}}}',
            "application/json",
            400,
            "bad_request",
        ),
        (
            b'{"changes": {"contacts": {"created": [], "moved": []}}}',
            "application/json",
            400,
            "bad_request",
        ),
        (
            b'{"changes": {"contacts": {"created": [GOOD], "deleted": [7]}}}',
            "application/json",
            400,
            "bad_request",
        ),
        (
            b'{"changes": {"contacts": {"created": [GOOD]}, "deals": 3}}',
            "application/json",
            400,
            "bad_request",
        ),
        (
            b'{"changes": {"contacts": {"created": [GOOD],'
            b' "updated": [{"id": "g", "_changed": 1}]}}}',
            "application/json",
            400,
            "bad_request",
        ),
        (b'{"changes": {}, "lastPulledAt": "yesterday"}', "application/json", 400, "bad_request"),
        (
            b'{"changes": {"contacts": {"created": [GOOD]}}, '
            b'"updates": [{"doc": "contacts/1", "update": "***"}]}',
            "application/json",
            400,
            "bad_request",
        ),
        (b'{"updates": [{"doc": 5, "update": "AAA="}]}', "application/json", 400, "bad_request"),
        (b'{"nothing": 1}', "application/json", 400, "bad_request"),
        (b"\xa1\x61", "application/cbor", 400, "bad_request"),
        (cbor2.dumps([1, 2]), "application/cbor", 400, "bad_request"),
        (cbor2.dumps({"updates": []}) + b"\x00", "application/cbor", 400, "bad_request"),
        (b"name=x", "application/x-www-form-urlencoded", 400, "bad_request"),
        (
            b'{"changes": {}, "pad": "' + b"x" * 5000 + b'"}',
            "application/json",
            413,
            "limit_exceeded",
        ),
    ]
    before = await cursor_of(server)
    async with device(server, "phone") as http:
        for body, content_type, status, code in bad_bodies:
            # Some bad bodies also carry a good row: none of it may apply.
            body = body.replace(b"GOOD", json.dumps(good_row).encode())
            response = await http.post(
                "/api/sync/outgoing", content=body, headers={"Content-Type": content_type}
            )
            assert_error(response, status, code)
        ok = await http.post(
            "/api/sync/outgoing",
            json={"changes": {"contacts": {"created": [good_row], "updated": [], "deleted": []}}},
        )
        assert ok.status_code == 200
    assert await cursor_of(server) == before + 1


async def test_created_as_updated_serves_every_record_under_updated_as_watermelon_asks(
    server: RunningServer,
) -> None:
    """For WatermelonDB's `sendCreatedAsUpdated: true`: `created` stays empty, on every page."""
    await seed(server, "contacts", [{"id": f"c{i}", "name": f"n{i}"} for i in range(3)])
    await seed(server, "deals", [{"id": "d1", "title": "Deal"}])
    params = {"created_as_updated": "true", "limit": 2}
    async with device(server) as http:
        pages = [(await http.get("/api/sync/initial", params=params)).json()]
        while pages[-1]["next"] is not None:
            pages.append(
                (
                    await http.get(
                        "/api/sync/initial", params={**params, "page": pages[-1]["next"]}
                    )
                ).json()
            )
        assert [sorted(ids(p, c, "updated") for c in ("contacts", "deals")) for p in pages] == [
            [[], ["c0", "c1"]],
            [["c2"], ["d1"]],
        ]
        assert all(
            p["changes"][c]["created"] == [] == p["changes"][c]["deleted"]
            for p in pages
            for c in p["changes"]
        )
        assert pages[0]["changes"]["deals"]["updated"] == [] and pages[1]["changes"]["deals"][
            "updated"
        ] == [
            {
                "id": "d1",
                "title": "Deal",
                "amount": None,
                "currency": None,
                "stage": None,
                "contact_id": None,
                "close_date": None,
                "notes": None,
            }
        ]
        since = pages[0]["timestamp"]
        await seed(server, "contacts", [{"id": "new", "name": "New"}])
        async with server.client() as admin:
            (await admin.delete("/api/contacts/c0")).raise_for_status()
        plain = (await http.get("/api/sync/incremental", params={"since": since})).json()
        asked = (
            await http.get(
                "/api/sync/incremental", params={"since": since, "created_as_updated": "true"}
            )
        ).json()
    assert (ids(plain, "contacts", "created"), ids(plain, "contacts", "updated")) == (["new"], [])
    assert (ids(asked, "contacts", "created"), ids(asked, "contacts", "updated")) == ([], ["new"])
    assert ids(asked, "contacts", "deleted") == ["c0"] and asked["timestamp"] == plain["timestamp"]
