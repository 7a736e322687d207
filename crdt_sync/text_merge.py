"""A text field edited in a form, merged as a CRDT edit of the version the form opened (pure).

A form shows a record's notes as they were at seq S and sends back the whole new text. Writing
that text over the current one would drop what others typed meanwhile. Instead the document
is rebuilt as it was at S from the record's log, the form's change is made *there* as
character inserts and deletes (a diff of the two texts), and the update that results is
written like any other. Yjs positions those edits by the characters around them at S, so they
merge with every edit made since, whoever made it.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from difflib import SequenceMatcher
from typing import TYPE_CHECKING, Any

from pycrdt import Doc, Map, Text

from .errors import RecordNotFound, SchemaViolation
from .ids import DocId
from .record import RECORD_ROOT
from .schema import Collection

if TYPE_CHECKING:  # the store's package opens SQLite connections; this module stays pure
    from .store.base import LogEntry

# Client ids JavaScript can hold (Yjs clients read them as numbers: below 2**53).
CLIENT_ID_BITS = 52


def text_edit_update(
    collection: Collection,
    doc_id: DocId,
    log: Sequence[LogEntry],
    base_seq: int,
    field: str,
    new_text: str,
) -> bytes:
    """The update that turns `field`'s text as it was after `base_seq` into `new_text`.

    Raises:
        SchemaViolation: `field` is not a text field of the collection.
        RecordNotFound: the record did not exist at `base_seq`, or compaction folded that
            version away (the form must be opened again).
    """
    spec = collection.field(field, doc_id)
    if not spec.is_text:
        raise SchemaViolation(doc_id, f"{field} is a {spec.kind} field, not text")
    document = _document_at(doc_id, log, base_seq)
    fields = document.get(RECORD_ROOT, type=Map)
    if not isinstance(fields.get(field), Text) and new_text:
        # No text at the opened version: made now, it would race any text another writer
        # made since (one value of a map key wins). Add to theirs instead, so both survive.
        latest = _document_at(doc_id, log, log[-1].seq)
        theirs = latest.get(RECORD_ROOT, type=Map).get(field)
        if isinstance(theirs, Text):
            before = latest.get_state()
            old = str(theirs)
            theirs.insert(len(old.encode()), ("\n" if old else "") + new_text)
            return latest.get_update(before)
    before = document.get_state()
    with document.transaction():
        current = fields.get(field)
        if isinstance(current, Text):
            _edit(current, str(current), new_text)
        elif new_text:
            fields[field] = Text(new_text)
    return document.get_update(before)


def _document_at(doc_id: DocId, log: Sequence[LogEntry], base_seq: int) -> Doc[Any]:
    if not log or log[0].seq > base_seq:
        if log and log[0].is_snapshot:
            raise RecordNotFound(
                doc_id,
                f"the version at seq {base_seq} was compacted away; open the record again",
            )
        raise RecordNotFound(doc_id, f"the record did not exist yet at seq {base_seq}")
    document: Doc[Any] = Doc(client_id=secrets.randbits(CLIENT_ID_BITS))
    for entry in log:
        if entry.seq > base_seq:
            break
        document.apply_update(entry.update)
    return document


def _edit(text: Text, old: str, new: str) -> None:
    """Make `old` into `new` with the fewest inserts and deletes, from the end backwards
    (so the offsets still to come are unchanged). pycrdt counts UTF-8 bytes."""
    opcodes = SequenceMatcher(None, old, new, autojunk=False).get_opcodes()
    for tag, i1, i2, j1, j2 in reversed(opcodes):
        if tag == "equal":
            continue
        start = len(old[:i1].encode())
        removed = len(old[i1:i2].encode())
        if removed:
            del text[start : start + removed]
        if j2 > j1:
            text.insert(start, new[j1:j2])
