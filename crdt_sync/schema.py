"""Collections and field kinds: what a record may hold, and how JSON values are checked (pure).

A field's `coerce` turns a JSON value from any door (REST, CLI, a replica) into the one form
stored in the record document, or raises SchemaViolation naming the document and the field.
Schema files (TOML or JSON) are read by `load_schema`, which names the line or key at fault.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from .errors import ConfigError, SchemaViolation, UnknownCollection
from .ids import COLLECTION_NAME, RECORD_ID

# Epoch milliseconds from year 1970 to 9999: larger numbers are not plausible timestamps.
_MAX_EPOCH_MS = 253_402_300_799_999
_FIELD_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")
RESERVED_FIELDS = frozenset({"id", "_status", "_changed"})


class FieldKind(StrEnum):
    STRING = "string"
    TEXT = "text"  # collaborative Y.Text, merged character by character
    NUMBER = "number"
    BOOL = "bool"
    DATE = "date"
    DATETIME = "datetime"
    ENUM = "enum"
    REFERENCE = "reference"


def _describe(value: Any) -> str:
    if isinstance(value, int) and value.bit_length() > 200:
        # Not repr(): CPython refuses to print an integer of over 4,300 digits.
        return f"an integer of about {value.bit_length() * 30103 // 100000 + 1} digits"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


@dataclass(frozen=True, slots=True)
class Field:
    name: str
    kind: FieldKind
    required: bool = False
    choices: tuple[str, ...] = ()  # enum
    target: str | None = None  # reference: the collection referred to
    minimum: float | None = None  # number
    pattern: str | None = None  # string: a regular expression the whole value must match
    max_length: int = 10_000  # string and text, in characters (DEFAULT_MAX_LENGTH)

    @property
    def is_text(self) -> bool:
        return self.kind is FieldKind.TEXT

    def coerce(self, value: Any, doc_id: str) -> str | float | bool | None:
        """The stored form of a JSON `value`; None clears the field (refused when required)."""
        if value is None:
            if self.required:
                raise SchemaViolation(doc_id, f"{self.name} is required and cannot be null")
            return None
        try:
            return _COERCERS[self.kind](self, value)
        except _Bad as bad:
            raise SchemaViolation(doc_id, f"{self.name} {bad}, got {_describe(value)}") from None


class _Bad(Exception):
    """Internal: what a coercer expected; Field.coerce adds the field name and the value."""


def _string(f: Field, value: Any) -> str:
    if not isinstance(value, str):
        raise _Bad("must be a string")
    if len(value) > f.max_length:
        raise _Bad(f"must be at most {f.max_length} characters")
    _check_unicode(value)
    if f.required and not value.strip():
        raise _Bad("is required and cannot be empty")
    if f.pattern is not None and not re.fullmatch(f.pattern, value):
        raise _Bad(f"must match {f.pattern}")
    return value


def _number(f: Field, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Bad("must be a finite number")
    try:
        number = float(value)  # numbers are stored as doubles
    except OverflowError:
        raise _Bad("must be a finite number (this one is beyond a double's range)") from None
    if not math.isfinite(number):
        raise _Bad("must be a finite number")
    if f.minimum is not None and number < f.minimum:
        raise _Bad(f"must be a number >= {f.minimum:g}")
    return number


def _bool(f: Field, value: Any) -> bool:
    if not isinstance(value, bool):
        raise _Bad("must be true or false")
    return value


def _date(f: Field, value: Any) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        raise _Bad("must be a date YYYY-MM-DD")
    try:
        date.fromisoformat(value)
    except ValueError:
        raise _Bad("must be a real calendar date YYYY-MM-DD") from None
    return value


def _datetime(f: Field, value: Any) -> str:
    """ISO 8601 with an offset, or epoch milliseconds (what mobile databases store)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        if not math.isfinite(value) or not 0 <= value <= _MAX_EPOCH_MS:
            raise _Bad("must be epoch milliseconds between 1970 and 9999")
        moment = datetime.fromtimestamp(value / 1000, tz=UTC)
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            raise _Bad("must be an ISO 8601 datetime with an offset") from None
        if moment.tzinfo is None:
            raise _Bad("must carry a UTC offset (e.g. Z or +02:00)")
    else:
        raise _Bad("must be an ISO 8601 datetime string or epoch milliseconds")
    try:
        return format_datetime(moment)
    except OverflowError:  # 0001-01-01T00:00+01:00 is before year 1 in UTC
        raise _Bad("must be a moment between 0001-01-01 and 9999-12-31 in UTC") from None


