"""CRUD for the admin panel: `/api/{collection}` and `/api/{collection}/{id}` (server layer).

Routes are made per collection from the schema, so `/openapi.json` carries each collection's
own models; every write is an `Engine.patch` / `Engine.delete`, so live subscribers see it.
Reads come from the store's materialized views. Admin tokens only.
"""

from __future__ import annotations

import secrets
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse

from ..engine import Engine
from ..errors import BadRequest, RecordNotFound, SchemaViolation, UnknownCollection
from ..ids import make_doc_id
from ..schema import Collection, FieldKind, Schema
from ..store.base import RecordRow, Store
from ..store.listing import ID_SORT, RecordQuery
from .access import AdminOnly, device_origin
from .bodies import json_object
from .cursors import decode_token, encode_token
from .models import (
    ERROR_RESPONSES,
    create_body_model,
    page_model,
    patch_body_model,
    record_model,
)
from .sync_views import flat_record

LIST_PARAMETERS = frozenset({"q", "sort", "cursor", "limit", "deleted"})
SEARCHED_KINDS = (FieldKind.STRING, FieldKind.TEXT, FieldKind.ENUM, FieldKind.REFERENCE)


def crud_router(schema: Schema) -> tuple[APIRouter, list[type[Any]]]:
    """The CRUD routes of every collection, and the request models to add to the OpenAPI."""
    router = APIRouter()
    request_models: list[type[Any]] = []
    for collection in schema.collections.values():
        request_models += CollectionRoutes(collection).add_to(router)
    _add_unknown_collection_routes(router)
    return router, request_models


class CollectionRoutes:
    def __init__(self, collection: Collection) -> None:
        self.collection = collection
        self.fields = collection.fields

    def add_to(self, router: APIRouter) -> list[type[Any]]:
        name = self.collection.name
        record = record_model(self.collection)
        create, patch = create_body_model(self.collection), patch_body_model(self.collection)
        common: dict[str, Any] = {"tags": [name], "responses": ERROR_RESPONSES}
        router.add_api_route(
            f"/api/{name}",
            self.list_records,
            methods=["GET"],
            response_model=page_model(self.collection, record),
            summary=f"List {name}",
            openapi_extra={"parameters": self._filter_parameters()},
            **common,
        )
        router.add_api_route(
            f"/api/{name}",
            self.create_record,
            methods=["POST"],
            response_model=record,
            status_code=201,
            summary=f"Create a record in {name}",
            openapi_extra=_body(create.__name__),
            **common,
        )
        router.add_api_route(
            f"/api/{name}/{{record_id}}",
            self.get_record,
            methods=["GET"],
            response_model=record,
            summary=f"Get a record of {name}",
            **common,
        )
        router.add_api_route(
            f"/api/{name}/{{record_id}}",
            self.patch_record,
            methods=["PATCH"],
            response_model=record,
            summary=f"Change fields of a record of {name}",
            openapi_extra=_body(patch.__name__),
            **common,
        )
        router.add_api_route(
            f"/api/{name}/{{record_id}}",
            self.delete_record,
            methods=["DELETE"],
            status_code=204,
            response_class=Response,
            summary=f"Delete a record of {name} (a tombstone)",
            **common,
        )
        return [create, patch]

    def _filter_parameters(self) -> list[dict[str, Any]]:
        return [
            {
                "name": name,
                "in": "query",
                "required": False,
                "schema": {"type": "string"},
                "description": f"only records whose {name} equals this ({spec.kind.value})",
            }
            for name, spec in self.collection.fields.items()
        ]

    async def list_records(
        self,
        request: Request,
        who: AdminOnly,
        q: Annotated[str | None, Query(max_length=200, description="text search")] = None,
        sort: Annotated[str, Query(description="a field or id; -field for descending")] = "id",
        cursor: Annotated[str | None, Query(description="the `next` of the previous page")] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 50,
        deleted: Annotated[
            bool, Query(description="list deleted records (tombstones) instead of live ones")
        ] = False,
    ) -> JSONResponse:
        """Filter with `?field=value`, search with `q`, sort, and page with `cursor`."""
        name = self.collection.name
        sort_field, is_descending = sort.removeprefix("-"), sort.startswith("-")
        if sort_field != ID_SORT:
            self.collection.field(sort_field, name)
        query = RecordQuery(
            collection=name,
            equals=self._filters(request),
            search=q or None,
            search_fields=tuple(
                n for n, f in self.collection.fields.items() if f.kind in SEARCHED_KINDS
            ),
            sort=sort_field,
            is_descending=is_descending,
            after=_parse_list_cursor(cursor) if cursor else None,
            only_deleted=deleted,
            limit=limit,
        )
        store: Store = request.app.state.store
        rows = await store.list_records(query)
        next_token = None
        if len(rows) == limit:
            last = rows[-1]
            key = None if sort_field == ID_SORT else last.view.get(sort_field)
            next_token = encode_token([key, last.record_id])
        items = [flat_record(row, self.fields) for row in rows]
        return JSONResponse({"items": items, "next": next_token})

    def _filters(self, request: Request) -> tuple[tuple[str, Any], ...]:
        filters = []
        for key, raw in request.query_params.multi_items():
            if key in LIST_PARAMETERS:
                continue
            spec = self.collection.field(key, self.collection.name)  # SchemaViolation: 422
            filters.append((key, spec.coerce(_typed(spec.kind, key, raw), self.collection.name)))
        return tuple(filters)

    async def create_record(self, request: Request, who: AdminOnly) -> JSONResponse:
        """Create a record; `id` is optional (the server makes one). 409 if the id is taken."""
        body = await json_object(request)
        record_id = body.pop("id", None)
        if record_id is None:
            record_id = secrets.token_urlsafe(12)
        elif not isinstance(record_id, str):
            raise SchemaViolation(self.collection.name, f"id must be a string, got {record_id!r}")
        doc_id = make_doc_id(self.collection.name, record_id)
        result = await _engine(request).patch(
            doc_id, body, origin=device_origin(request, who), creating=True
        )
        return JSONResponse(
            result.view,
            status_code=201,
            headers={"Location": f"/api/{self.collection.name}/{record_id}"},
        )

    async def get_record(self, request: Request, who: AdminOnly, record_id: str) -> JSONResponse:
        row = await self._live_row(request, record_id)
        return JSONResponse(flat_record(row, self.fields))

    async def patch_record(self, request: Request, who: AdminOnly, record_id: str) -> JSONResponse:
        """Change the given fields only; null clears an optional field."""
        body = await json_object(request)
        if "id" in body and body.pop("id") != record_id:
            raise SchemaViolation(f"{self.collection.name}/{record_id}", "id cannot be changed")
        doc_id = make_doc_id(self.collection.name, record_id)
        result = await _engine(request).patch(
            doc_id, body, origin=device_origin(request, who), creating=False
        )
        return JSONResponse(result.view)

    async def delete_record(self, request: Request, who: AdminOnly, record_id: str) -> Response:
        """Tombstone the record; deleting a deleted record again is a no-op."""
        doc_id = make_doc_id(self.collection.name, record_id)
        store: Store = request.app.state.store
        row = await store.get_record(doc_id)
        if row is None:
            raise RecordNotFound(doc_id, "no such record")
        if not row.is_deleted:
            await _engine(request).delete(doc_id, origin=device_origin(request, who))
        return Response(status_code=204)

    async def _live_row(self, request: Request, record_id: str) -> RecordRow:
        doc_id = make_doc_id(self.collection.name, record_id)
        store: Store = request.app.state.store
        row = await store.get_record(doc_id)
        if row is None:
            raise RecordNotFound(doc_id, "no such record")
        if row.is_deleted:
            raise RecordNotFound(doc_id, "record is deleted")
        return row


