"""What the client and CLI review asked for: a light CLI start-up, and the replica file's reads."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from pycrdt import Doc

from crdt_sync.client.intent import Intent, Operation
from crdt_sync.client.local import STATE_VECTOR_CHUNK, LocalStore, LocalSummary
from crdt_sync.ids import DocId
from crdt_sync.record import Records, has_content
from crdt_sync.schema import DEFAULT_SCHEMA

RECORDS = Records(DEFAULT_SCHEMA)
# What only a command that syncs, opens a store or imports should load.
HEAVY_MODULES = (
    "aiosqlite",
    "httpx",
    "pycrdt",
    "websockets",
    "crdt_sync.client",
    "crdt_sync.engine",
    "crdt_sync.importing",
    "crdt_sync.store",
    "rich.progress",
)


def test_loading_the_cli_imports_no_engine_store_client_or_crdt_code() -> None:
    probe = (
        "import json, sys, crdt_sync.cli; "
        f"print(json.dumps([m for m in {HEAVY_MODULES!r} if m in sys.modules]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert json.loads(done.stdout) == []


def local_store(path: Path) -> LocalStore:
    return LocalStore(path, RECORDS, client_id=7, synchronous="OFF")


def contact_update(record_id: str, name: str) -> bytes:
    document: Doc[Any] = Doc()
    return RECORDS.patch(DocId(f"contacts/{record_id}"), document, {"name": name}, creating=True)


async def test_summary_reads_pending_rejected_and_cursor_of_the_file(tmp_path: Path) -> None:
    async with local_store(tmp_path / "replica.db") as local:
        assert await local.summary() == LocalSummary(pending=0, rejected=0, cursor=0)
        assert await local.cursor() == 0
        for record_id in ("ada", "bob", "cy"):
            change = await local.change(
                DocId(f"contacts/{record_id}"), Intent(Operation.CREATE, {"name": record_id})
            )
        assert change.cseq is not None
        await local.reject(DocId("contacts/cy"), change.cseq, "schema_violation", "no")
        await local.apply_remote([(DocId("contacts/dee"), contact_update("dee", "Dee"))], 41)

        assert await local.summary() == LocalSummary(pending=2, rejected=1, cursor=41)
        assert await local.cursor() == 41


async def test_state_vectors_of_more_documents_than_one_query_takes(tmp_path: Path) -> None:
    count = 2 * STATE_VECTOR_CHUNK + 7
    updates = [(DocId(f"contacts/c{i}"), contact_update(f"c{i}", f"n{i}")) for i in range(count)]
    async with local_store(tmp_path / "replica.db") as local:
        await local.apply_remote(updates, None)
        asked = [doc_id for doc_id, _ in updates] + [DocId("contacts/not-here")]

        vectors = await local.state_vectors(asked)

    assert set(vectors) == {doc_id for doc_id, _ in updates}
    for doc_id, update in updates[:: STATE_VECTOR_CHUNK // 2]:
        document: Doc[Any] = Doc()
        document.apply_update(update)
        assert vectors[doc_id] == document.get_state()


def test_has_content_is_true_once_the_record_has_a_field() -> None:
    document: Doc[Any] = Doc()
    assert not has_content(document)
    document.apply_update(contact_update("ada", "Ada"))
    assert has_content(document)
