"""Record <-> Y document: field patches, the flat JSON view, and update checks (pure).

A record document has two root maps: `record` holds the fields (text fields as Y.Text) and
`meta` holds the tombstone (`deleted: true`). Every write is one transaction whose update is
returned as bytes; every incoming update is checked on a copy *before* it touches the live
document, so a refused update leaves no trace anywhere. `LiveRecord` keeps that copy beside
the live document for as long as the record is live, so a check costs what the update
changes, not what the whole document holds.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pycrdt import Array, Doc, Map, Text, get_update

from .errors import InvalidUpdate, LimitExceeded, SchemaViolation
from .ids import DocId, split_doc_id
from .schema import Collection, Field, FieldKind, Schema

RECORD_ROOT = "record"
META_ROOT = "meta"
DELETED_KEY = "deleted"
_ROOTS = frozenset({RECORD_ROOT, META_ROOT})
EMPTY_UPDATE = b"\x00\x00"  # an update that holds nothing
EMPTY_STATE_VECTOR = b"\x00"  # a document never written; as SyncStep1: "send me everything"
# Numbers travel as IEEE doubles in Yjs; integral ones up to 2**53 read back as JSON integers.
_EXACT_INTEGER = 2**53
# Live documents write with a low client id, so that a compensation (see `LiveRecord.apply`)
# loses a tie against a writer's own quick correction: of two concurrent writes of one map
# key, Yjs keeps the higher client id's (Yjs clients draw 32-bit ids). Random per engine,
# not fixed, so that two engines (nodes, the CLI beside a server) writing one record do not
# share an id: two writers with one id would make different items with the same ids.
MAX_SERVER_CLIENT_ID = 2**20


def server_client_id() -> int:
    """A client id for one engine's live documents: random, at most MAX_SERVER_CLIENT_ID."""
    return random.randint(1, MAX_SERVER_CLIENT_ID)


View = dict[str, Any]


@dataclass(frozen=True, slots=True)
class CheckedUpdate:
    """What an update would do to a record, worked out on a scratch copy."""

    view: View
    is_deleted: bool
    changed_fields: tuple[str, ...]
    is_noop: bool  # the document already held everything in the update
    state_bytes: int  # size of the whole document state after the update
    # A compensated refusal: the update broke the schema, and `stored` (the update and the
    # server's restoring items, as one) is what to store and send in its place.
    refusal: SchemaViolation | None = None
    stored: bytes | None = None


def document_from_state(state: bytes | None, *, client_id: int | None = None) -> Doc[Any]:
    """A document holding `state` (a whole-document update from the store), or an empty one."""
    document: Doc[Any] = Doc(client_id=client_id)
    if state:
        try:
            document.apply_update(state)
        except ValueError as exc:
            raise InvalidUpdate("", f"stored state does not decode: {exc}") from exc
    return document


def is_deleted(document: Doc[Any]) -> bool:
    return document.get(META_ROOT, type=Map).get(DELETED_KEY) is True


def _json_value(value: Any) -> Any:
    if isinstance(value, Text):
        return str(value)  # "" is a value: only a field that is not there reads as null
    if isinstance(value, float) and value.is_integer() and abs(value) < _EXACT_INTEGER:
        return int(value)
    return value


def view(document: Doc[Any], collection: Collection, record_id: str) -> View:
    """The flat JSON view: `{"id": .., field: value}`, every field present, unset ones None."""
    fields = document.get(RECORD_ROOT, type=Map)
    out: View = {"id": record_id}
    for name in collection.fields:
        out[name] = _json_value(fields.get(name))
    return out


NO_SIZE_LIMIT = 1 << 62  # for updates already stored: they were within the limits then


