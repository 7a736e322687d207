"""CRUD for the admin panel, and the OpenAPI document generated from the schema."""

from __future__ import annotations

from typing import Any

import httpx

from .client_helpers import stored
from .conftest import RunningServer
from .rest_helpers import assert_error, cursor_of


async def test_create_read_patch_delete_a_record(server: RunningServer) -> None:
    async with server.client() as admin:
        made = await admin.post("/api/deals", json={"id": "d1", "title": "Deal", "amount": 12})
        assert made.status_code == 201 and made.headers["Location"] == "/api/deals/d1"
        assert made.json() == {
            "id": "d1",
            "title": "Deal",
            "amount": 12,
            "currency": None,
            "stage": None,
            "contact_id": None,
            "close_date": None,
            "notes": None,
        }
        server_made = (await admin.post("/api/deals", json={"title": "No id"})).json()
        assert len(server_made["id"]) == 16
        patched = await admin.patch("/api/deals/d1", json={"stage": "won", "amount": None})
        assert patched.json()["stage"] == "won" and patched.json()["amount"] is None
        assert (await admin.get("/api/deals/d1")).json() == patched.json()
        assert (await admin.delete("/api/deals/d1")).status_code == 204
        assert (await admin.delete("/api/deals/d1")).status_code == 204  # a tombstone stays one
        assert_error(await admin.get("/api/deals/d1"), 404, "record_not_found")
        assert_error(
            await admin.patch("/api/deals/d1", json={"title": "back"}), 404, "record_not_found"
        )
        assert_error(
            await admin.post("/api/deals", json={"id": "d1", "title": "again"}),
            409,
            "record_exists",
        )
    assert (await stored(server, "deals/d1", with_deleted=True))["_deleted"] is True  # type: ignore[index]


async def make_deals(admin: httpx.AsyncClient) -> list[dict[str, Any]]:
    deals = [
        {"id": "a", "title": "Alpha deal", "amount": 300, "stage": "won"},
        {
            "id": "b",
            "title": "Beta",
            "amount": 100,
            "stage": "lead",
            "notes": "call the alpha team",
        },
        {"id": "c", "title": "Gamma", "stage": "won"},
        {"id": "d", "title": "Delta 100%", "amount": 100, "stage": "lost"},
        {"id": "e", "title": "Epsilon", "amount": 50, "stage": "won"},
        {"id": "f", "title": "Zeta", "stage": "lead"},
        {"id": "g", "title": "Eta", "amount": 999, "stage": "won"},
    ]
    for deal in deals:
        (await admin.post("/api/deals", json=deal)).raise_for_status()
    (await admin.delete("/api/deals/g")).raise_for_status()
    return deals[:-1]


async def all_pages(admin: httpx.AsyncClient, path: str, **params: Any) -> list[str]:
    seen: list[str] = []
    cursor = None
    while True:
        page = await admin.get(path, params={**params, **({"cursor": cursor} if cursor else {})})
        assert page.status_code == 200, page.text
        seen += [item["id"] for item in page.json()["items"]]
        cursor = page.json()["next"]
        if cursor is None:
            return seen


async def test_list_filters_searches_sorts_and_pages_without_deleted_records(
    server: RunningServer,
) -> None:
    async with server.client() as admin:
        await make_deals(admin)
        assert await all_pages(admin, "/api/deals", limit=2) == ["a", "b", "c", "d", "e", "f"]
        assert await all_pages(admin, "/api/deals", sort="-id", limit=4) == [
            "f",
            "e",
            "d",
            "c",
            "b",
            "a",
        ]
        # Nulls last in both directions; ties broken by id.
        assert await all_pages(admin, "/api/deals", sort="amount", limit=2) == [
            "e",
            "b",
            "d",
            "a",
            "c",
            "f",
        ]
        assert await all_pages(admin, "/api/deals", sort="-amount", limit=2) == [
            "a",
            "d",
            "b",
            "e",
            "f",
            "c",
        ]
        assert await all_pages(admin, "/api/deals", stage="won", sort="title") == ["a", "e", "c"]
        assert await all_pages(admin, "/api/deals", amount="100") == ["b", "d"]
        assert await all_pages(admin, "/api/deals", q="ALPHA") == ["a", "b"]  # title or notes
        assert await all_pages(admin, "/api/deals", q="100%") == ["d"]  # % is no wildcard
        assert await all_pages(admin, "/api/deals", q="_") == []


