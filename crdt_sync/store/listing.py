"""Listing one collection's records for the admin panel: filter, search, sort, keyset pages (I/O).

The store knows no schema: the server checks field names and turns values into their stored
JSON form before building a `RecordQuery`. Filters and sorts read the materialized JSON view
with SQLite's `json_extract`; the collection is one range of the records' primary key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .reads import RECORD_COLUMNS, Query

_FIELD = re.compile(r"[a-z][a-z0-9_]{0,63}")
ID_SORT = "id"  # sort by record id: the primary key order

Scalar = str | int | float | bool | None


@dataclass(frozen=True, slots=True)
class RecordQuery:
    """One page of a collection's records.

    `after` is the (sort value, record id) of the last record of the previous page; records
    whose sort value is null come last in both directions.
    """

    collection: str
    equals: tuple[tuple[str, Scalar], ...] = ()  # field == value (a JSON scalar)
    search: str | None = None  # case-insensitive substring of any of `search_fields`
    search_fields: tuple[str, ...] = ()
    sort: str = ID_SORT  # a field name, or "id"
    is_descending: bool = False
    after: tuple[Scalar, str] | None = None
    include_deleted: bool = False
    only_deleted: bool = False  # the admin panel's "deleted" view
    limit: int = 50

    def __post_init__(self) -> None:
        names = [name for name, _ in self.equals] + list(self.search_fields)
        if self.sort != ID_SORT:
            names.append(self.sort)
        for name in names:
            if not _FIELD.fullmatch(name):
                raise ValueError(f"not a field name: {name!r}")


def list_query(query: RecordQuery) -> Query:
    where = ["doc_id > ?", "doc_id < ?"]  # "name/" < every doc id of the collection < "name0"
    params: list[Any] = [f"{query.collection}/", f"{query.collection}0"]
    if query.only_deleted:
        where.append("is_deleted = 1")
    elif not query.include_deleted:
        where.append("is_deleted = 0")
    for name, value in query.equals:
        where.append("json_extract(view, ?) IS ?")
        params += [_path(name), value]
    if query.search and query.search_fields:
        pattern = "%" + re.sub(r"([\\%_])", r"\\\1", query.search) + "%"
        where.append(
            "("
            + " OR ".join("json_extract(view, ?) LIKE ? ESCAPE '\\'" for _ in query.search_fields)
            + ")"
        )
        for name in query.search_fields:
            params += [_path(name), pattern]
    order = _order(query, where, params)
    sql = (
        f"SELECT {RECORD_COLUMNS} FROM records WHERE {' AND '.join(where)} ORDER BY {order} LIMIT ?"
    )
    return sql, (*params, query.limit)


def _order(query: RecordQuery, where: list[str], params: list[Any]) -> str:
    """The ORDER BY clause; adds the keyset condition for `after` to `where`."""
    direction, beyond = ("DESC", "<") if query.is_descending else ("ASC", ">")
    if query.sort == ID_SORT:
        if query.after is not None:
            where.append(f"doc_id {beyond} ?")
            params.append(f"{query.collection}/{query.after[1]}")
        return f"doc_id {direction}"
    key = "json_extract(view, ?)"
    if query.after is not None:
        value, record_id = query.after
        after_doc = f"{query.collection}/{record_id}"
        if value is None:
            where.append(f"{key} IS NULL AND doc_id {beyond} ?")
            params += [_path(query.sort), after_doc]
        else:
            where.append(
                f"(({key} IS NOT NULL AND ({key} {beyond} ? OR ({key} = ? AND doc_id {beyond} ?)))"
                f" OR {key} IS NULL)"
            )
            path = _path(query.sort)
            params += [path, path, value, path, value, after_doc, path]
    # The ORDER BY is the last clause with parameters, so its two go after every WHERE one.
    params += [_path(query.sort), _path(query.sort)]
    return f"{key} IS NULL, {key} {direction}, doc_id {direction}"


def _path(name: str) -> str:
    return f'$."{name}"'