class Records:
    """The schema-aware operations on record documents: patch, delete, check, view."""

    def __init__(self, schema: Schema) -> None:
        self.schema = schema

    def collection_of(self, doc_id: DocId) -> tuple[Collection, str]:
        """The collection and record id of `doc_id`; raises SchemaViolation / UnknownCollection."""
        collection_name, record_id = split_doc_id(doc_id)
        return self.schema.collection(collection_name, doc_id), record_id

    def view(self, doc_id: DocId, document: Doc[Any]) -> View:
        collection, record_id = self.collection_of(doc_id)
        return view(document, collection, record_id)

    def live_record(
        self, doc_id: DocId, state: bytes | None, *, client_id: int | None = None
    ) -> LiveRecord:
        """The live form of a record holding `state`, writing as `client_id` (None: a random
        one, for a record that only reads); raises as `collection_of` does."""
        collection, record_id = self.collection_of(doc_id)
        return LiveRecord(doc_id, collection, record_id, state, client_id=client_id)

    def patch(
        self, doc_id: DocId, document: Doc[Any], patch: Mapping[str, Any], *, creating: bool = False
    ) -> bytes:
        """Apply a field patch as one transaction and return its update.

        Every value is checked first, so a refused patch changes nothing. With `creating`
        the record's required fields must be present after the patch.

        Raises:
            SchemaViolation: unknown field, wrong type, a required field missing or cleared.
        """
        collection, _ = self.collection_of(doc_id)
        values = {
            name: collection.field(name, doc_id).coerce(v, doc_id) for name, v in patch.items()
        }
        fields = document.get(RECORD_ROOT, type=Map)
        if creating or not has_content(document):
            for name in collection.required:
                if values.get(name, fields.get(name)) is None:
                    raise SchemaViolation(doc_id, f"{name} is required")
        before = document.get_state()
        with document.transaction(origin="patch"):
            for name, value in values.items():
                _write_field(fields, collection.fields[name], value)
        return document.get_update(before)

    def delete(self, doc_id: DocId, document: Doc[Any]) -> bytes:
        """Tombstone the record; returns the update (empty-effect if already deleted)."""
        self.collection_of(doc_id)
        before = document.get_state()
        with document.transaction(origin="delete"):
            document.get(META_ROOT, type=Map)[DELETED_KEY] = True
        return document.get_update(before)

    def check_update(self, doc_id: DocId, document: Doc[Any], update: bytes) -> CheckedUpdate:
        """Work out `update` against a scratch copy of `document`; the document is not touched.

        Raises:
            InvalidUpdate: the bytes are not a CRDT update.
            SchemaViolation: the result breaks the schema (unknown field or root, wrong type,
                a required field removed, an undelete).
        """
        collection, record_id = self.collection_of(doc_id)
        if not isinstance(update, bytes | bytearray) or len(update) < 2:
            raise InvalidUpdate(doc_id, "an update is at least 2 bytes of Yjs update encoding")
        state = document.get_update()
        scratch: Doc[Any] = Doc()
        scratch.apply_update(state)
        before = view(scratch, collection, record_id)
        had_content = has_content(scratch)
        try:
            scratch.apply_update(bytes(update))
            _check_dependencies(doc_id, bytes(update), scratch.get_state())
        except ValueError as exc:
            raise InvalidUpdate(doc_id, f"not a Yjs update: {exc}") from None
        _check_document(scratch, collection, doc_id, before)
        after = view(scratch, collection, record_id)
        if not had_content and has_content(scratch):
            check_created(collection, doc_id, after)
        changed = tuple(name for name in collection.fields if after[name] != before[name])
        new_state = scratch.get_update()
        return CheckedUpdate(
            after, is_deleted(scratch), changed, new_state == state, len(new_state)
        )


def _check_dependencies(doc_id: str, update: bytes, document_state: bytes) -> None:
    """Refuse an update whose structs could not be integrated: it depends on unseen updates.

    Such structs would sit pending, invisible, and yrs does not always integrate several
    pending updates once the gap is filled; a peer that sends its diff against our state
    vector (y-sync step 2) never hits this. What the document's state vector does not cover
    after applying the update is what stayed pending: an update with no structs starts 0x00.
    """
    if get_update(update, document_state)[:1] != b"\x00":
        raise InvalidUpdate(doc_id, _UNSEEN_DEPENDENCIES)


_UNSEEN_DEPENDENCIES = (
    "update depends on changes this document has not seen; "
    "send the diff against the document's state vector (sync step 2) first"
)