def format_datetime(moment: datetime) -> str:
    """The one stored form: UTC, milliseconds, trailing Z (sorts as text)."""
    utc = moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def _enum(f: Field, value: Any) -> str:
    if not isinstance(value, str) or value not in f.choices:
        raise _Bad(f"must be one of {', '.join(f.choices)}")
    return value


def _reference(f: Field, value: Any) -> str:
    if not isinstance(value, str) or not RECORD_ID.fullmatch(value):
        raise _Bad(f"must be the id of a {f.target} record ([A-Za-z0-9_-], 1-64 characters)")
    return value


def _text(f: Field, value: Any) -> str:
    if not isinstance(value, str):
        raise _Bad("must be a string")
    if len(value) > f.max_length:
        raise _Bad(f"must be at most {f.max_length} characters")
    _check_unicode(value)
    return value


def _check_unicode(value: str) -> None:
    """A lone surrogate cannot be UTF-8: pycrdt panics on it, and no peer could decode it."""
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise _Bad(f"must be Unicode text: a lone surrogate at character {exc.start}") from None


_COERCERS: dict[FieldKind, Callable[[Field, Any], str | float | bool]] = {
    FieldKind.STRING: _string,
    FieldKind.TEXT: _text,
    FieldKind.NUMBER: _number,
    FieldKind.BOOL: _bool,
    FieldKind.DATE: _date,
    FieldKind.DATETIME: _datetime,
    FieldKind.ENUM: _enum,
    FieldKind.REFERENCE: _reference,
}


@dataclass(frozen=True, slots=True)
class Collection:
    name: str
    fields: Mapping[str, Field]
    title_field: str

    def field(self, name: str, doc_id: str) -> Field:
        found = self.fields.get(name)
        if found is None:
            known = ", ".join(self.fields)
            raise SchemaViolation(doc_id, f"unknown field {name!r} (fields: {known})")
        return found

    @property
    def required(self) -> tuple[str, ...]:
        return tuple(name for name, f in self.fields.items() if f.required)


@dataclass(frozen=True, slots=True)
class Schema:
    collections: Mapping[str, Collection] = field(default_factory=dict)

    def collection(self, name: str, doc_id: str | None = None) -> Collection:
        found = self.collections.get(name)
        if found is None:
            known = ", ".join(self.collections)
            raise UnknownCollection(doc_id or name, f"unknown collection {name!r} (known: {known})")
        return found


def view_problem(schema: Schema, doc_id: str, view: Mapping[str, Any]) -> str | None:
    """Why a stored record's JSON view does not satisfy `schema` (the first reason), or None."""
    collection_name = doc_id.partition("/")[0]
    collection = schema.collections.get(collection_name)
    if collection is None:
        return f"{doc_id}: unknown collection {collection_name!r}"
    for name, value in view.items():
        if name == "id":
            continue
        spec = collection.fields.get(name)
        if spec is None:
            if value is not None:
                return f"{doc_id}: unknown field {name!r}"
            continue
        try:
            spec.coerce(value, doc_id)
        except SchemaViolation as exc:
            return exc.message
    for name in collection.required:
        if view.get(name) is None:
            return f"{doc_id}: {name} is required"
    return None


def _f(name: str, kind: str, **options: Any) -> tuple[str, Field]:
    return name, Field(name, FieldKind(kind), **options)


