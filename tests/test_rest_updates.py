"""`GET /api/sync/updates`: the update log as CBOR, over the real server and a real SQLite file."""

from __future__ import annotations

from typing import Any

import cbor2
import httpx
import pytest
from pycrdt import Doc

from crdt_sync.errors import StoreError
from crdt_sync.ids import DocId, split_doc_id
from crdt_sync.record import view
from crdt_sync.schema import DEFAULT_SCHEMA
from crdt_sync.server import sync_updates
from crdt_sync.store.base import Store

from .client_helpers import admin_delete, admin_patch
from .conftest import RunningServer

Entry = tuple[str, bytes, int]


async def seed(server: RunningServer) -> None:
    """Contacts and deals interleaved in the log, with later edits and a delete."""
    for i in range(6):
        await admin_patch(server, f"contacts/c{i}", {"name": f"Contact {i}"}, creating=True)
        await admin_patch(server, f"deals/d{i}", {"title": f"Deal {i}", "amount": i}, creating=True)
    await admin_patch(server, "contacts/c1", {"email": "c1@example.com"})
    await admin_delete(server, "deals/d2")
    await admin_patch(server, "contacts/c3", {"notes": "met at the fair"})


async def log(server: RunningServer) -> list[Entry]:
    """Every entry of the server's log, from its store."""
    store: Store = server.app.state.store  # type: ignore[attr-defined]
    return [(e.doc_id, e.update, e.seq) for e in await store.log_since(0, limit=100_000)]  # type: ignore[arg-type]


async def pull(http: httpx.AsyncClient, **params: Any) -> dict[str, Any]:
    response = await http.get("/api/sync/updates", params=params)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/cbor"
    answer: dict[str, Any] = cbor2.loads(response.content)
    assert answer["timestamp"] == answer["cursor"] + 1
    return answer


async def pull_all(
    http: httpx.AsyncClient, since: int, **params: Any
) -> tuple[list[Entry], int, int]:
    """Follow `more` to the end: (entries, the final timestamp, answers taken)."""
    entries: list[Entry] = []
    answers = 0
    while True:
        answer = await pull(http, since=since, **params)
        answers += 1
        entries += [(u["doc"], u["update"], u["seq"]) for u in answer["updates"]]
        since = answer["timestamp"]
        if not answer["more"]:
            return entries, since, answers


def replay(entries: list[Entry]) -> dict[str, dict[str, Any]]:
    """The records the entries make, applied to fresh documents as a CRDT client would."""
    documents: dict[str, Doc[Any]] = {}
    for doc_id, update, _ in entries:
        documents.setdefault(doc_id, Doc()).apply_update(update)
    out = {}
    for doc_id, document in documents.items():
        collection, record_id = split_doc_id(DocId(doc_id))
        out[doc_id] = view(document, DEFAULT_SCHEMA.collections[collection], record_id)
    return out


async def stored_views(server: RunningServer) -> dict[str, dict[str, Any]]:
    engine = server.app.state.engine  # type: ignore[attr-defined]
    return {
        doc_id: (await engine.view(DocId(doc_id)))[0]
        for doc_id in {entry[0] for entry in await log(server)}
    }


async def test_since_1_answers_the_whole_log_in_seq_order_as_cbor(server: RunningServer) -> None:
    await seed(server)
    async with server.client(server.device_token) as http:
        answer = await pull(http, since=1)
    entries = [(u["doc"], u["update"], u["seq"]) for u in answer["updates"]]
    assert entries == await log(server)
    assert answer["cursor"] == entries[-1][2] and answer["more"] is False
    assert replay(entries) == await stored_views(server)


async def test_an_empty_server_answers_no_updates_and_timestamp_1(server: RunningServer) -> None:
    async with server.client(server.device_token) as http:
        answer = await pull(http, since=1)
    assert answer == {"updates": [], "cursor": 0, "timestamp": 1, "more": False}