def has_content(document: Doc[Any]) -> bool:
    """True once the record has a field: a document that only exists as a name holds nothing."""
    return len(document.get(RECORD_ROOT, type=Map)) > 0


def check_created(collection: Collection, doc_id: str, after: View) -> None:
    """Rule: the write that gives a record its first field creates it, and must set every
    required field, whichever door it came in by (a REST create, a patch, a CRDT update).

    A CRDT client makes one write of one transaction (`doc.transact` in Yjs, `with
    doc.transaction()` in pycrdt); `/yjs` also checks the updates it reads back to back as
    one. Fields set in later transactions are edits of a record that already exists.
    """
    for name in collection.required:
        if after[name] is None:
            raise SchemaViolation(doc_id, f"{name} is required")


def _write_field(fields: Map[Any], spec: Field, value: str | float | bool | None) -> None:
    """Write one coerced value; None unsets the field (the key goes), whatever its kind."""
    current = fields.get(spec.name)
    if value is None:
        if spec.name in fields:
            del fields[spec.name]
    elif spec.is_text:
        if isinstance(current, Text):
            _replace_text(current, str(value))  # edit in place: concurrent edits survive
        else:
            fields[spec.name] = Text(str(value))
    elif current != value or type(current) is not type(value):
        fields[spec.name] = value


def _replace_text(text: Text, new: str) -> None:
    """Edit only the changed middle, so concurrent edits elsewhere in the text survive."""
    old = str(text)
    if old == new:
        return
    prefix = 0
    limit = min(len(old), len(new))
    while prefix < limit and old[prefix] == new[prefix]:
        prefix += 1
    suffix = 0
    while suffix < limit - prefix and old[-1 - suffix] == new[-1 - suffix]:
        suffix += 1
    # pycrdt indexes text by UTF-8 byte offset; cut only at character boundaries.
    start = len(old[:prefix].encode())
    removed = len(old[prefix : len(old) - suffix].encode())
    if removed:
        del text[start : start + removed]
    inserted = new[prefix : len(new) - suffix]
    if inserted:
        text.insert(start, inserted)


def _check_document(document: Doc[Any], collection: Collection, doc_id: str, before: View) -> None:
    for root in document.keys():
        if root not in _ROOTS:
            raise SchemaViolation(
                doc_id, f"unknown root {root!r} (a record has 'record' and 'meta')"
            )
    fields = document.get(RECORD_ROOT, type=Map)
    for name in fields.keys():
        spec = collection.field(name, doc_id)
        _check_stored_value(spec, fields[name], doc_id)
    for name in collection.required:
        if before[name] is not None and fields.get(name) is None:
            raise SchemaViolation(doc_id, f"{name} is required and cannot be removed")
    meta = document.get(META_ROOT, type=Map)
    for key in meta.keys():
        if key != DELETED_KEY or meta[key] is not True:
            raise SchemaViolation(
                doc_id,
                f"meta may only hold deleted=true (a delete is final), got {key}={meta[key]!r}",
            )


def _check_stored_value(spec: Field, value: Any, doc_id: str) -> Any:
    """Raise SchemaViolation unless `value` fits `spec`; else return its JSON value.

    A text is read once: reading a Y.Text walks every item it ever held, so a much-edited one
    (100,000 keystrokes) costs milliseconds per read, and every write to it read it twice.
    """
    if spec.is_text:
        if not isinstance(value, Text):
            raise SchemaViolation(doc_id, f"{spec.name} is a text field and must be a Y.Text")
        text = str(value)
        spec.coerce(text, doc_id)
        return text
    if isinstance(value, Text | Map | Array | list | dict):
        raise SchemaViolation(
            doc_id,
            f"{spec.name} must be a plain {spec.kind.value} value, got a {type(value).__name__}",
        )
    return _check_plain_value(spec, value, doc_id)


