"""REST routes over the merged state (server layer); every route needs a token.

    sync_views.py   GET  /api/sync/initial, /api/sync/incremental   (WatermelonDB pull)
    sync_updates.py GET  /api/sync/updates                         (CRDT pull: the log, CBOR)
    sync_push.py    POST /api/sync/outgoing                        (WatermelonDB push, CRDT updates)
    metrics.py      GET  /api/sync/status, /metrics
    sync_admin.py   /api/admin/sync/overview|clients, /api/admin/tokens  (sync management; admin)
    sync_watch.py   /api/admin/sync/refusals|activity[/stream]|rates  (what the sync does; admin)
    sync_ops.py     /api/admin/sync/clients/{id}|compactions|check|export  (operations; admin)
    admin/feed.py   GET  /api/admin/feed  (records as they change, SSE; admin)
    admin/record_api.py  /api/{collection}/{id}/history|at|restore|text  (admin)
    docs_views.py   /api/docs/{collection}/{id}[/state-vector|/update]
    crud.py         /api/{collection}[/{id}]  (made per collection from the schema; admin)

Order matters: the fixed routes come first, then the per-collection ones, then the catch-all
that answers an unknown collection.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, FastAPI
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from starlette.exceptions import HTTPException as StarletteHTTPException

from . import (
    docs_views,
    metrics,
    sync_admin,
    sync_ops,
    sync_push,
    sync_updates,
    sync_views,
    sync_watch,
)
from .access import Authenticated, principal
from .activity import ActivityLog, Rates
from .admin import feed, record_api
from .crud import crud_router
from .http_errors import handle_http_exception, handle_validation_error
from .models import REQUEST_ONLY_MODELS
from .telemetry import CountErrors, Telemetry

if TYPE_CHECKING:
    from .app import Settings

__all__ = ["Authenticated", "install", "principal", "router"]

router = APIRouter()
router.include_router(sync_views.router)
router.include_router(sync_updates.router)
router.include_router(sync_push.router)
router.include_router(metrics.router)
router.include_router(docs_views.router)
router.include_router(sync_admin.router)
router.include_router(sync_watch.router)
router.include_router(sync_ops.router)
router.include_router(feed.router)
router.include_router(record_api.router)


def install(app: FastAPI, settings: Settings) -> None:
    """Add what the REST side needs beyond `router`: CRUD for the schema, counters, handlers.

    Call after `app.include_router(router)`, before the app starts.
    """
    telemetry = Telemetry()
    app.state.telemetry = telemetry
    app.state.activity, app.state.rates = ActivityLog(), Rates()
    app.state.sync_jobs = sync_ops.SyncJobs()
    app.state.push_locks = {}
    app.state.metrics = metrics.metrics_registry()
    crud, request_models = crud_router(settings.schema)
    app.include_router(crud)
    app.add_middleware(CountErrors, telemetry=telemetry)
    app.add_exception_handler(StarletteHTTPException, handle_http_exception)
    app.add_exception_handler(RequestValidationError, handle_validation_error)
    _document_request_models(app, [*request_models, *REQUEST_ONLY_MODELS])


def _document_request_models(app: FastAPI, models: Sequence[type[BaseModel]]) -> None:
    """Put models that only describe request bodies (routes read bodies themselves, to check
    them with the schema) into the OpenAPI components, where the routes' `$ref`s point."""
    generate: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        document = generate()
        _, definitions = models_json_schema(
            [(model, "validation") for model in models],
            ref_template="#/components/schemas/{model}",
        )
        components = document.setdefault("components", {}).setdefault("schemas", {})
        components.update(definitions.get("$defs", {}))
        return document

    app.openapi = openapi  # type: ignore[method-assign]
