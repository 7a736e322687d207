"""Document views: JSON, state vector, whole state and diff as octets, and the binary write."""

from __future__ import annotations

import base64

import httpx
from pycrdt import Doc, Map, Text

from .conftest import RunningServer
from .peers import record_of
from .rest_helpers import assert_error, cursor_of

OCTETS = {"Content-Type": "application/octet-stream"}


def edit(doc: Doc, **fields: object) -> bytes:
    before = doc.get_state()
    record = doc.get("record", type=Map)
    with doc.transaction():
        for key, value in fields.items():
            record[key] = value
    return doc.get_update(before)


async def test_json_view_of_a_record_and_of_its_tombstone(server: RunningServer) -> None:
    async with server.client() as admin, server.client(server.device_token) as device:
        (await admin.post("/api/contacts", json={"id": "c1", "name": "Ann"})).raise_for_status()
        view = (await device.get("/api/docs/contacts/c1")).json()
        assert view["doc"] == "contacts/c1" and view["record"]["name"] == "Ann"
        assert view["is_deleted"] is False and view["seq"] == view["created_seq"] == 1
        assert view["created_by"] == "admin"
        (await admin.delete("/api/contacts/c1")).raise_for_status()
        gone = (await device.get("/api/docs/contacts/c1")).json()
        assert gone["is_deleted"] is True and gone["seq"] == 2


async def test_a_diff_against_a_state_vector_brings_a_replica_at_that_state_to_the_merged_state(
    server: RunningServer,
) -> None:
    replica = Doc()
    async with server.client() as admin, server.client(server.device_token) as device:
        posted = await admin.post(
            "/api/docs/contacts/42/update",
            headers=OCTETS,
            content=edit(replica, name="Ann", notes=Text("hello")),
        )
        assert posted.status_code == 200 and posted.json()["record"]["name"] == "Ann"
        # Behind the replica's back: a REST edit of another field.
        (
            await admin.patch("/api/contacts/42", json={"email": "ann@example.com"})
        ).raise_for_status()
        # The replica edits offline, then syncs by REST: send what the server misses ...
        edit(replica, phone="+33 1")
        server_vector = (await device.get("/api/docs/contacts/42/state-vector")).content
        assert (await device.get("/api/docs/contacts/42/state-vector")).headers[
            "content-type"
        ] == "application/octet-stream"
        missing = replica.get_update(server_vector)
        assert missing != b"\x00\x00"
        (
            await admin.post("/api/docs/contacts/42/update", headers=OCTETS, content=missing)
        ).raise_for_status()
        # ... and take what it misses: the diff against its own state vector.
        sv = base64.urlsafe_b64encode(replica.get_state()).decode()
        diff = (await device.get("/api/docs/contacts/42/update", params={"sv": sv})).content
        whole = (await device.get("/api/docs/contacts/42/update")).content
        assert len(diff) < len(whole)
        replica.apply_update(diff)
        server_view = (await device.get("/api/docs/contacts/42")).json()["record"]
    expected = {"name": "Ann", "email": "ann@example.com", "phone": "+33 1", "notes": "hello"}
    assert record_of(replica) == expected
    assert {k: server_view[k] for k in expected} == expected
    fresh = Doc()
    fresh.apply_update(whole)
    assert record_of(fresh) == expected


async def test_a_record_never_written_is_the_empty_document_in_binary_views(
    server: RunningServer,
) -> None:
    async with server.client(server.device_token) as device:
        assert (await device.get("/api/docs/tasks/new/state-vector")).content == b"\x00"
        assert (await device.get("/api/docs/tasks/new/update")).content == b"\x00\x00"
        assert_error(await device.get("/api/docs/tasks/new"), 404, "record_not_found")


async def test_document_views_refuse_bad_input_and_change_nothing(server_factory: object) -> None:
    server: RunningServer = await server_factory(max_body_bytes=2048)  # type: ignore[operator]
    doc = Doc()
    async with server.client() as admin, server.client(server.device_token) as device:
        (
            await admin.post(
                "/api/docs/deals/d1/update", headers=OCTETS, content=edit(doc, title="Deal")
            )
        ).raise_for_status()
        before = await cursor_of(server)
        cases = [
            (device.get("/api/docs/invoices/1"), 404, "unknown_collection"),
            (device.get("/api/docs/deals/bad$id/update"), 422, "schema_violation"),
            (device.get("/api/docs/deals/d1/update", params={"sv": "%%%"}), 400, "bad_request"),
            (device.get("/api/docs/deals/d1/update", params={"sv": "//79"}), 400, "invalid_update"),
            (
                device.post("/api/docs/deals/d1/update", headers=OCTETS, content=b"\x00\x00"),
                403,
                "forbidden",
            ),
            (
                admin.post("/api/docs/deals/d1/update", headers=OCTETS, content=b"garbage bytes"),
                400,
                "invalid_update",
            ),
            (
                admin.post("/api/docs/deals/d1/update", headers=OCTETS, content=b""),
                400,
                "invalid_update",
            ),
            (
                admin.post(
                    "/api/docs/deals/d1/update", headers=OCTETS, content=edit(Doc(), amount="ten")
                ),
                422,
                "schema_violation",
            ),
            (
                admin.post(
                    "/api/docs/deals/d1/update",
                    headers={"Content-Type": "text/plain"},
                    content=b"hi",
                ),
                400,
                "bad_request",
            ),
            (
                admin.post("/api/docs/deals/d1/update", headers=OCTETS, content=b"\x01" * 4096),
                413,
                "limit_exceeded",
            ),
        ]
        for request, status, code in cases:
            assert_error(await request, status, code)
        assert (await device.get("/api/docs/deals/d1")).json()["record"]["title"] == "Deal"
    async with httpx.AsyncClient(base_url=server.http) as anonymous:
        assert_error(await anonymous.get("/api/docs/deals/d1"), 401, "unauthorized")
    assert await cursor_of(server) == before