def _check_plain_value(spec: Field, value: Any, doc_id: str) -> Any:
    """`_check_stored_value` of a value yrs' events carried as stored (a `_PLAIN` one): no
    shared type to rule out first (four isinstance checks against pycrdt's classes)."""
    if spec.is_text:
        raise SchemaViolation(doc_id, f"{spec.name} is a text field and must be a Y.Text")
    stored = spec.coerce(value, doc_id)
    # A datetime is stored normalised; a different spelling would read differently elsewhere.
    if spec.kind is FieldKind.DATETIME and stored != value:
        raise SchemaViolation(doc_id, f"{spec.name} must be stored as UTC like {stored!r}")
    return _json_value(value)


_REMOVED = object()  # a field deleted by an update
_ABSENT = object()  # a key that held nothing before an update
_PLAIN = (str, float, int, bool, type(None))  # values an event carries as they are stored


def _is_text(value: Any) -> bool:
    """A Y.Text as yrs' events carry it (the binding's class, not pycrdt's `Text`)."""
    return type(value).__name__ == "Text"


class _Changes:
    """What one update changed, as the observers of a live document saw it.

    The callbacks get yrs' own events (not pycrdt's wrappers, which convert much more) and
    keep the new plain values of the fields; a field whose value is a shared type (a text)
    or whose text was edited in place is only named, to be read back from the document.
    They also keep what each key held before (`old`, `meta_old`), which is what a
    compensation writes back. They hold no reference to the document: a callback is held
    by the document (in Rust) and must not keep it alive.
    """

    __slots__ = (
        "changed",
        "edited_texts",
        "meta",
        "meta_old",
        "nested",
        "old",
        "read_back",
        "shared",
        "values",
    )

    def __init__(self) -> None:
        self.changed = False  # yrs reports only transactions that changed the document
        self.values: dict[str, Any] = {}  # field -> new plain value, or _REMOVED
        self.read_back: set[str] = set()
        self.meta: dict[str, Any] = {}  # meta key -> new value, or _REMOVED
        self.nested = False  # a change inside a value of a field: no valid record has one
        self.shared = False  # a field or meta key set to a shared type other than a text
        self.old: dict[str, Any] = {}  # field -> its value before (a Text, plain, or _ABSENT)
        self.edited_texts: set[str] = set()  # texts edited in place
        self.meta_old: dict[str, Any] = {}

    def clear(self) -> None:
        self.changed = False
        self.values.clear()
        self.read_back.clear()
        self.meta.clear()
        self.nested = False
        self.shared = False
        self.old.clear()
        self.edited_texts.clear()
        self.meta_old.clear()

    def on_transaction(self, event: Any) -> None:
        self.changed = True

    def on_fields(self, events: list[Any]) -> None:
        for event in events:
            path = event.path
            if not path:
                for name, change in event.keys.items():
                    action = change["action"]
                    self.old.setdefault(name, _ABSENT if action == "add" else change["oldValue"])
                    if action == "delete":
                        self.values[name] = _REMOVED
                    elif type(value := change["newValue"]) in _PLAIN:
                        self.values[name] = value
                    else:
                        self.shared = self.shared or not _is_text(value)
                        self.values.pop(name, None)
                        self.read_back.add(name)
            elif len(path) == 1 and type(event).__name__ == "TextEvent":
                self.read_back.add(str(path[0]))
                self.edited_texts.add(str(path[0]))
            else:
                self.nested = True

    def on_meta(self, event: Any) -> None:
        for key, change in event.keys.items():
            action = change["action"]
            self.meta_old.setdefault(key, _ABSENT if action == "add" else change["oldValue"])
            if action == "delete":
                self.meta[key] = _REMOVED
            else:
                self.meta[key] = value = change["newValue"]
                self.shared = self.shared or type(value) not in _PLAIN