DEFAULT_SCHEMA = Schema(
    {
        "contacts": Collection(
            "contacts",
            dict(
                [
                    _f("name", "string", required=True),
                    _f("email", "string"),
                    _f("phone", "string"),
                    _f("company", "string"),
                    _f("notes", "text"),
                ]
            ),
            title_field="name",
        ),
        "deals": Collection(
            "deals",
            dict(
                [
                    _f("title", "string", required=True),
                    _f("amount", "number", minimum=0),
                    _f("currency", "string", pattern="[A-Z]{3}"),
                    _f("stage", "enum", choices=("lead", "qualified", "proposal", "won", "lost")),
                    _f("contact_id", "reference", target="contacts"),
                    _f("close_date", "date"),
                    _f("notes", "text"),
                ]
            ),
            title_field="title",
        ),
        "tasks": Collection(
            "tasks",
            dict(
                [
                    _f("title", "string", required=True),
                    _f("done", "bool"),
                    _f("due_at", "datetime"),
                    _f("contact_id", "reference", target="contacts"),
                    _f("deal_id", "reference", target="deals"),
                    _f("notes", "text"),
                ]
            ),
            title_field="title",
        ),
    }
)


def load_schema(path: str | Path) -> Schema:
    """Read a schema file (.toml or .json). Raises ConfigError naming the line or the key.

    Shape (TOML shown; JSON is the same tree)::

        [collections.contacts]
        title = "name"
        fields.name = { kind = "string", required = true }
        fields.notes = { kind = "text" }
    """
    import tomllib  # here: only a schema file needs it, not every server start

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read schema file: {exc.strerror}") from exc
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: schema file is not UTF-8 text") from None
    try:
        if path.suffix.lower() == ".json":
            tree = json.loads(text)
        else:
            tree = tomllib.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: line {exc.lineno}, column {exc.colno}: {exc.msg}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    return schema_from_tree(tree, where=str(path))


def schema_from_tree(tree: Any, *, where: str = "schema") -> Schema:
    """Build a Schema from parsed TOML/JSON; ConfigError names the offending key path.

    A file adds its collections to the built-in CRM ones (one of the same name replaces that
    one), unless it says `replace = true`: then its collections are the whole schema.
    """
    if not isinstance(tree, dict) or not isinstance(tree.get("collections"), dict):
        raise ConfigError(f"{where}: expected a table 'collections' with one entry per collection")
    unknown = set(tree) - {"collections", "replace"}
    if unknown:
        raise ConfigError(f"{where}: unknown key {min(unknown)!r} (expected collections, replace)")
    replace = tree.get("replace", False)
    if not isinstance(replace, bool):
        raise ConfigError(f"{where}: replace: expected true or false, got {replace!r}")
    declared = {}
    for name, spec in tree["collections"].items():
        declared[name] = _collection_from_tree(name, spec, f"{where}: collections.{name}")
    if not declared:
        raise ConfigError(f"{where}: 'collections' declares no collection")
    collections = declared if replace else {**DEFAULT_SCHEMA.collections, **declared}
    for collection in collections.values():
        for f in collection.fields.values():
            if f.target is not None and f.target not in collections:
                raise ConfigError(
                    f"{where}: collections.{collection.name}.fields.{f.name}.target: "
                    f"no collection {f.target!r}"
                )
    return Schema(collections)


def schema_to_tree(schema: Schema) -> dict[str, Any]:
    """The whole schema as a tree `schema_from_tree` reads back to an equal one (`replace`)."""
    return {
        "replace": True,
        "collections": {
            collection.name: {
                "title": collection.title_field,
                "fields": {f.name: _field_to_tree(f) for f in collection.fields.values()},
            }
            for collection in schema.collections.values()
        },
    }


def schema_to_json(schema: Schema) -> str:
    """The schema as JSON, collections and fields in their declared order (it is kept)."""
    return json.dumps(schema_to_tree(schema), separators=(",", ":"))