@pytest.mark.parametrize("limit", [1, 4, 7, 100])
async def test_pages_chain_without_gap_or_repeat(server: RunningServer, limit: int) -> None:
    await seed(server)
    expected = await log(server)
    async with server.client(server.device_token) as http:
        entries, timestamp, answers = await pull_all(http, 1, limit=limit)
    assert entries == expected
    assert timestamp == expected[-1][2] + 1
    assert answers == -(-len(expected) // limit)  # `more` is exact: no empty last answer


async def test_an_answer_is_cut_at_limit_and_says_more(server: RunningServer) -> None:
    await seed(server)
    expected = await log(server)
    async with server.client(server.device_token) as http:
        answer = await pull(http, since=1, limit=5)
    assert [u["seq"] for u in answer["updates"]] == [seq for _, _, seq in expected[:5]]
    assert answer["cursor"] == expected[4][2] and answer["more"] is True


async def test_since_in_the_middle_answers_the_entries_from_that_seq(server: RunningServer) -> None:
    await seed(server)
    expected = await log(server)
    middle = expected[7][2]
    async with server.client(server.device_token) as http:
        entries, _, _ = await pull_all(http, middle)
        latest = await pull(http, since=expected[-1][2] + 1)
    assert entries == [entry for entry in expected if entry[2] >= middle]
    assert latest == {
        "updates": [],
        "cursor": expected[-1][2],
        "timestamp": expected[-1][2] + 1,
        "more": False,
    }


async def test_the_collections_filter_keeps_their_entries_and_covers_the_whole_log(
    server: RunningServer,
) -> None:
    await seed(server)
    expected = await log(server)
    async with server.client(server.device_token) as http:
        answer = await pull(http, since=1, collections="deals")
        both = await pull(http, since=1, collections=["deals", "contacts"])
    assert [u["doc"] for u in answer["updates"]] == [
        d for d, _, _ in expected if d.startswith("deals/")
    ]
    # The last entry is a contact's: the answer covers it all the same, so the next pull is empty.
    assert answer["cursor"] == expected[-1][2] and answer["more"] is False
    assert len(both["updates"]) == len(expected)


async def test_the_collections_filter_pages_through_other_collections_entries(
    server: RunningServer,
) -> None:
    await seed(server)
    expected = [entry for entry in await log(server) if entry[0].startswith("deals/")]
    async with server.client(server.device_token) as http:
        entries, _, _ = await pull_all(http, 1, collections="deals", limit=2)
    assert entries == expected


async def test_answers_stream_many_store_pages_and_stop_at_the_byte_budget(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    await seed(server)
    expected = await log(server)
    monkeypatch.setattr(sync_updates, "STORE_PAGE", 3)
    async with server.client(server.device_token) as http:
        whole = await pull(http, since=1)
        assert [u["seq"] for u in whole["updates"]] == [seq for _, _, seq in expected]
        monkeypatch.setattr(sync_updates, "ANSWER_BUDGET", 100)
        first = await pull(http, since=1)
        entries, _, answers = await pull_all(http, 1)
    sizes = [len(u["update"]) for u in first["updates"]]
    assert first["more"] is True and sum(sizes[:-1]) < 100 <= sum(sizes)
    assert entries == expected and answers > 1


async def test_a_compacted_record_comes_as_one_entry_that_makes_the_same_record(
    server: RunningServer,
) -> None:
    await seed(server)
    store: Store = server.app.state.store  # type: ignore[attr-defined]
    await store.compact(DocId("contacts/c1"))
    async with server.client(server.device_token) as http:
        entries, _, _ = await pull_all(http, 1)
    assert [doc for doc, _, _ in entries].count("contacts/c1") == 1
    assert replay(entries) == await stored_views(server)


async def test_a_store_failure_mid_answer_breaks_it_off_rather_than_end_it_early(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client must never take a cut answer for a whole one (and its cursor with it)."""
    await seed(server)
    store: Store = server.app.state.store  # type: ignore[attr-defined]
    read = store.log_since
    calls = 0

    async def failing_second_page(*args: Any, **options: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise StoreError("disk trouble")
        return await read(*args, **options)

    monkeypatch.setattr(sync_updates, "STORE_PAGE", 3)
    monkeypatch.setattr(store, "log_since", failing_second_page)
    async with server.client(server.device_token) as http:
        with pytest.raises(httpx.RemoteProtocolError):
            await http.get("/api/sync/updates", params={"since": 1})
        monkeypatch.setattr(store, "log_since", read)
        assert len((await pull(http, since=1))["updates"]) == len(await log(server))


async def test_a_store_that_cannot_be_read_is_answered_503(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    store: Store = server.app.state.store  # type: ignore[attr-defined]

    async def failing(*args: Any, **options: Any) -> Any:
        raise StoreError("disk trouble")

    monkeypatch.setattr(store, "log_since", failing)
    async with server.client(server.device_token) as http:
        response = await http.get("/api/sync/updates", params={"since": 1})
    assert response.status_code == 503 and response.json()["error"]["code"] == "store_error"


async def test_the_pull_is_noted_in_the_sync_status(server: RunningServer) -> None:
    await seed(server)
    async with server.client(server.device_token) as http:
        http.headers["X-Client-Id"] = "phone-1"
        answer = await pull(http, since=1)
    async with server.client() as admin:
        status = (await admin.get("/api/sync/status")).json()
    assert status["pulls"]["updates"] == 1
    [device] = [d for d in status["rest_devices"] if d["client_id"] == "phone-1"]
    assert device["cursor"] == answer["cursor"]


# Bad input: the standard error body, nothing answered from the log


@pytest.mark.parametrize(
    ("params", "status", "code", "match"),
    [
        ({}, 400, "bad_request", "since is required"),
        ({"since": ""}, 400, "bad_request", "since is required"),
        ({"since": "abc"}, 400, "bad_request", "whole number"),
        ({"since": "2.5"}, 400, "bad_request", "whole number"),
        ({"since": 0}, 400, "bad_request", "since=0 is not a timestamp"),
        ({"since": 10_000}, 400, "bad_request", "since=10000 is not a timestamp"),
        ({"since": 1, "limit": 0}, 400, "bad_request", "limit"),
        ({"since": 1, "limit": "many"}, 400, "bad_request", "limit"),
        ({"since": 1, "limit": 100_001}, 400, "bad_request", "limit"),
        ({"since": 1, "collections": "invoices"}, 404, "unknown_collection", "invoices"),
        ({"since": 1, "collections": "deals,invoices"}, 404, "unknown_collection", "invoices"),
    ],
)
async def test_bad_input_is_refused_with_the_standard_error_body(
    server: RunningServer, params: dict[str, Any], status: int, code: str, match: str
) -> None:
    await seed(server)
    async with server.client(server.device_token) as http:
        response = await http.get("/api/sync/updates", params=params)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert error["code"] == code and match in error["message"]


async def test_a_since_ahead_of_the_server_names_its_current_timestamp(
    server: RunningServer,
) -> None:
    """A client whose server's store was replaced (smaller log) learns where to start over."""
    await seed(server)
    timestamp = (await log(server))[-1][2] + 1
    async with server.client(server.device_token) as http:
        response = await http.get("/api/sync/updates", params={"since": timestamp + 1})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["details"] == {"timestamp": timestamp} and "since=1" in error["message"]


@pytest.mark.parametrize("token", ["", "cs_not-a-token"])
async def test_a_pull_needs_a_valid_token(server: RunningServer, token: str) -> None:
    await seed(server)
    async with server.client(token) as http:
        response = await http.get("/api/sync/updates", params={"since": 1})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"


async def test_device_and_admin_tokens_may_pull(server: RunningServer) -> None:
    await seed(server)
    for token in (server.device_token, server.admin_token):
        async with server.client(token) as http:
            assert len((await pull(http, since=1))["updates"]) == len(await log(server))


async def test_the_openapi_document_describes_the_cbor_answer(server: RunningServer) -> None:
    async with server.client() as admin:
        paths = (await admin.get("/openapi.json")).json()["paths"]
    operation = paths["/api/sync/updates"]["get"]
    schema = operation["responses"]["200"]["content"]["application/cbor"]["schema"]
    assert schema["required"] == ["updates", "cursor", "timestamp", "more"]
    assert {p["name"] for p in operation["parameters"]} == {"since", "collections", "limit"}
    assert {"400", "401", "404"} <= set(operation["responses"])