class LiveRecord:
    """A record's live document, checked update by update at the cost of the update.

    `apply` applies an update to `document` and checks what changed (the fields and meta
    keys its observers saw touched, read back from the document). A refused update is
    undone by rebuilding the document from a recent snapshot and the updates accepted
    since, the one costly path, so it leaves no trace. The JSON view is kept up to date
    field by field. Call `close()` when the record leaves the cache: the observers are
    held by the document and would otherwise keep it alive.
    """

    __slots__ = (
        "_changes",
        "_client_id",
        "_fields",
        "_has_content",
        "_is_deleted",
        "_meta",
        "_since",
        "_since_bytes",
        "_size",
        "_snapshot",
        "_subscriptions",
        "_view",
        "collection",
        "doc_id",
        "document",
        "record_id",
    )

    def __init__(
        self,
        doc_id: DocId,
        collection: Collection,
        record_id: str,
        state: bytes | None,
        *,
        client_id: int | None = None,
    ):
        self.doc_id = doc_id
        self._client_id = client_id
        self.collection = collection
        self.record_id = record_id
        self._changes = _Changes()
        self._subscriptions: list[Any] = []
        # What `document` holds, to rebuild it from: a snapshot and the updates accepted since.
        self._snapshot = state or b""
        self._since: list[bytes] = []
        self._since_bytes = 0
        self._size = len(self._snapshot)  # an upper bound of the encoded state; exact when checked
        self._open(document_from_state(state, client_id=client_id))
        self._view = view(self.document, collection, record_id)
        self._is_deleted = is_deleted(self.document)
        self._has_content = has_content(self.document)

    @property
    def view(self) -> View:
        return dict(self._view)

    @property
    def is_deleted(self) -> bool:
        return self._is_deleted

    @property
    def has_content(self) -> bool:
        """True once the record has a field (see `check_created`)."""
        return self._has_content

    @property
    def exists(self) -> bool:
        """Created and maybe deleted since; a refused create (compensated) leaves none."""
        return self._has_content or self._is_deleted

    def apply(
        self,
        update: bytes,
        *,
        max_document_bytes: int,
        compensate: bool = False,
        stored: bool = False,
        reencode: bool = False,
    ) -> CheckedUpdate:
        """Apply `update` to the live document if the result passes every check.

        With `compensate`, an update that breaks the schema only in the plain values and texts
        of the record's fields and meta keys is kept, and overwritten at once, in the same
        call, by the server's restoring items (`_compensate`): the result has `refusal` set
        and `stored`, the update and its compensation as one update, is what to store and
        send. The view is unchanged; the refused values are deleted items in `stored`.
        With `stored`, the update was accepted once already (a replay, another process's
        commit): the creation rule (`check_created`), younger than some stores, is not applied.
        With `reencode`, an accepted update comes back as `stored` too, re-encoded from the
        document (garbage-collected): a merge of several updates keeps the content of items
        the later ones overwrote, and what is overwritten may be a value the schema refuses.

        Raises (and then the document holds none of it):
            InvalidUpdate: not a Yjs update, or one depending on changes not seen here.
            SchemaViolation: the result breaks the schema (see `Records.check_update`) and
                is not compensated (not asked to, or nested content, an unknown root).
            LimitExceeded: the document would grow past `max_document_bytes`.
        """
        if not isinstance(update, bytes | bytearray) or len(update) < 2:
            raise InvalidUpdate(self.doc_id, "an update is at least 2 bytes of Yjs update encoding")
        update = bytes(update)
        document, changes = self.document, self._changes
        changes.clear()
        try:
            try:
                vector_before, state_vector, roots = _apply_in_one_transaction(
                    document, update, vector_before=compensate or reencode
                )
                # Structs the update holds beyond the new state were left pending: they
                # depend on changes not seen here.
                rest = get_update(update, state_vector)
            except ValueError as exc:
                raise InvalidUpdate(self.doc_id, f"not a Yjs update: {exc}") from None
            if rest[:1] != b"\x00":
                raise InvalidUpdate(self.doc_id, _UNSEEN_DEPENDENCIES)
        except BaseException:
            self._rebuild()  # drops what the observers saw, too
            raise
        return self._keep(
            update,
            roots,
            max_document_bytes,
            compensate=compensate,
            creating=not stored,
            vector_before=vector_before if compensate or reencode else None,
            reencode=reencode,
        )

    def unchanged(self) -> CheckedUpdate:
        """What `apply` answers for an update that changes nothing."""
        return CheckedUpdate(self.view, self._is_deleted, (), True, self._size)

    def adopt(self, update: bytes, *, max_document_bytes: int) -> CheckedUpdate:
        """Check and keep a change already made on `document` (a local patch or delete).

        The same check and the same answer as `apply`, from what the observers saw the
        change touch: a field patch and the CRDT update a client makes of it are one write.
        Raises as `apply` does (never compensated), and then the document holds none of it.
        """
        return self._keep(update, len(_ROOTS), max_document_bytes)

    def _keep(
        self,
        update: bytes,
        roots: int,
        max_document_bytes: int,
        *,
        compensate: bool = False,
        creating: bool = True,
        vector_before: bytes | None = None,
        reencode: bool = False,
    ) -> CheckedUpdate:
        """Check what the last transaction on `document` changed; keep it, or undo it
        (`_rebuild`), or with `compensate` write back over it (`_compensate`)."""
        document, changes = self.document, self._changes
        try:
            if not changes.changed:  # everything in it was here already (a re-sent step 2, say)
                return self.unchanged()
            try:
                if changes.nested or roots > len(_ROOTS):
                    _check_document(document, self.collection, self.doc_id, self._view)
                after, deleted = self._check_changes(changes, creating=creating)
            except SchemaViolation as refusal:
                if not compensate or changes.nested or changes.shared or roots > len(_ROOTS):
                    raise
                assert vector_before is not None  # asked for whenever compensating
                return self._compensate(refusal, vector_before, max_document_bytes)
            touched = changes.values.keys() | changes.read_back
            content = self._has_content
            if not content or _REMOVED in changes.values.values():
                content = has_content(document)
            size = self._size + len(update)
            if size > max_document_bytes:
                size = len(document.get_update())
                if size > max_document_bytes:
                    raise LimitExceeded(
                        f"{self.doc_id}: document would grow to {size} bytes, over the limit "
                        f"of {max_document_bytes}"
                    )
        except BaseException:
            self._rebuild()
            raise
        finally:
            changes.clear()
        before, self._view, self._is_deleted = self._view, after, deleted
        self._size, self._has_content = size, content
        stored_update = (
            document.get_update(vector_before) if reencode and vector_before is not None else None
        )
        self._accepted(stored_update or update)
        changed = tuple(
            name
            for name in self.collection.fields
            if name in touched and after[name] != before[name]
        )
        return CheckedUpdate(dict(after), deleted, changed, False, size, None, stored_update)

    def _compensate(
        self, refusal: SchemaViolation, vector_before: bytes, max_document_bytes: int
    ) -> CheckedUpdate:
        """Write back, over the refused update, every field and meta key it touched.

        The server's items are made after the writer's (their origin), so they win over them
        on every replica, and the writer's overwritten items become deleted items: yrs drops
        their content (garbage collection) when this transaction commits, so the refused
        values are in no stored byte. A writer's own correction made before it saw this is
        concurrent with it and wins the tie if the writer's client id is above the live
        document's (`server_client_id`; Yjs keeps the higher id's write of a map key).

        Raises:
            SchemaViolation: `refusal`, if the document did not come back to its view (the
                caller rebuilds it, as for any refusal).
            LimitExceeded: the compensated update would take the document past the limit.
        """
        changes, document, fields, meta = self._changes, self.document, self._fields, self._meta
        old, meta_old = dict(changes.old), dict(changes.meta_old)
        edited = changes.edited_texts - old.keys()
        # Before they are written over: what the refused update set, for the admin to see.
        refusal.tried_values = {
            name: _json_value(fields.get(name)) for name in sorted(old.keys() | edited)
        }
        with document.transaction(origin="compensation"):
            for name, value in old.items():
                if value is _ABSENT:
                    fields.pop(name, None)
                elif _is_text(value):
                    fields[name] = Text(self._view.get(name) or "")
                else:
                    fields[name] = value
            for name in edited:
                text = fields.get(name)
                if isinstance(text, Text):
                    _replace_text(text, self._view.get(name) or "")
            for key, value in meta_old.items():
                if value is _ABSENT:
                    meta.pop(key, None)
                else:
                    meta[key] = value
        changes.clear()
        collection, record_id = self.collection, self.record_id
        if view(document, collection, record_id) != self._view or (
            is_deleted(document) != self._is_deleted
        ):
            raise refusal
        stored = document.get_update(vector_before)
        size = self._size + len(stored)
        if size > max_document_bytes:
            raise LimitExceeded(
                f"{self.doc_id}: the refused update and its compensation would take the "
                f"document to {size} bytes, over the limit of {max_document_bytes}"
            )
        self._size = size
        self._accepted(stored)
        return CheckedUpdate(self.view, self._is_deleted, (), False, size, refusal, stored)

    def close(self) -> None:
        """Drop the observers; the record must not be used afterwards."""
        for subscription in self._subscriptions:
            subscription.drop()
        self._subscriptions.clear()
        self._changes.clear()

    def _open(self, document: Doc[Any]) -> None:
        self.document = document
        self._fields, self._meta = (
            document.get(RECORD_ROOT, type=Map),
            document.get(META_ROOT, type=Map),
        )
        changes = self._changes
        self._subscriptions = [
            document._doc.observe(changes.on_transaction),  # yrs' event, not pycrdt's wrapper
            self._fields.integrated.observe_deep(changes.on_fields),
            self._meta.integrated.observe(changes.on_meta),
        ]

    def _accepted(self, update: bytes) -> None:
        self._since.append(update)
        self._since_bytes += len(update)
        if self._since_bytes > max(4096, len(self._snapshot)):  # amortised: O(1) per byte
            self._snapshot = self.document.get_update()
            self._since.clear()
            self._since_bytes = 0

    def _rebuild(self) -> None:
        """The document as it was before the refused update: snapshot, then what came since."""
        self.close()
        document = document_from_state(self._snapshot, client_id=self._client_id)
        for update in self._since:
            document.apply_update(update)
        self._open(document)

    def _check_changes(self, changes: _Changes, *, creating: bool) -> tuple[View, bool]:
        """The view after the changes, or SchemaViolation; with `creating`, the record's
        first write must set every required field (`check_created`)."""
        doc_id, collection = self.doc_id, self.collection
        after = dict(self._view)
        for name, value in changes.values.items():
            spec = collection.field(name, doc_id)
            if value is _REMOVED:
                if spec.required and after[name] is not None:
                    raise SchemaViolation(doc_id, f"{name} is required and cannot be removed")
                after[name] = None
            else:  # plain: see `_Changes.on_fields`
                after[name] = _check_plain_value(spec, value, doc_id)
        if changes.read_back:
            fields = self._fields
            with self.document.transaction():
                for name in changes.read_back:
                    spec = collection.field(name, doc_id)
                    value = fields.get(name)
                    after[name] = _check_stored_value(spec, value, doc_id)
        deleted = self._is_deleted
        for key, value in changes.meta.items():
            if key != DELETED_KEY or value is not True:
                shown = None if value is _REMOVED else value
                raise SchemaViolation(
                    doc_id,
                    f"meta may only hold deleted=true (a delete is final), got {key}={shown!r}",
                )
            deleted = True
        if (
            creating
            and not self._has_content
            and collection.required
            and has_content(self.document)
        ):
            check_created(collection, doc_id, after)
        return after, deleted


def _apply_in_one_transaction(
    document: Doc[Any], update: bytes, *, vector_before: bool
) -> tuple[bytes, bytes, int]:
    """Apply `update` in one transaction: the state vector before it (if asked: b"" if not),
    the state vector after it, and the number of roots after it.

    Straight on pycrdt's binding of yrs (`Doc._doc`, typed in `pycrdt/_pycrdt.pyi`): on a
    record, its Python wrappers cost as much as the work. The observers fire on commit,
    before this returns; like pycrdt's own transactions, it commits even when apply fails.
    """
    binding = document._doc
    transaction = binding.create_transaction()
    try:
        before = binding.get_state(transaction) if vector_before else b""
        binding.apply_update(transaction, update)
        return before, binding.get_state(transaction), len(binding.roots(transaction))
    finally:
        transaction.commit()
        transaction.drop()
