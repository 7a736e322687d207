"""A WatermelonDB-shaped device for tests: raw rows with `_status`/`_changed`, and the
pull/push payloads `synchronize()` builds from them (@nozbe/watermelondb/sync).

Only the sync bookkeeping is reproduced (what a row looks like on the wire, what is dirty,
what a pull does to local rows); the server under test is the real one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx

Row = dict[str, Any]


@dataclass
class WatermelonDevice:
    http: httpx.AsyncClient
    tables: dict[str, dict[str, Row]] = field(default_factory=dict)
    deleted: dict[str, list[str]] = field(default_factory=dict)  # locally destroyed, unpushed
    last_pulled_at: int | None = None
    send_created_as_updated: bool = False
    pull_log: list[dict[str, Any]] = field(default_factory=list)

    def create(self, table: str, record_id: str, **columns: Any) -> None:
        row = {"id": record_id, **columns, "_status": "created", "_changed": ""}
        self.tables.setdefault(table, {})[record_id] = row

    def update(self, table: str, record_id: str, **columns: Any) -> None:
        row = self.tables[table][record_id]
        row.update(columns)
        if row["_status"] != "created":
            row["_status"] = "updated"
            changed = [c for c in row["_changed"].split(",") if c]
            row["_changed"] = ",".join(changed + [c for c in columns if c not in changed])

    def destroy(self, table: str, record_id: str) -> None:
        row = self.tables[table].pop(record_id)
        if row["_status"] != "created":
            self.deleted.setdefault(table, []).append(record_id)

    def row(self, table: str, record_id: str) -> Row | None:
        return self.tables.get(table, {}).get(record_id)

    async def pull(self) -> dict[str, Any]:
        if self.last_pulled_at is None:
            answer = (await self.http.get("/api/sync/initial")).raise_for_status().json()
        else:
            params = {"since": self.last_pulled_at}
            answer = (
                (await self.http.get("/api/sync/incremental", params=params))
                .raise_for_status()
                .json()
            )
        self.pull_log.append(answer)
        timestamp = answer["timestamp"]
        assert isinstance(timestamp, int) and timestamp > 0  # what synchronize() insists on
        for table, changes in answer["changes"].items():
            local = self.tables.setdefault(table, {})
            for raw in changes["created"] + changes["updated"]:
                assert "_status" not in raw and "_changed" not in raw
                current = local.get(raw["id"])
                if current is not None and current["_status"] != "synced":
                    # WatermelonDB keeps local changes of dirty columns (resolveConflict).
                    dirty = set(current["_changed"].split(",")) if current["_changed"] else set()
                    merged = {**raw, **{c: current[c] for c in dirty}}
                    local[raw["id"]] = {
                        **merged,
                        "_status": current["_status"],
                        "_changed": current["_changed"],
                    }
                else:
                    local[raw["id"]] = {**raw, "_status": "synced", "_changed": ""}
            for record_id in changes["deleted"]:
                local.pop(record_id, None)
        self.last_pulled_at = timestamp
        return answer

    def changes(self) -> dict[str, dict[str, list[Any]]]:
        """What synchronize() pushes: the dirty raw rows, as they are, _status/_changed included."""
        out: dict[str, dict[str, list[Any]]] = {}
        for table in set(self.tables) | set(self.deleted):
            rows = self.tables.get(table, {}).values()
            created = [dict(r) for r in rows if r["_status"] == "created"]
            updated = [dict(r) for r in rows if r["_status"] == "updated"]
            if self.send_created_as_updated:
                created, updated = [], created + updated
            out[table] = {
                "created": created,
                "updated": updated,
                "deleted": list(self.deleted.get(table, [])),
            }
        return out

    async def push(self) -> dict[str, Any]:
        body = {"changes": self.changes(), "lastPulledAt": self.last_pulled_at}
        answer: dict[str, Any] = (
            (await self.http.post("/api/sync/outgoing", json=body)).raise_for_status().json()
        )
        rejected = answer.get("experimentalRejectedIds", {})
        for table, rows in self.tables.items():
            for record_id, row in rows.items():
                if record_id not in rejected.get(table, []):
                    row["_status"], row["_changed"] = "synced", ""
        self.deleted = {
            t: [i for i in ids if i in rejected.get(t, [])] for t, ids in self.deleted.items()
        }
        return answer

    async def synchronize(self) -> None:
        await self.pull()
        await self.push()
