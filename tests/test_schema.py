"""The schema: field kinds, JSON value rules, and schema files."""

from __future__ import annotations

from pathlib import Path

import pytest

from crdt_sync.errors import ConfigError, SchemaViolation, UnknownCollection
from crdt_sync.schema import DEFAULT_SCHEMA, FieldKind, load_schema

deals = DEFAULT_SCHEMA.collection("deals")
tasks = DEFAULT_SCHEMA.collection("tasks")


def test_the_crm_default_has_contacts_deals_and_tasks() -> None:
    assert set(DEFAULT_SCHEMA.collections) == {"contacts", "deals", "tasks"}
    assert deals.fields["stage"].choices == ("lead", "qualified", "proposal", "won", "lost")
    assert deals.fields["notes"].kind is FieldKind.TEXT
    assert tasks.fields["deal_id"].target == "deals"
    assert DEFAULT_SCHEMA.collection("contacts").required == ("name",)


def test_unknown_collection_is_refused_with_the_known_ones() -> None:
    with pytest.raises(UnknownCollection, match=r"^invoices/1: unknown collection 'invoices'"):
        DEFAULT_SCHEMA.collection("invoices", "invoices/1")


def test_a_number_below_its_minimum_is_refused_with_what_came() -> None:
    with pytest.raises(SchemaViolation, match=r"^deals/7: amount must be a number >= 0, got -5"):
        deals.fields["amount"].coerce(-5, "deals/7")
    with pytest.raises(SchemaViolation, match=r"amount must be a finite number, got 'ten'"):
        deals.fields["amount"].coerce("ten", "deals/7")
    with pytest.raises(SchemaViolation, match="finite number"):
        deals.fields["amount"].coerce(True, "deals/7")


def test_currency_is_a_three_letter_code() -> None:
    assert deals.fields["currency"].coerce("EUR", "deals/7") == "EUR"
    with pytest.raises(SchemaViolation, match="currency must match"):
        deals.fields["currency"].coerce("euro", "deals/7")


def test_dates_must_be_real_calendar_days() -> None:
    assert deals.fields["close_date"].coerce("2026-02-28", "d/1") == "2026-02-28"
    for bad in ("2026-02-30", "28/02/2026", 20260228):
        with pytest.raises(SchemaViolation, match="close_date"):
            deals.fields["close_date"].coerce(bad, "d/1")


def test_datetimes_are_normalised_to_utc_and_accept_epoch_milliseconds() -> None:
    due = tasks.fields["due_at"]
    assert due.coerce("2026-11-23T10:00:00+02:00", "t/1") == "2026-11-23T08:00:00.000Z"
    assert due.coerce("2026-11-23T08:00:00Z", "t/1") == "2026-11-23T08:00:00.000Z"
    assert due.coerce(1_795_420_800_000, "t/1") == "2026-11-23T08:00:00.000Z"
    with pytest.raises(SchemaViolation, match="must carry a UTC offset"):
        due.coerce("2026-11-23T08:00:00", "t/1")
    with pytest.raises(SchemaViolation, match="epoch milliseconds"):
        due.coerce(-1, "t/1")


def test_null_clears_an_optional_field_but_not_a_required_one() -> None:
    assert deals.fields["stage"].coerce(None, "d/1") is None
    with pytest.raises(SchemaViolation, match="title is required and cannot be null"):
        deals.fields["title"].coerce(None, "d/1")
    with pytest.raises(SchemaViolation, match="title is required and cannot be empty"):
        deals.fields["title"].coerce("  ", "d/1")


def test_enum_and_reference_values_are_checked() -> None:
    with pytest.raises(SchemaViolation, match="stage must be one of lead, qualified"):
        deals.fields["stage"].coerce("maybe", "d/1")
    with pytest.raises(SchemaViolation, match="contact_id must be the id of a contacts record"):
        deals.fields["contact_id"].coerce("no spaces allowed", "d/1")


def test_a_toml_schema_file_declares_collections(tmp_path: Path) -> None:
    path = tmp_path / "schema.toml"
    path.write_text(
        '[collections.visits]\ntitle = "place"\n'
        'fields.place = { kind = "string", required = true }\n'
        'fields.rating = { kind = "enum", choices = ["good", "bad"] }\n'
        'fields.when = "datetime"\n'
    )
    schema = load_schema(path)
    visits = schema.collection("visits")
    assert visits.title_field == "place"
    assert visits.fields["when"].kind is FieldKind.DATETIME
    assert visits.required == ("place",)


def test_a_json_schema_file_is_read_too(tmp_path: Path) -> None:
    path = tmp_path / "schema.json"
    path.write_text('{"collections": {"notes": {"fields": {"body": {"kind": "text"}}}}}')
    assert load_schema(path).collection("notes").fields["body"].is_text


def test_a_broken_toml_file_is_refused_naming_the_line(tmp_path: Path) -> None:
    path = tmp_path / "schema.toml"
    path.write_text('[collections.visits]\nfields.place = { kind = "string"\n')
    with pytest.raises(ConfigError, match=r"line 2"):
        load_schema(path)


def test_a_broken_json_file_is_refused_naming_the_line(tmp_path: Path) -> None:
    path = tmp_path / "schema.json"
    path.write_text('{"collections": {\n  "notes": {,}\n}}')
    with pytest.raises(ConfigError, match=r"line 2, column"):
        load_schema(path)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('[collections.v]\nfields.a = { kind = "money" }\n', r"collections\.v\.fields\.a\.kind"),
        ('[collections.v]\nfields.a = { kind = "enum" }\n', r"collections\.v\.fields\.a\.choices"),
        (
            '[collections.v]\nfields.a = { kind = "reference", target = "nope" }\n',
            r"collections\.v\.fields\.a\.target: no collection 'nope'",
        ),
        ('[collections.v]\ntitle = "b"\nfields.a = "string"\n', r"collections\.v\.title"),
        ('[collections.v]\nfields.a = { kind = "string", colour = 1 }\n', r"fields\.a\.colour"),
        ('[collections.V]\nfields.a = "string"\n', r"collections\.V"),
        ('[collections.v]\nfields.id = "string"\n', r"fields\.id"),
        ("[other]\n", r"'collections'"),
    ],
)
def test_a_wrong_schema_file_is_refused_naming_the_key(tmp_path: Path, text: str, key: str) -> None:
    path = tmp_path / "schema.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=key):
        load_schema(path)


def test_a_missing_schema_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read schema file"):
        load_schema(tmp_path / "nope.toml")