def _field_to_tree(f: Field) -> dict[str, Any]:
    tree: dict[str, Any] = {"kind": f.kind.value}
    if f.required:
        tree["required"] = True
    if f.choices:
        tree["choices"] = list(f.choices)
    if f.target is not None:
        tree["target"] = f.target
    if f.minimum is not None:
        tree["minimum"] = f.minimum
    if f.pattern is not None:
        tree["pattern"] = f.pattern
    if f.max_length != DEFAULT_MAX_LENGTH:
        tree["max_length"] = f.max_length
    return tree


def _collection_from_tree(name: str, spec: Any, key: str) -> Collection:
    if not COLLECTION_NAME.fullmatch(name):
        raise ConfigError(f"{key}: a collection name is lowercase [a-z0-9_], 1-64 characters")
    if not isinstance(spec, dict) or not isinstance(spec.get("fields"), dict) or not spec["fields"]:
        raise ConfigError(f"{key}.fields: expected a table of at least one field")
    fields = {
        fname: _field_from_tree(fname, fspec, f"{key}.fields.{fname}")
        for fname, fspec in spec["fields"].items()
    }
    title = spec.get("title", next(iter(fields)))
    if title not in fields:
        raise ConfigError(f"{key}.title: no field {title!r}")
    unknown = set(spec) - {"fields", "title"}
    if unknown:
        raise ConfigError(f"{key}: unknown key {sorted(unknown)[0]!r} (expected fields, title)")
    return Collection(name, fields, title_field=title)


DEFAULT_MAX_LENGTH = 10_000
_FIELD_KEYS = {"kind", "required", "choices", "target", "minimum", "pattern", "max_length"}


def _field_from_tree(name: str, spec: Any, key: str) -> Field:
    if not _FIELD_NAME.fullmatch(name) or name in RESERVED_FIELDS:
        raise ConfigError(f"{key}: a field name is lowercase [a-z0-9_], not id/_status/_changed")
    if isinstance(spec, str):
        spec = {"kind": spec}
    if not isinstance(spec, dict):
        raise ConfigError(f"{key}: expected a table with at least 'kind'")
    unknown = set(spec) - _FIELD_KEYS
    if unknown:
        raise ConfigError(
            f"{key}.{sorted(unknown)[0]}: unknown key (expected {sorted(_FIELD_KEYS)})"
        )
    try:
        kind = FieldKind(str(spec.get("kind")))
    except ValueError:
        kinds = ", ".join(k.value for k in FieldKind)
        raise ConfigError(
            f"{key}.kind: expected one of {kinds}, got {spec.get('kind')!r}"
        ) from None
    choices = spec.get("choices", [])
    if kind is FieldKind.ENUM and (
        not isinstance(choices, list) or not choices or not all(isinstance(c, str) for c in choices)
    ):
        raise ConfigError(f"{key}.choices: an enum needs a list of strings")
    if kind is FieldKind.REFERENCE and not isinstance(spec.get("target"), str):
        raise ConfigError(f"{key}.target: a reference needs the name of its target collection")
    for option, types in (
        ("required", bool),
        ("minimum", int | float),
        ("pattern", str),
        ("max_length", int),
    ):
        if option in spec and not isinstance(spec[option], types):
            raise ConfigError(f"{key}.{option}: wrong type {type(spec[option]).__name__}")
    if "pattern" in spec:
        try:
            re.compile(spec["pattern"])
        except re.error as exc:
            raise ConfigError(f"{key}.pattern: not a regular expression: {exc}") from None
    return Field(
        name,
        kind,
        required=spec.get("required", False),
        choices=tuple(choices),
        target=spec.get("target"),
        minimum=spec.get("minimum"),
        pattern=spec.get("pattern"),
        max_length=spec.get("max_length", DEFAULT_MAX_LENGTH),
    )
