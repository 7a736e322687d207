"""Helpers for the REST tests: a device's client, the sync cursor, error bodies, pulled ids."""

from __future__ import annotations

from typing import Any

import httpx

from .conftest import RunningServer


def device(server: RunningServer, client_id: str | None = None) -> httpx.AsyncClient:
    client = server.client(server.device_token)
    if client_id is not None:
        client.headers["X-Client-Id"] = client_id
    return client


async def cursor_of(server: RunningServer) -> int:
    async with server.client() as admin:
        return int((await admin.get("/api/sync/status")).json()["cursor"])


def ids(answer: dict[str, Any], collection: str, kind: str) -> list[str]:
    """The sorted ids of one collection's `kind` ("created", ...) in a sync pull's answer."""
    items = answer["changes"][collection][kind]
    return sorted(item if isinstance(item, str) else item["id"] for item in items)


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == code and error["message"]
    return error
