"""Pydantic models generated from the schema, so `/openapi.json` describes every collection.

They document; they do not validate. Every door checks values with the schema's own
`Field.coerce` (one rule for REST, websockets and the CLI), so the models only have to say
the same thing: a field's type, whether it is required or nullable, its choices and limits.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from ..schema import Collection, FieldKind
from ..schema import Field as SchemaField

RECORD_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"


def model_prefix(collection: Collection) -> str:
    """`contacts` -> `Contacts`, `site_visits` -> `SiteVisits`."""
    return "".join(part.capitalize() for part in collection.name.split("_"))


def _stored_type(spec: SchemaField) -> Any:
    """The type of a field's value as records are served."""
    if spec.kind is FieldKind.ENUM:
        return Literal[spec.choices]
    return {
        FieldKind.STRING: str,
        FieldKind.TEXT: str,
        FieldKind.NUMBER: float,
        FieldKind.BOOL: bool,
        FieldKind.DATE: date,
        FieldKind.DATETIME: datetime,
        FieldKind.REFERENCE: str,
    }[spec.kind]


def _input_type(spec: SchemaField) -> Any:
    if spec.kind is FieldKind.DATETIME:
        return datetime | float  # ISO 8601 with an offset, or epoch milliseconds
    return _stored_type(spec)


def _describe(spec: SchemaField) -> dict[str, Any]:
    """The field's constraints, as JSON Schema keywords and a description."""
    extra: dict[str, Any] = {}
    notes = {
        FieldKind.TEXT: "collaborative text, merged character by character",
        FieldKind.DATETIME: "ISO 8601 with an offset or epoch milliseconds; served as UTC",
        FieldKind.REFERENCE: f"the id of a {spec.target} record",
    }
    if spec.kind in (FieldKind.STRING, FieldKind.TEXT):
        extra["maxLength"] = spec.max_length
    if spec.pattern is not None:
        extra["pattern"] = f"^(?:{spec.pattern})$"
    if spec.kind is FieldKind.REFERENCE:
        extra["pattern"] = RECORD_ID_PATTERN
    if spec.minimum is not None:
        extra["minimum"] = spec.minimum
    return {"description": notes.get(spec.kind), "json_schema_extra": extra or None}


def record_model(collection: Collection) -> type[BaseModel]:
    """A record as served: `id` and every field (optional ones may be null)."""
    fields: dict[str, Any] = {"id": (str, Field(pattern=RECORD_ID_PATTERN))}
    for name, spec in collection.fields.items():
        kind = _stored_type(spec)
        fields[name] = (
            (kind, Field(**_describe(spec)))
            if spec.required
            else (kind | None, Field(default=None, **_describe(spec)))
        )
    return create_model(f"{model_prefix(collection)}Record", **fields)


def create_body_model(collection: Collection) -> type[BaseModel]:
    """POST body: required fields required; `id` optional (the server makes one)."""
    fields: dict[str, Any] = {
        "id": (
            str | None,
            Field(
                default=None,
                pattern=RECORD_ID_PATTERN,
                description="client-made id; omit it and the server makes one",
            ),
        )
    }
    for name, spec in collection.fields.items():
        kind = _input_type(spec)
        fields[name] = (
            (kind, Field(**_describe(spec)))
            if spec.required
            else (kind | None, Field(default=None, **_describe(spec)))
        )
    return create_model(f"{model_prefix(collection)}Create", __config__=_FORBID, **fields)


def patch_body_model(collection: Collection) -> type[BaseModel]:
    """PATCH body: any subset of the fields; null clears an optional one."""
    fields: dict[str, Any] = {}
    for name, spec in collection.fields.items():
        kind = _input_type(spec) if spec.required else _input_type(spec) | None
        fields[name] = (kind, Field(default=None, **_describe(spec)))
    return create_model(f"{model_prefix(collection)}Patch", __config__=_FORBID, **fields)


def page_model(collection: Collection, record: type[BaseModel]) -> type[BaseModel]:
    return create_model(
        f"{model_prefix(collection)}Page",
        items=(list[record], ...),  # type: ignore[valid-type]
        next=(str | None, Field(description="pass as ?cursor= for the next page; null at the end")),
    )


_FORBID = ConfigDict(extra="forbid")


class ErrorDetail(BaseModel):
    code: str = Field(description="stable, for programs: schema_violation, unknown_collection...")
    message: str = Field(description="for people: what was expected, what came, and where")
    details: Any = None


class ErrorBody(BaseModel):
    error: ErrorDetail


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": description}
    for status, description in (
        (400, "malformed request (JSON, CBOR, base64, cursor, parameters)"),
        (401, "missing, unknown or revoked token"),
        (403, "the token's role may not do this"),
        (404, "unknown collection or record"),
        (413, "body or update over the size limit"),
        (422, "a value breaks the schema"),
    )
}


class TableChanges(BaseModel):
    created: list[dict[str, Any]] = Field(default=[], description="raw rows")
    updated: list[dict[str, Any]] = Field(default=[], description="raw rows; _changed narrows")
    deleted: list[str] = Field(default=[], description="record ids")


class CrdtUpdate(BaseModel):
    doc: str = Field(description="collection/record_id")
    update: str = Field(description="a Yjs update, base64 (raw bytes in a CBOR body)")


class PushBody(BaseModel):
    """WatermelonDB's push body, or CRDT updates, or both."""

    changes: dict[str, TableChanges] | None = None
    lastPulledAt: float | None = None
    updates: list[CrdtUpdate] | None = None
    batch_id: str | None = Field(default=None, description="like the Idempotency-Key header")


class Rejection(BaseModel):
    collection: str
    id: str
    code: str
    message: str


class Applied(BaseModel):
    collection: str
    id: str
    action: Literal["created", "updated", "deleted", "unchanged", "ignored"]
    seq: int | None
    changed: list[str]


class PushAnswer(BaseModel):
    experimentalRejectedIds: dict[str, list[str]]
    rejected: list[Rejection]
    applied: list[Applied]
    cursor: int = Field(description="the log cursor after this batch")


class PullChanges(BaseModel):
    created: list[dict[str, Any]]
    updated: list[dict[str, Any]]
    deleted: list[str]


class PullAnswer(BaseModel):
    changes: dict[str, PullChanges]
    timestamp: int = Field(gt=0, description="pass as since= to the next incremental pull")
    next: str | int | None = Field(
        description="more to pull: the page token, or since=; null: done"
    )


REQUEST_ONLY_MODELS: tuple[type[BaseModel], ...] = (PushBody,)
