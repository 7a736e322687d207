"""The Store on PostgreSQL, for deployments of several nodes (psycopg 3, async)."""

from ..opening import is_postgres_url, redacted
from .store import PostgresStore

__all__ = ["PostgresStore", "is_postgres_url", "redacted"]
