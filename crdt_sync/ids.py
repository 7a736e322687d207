"""Identifiers shared by every layer: document ids, record ids, sequence numbers (pure)."""

from __future__ import annotations

import re
from typing import NewType

from .errors import SchemaViolation

DocId = NewType("DocId", str)
"""``"{collection}/{record_id}"``: one record, one CRDT document."""

Seq = NewType("Seq", int)
"""A position in the store's one global, strictly increasing update log; 0 is "nothing yet"."""


class Origin(str):
    """Who made a write: a device or client id, a token name, ``cli`` or ``server``.

    It is that name as a str (stored as the log's `origin` and a record's `created_by`, compared
    and shown as such), and carries two facts for a record's history that ride with it through
    the engine's one write path to the log: `door`, the way the write came in (``yjs``, ``ws``,
    ``rest`` with a bearer token, ``admin`` the panel's session, ``import``; "" when not known,
    as for rows written before it was kept), and `token`, the name of the token it was made
    with ("" for none: the CLI, the server itself).
    """

    door: str
    token: str

    def __new__(cls, name: str, door: str = "", token: str = "") -> Origin:
        origin = super().__new__(cls, name)
        origin.door = door
        origin.token = token
        return origin


RECORD_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
COLLECTION_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")


def make_doc_id(collection: str, record_id: str) -> DocId:
    """Join and check; raises SchemaViolation on a bad collection name or record id."""
    doc_id = f"{collection}/{record_id}"
    if not COLLECTION_NAME.fullmatch(collection):
        raise SchemaViolation(doc_id, f"bad collection name {collection!r}")
    if not RECORD_ID.fullmatch(record_id):
        raise SchemaViolation(
            doc_id, f"record id must be 1-64 characters of [A-Za-z0-9_-], got {record_id!r}"
        )
    return DocId(doc_id)


def split_doc_id(doc_id: str) -> tuple[str, str]:
    """``"deals/7"`` -> ``("deals", "7")``; raises SchemaViolation when it is not such an id."""
    collection, slash, record_id = str(doc_id).partition("/")
    if not slash:
        raise SchemaViolation(str(doc_id)[:80], "document id must be 'collection/record_id'")
    make_doc_id(collection, record_id)
    return collection, record_id