async def test_crud_refuses_bad_input_with_the_error_shape_and_changes_nothing(
    server_factory: Any,
) -> None:
    server: RunningServer = await server_factory(max_body_bytes=1024)
    async with server.client() as admin:
        (await admin.post("/api/contacts", json={"id": "c1", "name": "Ann"})).raise_for_status()
        before = await cursor_of(server)
        cases = [
            (admin.get("/api/invoices"), 404, "unknown_collection"),
            (admin.post("/api/invoices", json={"x": 1}), 404, "unknown_collection"),
            (admin.get("/api/invoices/1"), 404, "unknown_collection"),
            (admin.get("/api/contacts/nope"), 404, "record_not_found"),
            (admin.get("/api/contacts/bad$id"), 422, "schema_violation"),
            (
                admin.post("/api/contacts", json={"id": "bad id", "name": "x"}),
                422,
                "schema_violation",
            ),
            (admin.post("/api/contacts", json={"id": 7, "name": "x"}), 422, "schema_violation"),
            (admin.post("/api/contacts", json={"email": "no name"}), 422, "schema_violation"),
            (admin.post("/api/contacts", json={"name": "x", "age": 3}), 422, "schema_violation"),
            (
                admin.post("/api/deals", json={"title": "x", "amount": "ten"}),
                422,
                "schema_violation",
            ),
            (
                admin.post("/api/deals", json={"title": "x", "stage": "maybe"}),
                422,
                "schema_violation",
            ),
            (admin.patch("/api/contacts/c1", json={"name": None}), 422, "schema_violation"),
            (admin.patch("/api/contacts/c1", json={"id": "c2"}), 422, "schema_violation"),
            (admin.post("/api/contacts", json={"id": "c1", "name": "dup"}), 409, "record_exists"),
            (admin.post("/api/contacts", content=b"{bad"), 400, "bad_request"),
            (admin.post("/api/contacts", content=b'["name"]'), 400, "bad_request"),
            (admin.patch("/api/contacts/c1", content=b'{"name": Infinity}'), 400, "bad_request"),
            (admin.post("/api/contacts", json={"name": "x" * 2000}), 413, "limit_exceeded"),
            (admin.get("/api/contacts", params={"colour": "red"}), 422, "schema_violation"),
            (admin.get("/api/contacts", params={"sort": "-colour"}), 422, "schema_violation"),
            (admin.get("/api/contacts", params={"cursor": "###"}), 400, "bad_request"),
            (admin.get("/api/contacts", params={"limit": "many"}), 400, "bad_request"),
            (admin.get("/api/deals", params={"amount": "lots"}), 400, "bad_request"),
            (admin.put("/api/contacts/c1", json={"name": "x"}), 405, "method_not_allowed"),
            (admin.get("/api/contacts/c1/extra/path"), 404, "not_found"),
        ]
        for request, status, code in cases:
            assert_error(await request, status, code)
    async with server.client(server.device_token) as device:
        assert_error(await device.get("/api/contacts"), 403, "forbidden")
        assert_error(await device.post("/api/contacts", json={"name": "x"}), 403, "forbidden")
        assert_error(await device.delete("/api/contacts/c1"), 403, "forbidden")
        assert_error(await device.get("/metrics"), 403, "forbidden")
    async with httpx.AsyncClient(base_url=server.http) as anonymous:
        assert_error(await anonymous.get("/api/contacts/c1"), 401, "unauthorized")
        assert_error(await anonymous.delete("/api/contacts/c1"), 401, "unauthorized")
    assert await cursor_of(server) == before
    assert (await stored(server, "contacts/c1", with_deleted=True)) == {
        "id": "c1",
        "name": "Ann",
        "email": None,
        "phone": None,
        "company": None,
        "notes": None,
        "_deleted": False,
    }


async def test_openapi_describes_every_collection_precisely(server: RunningServer) -> None:
    async with httpx.AsyncClient(base_url=server.http) as http:
        document = (await http.get("/openapi.json")).json()
    schemas = document["components"]["schemas"]
    create = schemas["DealsCreate"]
    assert create["required"] == ["title"] and create["additionalProperties"] is False
    amount = create["properties"]["amount"]
    assert amount["anyOf"] == [{"type": "number"}, {"type": "null"}] and amount["minimum"] == 0
    assert create["properties"]["currency"]["pattern"] == "^(?:[A-Z]{3})$"
    assert create["properties"]["stage"]["anyOf"][0]["enum"] == [
        "lead",
        "qualified",
        "proposal",
        "won",
        "lost",
    ]
    record = schemas["TasksRecord"]
    assert set(record["required"]) == {"id", "title"}
    assert record["properties"]["due_at"]["anyOf"][0] == {"type": "string", "format": "date-time"}
    assert "required" not in schemas["ContactsPatch"]
    for collection, prefix in (("contacts", "Contacts"), ("deals", "Deals"), ("tasks", "Tasks")):
        item = document["paths"][f"/api/{collection}/{{record_id}}"]
        body = item["patch"]["requestBody"]["content"]["application/json"]["schema"]
        assert body == {"$ref": f"#/components/schemas/{prefix}Patch"}
        ok = item["get"]["responses"]["200"]["content"]["application/json"]["schema"]
        assert ok == {"$ref": f"#/components/schemas/{prefix}Record"}
        assert item["get"]["responses"]["404"]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/ErrorBody"
        }
        filters = {p["name"] for p in document["paths"][f"/api/{collection}"]["get"]["parameters"]}
        assert {"q", "sort", "cursor", "limit"} < filters
    push = document["paths"]["/api/sync/outgoing"]["post"]["requestBody"]["content"]
    assert set(push) == {"application/json", "application/cbor"}
    assert "PushBody" in schemas and "TableChanges" in schemas
    answers = {
        path: document["paths"][path][verb]["responses"]["200"]["content"]["application/json"]
        for path, verb in (
            ("/api/sync/outgoing", "post"),
            ("/api/sync/initial", "get"),
            ("/api/sync/incremental", "get"),
        )
    }
    assert answers["/api/sync/outgoing"]["schema"] == {"$ref": "#/components/schemas/PushAnswer"}
    assert (
        answers["/api/sync/initial"]
        == answers["/api/sync/incremental"]
        == {"schema": {"$ref": "#/components/schemas/PullAnswer"}}
    )
    assert schemas["PullAnswer"]["properties"]["timestamp"]["exclusiveMinimum"] == 0
