"""Issue 14, items 3 and 4: no request body gets a 5xx, and a 500 closes its connection cleanly.

Each hostile body used to escape as a RecursionError, an OverflowError or a pycrdt panic: a
plain-text 500, then a reset of the kept-alive connection that made the client's next, valid
request fail too. Each is now a 400 (or a 422, for a value the schema refuses) in the JSON
error shape, leaves the store as it was, and the same connection carries the next request.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from .client_helpers import stored
from .conftest import RunningServer

HUGE_INT = b"1" + b"0" * 400
DEEP_ARRAYS = b"[" * 50_000 + b"]" * 50_000
DEEP_OBJECTS = b'{"a":' * 5_000 + b"1" + b"}" * 5_000


@pytest.fixture
async def http(server: RunningServer) -> AsyncIterator[httpx.AsyncClient]:
    """One kept-alive connection: a reset after an error would fail the next request."""
    async with httpx.AsyncClient(
        base_url=server.http,
        headers={"Authorization": f"Bearer {server.admin_token}"},
        limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
        timeout=30.0,
    ) as client:
        yield client


def body_with(field: str, raw_value: bytes) -> bytes:
    return b'{"title": "x", "' + field.encode() + b'": ' + raw_value + b"}"


HOSTILE_BODIES: list[tuple[str, bytes, int, str]] = [
    ("deep arrays", body_with("amount", DEEP_ARRAYS), 400, r"nested deeper than 32 levels"),
    ("deep objects", DEEP_OBJECTS, 400, r"nested deeper than 32 levels"),
    ("1e400 digits", body_with("amount", HUGE_INT), 400, r"integers must be within"),
    ("1e400", body_with("amount", b"1e400"), 400, r"beyond a double's range"),
    ("lone surrogate", body_with("notes", b'"\\ud800"'), 400, r"lone surrogate \(\\ud800\)"),
    ("surrogate key", b'{"title": "x", "\\udfff": 1}', 400, r"a key: a lone surrogate"),
    ("surrogate title", b'{"title": "a\\udbff"}', 400, r"\.title: a lone surrogate"),
]


async def assert_error(answer: httpx.Response, status: int, message: str) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/json"
    error: dict[str, Any] = answer.json()["error"]
    assert error["code"] in {"bad_request", "schema_violation"}
    assert re.search(message, error["message"]), error["message"]
    return error


@pytest.mark.parametrize(("what", "body", "status", "message"), HOSTILE_BODIES)
async def test_hostile_crud_bodies_are_refused_and_the_connection_carries_on(
    http: httpx.AsyncClient,
    server: RunningServer,
    what: str,
    body: bytes,
    status: int,
    message: str,
) -> None:
    created = await http.post("/api/deals", json={"id": "d1", "title": "Deal", "amount": 5})
    assert created.status_code == 201, created.text
    headers = {"Content-Type": "application/json"}
    await assert_error(
        await http.post("/api/deals", content=body, headers=headers), status, message
    )
    await assert_error(
        await http.patch("/api/deals/d1", content=body, headers=headers), status, message
    )
    # The same connection: the next, valid request is answered.
    listed = await http.get("/api/deals")
    assert listed.status_code == 200 and [d["id"] for d in listed.json()["items"]] == ["d1"]
    assert (await stored(server, "deals/d1") or {})["amount"] == 5


@pytest.mark.parametrize(("what", "body", "status", "message"), HOSTILE_BODIES)
async def test_hostile_push_bodies_are_refused_and_nothing_is_written(
    http: httpx.AsyncClient,
    server: RunningServer,
    what: str,
    body: bytes,
    status: int,
    message: str,
) -> None:
    push = (
        b'{"lastPulledAt": 1, "changes": {"deals": {"created": ['
        + body.replace(b'{"title"', b'{"id": "p1", "title"', 1)
        + b"]}}}"
    )
    answer = await http.post(
        "/api/sync/outgoing", content=push, headers={"Content-Type": "application/json"}
    )
    await assert_error(answer, status, message)
    assert (await http.get("/api/sync/status")).status_code == 200
    assert await stored(server, "deals/p1") is None


@pytest.mark.parametrize("due_at", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
async def test_a_datetime_outside_what_utc_can_hold_is_a_schema_violation(
    http: httpx.AsyncClient, server: RunningServer, due_at: str
) -> None:
    answer = await http.post("/api/tasks", json={"id": "t1", "title": "Call", "due_at": due_at})
    error = await assert_error(answer, 422, r"^tasks/t1: due_at must be a moment between")
    assert error["code"] == "schema_violation"
    push = await http.post(
        "/api/sync/outgoing",
        json={"changes": {"tasks": {"created": [{"id": "t2", "title": "x", "due_at": due_at}]}}},
    )
    assert push.status_code == 200, push.text
    assert push.json()["experimentalRejectedIds"] == {"tasks": ["t2"]}
    assert await stored(server, "tasks/t1") is None and await stored(server, "tasks/t2") is None
    assert (await http.get("/api/tasks")).json()["items"] == []


async def test_a_bug_escaping_a_route_is_a_json_500_that_closes_its_connection(
    http: httpx.AsyncClient, server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    app = server.app
    assert isinstance(app, FastAPI)

    async def broken() -> None:
        raise RuntimeError("a bug the tests planted")

    app.add_api_route("/api/test-only/broken", broken, methods=["POST"])
    with caplog.at_level(logging.ERROR, logger="crdt_sync.server"):
        answer = await http.post("/api/test-only/broken", content=b"x" * 100_000)
    assert answer.status_code == 500
    assert answer.headers["connection"] == "close"
    assert answer.json() == {
        "error": {"code": "internal_error", "message": "internal server error", "details": None}
    }
    (logged,) = [r for r in caplog.records if r.exc_info is not None]
    assert "POST /api/test-only/broken" in logged.getMessage()
    assert "a bug the tests planted" in str(logged.exc_info[1])  # type: ignore[index]
    # The client opens a new connection, and is answered.
    assert (await http.get("/api/deals")).status_code == 200
    status = (await http.get("/api/sync/status")).json()
    assert status["errors"].get("500") == 1, status["errors"]
