"""Durable storage: the Store interface, its SQLite and PostgreSQL implementations."""

from .base import (
    Append,
    CommitListener,
    Committed,
    CompactionReport,
    DocumentState,
    JSONObject,
    LogEntry,
    NodeRoster,
    NodeRow,
    Progress,
    RecordRow,
    Store,
    StoreStatistics,
    TokenRow,
)
from .compaction import COMPACTION_ORIGIN
from .listing import RecordQuery
from .migrations import SCHEMA_VERSION
from .opening import store_at
from .sqlite import SQLiteStore

__all__ = [
    "COMPACTION_ORIGIN",
    "SCHEMA_VERSION",
    "Append",
    "CommitListener",
    "Committed",
    "CompactionReport",
    "DocumentState",
    "JSONObject",
    "LogEntry",
    "NodeRoster",
    "NodeRow",
    "Progress",
    "RecordQuery",
    "RecordRow",
    "SQLiteStore",
    "Store",
    "StoreStatistics",
    "TokenRow",
    "store_at",
]
