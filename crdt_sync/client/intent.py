"""What a local change meant to do, kept beside its CRDT update in the offline queue (pure).

The update is what goes on the wire; the intent is how the change is made again on top of the
server's state when the server refused an earlier change to the same record (its later updates
from this replica depend on the refused one, so they could never be integrated as they are).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from pycrdt import Doc

from ..errors import RecordNotFound
from ..ids import DocId
from ..record import Records, has_content, is_deleted


class Operation(StrEnum):
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"


@dataclass(frozen=True, slots=True)
class Intent:
    operation: Operation
    patch: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps({"op": self.operation.value, "patch": self.patch})

    @classmethod
    def from_json(cls, text: str) -> Intent:
        tree = json.loads(text)
        return cls(Operation(tree["op"]), dict(tree.get("patch") or {}))


def perform(records: Records, doc_id: DocId, document: Doc[Any], intent: Intent) -> bytes:
    """Make `intent` on `document` as one transaction and return its update.

    A create of an existing record updates it (as the REST API does); an update or a delete
    needs a record that exists and is not deleted. Deletes are final: nothing revives a record.

    Raises:
        RecordNotFound: update or delete of a record this document does not hold, or any
            change to a deleted record.
        SchemaViolation, UnknownCollection: the change breaks the schema (nothing changed).
    """
    if is_deleted(document):
        raise RecordNotFound(doc_id, "record is deleted")
    if intent.operation is Operation.CREATE:
        return records.patch(doc_id, document, intent.patch, creating=True)
    if not has_content(document):
        raise RecordNotFound(doc_id, f"no such record here (cannot {intent.operation.value} it)")
    if intent.operation is Operation.DELETE:
        return records.delete(doc_id, document)
    return records.patch(doc_id, document, intent.patch)
