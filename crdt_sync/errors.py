"""The one exception hierarchy of crdt-sync; every layer raises these.

    CrdtSyncError
    ├── ProtocolError        a peer broke the wire protocol (malformed frame, wrong order)
    │   ├── UnexpectedMessage  a legal frame in a state that does not allow it
    │   └── BadRequest       (server) a REST request of the wrong shape: malformed JSON or CBOR
    ├── DocumentError        about one document; carries doc_id
    │   ├── UnknownCollection
    │   ├── RecordNotFound
    │   ├── RecordExists     a create for an id that is taken (or was, by a deleted record)
    │   ├── SchemaViolation  wrong type, missing field, bad id
    │   └── InvalidUpdate    bytes that are not a valid CRDT update
    ├── LimitExceeded        a message, document or connection limit was reached
    ├── AuthError            no token, a wrong one, or a role that may not do this
    │   └── Forbidden
    ├── StoreError           not a store, newer schema, disk trouble
    │   ├── StoreInUse       another server already serves this store file
    │   ├── NameTaken        a name that must be unique is taken (a token's)
    │   └── KeyAlreadyUsed   an idempotency key that another request (on any node) used
    ├── AddressUnavailable   (server) cannot listen there: the port is taken, or not allowed
    ├── ConfigError          a schema file that does not parse; names the line or key
    ├── ArchiveError         a file that is not a crdt-sync archive, or a damaged one
    └── ConnectionFailed     (client) the server could not be reached or the link dropped
        └── WebsocketUnavailable  the websocket upgrade was refused: use the REST fallback

Each class has a stable ``code`` for programs; the message is for people and says what was
expected, what came, and where (``deals/7: amount must be a number >= 0, got 'ten'``).
"""

from __future__ import annotations


class CrdtSyncError(Exception):
    """Base of every error crdt-sync raises on purpose."""

    code = "crdt_sync_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ProtocolError(CrdtSyncError):
    code = "protocol_error"


class UnexpectedMessage(ProtocolError):
    code = "unexpected_message"


class BadRequest(ProtocolError):
    """A request whose shape is wrong: malformed JSON or CBOR, a missing or mistyped key."""

    code = "bad_request"


class DocumentError(CrdtSyncError):
    """An error about one document: the message is prefixed with its id."""

    code = "document_error"

    def __init__(self, doc_id: str, message: str) -> None:
        super().__init__(f"{doc_id}: {message}" if doc_id else message)
        self.doc_id = doc_id
        self.reason = message


class UnknownCollection(DocumentError):
    code = "unknown_collection"


class RecordNotFound(DocumentError):
    code = "record_not_found"


class SchemaViolation(DocumentError):
    code = "schema_violation"

    # The seq of the update that undid the refused write, when the live doors compensated
    # it (the refused update was kept and overwritten: see `LiveRecord.apply`); else None.
    compensated_seq: int | None = None
    # What a compensated write tried to set (field -> value as the update gave it), for the
    # admin's list of refused writes; None when not known.
    tried_values: dict[str, object] | None = None


class InvalidUpdate(DocumentError):
    code = "invalid_update"


class LimitExceeded(CrdtSyncError):
    code = "limit_exceeded"


class AuthError(CrdtSyncError):
    code = "unauthorized"


class Forbidden(AuthError):
    code = "forbidden"


class StoreError(CrdtSyncError):
    code = "store_error"


class StoreInUse(StoreError):
    """Another `crdt-sync serve` holds this store: two servers on one file would both hand out
    seqs and each fan out only its own writes to its own peers."""

    code = "store_in_use"


class NameTaken(StoreError):
    code = "name_taken"


class AddressUnavailable(CrdtSyncError):
    code = "address_unavailable"


class KeyAlreadyUsed(StoreError):
    """Raised for a batch whose idempotency key is taken; nothing of it was stored."""

    code = "idempotency_key_used"


class ConfigError(CrdtSyncError):
    code = "config_error"


class ArchiveError(CrdtSyncError):
    code = "archive_error"


class RecordExists(DocumentError):
    code = "record_exists"


class ConnectionFailed(CrdtSyncError):
    """The client could not reach the server, or the connection ended before the work was done.

    Worth retrying (with backoff): nothing the client did was wrong.
    """

    code = "connection_failed"


class WebsocketUnavailable(ConnectionFailed):
    """The server (or a proxy before it) answered the websocket upgrade with plain HTTP."""

    code = "websocket_unavailable"