def _engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


def _typed(kind: FieldKind, name: str, raw: str) -> Any:
    """A query-string value as the JSON value the schema expects for the field's kind."""
    if kind is FieldKind.NUMBER:
        try:
            return float(raw)
        except ValueError:
            raise BadRequest(f"filter {name} must be a number, got {raw!r}") from None
    if kind is FieldKind.BOOL:
        if raw.lower() not in ("true", "false"):
            raise BadRequest(f"filter {name} must be true or false, got {raw!r}")
        return raw.lower() == "true"
    return raw


def _parse_list_cursor(token: str) -> tuple[Any, str]:
    payload = decode_token(token, "cursor")
    if (
        not isinstance(payload, list)
        or len(payload) != 2
        or not isinstance(payload[1], str)
        or not isinstance(payload[0], str | int | float | bool | None)
    ):
        raise BadRequest("cursor is not a page token this server issued")
    return payload[0], payload[1]


def _body(model_name: str) -> dict[str, Any]:
    schema = {"$ref": f"#/components/schemas/{model_name}"}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def _add_unknown_collection_routes(router: APIRouter) -> None:
    """Last in line: any other /api/{collection} names an unknown collection (token checked)."""

    async def unknown(request: Request, who: AdminOnly, collection: str) -> None:
        _engine(request).schema.collection(collection)  # raises UnknownCollection
        raise UnknownCollection(collection, f"unknown collection {collection!r}")

    for path, methods in (
        ("/api/{collection}", ["GET", "POST"]),
        ("/api/{collection}/{record_id}", ["GET", "PATCH", "DELETE"]),
    ):
        router.add_api_route(path, unknown, methods=methods, include_in_schema=False)
